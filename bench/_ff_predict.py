"""The baseline: the digits model as a plain functions-framework function.

Served by functions-framework's own server (``functions-framework --target predict``);
loads the same model version from the same store as `mlfn serve predict`.
"""

from __future__ import annotations

from typing import Any

import flask
import functions_framework
import numpy as np

from functions._digits import MODEL, PredictRequest
from mlfn.settings import Settings
from runtime.models import open_model
from runtime.spec import ModelRef

_handle = open_model(ModelRef(name=MODEL), Settings())
_handle.start()


@functions_framework.http
def predict(request: flask.Request) -> Any:
    req = PredictRequest.model_validate_json(request.get_data())
    clf = _handle.current().model
    labels = clf.predict(np.asarray(req.instances, dtype=np.float64)).tolist()
    return {"predictions": labels, "model_version": _handle.current().version}

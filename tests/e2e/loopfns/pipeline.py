"""The example pipeline of ``functions/``, on a raw topic of the test's own.

Each function here calls the real one in ``functions/`` under a copy of its spec; only the
raw topic (``MLFN_E2E_RAW_TOPIC``), the dead-letter topic and the retrain policy change.
``retrain`` trains on shuffled labels while the file ``<MLFN_HOME>/sabotage`` exists: the
deliberately broken candidate that the gate must reject.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from functions import predict as _predict
from functions import preprocess as _preprocess
from functions import retrain as _retrain
from runtime import CloudEvent, Context, LoadedModel
from runtime.function import ATTR, Function, function_of
from runtime.retraining import Progress
from runtime.spec import KafkaSource, RetrainPolicy

RAW_TOPIC = os.environ.get("MLFN_E2E_RAW_TOPIC", "e2e.digits.raw")
DLQ_TOPIC = f"{RAW_TOPIC}.dlq"
EVERY_ROWS = int(os.environ.get("MLFN_E2E_EVERY_ROWS", "500"))


def _like(original: Any, target: Callable[..., Any], **updates: Any) -> Any:
    """Give ``target`` the spec of ``original`` (plus ``updates``), as if declared here."""
    fn = function_of(original)
    assert fn is not None, f"{original} is not an mlfn function"
    spec = fn.spec.model_copy(update={"module": __name__, "entrypoint": target.__name__, **updates})
    setattr(
        target,
        ATTR,
        Function(spec, target, fn.request_model, fn.response_model, fn.wants_context),
    )
    return target


def preprocess(ev: CloudEvent) -> CloudEvent:
    return _preprocess.preprocess(ev)


def predict(batch: list[Any], model: LoadedModel) -> list[Any]:
    return _predict.predict(batch, model)


def retrain(ev: CloudEvent, ctx: Context) -> CloudEvent | None:
    sabotage = ctx.settings.common.home / "sabotage"

    def fit(X: np.ndarray, y: np.ndarray, progress: Progress) -> Any:
        if sabotage.exists():
            y = np.random.default_rng(0).permutation(y)
        return _retrain.fit_digits(X, y, progress)

    return _retrain.store_features(ev, ctx, fit=fit)


_raw_source = function_of(_preprocess.preprocess).spec.sources[0]  # type: ignore[union-attr]
_like(
    _preprocess.preprocess,
    preprocess,
    sources=(
        KafkaSource(
            topics=(RAW_TOPIC,),
            delivery=_raw_source.delivery.model_copy(
                update={"retry": 0, "dead_letter_sink": DLQ_TOPIC}
            ),
        ),
    ),
)
_like(_predict.predict, predict)
_retrain_spec = function_of(_retrain.retrain).spec  # type: ignore[union-attr]
_like(
    _retrain.retrain,
    retrain,
    retrain=RetrainPolicy(
        model=_retrain_spec.retrain.model if _retrain_spec.retrain else "digits",
        every_rows=EVERY_ROWS,
        debounce_seconds=0.2,
        tolerance=0.01,
    ),
)

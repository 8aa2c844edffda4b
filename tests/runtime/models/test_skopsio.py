"""skops.io without torch: the same trusted estimators, torch left unimported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]

_PROBE = """
import json, sys
from runtime.models.skopsio import skops_io
sio = skops_io()
from skops.io import _trusted_types as t
without = 'torch' in sys.modules, 'sklearn.externals.array_api_compat.torch' in sys.modules
from sklearn.utils import all_estimators
names = sorted(f"{c.__module__}.{c.__name__}" for _, c in all_estimators())  # torch may load now
print(json.dumps({"torch": without, "trusted": sorted(t.SKLEARN_ESTIMATOR_TYPE_NAMES),
                  "estimators": names}))
"""


def test_skops_io_loads_without_torch_and_trusts_every_estimator() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["torch"] == [False, False]  # neither torch nor the placeholder stayed
    assert found["trusted"] == found["estimators"]  # the walk found every estimator

"""The real `predict` function: bootstrapped model, served and invoked (scikit-learn digits)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlfn.cli import root
from tests.fixtures.servers import ServerProcess

pytestmark = pytest.mark.integration

ROW = [round((i % 17) / 16, 4) for i in range(64)]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlfn-home")


def test_invoke_predict_in_process_bootstraps_and_answers_with_the_version(home: Path) -> None:
    env = {"MLFN_HOME": str(home), "MLFN_FUNCTIONS_PACKAGE": "functions"}
    data = json.dumps({"instances": [ROW, ROW], "probabilities": True})
    r = CliRunner().invoke(root, ["invoke", "predict", "--data", data], env=env)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["model_version"] == 1
    assert len(out["predictions"]) == 2 and all(0 <= p <= 9 for p in out["predictions"])
    assert len(out["probabilities"][0]) == 10


def test_serve_predict_json_oip_and_invoke_url(
    home: Path, serve: Callable[..., ServerProcess]
) -> None:
    s = serve("functions", "predict", MLFN_HOME=str(home))
    s.wait_ready()
    r = s.call("POST", "/", {"instances": [ROW]})
    assert r.status == 200 and r.json()["model_version"] == 1
    oip = {"inputs": [{"name": "instances", "shape": [3, 64], "datatype": "FP64", "data": ROW * 3}]}
    r = s.call("POST", "/v2/models/predict/infer", oip)
    assert r.status == 200, r.body
    out = r.json()
    assert out["model_version"] == "1" and out["outputs"][0]["shape"] == [3]
    r = s.call("POST", "/", {"instances": [ROW[:10]]})
    assert r.status == 400 and r.json()["error"]["fields"][0]["field"] == "instances.0"
    cli = CliRunner().invoke(
        root, ["invoke", "predict", "--url", s.url, "--data", json.dumps({"instances": [ROW]})]
    )
    assert cli.exit_code == 0 and json.loads(cli.output)["model_version"] == 1

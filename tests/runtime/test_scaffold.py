"""``mlfn new``: a function module and its test, from templates in the package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.scaffold import KINDS, ScaffoldError, plan_scaffold, write_scaffold
from tests.fixtures.platform import REPO, start_platform

KINDS_AND_NAMES = {"inference": "churn", "event": "enrich", "retrain": "churn-rows"}


@pytest.mark.unit
def test_files_go_into_the_package_and_the_tests_dir() -> None:
    files = plan_scaffold("churn-rows", "retrain", package="app.fns", model="churn")
    assert sorted(map(str, files)) == [
        "app/fns/churn_rows.py",
        "tests/functions/test_churn_rows.py",
    ]
    module = files[Path("app/fns/churn_rows.py")]
    assert 'MODEL = "churn"' in module and "def churn_rows(ev: CloudEvent, ctx: Context)" in module
    assert (
        "from app.fns.churn_rows import fit, to_row"
        in files[Path("tests/functions/test_churn_rows.py")]
    )


@pytest.mark.unit
@pytest.mark.parametrize("name", ["Churn", "churn_rows", "9lives", "-x", "a" * 64])
def test_names_are_checked_by_the_spec_rule(name: str) -> None:
    from runtime.spec import check_function_name

    with pytest.raises(ValueError) as spec_error:
        check_function_name(name)
    with pytest.raises(ScaffoldError) as scaffold_error:
        plan_scaffold(name, "event")
    assert str(scaffold_error.value) == str(spec_error.value)
    assert "DNS label" in str(scaffold_error.value)


@pytest.mark.unit
def test_keywords_and_unknown_kinds_are_refused() -> None:
    with pytest.raises(ScaffoldError, match="Python keyword"):
        plan_scaffold("class", "event")
    with pytest.raises(ScaffoldError, match="inference, event, retrain"):
        plan_scaffold("x", "batch")
    with pytest.raises(ScaffoldError, match="invalid model name"):
        plan_scaffold("x", "inference", model="Bad Model")


@pytest.mark.unit
def test_nothing_is_overwritten(tmp_path: Path) -> None:
    files = plan_scaffold("enrich", "event")
    write_scaffold(tmp_path, files)
    assert (tmp_path / "functions" / "__init__.py").exists()
    assert (tmp_path / "tests" / "functions" / "__init__.py").exists()
    (tmp_path / "functions" / "enrich.py").write_text("# mine\n")
    with pytest.raises(ScaffoldError, match="exists already"):
        write_scaffold(tmp_path, plan_scaffold("enrich", "inference"))
    assert (tmp_path / "functions" / "enrich.py").read_text() == "# mine\n"


@pytest.mark.unit
def test_the_command_refuses_a_name_taken_in_another_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlfn.cli import root

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    package = tmp_path / "takenfns"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "other.py").write_text(
        "from runtime import CloudEvent, event\n\n\n"
        "@event(name='enrich')\ndef something(ev: CloudEvent) -> None:\n    pass\n"
    )
    env = {"MLFN_FUNCTIONS_PACKAGE": "takenfns"}
    result = CliRunner().invoke(root, ["new", "enrich", "--kind", "event"], env=env)
    assert result.exit_code == 1
    assert "a function named 'enrich' exists already (takenfns.other.something)" in result.output
    assert not (package / "enrich.py").exists()
    sys.modules.pop("takenfns.other", None)
    sys.modules.pop("takenfns", None)


def _mlfn(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(
        [sys.executable, "-c", "from mlfn.cli import main; main()", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
def test_scaffolded_functions_list_pass_their_tests_and_run_under_mlfn_dev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlfn.cli import root

    env = {"MLFN_FUNCTIONS_PACKAGE": "myfns"}
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()
    try:
        for kind in KINDS:
            name = KINDS_AND_NAMES[kind]
            args = ["new", name, "--kind", kind, "--model", "churn", "--tests-dir", "tests"]
            made = runner.invoke(root, args, env=env)
            assert made.exit_code == 0, made.output
        again = runner.invoke(root, ["new", "churn", "--kind", "inference"], env=env)
        assert again.exit_code == 1 and "exists already" in again.output
    finally:  # the name checks imported the new package into this process
        for module in [m for m in sys.modules if m == "myfns" or m.startswith("myfns.")]:
            del sys.modules[module]

    listed = _mlfn(tmp_path, "list", **env)
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()[1:]}
    assert rows == {"churn": "inference", "churn-rows": "event", "enrich": "event"}

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout

    with start_platform(
        tmp_path,
        cwd=tmp_path,
        MLFN_FUNCTIONS_PACKAGE="myfns",
        MLFN_PLATFORM_SERVER="runtime.server:run",
        MLFN_PLATFORM_PRELOAD="flask,numpy,sklearn,skops.io,gevent,gunicorn.workers.ggevent",
    ) as platform:
        answer = platform.call("churn", {"instances": [[1, 1, 1, 1], [-1, -1, -1, -1]]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [1, 0] and answer.json()["model_version"] == 1
        headers = {  # a binary-mode CloudEvent, as the KafkaSource dispatcher sends it
            "ce-specversion": "1.0",
            "ce-id": "e1",
            "ce-source": "/test",
            "ce-type": "mlfn.record",
            "content-type": "application/json",
        }
        reply = platform.call("enrich", None, data=b'{"text": "hello"}', headers=headers)
        assert reply.status_code == 200, reply.text
        assert reply.headers["ce-type"] == "mlfn.enrich.out"
        assert reply.json() == {"text": "hello", "length": 5}

"""`mlfn serve/invoke/list`: output, exit codes, and the exact discovery errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from mlfn.cli import root

pytestmark = pytest.mark.unit

PKG = "tests.runtime.userfns"


def mlfn(package: str, *args: str) -> Result:
    env = {"MLFN_FUNCTIONS_PACKAGE": f"{PKG}.{package}", "MLFN_LOG_FORMAT": "text"}
    return CliRunner().invoke(root, list(args), env=env, catch_exceptions=False)


def test_list_prints_a_table_and_json_specs() -> None:
    r = mlfn("echo_inference", "list")
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0].split()[:4] == ["NAME", "KIND", "TRIGGER", "MODEL"]
    assert lines[1].split()[:5] == ["summer", "inference", "http", "-", "8/1ms"]
    assert lines[2].split()[5] == "1"  # pid: containerConcurrency 1
    specs = json.loads(mlfn("echo_inference", "list", "--json").output)
    assert [s["name"] for s in specs] == ["summer", "pid"]
    assert specs[0]["batching"] == {"max_batch_size": 8, "max_wait_ms": 1.0}


def test_invoke_runs_the_function_in_process_and_prints_json() -> None:
    r = mlfn("echo_inference", "invoke", "summer", "--data", '{"x": [1, 2, 3]}')
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"total": 6.0, "batch": 1, "model_version": None}


def test_invoke_reports_bad_input_with_exit_1_and_bad_flags_with_usage_errors() -> None:
    r = mlfn("echo_inference", "invoke", "summer", "--data", '{"x": "no"}')
    assert r.exit_code == 1
    assert json.loads(r.output)["error"]["fields"][0]["field"] == "x"
    r = mlfn("echo_inference", "invoke", "summer", "--data", "{oops")
    assert r.exit_code == 2 and "Invalid value for --data: not valid JSON" in r.output


def test_invoke_an_event_function_prints_the_reply_event() -> None:
    r = mlfn("events_fn", "invoke", "echo", "--data", '{"hello": 1}')
    assert r.exit_code == 0, r.output
    reply = json.loads(r.output)
    assert reply["type"] == "test.echoed" and reply["data"]["seen"] == {"hello": 1}


@pytest.mark.parametrize(
    ("package", "name", "message"),
    [
        (
            "echo_inference",
            "nope",
            f"no function named 'nope' in package '{PKG}.echo_inference'; found: summer, pid",
        ),
        (
            "broken_import",
            "x",
            f"importing '{PKG}.broken_import' failed: No module named 'mlfn_no_such_module'",
        ),
        (
            "wrong_signature",
            "three",
            f"{PKG}.wrong_signature.three: an inference function takes (batch) or (batch, model); "
            "it has 3 required positional parameters",
        ),
    ],
)
def test_discovery_errors_are_exact(package: str, name: str, message: str) -> None:
    for args in (["invoke", name, "--data", "{}"], ["serve", name, "--port", "0"]):
        r = mlfn(package, *args)
        assert r.exit_code == 1
        assert message in r.output


@pytest.mark.parametrize("command", ["serve", "invoke", "list"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    r = mlfn("echo_inference", command, "--help")
    assert r.exit_code == 0 and "Example:" in r.output and f"mlfn {command}" in r.output


def test_job_runs_an_event_function_once_on_a_mounted_event(
    tmp_path: pytest.TempPathFactory,
) -> None:
    from runtime import events

    path = tmp_path / "event"  # type: ignore[operator]
    ev = events.new_event("test.job", "/jobsink", {"hello": 2}, id="job-1")
    path.write_text(json.dumps(events.event_to_dict(ev)))
    r = mlfn("events_fn", "job", "echo", "--event", str(path))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["data"] == {"seen": {"hello": 2}, "of": "job-1"}

    path.write_text(json.dumps(events.event_to_dict(events.new_event("t", "/s", {"fail": True}))))
    assert mlfn("events_fn", "job", "echo", "--event", str(path)).exit_code == 1
    path.write_text("{not json")
    r = mlfn("events_fn", "job", "echo", "--event", str(path))
    assert r.exit_code == 2 and "is not a structured CloudEvent" in r.output
    r = mlfn("echo_inference", "job", "summer", "--event", str(path))
    assert r.exit_code == 2 and "jobs run event functions" in r.output

"""Log formats: JSON off a terminal, short human lines on one, noise demoted, faults kept."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import warnings
from collections.abc import Iterator
from types import ModuleType

import pytest

from runtime.logs import configure, resolve_format

pytestmark = pytest.mark.unit


def _kafka() -> ModuleType:
    """kafka-python, imported as the eventing tests' conftest does (it warns on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka.admin
        import kafka.errors
    return kafka


class _Tty(io.StringIO):
    """A text stream that says it is a terminal (as a pty would)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_auto_is_json_off_a_terminal_and_text_on_one() -> None:
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("auto", _Tty()) == "text"
    assert resolve_format("json", _Tty()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"
    with pytest.raises(ValueError, match="MLFN_LOG_FORMAT"):
        resolve_format("xml", io.StringIO())


def test_a_real_pty_counts_as_a_terminal() -> None:
    main, child = pty.openpty()
    try:
        with os.fdopen(child, "w", closefd=False) as stream:
            assert resolve_format("auto", stream) == "text"
    finally:
        os.close(main)
        os.close(child)


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure("INFO", "auto", stream=out)
    logging.getLogger("localplatform.serving").info("revision %s created", "predict-00001")
    record = json.loads(out.getvalue())
    assert record["message"] == "revision predict-00001 created"
    assert record["level"] == "info" and record["logger"] == "localplatform.serving"


def test_text_lines_name_the_component_and_colour_only_problems() -> None:
    out = _Tty()
    configure("INFO", "auto", stream=out)
    logging.getLogger("localplatform.serving").info("revision predict-00001 created")
    logging.getLogger("eventing.dispatcher").warning("slow sink", extra={"dispatcher": "pre"})
    info, warn = out.getvalue().splitlines()
    assert "serving" in info and info.endswith("\x1b[0m revision predict-00001 created")
    assert warn.endswith("\x1b[33mwarning slow sink  dispatcher=pre\x1b[0m")
    assert "dispatcher" in warn


def test_no_color_turns_colour_off() -> None:
    out = _Tty()
    configure("INFO", "text", no_colour=True, stream=out)
    logging.getLogger("eventing.dispatcher").error("sink refused")
    line = out.getvalue()
    assert "\x1b[" not in line
    assert line.rstrip().endswith("dispatcher  error sink refused")


def test_no_color_setting_reads_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.settings import CommonSettings

    monkeypatch.setenv("NO_COLOR", "1")
    assert CommonSettings().no_color is True
    monkeypatch.setenv("NO_COLOR", "")
    assert CommonSettings().no_color is False


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_cancelled_metadata_refresh_and_slow_selector_steps_are_not_errors(fmt: str) -> None:
    kafka = _kafka()

    out = io.StringIO()
    configure("INFO", fmt, stream=out)
    logging.getLogger("kafka.cluster").error(
        "Metadata refresh: failed %s", kafka.errors.Cancelled()
    )
    logging.getLogger("kafka.net.selector").warning(
        "Task %r ran for %.3fs (>%.3fs threshold). It is blocking the event loop -- likely a "
        "tight sync loop inside a coroutine. Other pollers will time out.",
        "task",
        0.16,
        0.1,
    )
    assert out.getvalue() == ""


def test_noise_is_still_there_at_debug_level() -> None:
    kafka = _kafka()

    out = io.StringIO()
    configure("DEBUG", "json", stream=out)
    logging.getLogger("kafka.cluster").error(
        "Metadata refresh: failed %s", kafka.errors.Cancelled()
    )
    assert json.loads(out.getvalue())["level"] == "debug"


@pytest.mark.parametrize("error_type", ["KafkaConnectionError", "NodeNotReadyError"])
def test_a_broker_that_is_down_is_still_an_error(error_type: str) -> None:
    """The very call kafka-python makes (``kafka/cluster.py``), with what a dead broker raises.

    (A live client pointed at a dead port leaks its socket; see ``check_reachable``.)
    """
    kafka = _kafka()

    error = getattr(kafka.errors, error_type)("Connection refused")
    out = io.StringIO()
    configure("INFO", "json", stream=out)
    logging.getLogger("kafka.cluster").error("Metadata refresh: failed %s", error)
    record = json.loads(out.getvalue())
    assert record["level"] == "error"
    assert type(error).__name__ in record["message"]

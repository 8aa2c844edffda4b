"""A retrain function's ``/metrics`` carries the loop's training metrics; others do not."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlfn.settings import Settings
from runtime.registry import discover
from runtime.server import Request, create_app

pytestmark = pytest.mark.unit


def metrics_of(function: str, home: Path) -> str:
    fn = discover("functions").get(function)
    app = create_app(fn, Settings().updated(common={"home": home}), model_opener=lambda f, s: None)
    assert app.wait_ready(5)
    return app.handle(Request("GET", "/metrics", {})).body.decode()


def test_training_metrics_are_served_by_the_retrain_function_only(tmp_path: Path) -> None:
    text = metrics_of("retrain", tmp_path)
    for name in ("mlfn_training_rows", "mlfn_training_phase_seconds", "mlfn_model_decisions"):
        assert f"# TYPE {name}" in text
    assert "mlfn_requests" in text  # beside the server's own
    assert "mlfn_training_rows" not in metrics_of("preprocess", tmp_path)


class _Loaded:
    def __init__(self, version: int) -> None:
        self.name, self.version, self.model = "digits", version, None


class _Handle:
    """The ModelHandle surface the server uses, with a swap the test triggers."""

    def __init__(self) -> None:
        self.loaded = _Loaded(3)
        self.listeners: list[Callable[[Any], None]] = []

    def on_swap(self, listener: Callable[[Any], None]) -> None:
        self.listeners.append(listener)

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def current(self) -> _Loaded:
        return self.loaded

    def refresh(self) -> bool:
        self.loaded = _Loaded(self.loaded.version + 1)
        for listener in self.listeners:
            listener(self.loaded)
        return True

    @property
    def ready(self) -> bool:
        return True


def test_the_served_version_is_on_metrics_before_any_request_and_after_a_swap() -> None:
    handle = _Handle()
    app = create_app(
        discover("functions").get("predict"), Settings(), model_opener=lambda f, s: handle
    )
    assert app.wait_ready(5)

    def served() -> str:
        text = app.handle(Request("GET", "/metrics", {})).body.decode()
        return next(line for line in text.splitlines() if line.startswith("mlfn_model_version{"))

    assert served().endswith(" 3.0")
    handle.refresh()  # what a mlfn.model.published event or the store poll does
    assert served().endswith(" 4.0")

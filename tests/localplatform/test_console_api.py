"""What the console reads: static files from the package, and the model history."""

from __future__ import annotations

from pathlib import Path

import pytest

from localplatform.console import model_history, model_names, static_response
from runtime.models.store import LocalModelStore
from runtime.spec import FunctionSpec

pytestmark = pytest.mark.unit


def _spec(name: str, **fields: object) -> FunctionSpec:
    return FunctionSpec(name=name, kind="event", module="m", entrypoint=name, **fields)  # type: ignore[arg-type]


def test_static_files_come_from_the_package_and_nothing_else() -> None:
    for path in ("ui", "ui/", "ui/index.html"):
        head, _, body = static_response(path).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"text/html" in head
        assert b"/_mlfn/ui/console.js" in body
    assert b"text/javascript" in static_response("ui/console.js")
    assert b"text/css" in static_response("ui/console.css")
    for bad in ("ui/../api.py", "ui/api.py", "ui/.hidden.js", "ui/static/console.js"):
        assert static_response(bad).startswith(b"HTTP/1.1 404"), bad


def test_model_names_are_served_and_retrained_models_once() -> None:
    specs = [
        _spec("a", model={"name": "digits"}),
        _spec("b", retrain={"model": "digits"}),
        _spec("c", retrain={"model": "other"}),
    ]
    assert model_names(specs) == ["digits", "other"]


def test_history_tells_bootstrap_published_and_rejected_apart(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path)
    store.put(
        "m", {"w": b"1"}, backend="sklearn", metrics={"accuracy": 0.9}, extra={"bootstrap": True}
    )
    gate = {"decision": "published", "reason": "better"}
    store.put("m", {"w": b"2"}, backend="sklearn", metrics={"accuracy": 0.95}, extra={"gate": gate})
    gate = {"decision": "rejected", "reason": "worse by 0.2"}
    store.put(
        "m",
        {"w": b"3"},
        backend="sklearn",
        metrics={"accuracy": 0.7},
        extra={"gate": gate},
        make_latest=False,
    )
    [entry] = model_history(store, ["m"])
    assert entry["latest"] == 2
    assert [(v["version"], v["decision"]) for v in entry["versions"]] == [
        (1, "bootstrap"),
        (2, "published"),
        (3, "rejected"),
    ]
    assert entry["versions"][2]["reason"] == "worse by 0.2"
    assert entry["versions"][1]["metrics"]["accuracy"] == 0.95


def test_a_model_without_versions_or_with_a_broken_store_still_answers(tmp_path: Path) -> None:
    store = LocalModelStore(tmp_path)
    assert model_history(store, ["none-yet"]) == [
        {"name": "none-yet", "latest": None, "versions": []}
    ]
    bad = tmp_path / "broken" / "versions" / "1"
    bad.mkdir(parents=True)
    (bad / "meta.json").write_text("{not json")
    [entry] = model_history(store, ["broken"])
    assert "corrupt" in entry["error"]

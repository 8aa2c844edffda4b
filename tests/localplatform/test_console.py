"""The web console of ``mlfn dev`` in headless Chromium, with the example pipeline.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` package; ``make
test`` installs both on a fresh machine. Playwright drives the system browser: it never
downloads one.

``MLFN_CONSOLE_SCREENSHOT=docs/console.png`` also saves a screenshot of the page once it
shows the new model version (that is how ``docs/console.png`` is made).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.platform import REPO, Platform, start_platform

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
EXAMPLE = {"predict", "predict-torch", "preprocess", "retrain"}


@pytest.fixture(scope="module")
def example_platform(tmp_path_factory: pytest.TempPathFactory, broker: str) -> Iterator[Platform]:
    """``mlfn dev`` with the example functions, the real server and the eventing plane."""
    with start_platform(
        tmp_path_factory.mktemp("console"),
        MLFN_FUNCTIONS_PACKAGE="functions",
        MLFN_PLATFORM_SERVER="runtime.server:run",
        MLFN_PLATFORM_PRELOAD="flask,numpy,sklearn,skops.io,gevent,gunicorn.workers.ggevent",
        MLFN_PLATFORM_EVENTING="true",
        MLFN_BOOTSTRAP_SERVERS=broker,
        MLFN_NAMESPACE=f"console-{uuid.uuid4().hex[:6]}",
    ) as platform:
        from functions._digits import digits

        X, _ = digits()  # a first request: predict bootstraps model v1 if it has not yet
        answer = platform.call("predict", {"instances": [[float(v) for v in X[0]]]})
        assert answer.status_code == 200, answer.text
        yield platform


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: `make test` installs it (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: `pip install -e '.[dev]'` (or make test)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_the_control_api_serves_the_console_graph_and_models(example_platform: Platform) -> None:
    url = example_platform.url
    page = requests.get(f"{url}/_mlfn/ui", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/_mlfn/ui/console.js" in page.text
    script = requests.get(f"{url}/_mlfn/ui/console.js", timeout=10)
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert requests.get(f"{url}/_mlfn/ui/../dev.json", timeout=10).status_code == 404
    graph = requests.get(f"{url}/_mlfn/graph", timeout=10).json()
    assert {n["label"] for n in graph["nodes"] if n["kind"] == "function"} == EXAMPLE
    models = requests.get(f"{url}/_mlfn/models", timeout=10).json()["models"]
    assert [m["name"] for m in models] == ["digits", "digits-torch"]
    assert "console: http://" in example_platform.output()


def test_the_console_shows_the_pipeline_and_a_new_model_version_without_reload(
    example_platform: Platform, browser: Any, broker: str
) -> None:
    from eventing.producer import EventProducer, digits_records

    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(str(err)))
    try:
        page.goto(f"{example_platform.url}/_mlfn/ui/")
        page.evaluate("window.__sameDocument = true")
        page.wait_for_function(
            "document.querySelectorAll('#function-rows tr[data-fn]').length >= 4", timeout=30_000
        )
        shown = set(
            page.eval_on_selector_all(
                "#function-rows tr[data-fn]", "rs => rs.map(r => r.dataset.fn)"
            )
        )
        assert shown == EXAMPLE
        nodes = page.eval_on_selector_all("#graph g.node", "gs => gs.map(g => g.dataset.node)")
        assert {f"fn:{name}" for name in EXAMPLE} <= set(nodes)
        assert "trigger:retrain-features" in nodes and "topic:digits.raw" in nodes
        page.wait_for_selector('[data-model="digits"] tr[data-version="1"]', timeout=60_000)

        with EventProducer(broker) as producer:
            producer.stream("digits.raw", digits_records(600))
        page.wait_for_selector('[data-model="digits"] tr[data-version="2"]', timeout=120_000)
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
        assert page.query_selector('svg[data-plot="digits"] g[data-point="2"]') is not None
        decision = page.inner_text('[data-model="digits"] tr[data-version="2"] .pill')
        assert decision in ("published", "rejected")
        page.wait_for_function(
            "[...document.querySelectorAll('#dispatcher-rows tr')].some("
            "r => r.dataset.dispatcher === 'preprocess' && +r.cells[4].textContent.replace(/,/g, '') >= 600)",
            timeout=30_000,
        )
        shot = os.environ.get("MLFN_CONSOLE_SCREENSHOT")
        if shot:  # a richer picture for the docs: one more training
            with EventProducer(broker) as producer:
                producer.stream("digits.raw", digits_records(1100))
            page.wait_for_selector('[data-model="digits"] tr[data-version="3"]', timeout=120_000)
            # bytes, written here: a path= makes playwright write it from an executor thread
            (REPO / shot).write_bytes(page.screenshot(full_page=True))
    finally:
        page.close()
    assert problems == [], problems


def test_a_healthy_start_logs_no_kafka_noise_as_errors(example_platform: Platform) -> None:
    """kafka-python's cancelled metadata refreshes and slow-step warnings are debug-level."""
    log = example_platform.output()
    noisy = [
        line
        for line in log.splitlines()
        if re.search(
            r"(error|warning) .*(Metadata refresh: failed Cancelled|blocking the event loop)", line
        )
    ]
    assert noisy == []


def test_closing_the_terminal_stops_everything_the_embedded_broker_included(
    tmp_path: Path,
) -> None:
    """SIGHUP (the terminal of `make dev` closed) stops in order, as Ctrl-C does."""
    import signal

    from tests.fixtures.platform import descendants, stop_platform

    with start_platform(tmp_path, MLFN_PLATFORM_EVENTING="true") as platform:
        family = descendants(platform.proc.pid)
        assert any("tansu" in _cmdline(p) for p in family), "the embedded broker runs"
        stop_platform(platform.proc, platform.log, signal.SIGHUP)
        assert platform.proc.returncode == 0
        assert "mlfn dev stopping (SIGHUP)" in platform.output()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""

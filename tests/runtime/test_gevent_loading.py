"""Under gunicorn's gevent worker (inference servers) a model load must not stall the event
loop: /healthz, /readyz and gunicorn's heartbeat keep answering while it runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROBE = textwrap.dedent(
    """
    from gevent import monkey; monkey.patch_all()
    import time, gevent
    from mlfn.settings import Settings
    from runtime.registry import discover
    from runtime.server.app import create_app
    from runtime.models import handle

    settings = Settings()
    fn = discover("functions").get("predict")
    first = create_app(fn, settings).start()  # bootstraps version 1 into the empty store
    assert first.wait_ready(120), first.load_error
    first.close()

    refresh = handle.ModelHandle.refresh
    def slow_refresh(self):  # a slow load: 1 s of CPU that never yields
        if self._current is None:
            t = time.perf_counter()
            while time.perf_counter() - t < 1.0:
                sum(range(1000))
        return refresh(self)
    handle.ModelHandle.refresh = slow_refresh

    ticks = []
    def tick():
        while True:
            ticks.append(time.monotonic())
            gevent.sleep(0.01)
    ticker = gevent.spawn(tick)
    app = create_app(fn, settings).start()
    start = time.monotonic()
    while not app.ready:
        assert app.load_error is None, app.load_error
        gevent.sleep(0.01)
    gaps = [b - a for a, b in zip(ticks, ticks[1:]) if a >= start]
    print(f"{time.monotonic() - start:.3f} {max(gaps):.3f}")
    app.close()
    ticker.kill()
    """
)


def test_a_slow_model_load_leaves_the_gevent_loop_responsive(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=180,
        env={"MLFN_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    load_s, max_gap_s = map(float, out.stdout.split())
    assert load_s >= 1.0
    # run on the loop, the load would stall it for the whole second
    assert max_gap_s < 0.5, f"the event loop stalled {max_gap_s:.3f}s during a {load_s:.3f}s load"

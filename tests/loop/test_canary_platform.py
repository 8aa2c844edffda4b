"""Canary on ``mlfn dev``: a new revision with a share of traffic is promoted or rolled back
automatically, from its own error rate, with no ``mlfn rollout`` by hand."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import pytest

from tests.fixtures.platform import Platform, start_platform, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SOURCE = '''
from pydantic import BaseModel
from runtime import inference

class Req(BaseModel):
    x: int

class Resp(BaseModel):
    y: int

@inference(
    request=Req, response=Resp, name="{name}",
    rollout={{"strategy": "canary", "step_weight": 50, "max_weight": 50, "threshold": 2,
              "min_success_rate": 90, "max_latency_p99": 5}},
)
def handler(batch: list[Req]) -> list[Resp]:
    """Revision {revision}."""
    if {fails}:
        raise RuntimeError("this revision is broken")
    return [Resp(y=r.x + {revision}) for r in batch]
'''


def write(pkg: Path, module: str, *, revision: int, fails: bool) -> None:
    code = SOURCE.format(name=module.replace("_", "-"), revision=revision, fails=fails)
    (pkg / f"{module}.py").write_text(textwrap.dedent(code))


def traffic(p: Platform, function: str) -> dict[str, int]:
    return dict(p.status()["functions"][function]["traffic"])


def test_a_good_canary_is_promoted_and_a_broken_one_rolled_back(tmp_path: Path) -> None:
    root = tmp_path / "src"
    name = f"canaryfns_{uuid.uuid4().hex[:8]}"
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    write(pkg, "good", revision=1, fails=False)
    write(pkg, "bad", revision=1, fails=False)
    settings = {
        "MLFN_FUNCTIONS_PACKAGE": name,
        "MLFN_PLATFORM_SERVER": "localplatform.instance:run",
        "MLFN_PLATFORM_PRELOAD": "flask",
        "MLFN_PLATFORM_WATCH_SECONDS": "0.2",
        "MLFN_LOOP_CANARY_TICK_SECONDS": "0.2",
        "MLFN_LOOP_CANARY_INTERVAL_SECONDS": "2",
        "MLFN_PLATFORM_STABLE_WINDOW_SECONDS": "60",
        "PYTHONPATH": str(root),
    }
    with start_platform(tmp_path, **settings) as p:
        assert p.call("good", {"x": 1}).json()["y"] == 2
        assert p.call("bad", {"x": 1}).json()["y"] == 2
        write(pkg, "good", revision=2, fails=False)
        write(pkg, "bad", revision=2, fails=True)
        wait_for(
            lambda: (
                traffic(p, "good") == {"good-00001": 50, "good-00002": 50}
                and traffic(p, "bad") == {"bad-00001": 50, "bad-00002": 50}
            ),
            30,
            "both canaries to get 50% of traffic",
        )
        codes: dict[str, list[int]] = {"good": [], "bad": []}

        def decided() -> bool:
            # traffic keeps flowing while the controller decides: an interval without
            # requests is a failed check, as Flagger counts it
            for fn in codes:
                codes[fn].append(p.call(fn, {"x": 1}).status_code)
            return traffic(p, "good") == {"good-00001": 0, "good-00002": 100} and traffic(
                p, "bad"
            ) == {"bad-00001": 100, "bad-00002": 0}

        wait_for(decided, 60, "the good canary promoted and the broken one rolled back")
        assert set(codes["good"]) == {200}
        assert 500 in codes["bad"]
        # after the decisions every request is answered by a healthy revision
        assert all(p.call("bad", {"x": 1}).json()["y"] == 2 for _ in range(10))
        assert all(p.call("good", {"x": 1}).json()["y"] == 3 for _ in range(10))
        assert "canary of bad: rollback" in p.output()
        assert "canary of good: promote" in p.output()

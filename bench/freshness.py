"""Freshness of the closed loop: from the record that crosses the retrain threshold to the
moment the inference endpoint answers with the version trained on it.

Runs the real thing: ``mlfn dev`` (embedded broker, eventing plane, gateway, the example
functions) in a temporary home. Each trial produces ``every_rows - 1`` digits records,
waits until ``retrain`` stored them, then produces the one record that crosses the
threshold (t0) and polls ``predict`` through the gateway until it answers with a new
``model_version`` (t_end). The phases come from the timestamps the loop writes into the
version's metadata:

- delivery: raw topic -> preprocess -> broker -> trigger -> retrain stored the row,
  minus the preprocessing itself;
- preprocessing: the preprocess function's own time (median, measured in-process);
- debounce: the policy's wait for more rows before training;
- training: reading the dataset and fitting;
- evaluation: scoring candidate and served version on the holdout, the gate;
- rollout: publishing, the ``mlfn.model.published`` event, its trigger, the swap in the
  running ``predict`` instance and its first answer with the new version.

``python -m bench freshness`` (or ``make bench``) prints the table.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TRIALS = 3
TARGET_S = 10.0


def _wait(cond: Any, timeout: float, what: str, every: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)  # polling interval of a measured condition


class Dev:
    """``mlfn dev`` in a subprocess with a home of its own."""

    def __init__(self, home: Path, **env_extra: str) -> None:
        self.home = home
        self.log = open(home / "dev.log", "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "MLFN_HOME": str(home), "MLFN_LOG_LEVEL": "WARNING", **env_extra}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from mlfn.cli import main; main()", "dev", "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        info = _wait(self._run_info, 120, "mlfn dev to start", every=0.1)
        self.gateway: str = info["gateway"]
        self.bootstrap: str = info["bootstrap"]

    def _run_info(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"mlfn dev exited with {self.proc.returncode}; see {self.log.name}")
        try:
            info: dict[str, Any] = json.loads((self.home / "platform" / "dev.json").read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("pid") == self.proc.pid else None

    def predict(self, rows: list[list[float]]) -> int | None:
        body = json.dumps({"instances": rows}).encode()
        req = urllib.request.Request(
            f"{self.gateway}/predict/", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(json.loads(resp.read())["model_version"])
        except OSError:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def _preprocessing_seconds() -> float:
    """Median time of the preprocess function itself, called in-process."""
    from eventing.producer import digits_records
    from functions.preprocess import preprocess
    from runtime.events import new_event

    events = [new_event("dev.knative.kafka.event", "/bench", r) for r in digits_records(200)]
    times = []
    for ev in events:
        t = time.perf_counter()
        preprocess(ev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _trial(
    dev: Dev,
    producer: Any,
    records: Any,
    every: int,
    sample: list[list[float]],
    database_url: str | None = None,
) -> dict[str, Any]:
    from runtime.settings import RuntimeSettings
    from runtime.stores import open_stores

    settings = RuntimeSettings().updated(
        common={"home": dev.home}, models={"database_url": database_url}
    )
    stores = open_stores(settings)
    models, dataset = stores.models, stores.datasets.open("digits")
    latest = models.info("digits")
    trained = latest.data.last_seq if latest.data and latest.data.dataset == "digits" else 0
    pending = dataset.count_since(trained)
    before, known = dataset.count(), {v.version for v in models.versions("digits")}
    first = max(0, every - pending - 1)
    for _ in range(first):
        producer.send("digits.raw", next(records))
    producer.flush()
    _wait(lambda: dataset.count() >= before + first, 120, f"{first} rows stored", every=0.05)
    served = _wait(lambda: dev.predict(sample), 60, "predict to answer")

    t0 = time.time()
    producer.send("digits.raw", next(records))
    producer.flush()

    def changed() -> int | None:
        v = dev.predict(sample)
        if v is not None and v != served:
            return v
        new = [v for v in models.versions("digits") if v.version not in known]
        # the threshold's training (a time-triggered one may land meanwhile: not measured)
        if any(
            v.extra.get("gate", {}).get("decision") == "rejected"
            and "every_rows" in str(v.extra.get("trigger", ""))
            for v in new
        ):
            return -1
        return None

    version = _wait(changed, 120, "predict to serve a new version")
    t_end = time.time()
    if version == -1:
        return {"decision": "rejected", "total": t_end - t0}
    meta = models.info("digits", version).extra
    ph = meta.get("phases", {})
    started = float(meta["training_started_at"])
    stored = float(meta.get("last_row_stored_at") or started)
    trained_at = started + ph.get("read", 0) + ph.get("fit", 0) + ph.get("evaluate", 0)
    return {
        "decision": "published",
        "version": version,
        "rows": models.info("digits", version).data.rows,  # type: ignore[union-attr]
        "accuracy": models.info("digits", version).metrics.get("accuracy", float("nan")),
        "to_store": stored - t0,
        "debounce": started - stored,
        "training": ph.get("read", 0) + ph.get("fit", 0),
        "evaluation": ph.get("evaluate", 0),
        "rollout": t_end - trained_at,
        "total": t_end - t0,
    }


def main() -> None:
    _print(*measure(TRIALS))


def measure(
    trials: int, database_url: str | None = None
) -> tuple[list[dict[str, Any]], float, int, float]:
    """Run ``trials`` under ``mlfn dev`` (PostgreSQL stores with ``database_url``)."""
    from eventing.producer import EventProducer, digits_records
    from functions._digits import digits
    from runtime.registry import discover

    policy = discover("functions").get("retrain").spec.retrain
    assert policy is not None and policy.every_rows, "functions.retrain needs every_rows"
    pre = _preprocessing_seconds()
    sample = digits()[0][:4].tolist()
    home = Path(tempfile.mkdtemp(prefix="mlfn-bench-"))
    dev = Dev(home, **({"MLFN_DATABASE_URL": database_url} if database_url else {}))
    try:
        _wait(lambda: dev.predict(sample), 120, "predict to become ready", every=0.1)
        records = iter(digits_records(policy.every_rows * (trials + 1)))
        with EventProducer(dev.bootstrap, partitions=4) as producer:
            results = [
                _trial(dev, producer, records, policy.every_rows, sample, database_url)
                for _ in range(trials)
            ]
    except BaseException:
        print(f"freshness failed; the platform's log is in {home / 'dev.log'}", file=sys.stderr)
        dev.stop()
        raise
    dev.stop()
    shutil.rmtree(home, ignore_errors=True)
    return results, pre, policy.every_rows, policy.debounce_seconds


def _print(
    results: list[dict[str, Any]], pre: float, every: int, debounce: float, store: str = "local"
) -> None:
    print(
        f"freshness: threshold record produced -> predict answers with the new version "
        f"(mlfn dev, {store} stores, every_rows={every}, debounce {debounce:g}s; "
        f"target <= {TARGET_S:g}s)"
    )
    cols = ["delivery", "preprocess", "debounce", "training", "evaluation", "rollout", "total"]
    print(
        f"{'trial':>5} {'version':>7} {'rows':>5} {'acc':>6} " + " ".join(f"{c:>10}" for c in cols)
    )
    done = [r for r in results if r["decision"] == "published"]
    for i, r in enumerate(results, 1):
        if r["decision"] != "published":
            print(f"{i:>5} {'rejected':>7}  candidate rejected by the gate after {r['total']:.2f}s")
            continue
        r["preprocess"] = pre
        r["delivery"] = max(0.0, r["to_store"] - pre)
        print(
            f"{i:>5} {r['version']:>7} {r['rows']:>5} {r['accuracy']:>6.3f} "
            + " ".join(f"{r[c] * 1000:>8.2f}ms" for c in cols)
        )
    if done:
        med = {c: statistics.median(r[c] for r in done) for c in cols}
        print(
            f"{'p50':>5} {'':>7} {'':>5} {'':>6} "
            + " ".join(f"{med[c] * 1000:>8.2f}ms" for c in cols)
        )
        verdict = "meets" if med["total"] <= TARGET_S else "MISSES"
        print(f"p50 freshness {med['total']:.2f}s {verdict} the {TARGET_S:g}s target")


if __name__ == "__main__":
    main()

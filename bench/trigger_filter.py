"""A trigger's filter over binary-mode CloudEvent records: CPU per record it drops.

A Trigger dispatcher (``mlfn dev``'s broker triggers, ``predict-model-updates``) reads
every record of its topic and keeps few. One table: the CPU time per dropped record of

* ``full event (before)``: what every record cost before: ``Dispatcher._event_of``
  (``codec.from_kafka``, the SDK's CloudEvent, Knative's extensions), then the filter;
* ``ce_* headers``: :func:`eventing.wire.binary_attributes`, then the filter (what
  ``Dispatcher._filtered_by_headers`` does now);
* ``_process, dropped``: the delivery thread's whole job for a dropped record, now;
* ``passed: general path`` / ``passed: wire``: the request bytes of a record the filter
  passes (``_event_of``, ``to_http_binary``, the request; or ``WireEncoder.request``).

The record: a ``mlfn.features`` event with a small JSON body and a key, under
``predict-model-updates``' filter (``exact`` type ``mlfn.model.published`` and subject).
Targets: the header path at least 5x cheaper than the full event, the wire 3x
cheaper than the general path. CPU time
(``time.process_time``) of one thread, ``MLFN_BENCH_RECORDS`` records (default 20000)
per row: on a shared machine it moves much less than wall time.

    python -m bench trigger_filter
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from eventing._kafka import Consumed
from eventing.codec import KafkaRecord
from eventing.dispatcher import Dispatcher, DispatcherConfig
from eventing.fastpath import request_bytes
from eventing.filters import compile_filter
from eventing.lanes import Lane
from eventing.wire import binary_attributes
from runtime import events

RECORD = KafkaRecord(
    value=json.dumps({"pixels": [0] * 64, "label": 3}).encode(),
    key=b"3",
    headers=[
        ("ce_specversion", b"1.0"),
        ("ce_id", b"0b9a3c6e-8f"),
        ("ce_source", b"/mlfn/functions/preprocess"),
        ("ce_type", b"mlfn.features"),
        ("ce_time", b"2026-12-02T01:00:00.123Z"),
        ("ce_subject", b"digits"),
        ("content-type", b"application/json"),
    ],
)
FILTER = [{"exact": {"type": "mlfn.model.published", "subject": "digits"}}]


def _cpu_us(n: int, step: Callable[[Consumed], object]) -> float:
    consumed = [Consumed("broker", 0, i, 1_700_000_000_123, RECORD) for i in range(n)]
    start = time.process_time()
    for c in consumed:
        step(c)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    n = int(os.environ.get("MLFN_BENCH_RECORDS", "20000"))
    match = compile_filter(FILTER)
    cfg = DispatcherConfig(
        "predict-model-updates",
        ("broker",),
        "g",
        "http://127.0.0.1:1/",
        kind="trigger",
        filter=match,
        durable_retries=False,
    )
    d = Dispatcher(cfg, "127.0.0.1:1")
    lane = Lane(("broker", 0), 1)
    try:

        def full(c: Consumed) -> bool:
            return match(events.attributes(d._event_of(c, d._origin(c))))

        def headers(c: Consumed) -> bool:
            attrs = binary_attributes(
                c.record, c.partition, c.offset, max_bytes=cfg.max_record_bytes
            )
            assert attrs is not None
            return match(attrs)

        rows = [
            ("full event (before)", _cpu_us(n, full)),
            ("ce_* headers", _cpu_us(n, headers)),
            ("_process, dropped", _cpu_us(n, lambda c: d._process(lane, [c]))),
        ]
        assert d.stats.count("filtered") == n
    finally:
        d._sender.close()
    passing = compile_filter([{"exact": {"type": "mlfn.features"}}])
    cfg = DispatcherConfig(
        "p", ("broker",), "g", "http://127.0.0.1:1/", kind="trigger", filter=passing
    )
    d = Dispatcher(cfg, "127.0.0.1:1")
    try:
        assert d._target is not None and d._wire is not None
        target, wire = d._target, d._wire

        def general(c: Consumed) -> bytes:
            return request_bytes(target, events.to_http_binary(d._event_of(c, d._origin(c))))

        rows.append(("passed: general path", _cpu_us(n, general)))
        rows.append(("passed: wire", _cpu_us(n, wire.request)))
    finally:
        d._sender.close()
    print(f"{'path':<22} {'CPU us/record':>14}")
    for name, us in rows:
        print(f"{name:<22} {us:>14.1f}")
    ratio = rows[0][1] / rows[1][1]
    print(
        f"a dropped record, ce_* headers vs the full event: {ratio:.1f}x cheaper (no target of its own: it feeds the delivery and soak targets)"
    )
    ratio = rows[3][1] / rows[4][1]
    print(f"a passed record, the wire vs the general path: {ratio:.1f}x cheaper")


if __name__ == "__main__":
    main()

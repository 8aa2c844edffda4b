"""The unconsumed tail of an in-memory broker, saved to a file at a clean stop and replayed.

The embedded broker keeps its log in memory. Before ``mlfn dev`` stops it, the platform
saves, per topic and partition, every record from the lowest offset committed by the
platform's consumer groups to the end (all of a topic nobody in the platform reads, such
as a dead-letter topic), the groups' committed offsets, and the retry counts of records
in that tail. On the next start, before any dispatcher runs, the records are produced
again into the new broker, in order, to the same partitions, with their timestamps; each
group's offsets are committed at the same place relative to the replayed records, and
the retry counts are rewritten under the new offsets. A replayed record carries the
``mlfn-origin`` header (its first epoch, partition and offset), so it is delivered with
the id it had: a record delivered before the stop but not yet committed is stored once.

File: JSON lines, a header line then one line per record (key, value and header values
in base64); written to a temporary file, fsynced, then renamed, so a stop that dies
half-way leaves the previous state, never half a file. It is removed once replayed.

Example:
    >>> saved = snapshot(bootstrap, {"digits.raw": ["mlfn-default-preprocess"]},
    ...                  epoch="18c2f", path=home / "platform" / "backlog.jsonl")  # doctest: +SKIP
    >>> replay(new_bootstrap, home / "platform" / "backlog.jsonl")            # doctest: +SKIP
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventing._kafka import (
    TP,
    Consumed,
    Producer,
    commit_group,
    committed_offsets,
    ensure_topics,
    list_topics,
    read_from,
    read_topic,
)
from eventing.codec import KafkaRecord
from eventing.records import ORIGIN_HEADER
from eventing.retrystate import state_topic

__all__ = ["BacklogReport", "replay", "snapshot"]

log = logging.getLogger(__name__)

VERSION = 1
_RETRIES = state_topic("")  # "mlfn-retries." : the prefix of every retry-state topic


@dataclass(frozen=True)
class BacklogReport:
    """How many records a snapshot saved (or a replay produced), per topic."""

    records: dict[str, int] = field(default_factory=dict)
    retry_counts: int = 0

    @property
    def total(self) -> int:
        return sum(self.records.values())

    def describe(self) -> str:
        if not self.total:
            return "no records"
        parts = ", ".join(f"{t} {n}" for t, n in sorted(self.records.items()) if n)
        return f"{self.total} record(s) ({parts})"


@contextmanager
def _quiet_kafka() -> Iterator[None]:
    """kafka-python logs errors when its short-lived clients close mid-refresh: not ours."""
    logger = logging.getLogger("kafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def _with_origin(c: Consumed, epoch: str) -> list[tuple[str, bytes]]:
    headers = list(c.record.headers)
    if not any(k == ORIGIN_HEADER for k, _ in headers):
        headers.append((ORIGIN_HEADER, f"{epoch}/{c.partition}/{c.offset}".encode()))
    return headers


def snapshot(
    bootstrap: str,
    groups: Mapping[str, Iterable[str]],
    *,
    epoch: str,
    path: Path,
    limit_s: float = 300.0,
) -> BacklogReport:
    """Save the unconsumed tail of every topic of the broker at ``bootstrap`` to ``path``.

    Args:
        bootstrap: the broker about to stop.
        groups: per topic, the consumer groups of the platform that read it; a topic
            without groups is saved whole.
        epoch: the broker's epoch (the first identity of records replayed later).
        path: the file to write (replaced atomically).
        limit_s: the longest one topic may take to read.

    Raises:
        KafkaUnavailableError: the broker does not answer (nothing is written).
    """
    with _quiet_kafka():
        return _snapshot(bootstrap, groups, epoch, path, limit_s)


def _snapshot(
    bootstrap: str, groups: Mapping[str, Iterable[str]], epoch: str, path: Path, limit_s: float
) -> BacklogReport:
    topics = list_topics(bootstrap)
    header: dict[str, Any] = {"version": VERSION, "epoch": epoch, "topics": {}, "retries": {}}
    lines: list[str] = []
    counts: dict[str, int] = {}
    starts_by_topic: dict[str, dict[int, int]] = {}
    for topic, parts in sorted(topics.items()):
        if topic.startswith("__") or topic.startswith(_RETRIES) or parts == 0:
            continue
        tps = [(topic, p) for p in range(parts)]
        offsets = {g: committed_offsets(bootstrap, g, tps) for g in groups.get(topic, ())}
        starts = {
            p: min((o.get((topic, p), 0) for o in offsets.values()), default=0)
            for p in range(parts)
        }
        began = time.monotonic()
        records = read_from(bootstrap, topic, starts, quiet_s=0.2, limit_s=limit_s)
        if time.monotonic() - began >= limit_s:
            log.error(
                "the tail of %s was not read completely within %.0fs: %d record(s) saved, "
                "the rest is lost with the broker",
                topic,
                limit_s,
                len(records),
            )
        records = [c for c in records if c.offset >= starts[c.partition]]
        starts_by_topic[topic] = starts
        header["topics"][topic] = {
            "partitions": parts,
            "starts": {str(p): s for p, s in starts.items()},
            "groups": {g: {str(p): o for (_, p), o in offs.items()} for g, offs in offsets.items()},
        }
        counts[topic] = len(records)
        for c in records:
            lines.append(
                json.dumps(
                    {
                        "t": topic,
                        "p": c.partition,
                        "o": c.offset,
                        "ts": c.timestamp_ms,
                        "k": _b64(c.record.key),
                        "v": _b64(c.record.value),
                        "h": [[k, _b64(v)] for k, v in _with_origin(c, epoch)],
                    }
                )
            )
    retry_counts = 0
    for topic in sorted(t for t in topics if t.startswith(_RETRIES)):
        kept = _retry_counts(bootstrap, topic, starts_by_topic)
        if kept:
            header["retries"][topic] = kept
            retry_counts += len(kept)
    if lines or retry_counts:
        _write(path, [json.dumps(header), *lines])
    else:
        path.unlink(missing_ok=True)
    return BacklogReport(counts, retry_counts)


def _retry_counts(
    bootstrap: str, topic: str, starts: Mapping[str, Mapping[int, int]]
) -> dict[str, int]:
    """The live retry counts of a retry-state topic for records in the saved tail."""
    counts: dict[str, int] = {}
    for c in read_topic(bootstrap, topic, quiet_s=0.2):
        key = (c.record.key or b"").decode("utf-8", "replace")
        if c.record.value:
            counts[key] = int(json.loads(c.record.value)["failures"])
        else:
            counts.pop(key, None)
    kept = {}
    for key, n in counts.items():
        t, _, rest = key.partition("/")
        part, _, off = rest.partition("/")
        try:
            if int(off) >= starts.get(t, {}).get(int(part), 0) and t in starts:
                kept[key] = n
        except ValueError:
            continue
    return kept


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def replay(bootstrap: str, path: Path, *, timeout_s: float = 30.0) -> BacklogReport:
    """Produce the records saved in ``path`` into the broker at ``bootstrap``; remove the file.

    Topics are created with their saved partition counts; each partition's records are
    produced in order; each saved group offset is committed at the same place relative
    to the replayed records; retry counts are rewritten under the new offsets. Call it
    before any consumer of these groups runs.

    Returns:
        What was replayed (empty when there is no file).

    Raises:
        KafkaUnavailableError: the broker refused; the file is kept for the next try.
        ValueError: the file is not a backlog this version wrote (it is kept).
    """
    if not path.exists():
        return BacklogReport()
    with _quiet_kafka():
        report = _replay(bootstrap, path, timeout_s)
    path.unlink()
    return report


def _replay(bootstrap: str, path: Path, timeout_s: float) -> BacklogReport:
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline())
        if not isinstance(header, dict) or header.get("version") != VERSION:
            raise ValueError(
                f"{path} is not a backlog this mlfn wrote (version {header.get('version')!r}); "
                "move it away to start without it"
            )
        topics: dict[str, Any] = header["topics"]
        for topic, info in topics.items():
            ensure_topics(bootstrap, [topic], int(info["partitions"]))
        producer = Producer(bootstrap, linger_ms=5)
        counts: dict[str, int] = {}
        first_new: dict[TP, int] = {}
        first_old: dict[TP, int] = {}
        waits = []
        try:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                tp = (r["t"], int(r["p"]))
                rec = KafkaRecord(
                    value=_unb64(r["v"]),
                    key=_unb64(r["k"]),
                    headers=[(k, _unb64(v) or b"") for k, v in r["h"]],
                )
                ts = r.get("ts")
                wait = producer.send(
                    tp[0], rec, partition=tp[1], timestamp_ms=ts if ts and ts > 0 else None
                )
                if tp not in first_old:
                    first_old[tp] = int(r["o"])
                    first_new[tp] = wait(timeout_s)
                else:
                    waits.append(wait)
                counts[tp[0]] = counts.get(tp[0], 0) + 1
            for w in waits:
                w(timeout_s)
            producer.flush(timeout_s)
            for topic, info in topics.items():
                for group, offs in info["groups"].items():
                    new = {
                        (topic, int(p)): first_new[(topic, int(p))]
                        + (int(o) - first_old[(topic, int(p))])
                        for p, o in offs.items()
                        if (topic, int(p)) in first_new
                    }
                    commit_group(bootstrap, group, new)
            retried = _replay_retries(producer, header.get("retries", {}), first_old, first_new)
            producer.flush(timeout_s)
        finally:
            producer.close()
    return BacklogReport(counts, retried)


def _replay_retries(
    producer: Producer,
    retries: Mapping[str, Mapping[str, int]],
    first_old: Mapping[TP, int],
    first_new: Mapping[TP, int],
) -> int:
    n = 0
    for topic, counts in retries.items():
        ensure_topics(producer.bootstrap, [topic], 1)
        for key, failures in counts.items():
            t, _, rest = key.partition("/")
            part, _, off = rest.partition("/")
            tp = (t, int(part))
            if tp not in first_new:
                continue
            new_key = f"{t}/{part}/{first_new[tp] + int(off) - first_old[tp]}"
            value = json.dumps({"failures": failures}).encode()
            producer.send_sync(topic, KafkaRecord(value=value, key=new_key.encode()))
            n += 1
    return n

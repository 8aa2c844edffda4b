"""Shared fixtures. Every fixture starts real things on free loopback ports."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.broker",  # embedded Kafka broker (eventing)
    "tests.fixtures.servers",  # runtime servers on loopback ports
    "tests.fixtures.platform",  # the local platform
    "tests.fixtures.postgres",  # a real PostgreSQL server (shared stores)
    "tests.fixtures.s3",  # a real S3-protocol server (model artifacts)
]

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    """Tests may not leak environment changes or non-daemon threads."""
    env = dict(os.environ)
    before = {t.ident for t in threading.enumerate()}
    yield
    os.environ.clear()
    os.environ.update(env)
    leaked = [
        t for t in threading.enumerate() if t.ident not in before and t.is_alive() and not t.daemon
    ]
    for t in leaked:
        t.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"test leaked non-daemon threads: {still}"

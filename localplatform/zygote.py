"""The zygote: a pre-warmed process that forks function instances in milliseconds.

``python -m localplatform.zygote`` imports the heavy modules once (flask, numpy,
scikit-learn, the server and the functions package), then forks one child per instance,
so a cold start skips the ~1.8 s that importing numpy and scikit-learn alone costs. It
stays single-threaded (a selector loop) because only a single-threaded process forks
safely.

Protocol, JSON lines: the platform writes commands on the zygote's stdin (``spawn``,
with ``settings`` overrides for that instance such as its pinned ``model_version``;
``kill``, ``shutdown``); the zygote and its children write events on its stdout
(``hello``, ``spawned``, ``phase``, ``exit``, ``error``). Children's stdout and stderr
come back through a pipe each and go to the zygote's stderr, each line prefixed with the
instance name. The zygote dies with the platform (``PR_SET_PDEATHSIG``), and its children
die with it, so no instance outlives ``mlfn dev``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import importlib
import json
import os
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "source_hash"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` when the parent exits (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass


def source_hash(module: str) -> str:
    """A short hash of a module's source file: a new hash makes a new revision."""
    mod = sys.modules[module]
    path = getattr(mod, "__file__", None)
    data = Path(path).read_bytes() if path else module.encode()
    return hashlib.sha256(data).hexdigest()[:12]


def resolve(entry: str) -> Callable[..., Any]:
    """``module:callable`` to the callable."""
    module, _, attr = entry.partition(":")
    obj: Callable[..., Any] = getattr(importlib.import_module(module), attr or "run")
    return obj


class Zygote:
    """The zygote's state: its config, the registry, and the children it forked."""

    def __init__(self, config: dict[str, Any], out: int) -> None:
        from localplatform.settings import LocalRoot
        from runtime.registry import discover

        self.out = out
        self.settings = LocalRoot.model_validate(config["settings"])
        self.host = str(config.get("host", "127.0.0.1"))
        started = time.monotonic()
        for name in config.get("preload", []):
            try:
                importlib.import_module(name)
            except ImportError as err:
                print(f"zygote: cannot preload {name}: {err}", file=sys.stderr)
        self.entry = resolve(config["server"])
        self.registry = discover(self.settings.common.functions_package)
        self.import_seconds = time.monotonic() - started
        self.children: dict[int, str] = {}
        self.pipes: dict[int, tuple[str, bytearray]] = {}
        self.selector = selectors.DefaultSelector()

    def send(self, event: dict[str, Any]) -> None:
        os.write(self.out, (json.dumps(event) + "\n").encode())

    def hello(self) -> None:
        functions = {
            fn.name: {
                "spec": fn.spec.model_dump(mode="json", exclude_unset=True),
                "hash": source_hash(fn.spec.module),
                "file": getattr(sys.modules[fn.spec.module], "__file__", None),
            }
            for fn in self.registry
        }
        self.send(
            {
                "ev": "hello",
                "pid": os.getpid(),
                "functions": functions,
                "import_s": self.import_seconds,
            }
        )

    def spawn(self, cmd: dict[str, Any]) -> None:
        name, function, port = str(cmd["id"]), str(cmd["function"]), int(cmd["port"])
        fn = self.registry.get(function)
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        t_request = float(cmd.get("t", time.monotonic()))
        overrides: dict[str, Any] = dict(cmd.get("settings") or {})  # by section
        settings = self.settings.updated(**overrides) if overrides else self.settings
        pinned = overrides.get("models", {}).get("model_version")
        pid = os.fork()
        if pid == 0:  # the instance
            try:
                os.close(read)
                self._become_child(write, name)
                os.environ.update(fn.spec.env)
                if pinned is not None:  # seen by subprocesses too
                    os.environ["MLFN_MODEL_VERSION"] = str(pinned)
                else:
                    os.environ.pop("MLFN_MODEL_VERSION", None)
                self.send({"ev": "phase", "id": name, "phase": "spawn", "t": time.monotonic()})
                target = self.registry.get(function)
                self.send({"ev": "phase", "id": name, "phase": "imports", "t": time.monotonic()})
                self.entry(target, settings, port, self.host)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)
            except SystemExit as err:
                code = err.code if isinstance(err.code, int) else 1
                os._exit(code)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
                os._exit(1)
        os.close(write)
        os.set_blocking(read, False)
        self.children[pid] = name
        self.pipes[read] = (name, bytearray())
        self.selector.register(read, selectors.EVENT_READ, "log")
        self.send({"ev": "spawned", "id": name, "pid": pid, "t": t_request})

    def _become_child(self, write: int, name: str) -> None:
        die_with_parent(signal.SIGTERM)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        self.selector.close()
        for fd in self.pipes:
            os.close(fd)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        self.children.clear()

    def relay(self, fd: int) -> None:
        name, buf = self.pipes[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            buf += data
        if b"\n" in buf or not data:
            lines = bytes(buf).split(b"\n")
            buf[:] = lines.pop() if data else b""
            prefix = f"{name} | ".encode()
            out = b"".join(prefix + line + b"\n" for line in lines if line or data)
            if out:
                os.write(2, out)
        if not data:
            self.selector.unregister(fd)
            os.close(fd)
            del self.pipes[fd]

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            name = self.children.pop(pid, "?")
            code = os.waitstatus_to_exitcode(status)
            self.send({"ev": "exit", "id": name, "pid": pid, "code": code, "t": time.monotonic()})

    def shutdown(self, grace: float) -> None:
        for pid in list(self.children):
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self.reap()
            if self.children:
                self._drain_logs(0.05)
        for pid in list(self.children):
            _kill(pid, signal.SIGKILL)
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.children.pop(pid, None)
        self._drain_logs(0)

    def _drain_logs(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            if key.data == "log":
                self.relay(int(key.fd))

    def command(self, cmd: dict[str, Any]) -> bool:
        op = cmd.get("op")
        if op == "spawn":
            try:
                self.spawn(cmd)
            except Exception as err:
                self.send({"ev": "error", "id": cmd.get("id"), "message": f"{err}"})
        elif op == "kill":
            pid = int(cmd["pid"])
            if pid in self.children:
                _kill(pid, int(cmd.get("sig", signal.SIGTERM)))
        elif op == "shutdown":
            self.shutdown(float(cmd.get("grace", 10.0)))
            return False
        return True

    def run(self, stdin: int) -> str:
        """Serve commands until ``shutdown`` or the platform goes away; say why."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: None)
        self.selector.register(stdin, selectors.EVENT_READ, "cmd")
        self.selector.register(wake_r, selectors.EVENT_READ, "signal")
        pending = b""
        stopping: str | None = None
        while stopping is None:
            for key, _ in self.selector.select():
                if key.data == "log":
                    self.relay(int(key.fd))
                elif key.data == "signal":
                    signals = os.read(wake_r, 512)
                    self.reap()
                    if signal.SIGTERM in signals:
                        stopping = "SIGTERM"
                elif key.data == "cmd":
                    data = os.read(stdin, 65536)
                    if not data:
                        stopping = "the platform closed the control pipe"
                        break
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip() and not self.command(json.loads(line)):
                            return "shutdown requested"
        self.shutdown(self.settings.server.drain_seconds)
        return stopping


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def main() -> int:
    die_with_parent(signal.SIGTERM)
    out = os.dup(1)
    os.dup2(2, 1)  # stray prints from user code must not corrupt the protocol
    stdin = sys.stdin.fileno()
    config = json.loads(sys.stdin.buffer.readline())
    try:
        zygote = Zygote(config, out)
    except Exception as err:
        os.write(out, (json.dumps({"ev": "error", "message": str(err)}) + "\n").encode())
        return 1
    gc.collect()
    gc.freeze()  # forked children share these pages instead of copying them on first GC
    zygote.hello()
    why = zygote.run(stdin)
    print(f"zygote: stopped ({why})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

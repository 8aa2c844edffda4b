"""The versioned model store: the :class:`ModelStore` interface and a local-directory store.

Layout of :class:`LocalModelStore` (one directory per model)::

    <root>/<model>/versions/<N>/meta.json   metadata (:class:`ModelVersion`)
    <root>/<model>/versions/<N>/<files>     what the backend wrote (never pickles)
    <root>/<model>/latest                   the served version, as text ("3")
    <root>/<model>/.lock                    fcntl lock: version allocation, pointer moves

A version is written into a temporary directory on the same filesystem, fsynced and
renamed into place, so readers see a whole version or none. ``latest`` is replaced with
``os.replace``. Versions are integers allocated under the lock: two publishers never
collide, even from different processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from runtime.datasets import DataRange
from runtime.errors import ModelNotFoundError, ModelStoreError

if TYPE_CHECKING:
    from runtime.models.handle import LoadedModel

__all__ = ["LocalModelStore", "ModelStore", "ModelVersion", "PointerWatch", "check_model_name"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_META = "meta.json"


class ModelVersion(BaseModel):
    """Metadata of one published version (``meta.json``).

    Attributes:
        name: the model's name.
        version: its integer version, 1 for the first.
        created: when it was published (UTC).
        backend: the backend that wrote and reads its files (``sklearn``, ``torch``).
        files: file name -> sha256 of its bytes, checked on every load.
        metrics: evaluation figures, e.g. ``{"accuracy": 0.97}``.
        data: the training data range (rows, first/last row id and time).
        extra: free-form facts (``{"bootstrap": true}``, a decision, a parent version).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: int = Field(ge=1)
    created: datetime
    backend: str
    files: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    data: DataRange | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def check_model_name(name: str) -> str:
    """Return ``name`` if it is a valid model name; raise ``ModelStoreError`` otherwise."""
    if not _NAME.match(name):
        raise ModelStoreError(
            f"invalid model name {name!r}: use lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    return name


class PointerWatch:
    """Wake-ups for the moves of one model's ``latest`` pointer (see :meth:`ModelStore.watch`).

    The store calls :meth:`wake` when the pointer moved; the serving side blocks in
    :meth:`wait` between polls and reads the pointer when woken. Thread-safe.
    """

    def __init__(self, name: str, on_close: Callable[[PointerWatch], None] | None = None) -> None:
        self.name = name
        self._event = threading.Event()
        self._on_close = on_close
        self._closed = False

    def __repr__(self) -> str:
        return f"PointerWatch({self.name!r})"

    def wake(self) -> None:
        """The pointer (may have) moved: end the current or next :meth:`wait`."""
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Block until woken or ``timeout`` seconds passed; True when woken.

        The wake-up is consumed before returning, so a move that lands while the caller
        reads the pointer wakes the next ``wait`` at once.
        """
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def close(self) -> None:
        """Stop receiving wake-ups (idempotent)."""
        if not self._closed:
            self._closed = True
            if self._on_close is not None:
                self._on_close(self)


class ModelStore(ABC):
    """Where model versions live. Subclass it for another medium (an object store).

    Subclasses implement the storage primitives; :meth:`publish` and :meth:`load` are
    built on them and turn models into files through a backend (never pickle).
    """

    @abstractmethod
    def put(
        self,
        name: str,
        files: Mapping[str, bytes],
        *,
        backend: str,
        metrics: Mapping[str, float] | None = None,
        data: DataRange | None = None,
        extra: Mapping[str, Any] | None = None,
        make_latest: bool = True,
    ) -> ModelVersion:
        """Store ``files`` atomically as the next version of ``name``."""

    @abstractmethod
    def get_files(self, name: str, version: int) -> dict[str, bytes]:
        """The files of one version, checked against their recorded sha256."""

    @abstractmethod
    def info(self, name: str, version: int | None = None) -> ModelVersion:
        """Metadata of ``version`` (default: the latest)."""

    @abstractmethod
    def versions(self, name: str) -> list[ModelVersion]:
        """All versions of ``name``, oldest first (empty if there are none)."""

    @abstractmethod
    def latest(self, name: str) -> int:
        """The version the ``latest`` pointer names; ``ModelNotFoundError`` if none."""

    @abstractmethod
    def latest_token(self, name: str) -> Hashable | None:
        """A cheap value that changes whenever the ``latest`` pointer moves (None: no pointer)."""

    def watch(self, name: str) -> PointerWatch | None:
        """Wake-ups pushed by the store when ``name``'s pointer moves, or None where the
        medium cannot push them (then serving polls only). PostgreSQL pushes them
        (``LISTEN``/``NOTIFY``); the caller closes the watch."""
        return None

    @abstractmethod
    def set_latest(self, name: str, version: int) -> None:
        """Point ``latest`` at an existing version (rollback, or promotion)."""

    @abstractmethod
    def names(self) -> list[str]:
        """The models in the store."""

    @abstractmethod
    def exclusive(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A cross-process lock for one-off work on ``name``, such as bootstrapping."""

    def publish(
        self,
        name: str,
        model: Any,
        *,
        backend: str = "sklearn",
        metrics: Mapping[str, float] | None = None,
        data: DataRange | None = None,
        extra: Mapping[str, Any] | None = None,
        make_latest: bool = True,
    ) -> ModelVersion:
        """Serialize ``model`` with ``backend`` and publish it as the next version.

        Example:
            >>> store.publish("digits", clf, metrics={"accuracy": 0.97})  # doctest: +SKIP
            ModelVersion(name='digits', version=4, ...)
        """
        from runtime.models.backends import get_backend

        files = get_backend(backend).dump(model)
        return self.put(
            name,
            files,
            backend=backend,
            metrics=metrics,
            data=data,
            extra=extra,
            make_latest=make_latest,
        )

    def load(self, name: str, version: int | None = None) -> LoadedModel:
        """Load ``version`` of ``name`` (default: the latest) through its backend."""
        from runtime.models.backends import get_backend
        from runtime.models.handle import LoadedModel

        number = self.latest(name) if version is None else version
        meta = self.info(name, number)
        model = get_backend(meta.backend).load(self.get_files(name, number))
        return LoadedModel(name, number, model, meta.model_dump(mode="json"))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, blob: bytes) -> None:
    with open(path, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())


class LocalModelStore(ModelStore):
    """A model store in a local directory (default ``settings.model_store_path``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalModelStore({str(self.root)!r})"

    def _dir(self, name: str) -> Path:
        return self.root / check_model_name(name)

    @contextlib.contextmanager
    def _locked(self, mdir: Path, lock: str = ".lock") -> Iterator[None]:
        mdir.mkdir(parents=True, exist_ok=True)
        with open(mdir / lock, "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def exclusive(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self._locked(self._dir(name), ".exclusive.lock")

    def _numbers(self, name: str) -> list[int]:
        vdir = self._dir(name) / "versions"
        if not vdir.is_dir():
            return []
        return sorted(int(p.name) for p in vdir.iterdir() if p.name.isdigit())

    def _write_latest(self, mdir: Path, version: int) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".latest-", dir=mdir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(f"{version}\n".encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, mdir / "latest")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(mdir)

    def put(
        self,
        name: str,
        files: Mapping[str, bytes],
        *,
        backend: str,
        metrics: Mapping[str, float] | None = None,
        data: DataRange | None = None,
        extra: Mapping[str, Any] | None = None,
        make_latest: bool = True,
    ) -> ModelVersion:
        mdir = self._dir(name)
        vdir = mdir / "versions"
        vdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=mdir))
        try:
            hashes: dict[str, str] = {}
            for fname, blob in files.items():
                if fname == _META or "/" in fname or fname.startswith("."):
                    raise ModelStoreError(
                        f"backend file name {fname!r} is not allowed: use a plain name, "
                        f"not {_META!r}, without '/' or a leading '.'"
                    )
                _write(tmp / fname, blob)
                hashes[fname] = hashlib.sha256(blob).hexdigest()
            with self._locked(mdir):
                self._sweep(mdir, keep=tmp)
                numbers = self._numbers(name)
                version = (numbers[-1] if numbers else 0) + 1
                meta = ModelVersion(
                    name=name,
                    version=version,
                    created=datetime.now(UTC),
                    backend=backend,
                    files=hashes,
                    metrics=dict(metrics or {}),
                    data=data,
                    extra=dict(extra or {}),
                )
                _write(tmp / _META, meta.model_dump_json(indent=2).encode())
                _fsync_dir(tmp)
                os.rename(tmp, vdir / str(version))
                _fsync_dir(vdir)
                if make_latest:
                    self._write_latest(mdir, version)
            return meta
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @staticmethod
    def _sweep(mdir: Path, keep: Path, older_than: float = 3600.0) -> None:
        """Remove temporary directories left by publishers that died mid-write."""
        cutoff = time.time() - older_than
        for p in mdir.glob(".tmp-*"):
            with contextlib.suppress(OSError):
                if p != keep and p.stat().st_mtime < cutoff:
                    shutil.rmtree(p)

    def _missing(self, name: str, version: int | None = None) -> ModelNotFoundError:
        if version is None or not self._numbers(name):
            found = ", ".join(self.names()) or "none"
            return ModelNotFoundError(
                f"no published version of model {name!r} in {self.root}; models found: {found}. "
                "Publish one (run the retrain function) or register a bootstrap hook"
            )
        have = ", ".join(str(n) for n in self._numbers(name))
        return ModelNotFoundError(f"model {name!r} has no version {version}; versions: {have}")

    def info(self, name: str, version: int | None = None) -> ModelVersion:
        number = self.latest(name) if version is None else version
        path = self._dir(name) / "versions" / str(number) / _META
        try:
            return ModelVersion.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise self._missing(name, number) from None
        except ValueError as err:
            raise ModelStoreError(
                f"metadata of {name!r} v{number} at {path} is corrupt: {err}"
            ) from err

    def versions(self, name: str) -> list[ModelVersion]:
        return [self.info(name, n) for n in self._numbers(name)]

    def get_files(self, name: str, version: int) -> dict[str, bytes]:
        meta = self.info(name, version)
        base = self._dir(name) / "versions" / str(version)
        out: dict[str, bytes] = {}
        for fname, digest in meta.files.items():
            blob = (base / fname).read_bytes()
            if hashlib.sha256(blob).hexdigest() != digest:
                raise ModelStoreError(
                    f"file {fname!r} of model {name!r} v{version} does not match its recorded "
                    f"sha256 (at {base}); the store was modified by hand: publish a new version"
                )
            out[fname] = blob
        return out

    def latest(self, name: str) -> int:
        path = self._dir(name) / "latest"
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            raise self._missing(name) from None
        if not text.isdigit():
            raise ModelStoreError(f"latest pointer {path} holds {text!r}, not a version number")
        return int(text)

    def latest_token(self, name: str) -> Hashable | None:
        # The pointer's content, not its stat: an inode reused within the filesystem's
        # timestamp granularity would hide a move. Reading two bytes costs what a stat does.
        try:
            return (self._dir(name) / "latest").read_bytes()
        except FileNotFoundError:
            return None

    def set_latest(self, name: str, version: int) -> None:
        mdir = self._dir(name)
        with self._locked(mdir):
            if version not in self._numbers(name):
                raise self._missing(name, version)
            self._write_latest(mdir, version)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and (p / "versions").is_dir()
        )

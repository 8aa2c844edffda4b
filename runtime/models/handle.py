"""The model an inference function serves, swapped atomically when a new version lands.

:func:`open_model` gives a :class:`ModelHandle`. ``start()`` loads the latest version
(running the model's bootstrap hook first when the store has none), then a poll thread
reads the ``latest`` pointer (a few bytes) every ``ref.poll_seconds``, and at once when
the store pushes a move (PostgreSQL's ``NOTIFY``, see :meth:`ModelStore.watch`; polling
stays the fallback); ``refresh()`` does the same check at once (call it on a
``mlfn.model.published`` event). A swap replaces one reference:
a request holds the :class:`LoadedModel` it took with ``current()`` until it finishes.
The handle follows the pointer both ways, so a rollback (``set_latest``) reaches serving too.

A *pinned* handle (``version=N``, from ``settings.models.model_version`` / ``MLFN_MODEL_VERSION``)
loads exactly version N and never follows ``latest``: no poll thread, and ``refresh()``
only logs why it does nothing. ``mlfn dev`` pins the instances of each revision to the
version that revision was created for, so that a new version makes a new revision.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import ModelNotFoundError, ModelStoreError
from runtime.models.bootstrap import BootstrapHook, bootstrap_for
from runtime.models.store import ModelStore, PointerWatch
from runtime.settings import RuntimeSettings
from runtime.spec import ModelRef

__all__ = ["LoadedModel", "ModelHandle", "open_model"]

log = logging.getLogger("mlfn.models")


@dataclass(frozen=True)
class LoadedModel:
    """One loaded version: what a batch of requests runs on.

    Attributes:
        name: the model's name.
        version: its version number.
        model: the backend's object (a scikit-learn estimator, a ``TorchModel``).
        metadata: the version's metadata (``ModelVersion`` as JSON values).
    """

    name: str
    version: int
    model: Any
    metadata: dict[str, Any] = field(default_factory=dict)


class ModelHandle:
    """One served model; thread-safe.

    Args:
        ref: the function's model reference (name, backend, poll interval).
        store: where versions live.
        bootstrap: publishes a first version when the store has none.
        version: pin the handle to this version (None: follow ``latest``).
    """

    def __init__(
        self,
        ref: ModelRef,
        store: ModelStore,
        *,
        bootstrap: BootstrapHook | None = None,
        version: int | None = None,
    ) -> None:
        self.ref = ref
        self.store = store
        self.bootstrap = bootstrap
        self.pinned = version
        self._current: LoadedModel | None = None
        self._token: Hashable | None = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: PointerWatch | None = None
        self._listeners: list[Callable[[LoadedModel], None]] = []

    @property
    def ready(self) -> bool:
        """True once a version is loaded."""
        return self._current is not None

    def current(self) -> LoadedModel:
        """The loaded version now; take it once per batch and keep it for the batch."""
        loaded = self._current
        if loaded is None:
            raise ModelStoreError(
                f"model {self.ref.name!r} is not loaded yet; call start() and wait for ready"
            )
        return loaded

    def on_swap(self, listener: Callable[[LoadedModel], None]) -> None:
        """Call ``listener(loaded)`` after each load or swap (e.g. to set a metrics gauge)."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Load the latest version (bootstrapping an empty store), then start polling.

        A pinned handle loads its version and does not poll.

        Raises:
            ModelNotFoundError: the store has no version and there is no bootstrap hook,
                or the pinned version does not exist.
            ModelStoreError: the version cannot be read or its backend does not match.
        """
        self.load_now()
        if self.pinned is not None:
            return
        name = self.ref.name
        if self._thread is None:
            self._stop.clear()
            self._watch = self.store.watch(name)
            self._thread = threading.Thread(
                target=self._poll, name=f"mlfn-model-poll-{name}", daemon=True
            )
            self._thread.start()

    def load_now(self) -> None:
        """Bootstrap an empty store, then load the latest (or pinned) version; no polling.

        ``start()`` begins with this; a server under gevent calls it in a native thread
        first, so that training a bootstrap version never stalls its event loop.
        """
        if self.pinned is not None:
            if self._current is None:
                self._load_pinned(self.pinned)
            return
        if self.store.latest_token(self.ref.name) is None:
            self._bootstrap()
        self.refresh()

    def _bootstrap(self) -> None:
        name = self.ref.name
        if self.bootstrap is None:
            raise ModelNotFoundError(
                f"model {name!r} has no published version in {self.store!r} and no bootstrap "
                f"hook; publish one (run the retrain function) or register one with "
                f"@register_bootstrap({name!r})"
            )
        with self.store.exclusive(name):  # one instance bootstraps; the others wait, then load
            if self.store.latest_token(name) is None:
                log.info("model store is empty: bootstrapping", extra={"model": name})
                self.bootstrap(self.store)
        if self.store.latest_token(name) is None:
            raise ModelNotFoundError(
                f"the bootstrap hook of model {name!r} returned without publishing a version"
            )

    def _load_pinned(self, version: int) -> None:
        name = self.ref.name
        with self._refresh_lock:
            try:
                meta = self.store.info(name, version)
            except ModelNotFoundError as err:
                raise ModelNotFoundError(
                    f"{err}; this handle is pinned to v{version} (MLFN_MODEL_VERSION): "
                    "publish that version or unset the pin"
                ) from err
            self._check_backend(version, meta.backend)
            loaded = self.store.load(name, version)
            self._current = loaded
        log.info("model loaded (pinned)", extra={"model": name, "version": version})
        for listener in self._listeners:
            listener(loaded)

    def _check_backend(self, version: int, backend: str) -> None:
        if backend != self.ref.backend:
            raise ModelStoreError(
                f"model {self.ref.name!r} v{version} was published with backend {backend!r} "
                f"but the function declares {self.ref.backend!r}; fix model= in the spec"
            )

    def refresh(self) -> bool:
        """Check the ``latest`` pointer now; load and swap if it names another version.

        A pinned handle does nothing (it logs why): its version is fixed.

        Returns:
            True if a different version is now served.
        """
        name = self.ref.name
        if self.pinned is not None:
            log.info(
                "model pinned: not following latest",
                extra={"model": name, "version": self.pinned, "reason": "MLFN_MODEL_VERSION"},
            )
            return False
        with self._refresh_lock:
            token = self.store.latest_token(name)
            if token is None or token == self._token:
                return False
            version = self.store.latest(name)
            old = self._current
            if old is not None and old.version == version:
                self._token = token
                return False
            meta = self.store.info(name, version)
            self._check_backend(version, meta.backend)
            loaded = self.store.load(name, version)
            self._current, self._token = loaded, token
        log.info(
            "model loaded" if old is None else "model swapped",
            extra={"model": name, "version": version, "previous": old and old.version},
        )
        for listener in self._listeners:
            listener(loaded)
        return True

    def _poll(self) -> None:
        reason = "stop() was called"
        failed: Hashable | None = None  # a pointer that failed to load is retried once it moves
        watch = self._watch
        try:
            while True:
                if watch is not None:
                    watch.wait(self.ref.poll_seconds)  # a pushed move, or the poll's turn
                else:
                    self._stop.wait(self.ref.poll_seconds)
                if self._stop.is_set():
                    break
                token = None
                try:
                    token = self.store.latest_token(self.ref.name)
                    if token is None or token != failed:
                        self.refresh()
                except Exception as err:  # keep serving the loaded version
                    failed = token
                    log.warning(
                        "model poll failed; serving the loaded version until latest moves",
                        extra={"model": self.ref.name, "error": str(err)},
                    )
        except BaseException as err:  # pragma: no cover - logged, then the thread ends
            reason = f"{type(err).__name__}: {err}"
            raise
        finally:
            if watch is not None:
                watch.close()
            log.info("model poll stopped", extra={"model": self.ref.name, "reason": reason})

    def stop(self, timeout: float = 5.0) -> None:
        """Stop polling; wait at most ``timeout`` seconds for a load in progress."""
        self._stop.set()
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.wake()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.warning(
                    "model poll did not stop in time",
                    extra={"model": self.ref.name, "timeout_s": timeout},
                )


def model_store(settings: RuntimeSettings) -> ModelStore:
    """The model store the settings name: PostgreSQL with ``MLFN_DATABASE_URL``, else the
    local directory (``MLFN_MODEL_STORE``, default ``HOME/models``)."""
    from runtime.stores import open_stores

    return open_stores(settings).models


def open_model(
    ref: ModelRef,
    settings: RuntimeSettings,
    *,
    bootstrap: BootstrapHook | None = None,
    store: ModelStore | None = None,
) -> ModelHandle:
    """A handle on the model ``ref`` names; call ``start()`` (in a background thread) next.

    Args:
        ref: the inference function's ``spec.model``.
        settings: read for the store's location and ``model_version`` (a pin: the handle
            serves exactly that version and does not follow ``latest``).
        bootstrap: publishes a first version into an empty store; default: the hook
            registered for ``ref.name`` with ``@register_bootstrap``, unless
            ``settings.models.model_bootstrap`` is off (``MLFN_MODEL_BOOTSTRAP=false``).
        store: default: :func:`model_store` of the settings.
    """
    return ModelHandle(
        ref,
        store or model_store(settings),
        bootstrap=bootstrap
        or (bootstrap_for(ref.name) if settings.models.model_bootstrap else None),
        version=settings.models.model_version,
    )

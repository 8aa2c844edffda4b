"""Pinned model versions: ``/v2/models/{name}/versions/{v}/infer`` answered by version v.

The served version goes through the batcher as usual. Another version is loaded from the
model store on first use and kept in a small least-recently-used cache (a few versions:
a canary and the version before it, typically). A version that does not exist is a 404
naming the versions that do.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from runtime.server.errors import NotFound

__all__ = ["PinnedVersions"]

CACHED_VERSIONS = 3
"""Versions other than the served one kept loaded, least recently used evicted first."""


class PinnedVersions:
    """Loads and caches the versions requests pin, beside the served one."""

    def __init__(self, size: int = CACHED_VERSIONS) -> None:
        self.size = size
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def pinned(self, model: Any, version: str) -> Any | None:
        """The loaded version ``version`` names; None when it is the one being served.

        Raises:
            NotFound: there is no such version (the message names those that exist).
        """
        served = model.current() if model is not None else None
        if served is not None and version == str(served.version):
            return None
        store = getattr(model, "store", None)
        ref = getattr(model, "ref", None)
        if store is None or ref is None:
            have = "none (it serves no model)" if served is None else str(served.version)
            raise NotFound(f"no version {version!r} here; versions: {have}")
        numbers = [v.version for v in store.versions(ref.name)]
        try:
            number = int(version)
        except ValueError:
            number = -1
        if number not in numbers:
            have = ", ".join(str(n) for n in numbers) or "none"
            raise NotFound(
                f"model {ref.name!r} has no version {version!r}; versions: {have} "
                f"(served: {served.version if served is not None else 'none'})"
            )
        with self._lock:
            loaded = self._cache.get(number)
            if loaded is not None:
                self._cache.move_to_end(number)
                return loaded
        loaded = _load(store, ref, number)
        with self._lock:
            self._cache[number] = loaded
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return loaded


def _load(store: Any, ref: Any, number: int) -> Any:
    """Load off gevent's event loop when under gevent (reading a model is blocking work)."""
    import sys

    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        from gevent import get_hub

        return get_hub().threadpool.apply(store.load, (ref.name, number))
    return store.load(ref.name, number)

"""Pure routing: which function a request is for, and which revision serves it.

- :func:`route` maps a Host header (``<function>.<namespace>.<domain>``, as Knative's
  ingress does) or a path prefix (``/<function>/...``) to a function and the path the
  function sees.
- :class:`Traffic` is a revision traffic split by percent, with Knative's rollout moves:
  a new latest revision, ``rollout`` to P%, ``promote`` and ``rollback``.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from localplatform.errors import RolloutError

__all__ = ["RolloutError", "Route", "Traffic", "route"]

CONTROL_PREFIX = "/_mlfn/"
UI_PATH = CONTROL_PREFIX + "ui/"
"""Where the gateway serves the web console (``localplatform.console``)."""
"""Path prefix of the platform's own API; never a function name (names are DNS labels)."""


@dataclass(frozen=True)
class Route:
    """A routed request: the function and the path forwarded to it."""

    function: str
    path: bytes


def route(
    host: bytes | None, path: bytes, functions: Collection[str], namespace: str, domain: str
) -> Route | None:
    """Route by Host header first, then by the first path segment.

    >>> route(b"predict.default.example.com", b"/v2/x", {"predict"}, "default", "example.com")
    Route(function='predict', path=b'/v2/x')
    >>> route(b"127.0.0.1:8080", b"/predict/v2/x?a=1", {"predict"}, "default", "example.com")
    Route(function='predict', path=b'/v2/x?a=1')
    >>> route(b"127.0.0.1", b"/predict", {"predict"}, "default", "example.com")
    Route(function='predict', path=b'/')
    """
    if host:
        name = host.split(b":", 1)[0].decode("latin-1").lower()
        label, _, rest = name.partition(".")
        if label in functions and rest in (
            f"{namespace}.{domain}",
            f"{namespace}.svc.cluster.local",
            f"{namespace}.svc",
            namespace,
        ):
            return Route(label, path or b"/")
    if path.startswith(b"/"):
        end = len(path)
        for sep in (b"/", b"?"):
            i = path.find(sep, 1)
            if i != -1:
                end = min(end, i)
        first = path[1:end].decode("latin-1")
        if first in functions:
            rest_path = path[end:]
            if not rest_path.startswith(b"/"):
                rest_path = b"/" + rest_path
            return Route(first, rest_path)
    return None


class Traffic:
    """Percent of requests per revision (revision names in creation order).

    ``latest`` is the newest revision; ``previous`` the one that served before it (the
    revision holding most traffic when ``latest`` was added, so a revision that was rolled
    back never serves again because a newer one arrived).
    """

    def __init__(self) -> None:
        self.revisions: list[str] = []
        self.percent: dict[str, int] = {}
        self._names: list[str] = []
        self._cumulative: list[int] = []
        self._stable: str | None = None

    @property
    def latest(self) -> str | None:
        return self.revisions[-1] if self.revisions else None

    @property
    def previous(self) -> str | None:
        if len(self.revisions) < 2:
            return None
        return self._stable or self.revisions[-2]

    def add(self, revision: str, percent: int = 100) -> None:
        """A new latest revision gets ``percent``; the one serving most now the rest."""
        prev = max(self.percent, key=self.percent.__getitem__) if self.percent else None
        self._stable = prev
        self.revisions.append(revision)
        if prev is None or percent >= 100:
            self._set({revision: 100})
        else:
            self._set({revision: percent, prev: 100 - percent})

    def rollout(self, percent: int) -> None:
        """Send ``percent`` of requests to the latest revision and the rest to the previous."""
        if not 0 <= percent <= 100:
            raise RolloutError(f"percent must be between 0 and 100, got {percent}")
        latest, prev = self.latest, self.previous
        if latest is None:
            raise RolloutError("the function has no revision yet")
        if prev is None:
            if percent != 100:
                raise RolloutError(
                    f"only one revision ({latest}); change the function to create another "
                    "before splitting traffic"
                )
            self._set({latest: 100})
            return
        self._set({latest: percent, prev: 100 - percent})

    def promote(self) -> None:
        """All traffic to the latest revision."""
        self.rollout(100)

    def rollback(self) -> None:
        """All traffic back to the previous revision."""
        if self.previous is None:
            raise RolloutError(f"only one revision ({self.latest}); nothing to roll back to")
        self.rollout(0)

    def _set(self, split: dict[str, int]) -> None:
        self.percent = {name: p for name, p in split.items() if p > 0}
        self._names = list(self.percent)
        total = 0
        self._cumulative = []
        for name in self._names:
            total += self.percent[name]
            self._cumulative.append(total)

    def pick(self, rng: random.Random) -> str:
        """A revision, chosen with probability proportional to its percent."""
        names = self._names
        if len(names) == 1:
            return names[0]
        if not names:
            raise RolloutError("the function has no revision with traffic")
        return names[bisect.bisect_right(self._cumulative, rng.randrange(100))]

    def routable(self, revision: str) -> bool:
        return self.percent.get(revision, 0) > 0

    def describe(self) -> Sequence[tuple[str, int]]:
        return [(name, self.percent.get(name, 0)) for name in self.revisions]

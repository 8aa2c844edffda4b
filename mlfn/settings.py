"""The root settings object the command line reads once: every package's section.

Example:
    >>> s = Settings()
    >>> s.eventing.partitions, s.platform.port
    (4, 8080)
"""

from __future__ import annotations

from knative.settings import ClusterRoot
from localplatform.settings import LocalRoot

__all__ = ["Settings"]


class Settings(LocalRoot, ClusterRoot):
    """All of mlfn's settings: ``common``, ``server``, ``models``, ``loop``, ``eventing``,
    ``knative``, ``platform``."""

"""What one forked instance runs: the runtime's server, with eventing's Kafka emitters.

The default of ``MLFN_PLATFORM_SERVER``. A retrain function's announcements
(``mlfn.model.published``) go to the broker's Kafka topic, found through the settings or
the platform's run file (:func:`eventing.sinks.emitters_for`).
"""

from __future__ import annotations

from eventing.sinks import emitters_for
from localplatform.settings import LocalRoot
from runtime.function import Function
from runtime.server import run as serve

__all__ = ["run"]


def run(function: Function, settings: LocalRoot, port: int, host: str) -> None:
    """Serve ``function`` on ``host:port`` until SIGTERM (see :func:`runtime.server.run`)."""
    serve(function, settings, port, host, emitters=emitters_for(settings))

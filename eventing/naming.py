"""Names of sources and triggers, their consumer groups and CloudEvent ``source``: one scheme
for both back ends (the local eventing plane and the rendered Knative objects).

- A KafkaSource is named after its function: ``<fn>`` when it has one source,
  ``<fn>-<i>`` when it has several (or the ``name`` the spec gives). Its consumer group
  is ``mlfn-<ns>-<source>`` unless the spec gives one; the ``source`` of a record it wraps
  is ``/apis/v1/namespaces/<ns>/kafkasources/<source>#<topic>`` (Knative's).
- A trigger is named ``<fn>-<broker>`` (``-t<i>`` from the second subscription on), or
  the ``name`` the spec gives; its consumer group is ``knative-trigger-<ns>-<trigger>``
  (Knative's Kafka broker).
- :data:`SOURCE_EXTENSION`: every event a source delivers carries the source's name in
  this extension (on Knative a ``ceOverrides`` extension of the KafkaSource), so a
  Trigger can select a source's events, wrapped records and CloudEvent records alike.

Names are DNS labels (lower case, ``-``, at most 63 characters), as Kubernetes requires.
"""

from __future__ import annotations

import re

from runtime.spec import FunctionSpec, KafkaSource, Subscription

__all__ = [
    "SOURCE_EXTENSION",
    "dns_name",
    "kafka_source_uri",
    "source_group",
    "source_name",
    "trigger_group",
    "trigger_name",
]

SOURCE_EXTENSION = "mlfnsource"
"""The CloudEvent extension that names the source an event came through."""

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def dns_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1123 label from ``parts`` (``dns_name("predict", "digits.raw")`` -> ``predict-digits-raw``)."""
    text = _NOT_DNS.sub("-", "-".join(parts).lower()).strip("-")
    return text[:limit].rstrip("-") or "x"


def source_name(spec: FunctionSpec, index: int, source: KafkaSource) -> str:
    """The name of ``spec``'s source number ``index``.

    Example:
        >>> from runtime.spec import FunctionSpec, KafkaSource
        >>> s = FunctionSpec(name="prep", kind="event", module="m", entrypoint="f",
        ...                  sources=[KafkaSource(topics=["digits.raw"])])
        >>> source_name(s, 0, s.sources[0])
        'prep'
    """
    if source.name:
        return source.name
    return spec.name if len(spec.sources) == 1 else dns_name(spec.name, str(index))


def source_group(namespace: str, name: str, source: KafkaSource) -> str:
    """The consumer group of source ``name``: the spec's, else ``mlfn-<ns>-<name>``."""
    return source.consumer_group or f"mlfn-{namespace}-{name}"


def kafka_source_uri(namespace: str, name: str, topic: str) -> str:
    """The CloudEvent ``source`` of a record that source ``name`` wraps (Knative's format)."""
    return f"/apis/v1/namespaces/{namespace}/kafkasources/{name}#{topic}"


def trigger_name(spec: FunctionSpec, index: int, sub: Subscription) -> str:
    """The name of ``spec``'s subscription number ``index``."""
    if sub.name:
        return sub.name
    return dns_name(spec.name, sub.broker, *(["t" + str(index)] if index else []))


def trigger_group(namespace: str, name: str) -> str:
    """The consumer group of trigger ``name``, as Knative's Kafka broker names it."""
    return f"knative-trigger-{namespace}-{name}"

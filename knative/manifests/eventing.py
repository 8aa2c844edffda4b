"""Eventing objects: KafkaSources, the Kafka Broker and its ConfigMap, Triggers, KafkaSinks, JobSinks.

Knative sources discard what the sink replies. A sourced function that emits events
therefore receives its records *through* the broker: the KafkaSource's sink is the
broker, and a Trigger delivers them to the function, so its reply lands on the broker as
it does on the local platform. The KafkaSource stamps every event with its name in the
``mlfnsource`` extension (``ceOverrides``), and the Trigger filters on it: records that
already are CloudEvents keep their own type and source, and reach the function too.
A source with ``ordering: ordered`` gets a Trigger with Knative's
``kafka.eventing.knative.dev/delivery.order: ordered`` (the broker keeps per-key order:
its ingress partitions by the ``partitionkey`` extension, the record's key).

Names and consumer groups come from :mod:`eventing.naming`, as on the local platform.
"""

from __future__ import annotations

from collections.abc import Iterable

from eventing.naming import SOURCE_EXTENSION, source_group, source_name, trigger_name
from knative.manifests.common import (
    JOB_EVENT_DIR,
    JOBSINK_API,
    KAFKA_SINK_API,
    Obj,
    RenderOptions,
    delivery_spec,
    dns_name,
    is_topic,
    jobsink_name,
    kafka_sink_name,
    metadata,
    subscriber_ref,
)
from knative.manifests.service import container, pod_placement, tmp_volume
from runtime.spec import FunctionSpec, KafkaSource, Subscription

__all__ = [
    "BROKER_CONFIG",
    "DELIVERY_ORDER",
    "KAFKA_EVENT_TYPE",
    "broker",
    "broker_config",
    "brokers_used",
    "dead_letter_topics",
    "jobsink",
    "kafka_sink",
    "kafka_source_name",
    "kafka_sources",
    "source_trigger",
    "triggers",
]

BROKER_CONFIG = "kafka-broker-config"
KAFKA_EVENT_TYPE = "dev.knative.kafka.event"
"""The CloudEvent type a KafkaSource gives records that carry no CloudEvent of their own."""


DELIVERY_ORDER = "kafka.eventing.knative.dev/delivery.order"
"""The Trigger annotation of Knative's Kafka broker: ``ordered`` or ``unordered`` (default)."""
KEY_TYPE_LABEL = "kafkasources.sources.knative.dev/key-type"
"""The KafkaSource label that chooses the key deserializer (string, int, float, byte-array)."""


def kafka_source_name(spec: FunctionSpec, index: int, source: KafkaSource) -> str:
    return source_name(spec, index, source)


def _routes_through_broker(spec: FunctionSpec) -> bool:
    return bool(spec.reply_to_broker) and not spec.job


def kafka_sources(spec: FunctionSpec, opts: RenderOptions) -> list[Obj]:
    """One KafkaSource (``sources.knative.dev/v1beta1``) per source in ``spec``."""
    out = []
    for i, src in enumerate(spec.sources):
        name = kafka_source_name(spec, i, src)
        if _routes_through_broker(spec):
            sink = {
                "ref": {
                    "apiVersion": "eventing.knative.dev/v1",
                    "kind": "Broker",
                    "name": spec.reply_to_broker,
                    "namespace": opts.namespace,
                }
            }
        else:
            sink = {"ref": subscriber_ref(spec, opts.namespace)}
        meta = metadata(name, opts.namespace, spec.name)
        if src.key_type != "string":  # Knative reads the key type from this label
            meta["labels"] = {**meta.get("labels", {}), KEY_TYPE_LABEL: src.key_type}
        out.append(
            {
                "apiVersion": "sources.knative.dev/v1beta1",
                "kind": "KafkaSource",
                "metadata": meta,
                "spec": {
                    "bootstrapServers": [opts.bootstrap_servers],
                    "topics": list(src.topics),
                    "consumerGroup": source_group(opts.namespace, name, src),
                    "initialOffset": src.initial_offset,
                    "ordering": src.ordering,
                    "delivery": delivery_spec(src.delivery, opts.namespace),
                    "sink": sink,
                    "ceOverrides": {"extensions": {SOURCE_EXTENSION: name}},
                },
            }
        )
    return out


def source_trigger(spec: FunctionSpec, index: int, src: KafkaSource, opts: RenderOptions) -> Obj:
    """The Trigger that hands a broker-routed KafkaSource's events to the function."""
    name = kafka_source_name(spec, index, src)
    out = _trigger(
        spec,
        dns_name(name, "records"),
        str(spec.reply_to_broker),
        [{"exact": {SOURCE_EXTENSION: name}}],
        {},
        delivery_spec(src.delivery, opts.namespace),
        opts,
    )
    out["metadata"].setdefault("annotations", {})[DELIVERY_ORDER] = src.ordering
    return out


def _trigger(
    spec: FunctionSpec,
    name: str,
    broker_name: str,
    filters: list[Obj],
    attributes: dict[str, str],
    delivery: Obj,
    opts: RenderOptions,
) -> Obj:
    body: Obj = {"broker": broker_name}
    if filters:
        body["filters"] = filters
    elif attributes:
        body["filter"] = {"attributes": dict(attributes)}
    body["subscriber"] = {"ref": subscriber_ref(spec, opts.namespace)}
    body["delivery"] = delivery
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": metadata(name, opts.namespace, spec.name),
        "spec": body,
    }


def _subscription_name(spec: FunctionSpec, index: int, sub: Subscription) -> str:
    return trigger_name(spec, index, sub)


def triggers(spec: FunctionSpec, opts: RenderOptions) -> list[Obj]:
    """A Trigger per subscription (``filters`` dialect, or legacy ``filter.attributes``),
    plus one per broker-routed KafkaSource."""
    out = [
        _trigger(
            spec,
            _subscription_name(spec, i, sub),
            sub.broker,
            [dict(f) for f in sub.filters],
            sub.attributes,
            delivery_spec(sub.delivery, opts.namespace),
            opts,
        )
        for i, sub in enumerate(spec.subscriptions)
    ]
    if _routes_through_broker(spec):
        out += [source_trigger(spec, i, src, opts) for i, src in enumerate(spec.sources)]
    return out


def brokers_used(specs: Iterable[FunctionSpec]) -> list[str]:
    """Broker names the specs subscribe to, reply to or route sources through, in order."""
    names: dict[str, None] = {}
    for spec in specs:
        for sub in spec.subscriptions:
            names[sub.broker] = None
        if spec.reply_to_broker and (spec.emits or spec.sources or spec.subscriptions):
            names[spec.reply_to_broker] = None
    return list(names)


def broker_config(opts: RenderOptions) -> Obj:
    """The ConfigMap the Kafka broker class reads: bootstrap servers and topic layout."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(BROKER_CONFIG, opts.namespace),
        "data": {
            "bootstrap.servers": opts.bootstrap_servers,
            "default.topic.partitions": str(opts.partitions),
            "default.topic.replication.factor": str(opts.replication_factor),
        },
    }


def broker(name: str, opts: RenderOptions) -> Obj:
    """A Broker of class Kafka (topic ``knative-broker-<ns>-<name>``)."""
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": metadata(
            name, opts.namespace, annotations={"eventing.knative.dev/broker.class": "Kafka"}
        ),
        "spec": {
            "config": {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": BROKER_CONFIG,
                "namespace": opts.namespace,
            },
            "delivery": {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"},
        },
    }


def dead_letter_topics(specs: Iterable[FunctionSpec]) -> list[str]:
    """Kafka topics functions publish to: dead-letter sinks that are topic names."""
    topics: dict[str, None] = {}
    for spec in specs:
        for d in [s.delivery for s in spec.sources] + [s.delivery for s in spec.subscriptions]:
            if d.dead_letter_sink and is_topic(d.dead_letter_sink):
                topics[d.dead_letter_sink] = None
    return list(topics)


def kafka_sink(topic: str, opts: RenderOptions) -> Obj:
    """A KafkaSink: an addressable that writes the events it receives to ``topic``."""
    return {
        "apiVersion": KAFKA_SINK_API,
        "kind": "KafkaSink",
        "metadata": metadata(kafka_sink_name(topic), opts.namespace),
        "spec": {
            "topic": topic,
            "bootstrapServers": [opts.bootstrap_servers],
            "numPartitions": opts.partitions,
            "replicationFactor": opts.replication_factor,
            "contentMode": "binary",
        },
    }


def jobsink(spec: FunctionSpec, opts: RenderOptions) -> Obj:
    """A JobSink: each event starts a Kubernetes Job (work that outlives a request timeout).

    The job runs ``mlfn job <function> --event /etc/jobsink-event/event``: JobSink mounts the
    event there.
    """
    c = container(spec, opts, args=["job", spec.name, "--event", f"{JOB_EVENT_DIR}/event"])
    pod: Obj = {
        "restartPolicy": "Never",
        "serviceAccountName": spec.name,
        "containers": [c],
        "volumes": [tmp_volume()],
        **pod_placement(spec),
    }
    return {
        "apiVersion": JOBSINK_API,
        "kind": "JobSink",
        "metadata": metadata(jobsink_name(spec), opts.namespace, spec.name),
        "spec": {
            "job": {
                "metadata": {"labels": metadata(spec.name, opts.namespace, spec.name)["labels"]},
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": max(spec.timeout_seconds, 600) * 6,
                    "ttlSecondsAfterFinished": 3600,
                    "template": {"spec": pod},
                },
            }
        },
    }

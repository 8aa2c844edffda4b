"""NetworkPolicies: deny all ingress in the namespace, then allow the paths the pipeline uses.

Ingress to function pods comes from the Knative ingress gateway, the activator and
autoscaler (``knative-serving``: the activator proxies requests while a function scales
from zero, the autoscaler scrapes queue-proxy metrics) and the eventing dispatchers
(``knative-eventing``: Kafka source, broker and job-sink dispatchers), and Prometheus
(``opts.monitoring_namespace``) scraping ``/metrics`` on the container port. Egress from
function pods is limited to DNS, Kafka, Knative's data plane, PostgreSQL (the database
namespace, when the stores are shared) and, for the model-pin jobs of canary functions
(:mod:`knative.manifests.pin`), the API server.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from knative.manifests.common import CONTAINER_PORT, Obj, RenderOptions, metadata, uses_stores
from knative.manifests.pin import PIN_ROLE_LABEL, needs_pin
from runtime.spec import FunctionSpec

__all__ = ["QUEUE_PROXY_PORTS", "network_policies"]

QUEUE_PROXY_PORTS = (8012, 8013, 8022, 9090, 9091)
"""queue-proxy: http, h2c, admin, autoscaler metrics, user metrics."""

_NS_LABEL = "kubernetes.io/metadata.name"
_FUNCTION_PODS = {"matchLabels": {"app.kubernetes.io/part-of": "mlfn"}}


def _from_namespaces(*names: str) -> Obj:
    return {
        "namespaceSelector": {
            "matchExpressions": [{"key": _NS_LABEL, "operator": "In", "values": sorted(set(names))}]
        }
    }


def _tcp(*ports: int) -> list[Obj]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def _policy(name: str, opts: RenderOptions, spec: Obj) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, opts.namespace),
        "spec": spec,
    }


def _database_egress(specs: Sequence[FunctionSpec], opts: RenderOptions) -> list[Obj]:
    """Egress to PostgreSQL when a function gets the database Secret."""
    if not opts.database_secret or not any(uses_stores(s) for s in specs):
        return []
    return [{"to": [_from_namespaces(opts.database_namespace)], "ports": _tcp(opts.database_port)}]


def _artifact_egress(specs: Sequence[FunctionSpec], opts: RenderOptions) -> list[Obj]:
    """Egress to the object store's port when the files live there (anywhere: an
    S3 endpoint is usually outside the cluster)."""
    if not (opts.database_secret and opts.artifact_url) or not any(uses_stores(s) for s in specs):
        return []
    endpoint = urlsplit(opts.artifact_endpoint_url or "https://s3.amazonaws.com")
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    return [{"ports": _tcp(port)}]


def network_policies(specs: Sequence[FunctionSpec], opts: RenderOptions) -> list[Obj]:
    """The namespace's policies: default deny, Knative to functions, functions to Kafka."""
    kafka_port = (
        int(opts.bootstrap_servers.rsplit(":", 1)[-1]) if ":" in opts.bootstrap_servers else 9092
    )
    dns = {
        "to": [_from_namespaces("kube-system")],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    out = [
        _policy("mlfn-default-deny-ingress", opts, {"podSelector": {}, "policyTypes": ["Ingress"]}),
        _policy(
            "mlfn-allow-knative-to-functions",
            opts,
            {
                "podSelector": _FUNCTION_PODS,
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            _from_namespaces(
                                "knative-serving", "knative-eventing", opts.ingress_namespace
                            )
                        ],
                        "ports": _tcp(*QUEUE_PROXY_PORTS),
                    }
                ],
            },
        ),
        _policy(
            "mlfn-allow-functions-egress",
            opts,
            {
                "podSelector": _FUNCTION_PODS,
                "policyTypes": ["Egress"],
                "egress": [
                    dns,
                    {"to": [_from_namespaces(opts.kafka_namespace)], "ports": _tcp(kafka_port)},
                    *_database_egress(specs, opts),
                    *_artifact_egress(specs, opts),
                    {
                        "to": [
                            _from_namespaces(
                                "knative-serving", "knative-eventing", opts.ingress_namespace
                            )
                        ]
                    },
                ],
            },
        ),
    ]
    if opts.metrics_scrape != "none":
        out.append(
            _policy(
                "mlfn-allow-monitoring-to-functions",
                opts,
                {
                    "podSelector": _FUNCTION_PODS,
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [_from_namespaces(opts.monitoring_namespace)],
                            "ports": _tcp(CONTAINER_PORT),
                        }
                    ],
                },
            )
        )
    if any(needs_pin(s) for s in specs):
        out.append(
            _policy(
                "mlfn-allow-model-pin-to-apiserver",
                opts,
                {
                    "podSelector": {"matchLabels": dict(PIN_ROLE_LABEL)},
                    "policyTypes": ["Egress"],
                    "egress": [{"ports": _tcp(443, 6443)}],
                },
            )
        )
    return out

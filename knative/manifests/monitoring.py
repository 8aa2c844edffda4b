"""How Prometheus reaches the functions' ``/metrics`` on a cluster (``opts.metrics_scrape``).

- ``annotations``: ``prometheus.io/scrape``, ``/port``, ``/path`` on each revision's pods
  (what Prometheus' stock ``kubernetes-pods`` job reads);
- ``podmonitor``: one ``PodMonitor`` (``monitoring.coreos.com/v1``, Prometheus Operator)
  selecting mlfn's function pods, scraping the user container's port;
- ``none``: nothing rendered.

Either way the series carry ``namespace`` (a target label) and, from the server,
``function`` and ``revision`` (Knative's ``K_REVISION``), which Flagger's queries select
on. Prometheus scrapes the pod directly on the container port (8080), past
queue-proxy, so the NetworkPolicy lets the monitoring namespace in on that port.
"""

from __future__ import annotations

from knative.manifests.common import CONTAINER_PORT, Obj, RenderOptions, metadata

__all__ = ["PODMONITOR_API", "pod_monitor", "scrape_annotations"]

PODMONITOR_API = "monitoring.coreos.com/v1"
METRICS_PATH = "/metrics"


def scrape_annotations(opts: RenderOptions) -> dict[str, str]:
    """Pod annotations for ``annotations`` mode (empty otherwise)."""
    if opts.metrics_scrape != "annotations":
        return {}
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(CONTAINER_PORT),
        "prometheus.io/path": METRICS_PATH,
    }


def pod_monitor(opts: RenderOptions) -> list[Obj]:
    """The namespace's ``PodMonitor`` in ``podmonitor`` mode (nothing otherwise).

    Knative names the serving container's port ``user-port`` in the pod it creates; the
    endpoint targets it by number through a relabelling, so it does not depend on that.
    """
    if opts.metrics_scrape != "podmonitor":
        return []
    return [
        {
            "apiVersion": PODMONITOR_API,
            "kind": "PodMonitor",
            "metadata": metadata("mlfn-functions", opts.namespace),
            "spec": {
                "selector": {
                    "matchLabels": {"app.kubernetes.io/part-of": "mlfn"},
                    "matchExpressions": [
                        {"key": "serving.knative.dev/revision", "operator": "Exists"}
                    ],
                },
                "namespaceSelector": {"matchNames": [opts.namespace]},
                "podMetricsEndpoints": [
                    {
                        "targetPort": CONTAINER_PORT,
                        "path": METRICS_PATH,
                        "interval": "15s",
                        "relabelings": [
                            {
                                "sourceLabels": ["__meta_kubernetes_pod_container_name"],
                                "regex": "function",
                                "action": "keep",
                            }
                        ],
                    }
                ],
            },
        }
    ]

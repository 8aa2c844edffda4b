"""The web console of ``mlfn dev``, served by the gateway at ``/_mlfn/ui``.

Static files (``static/``: one HTML page, its script and style sheet; no CDN, no build
step) and the JSON the page polls: ``/_mlfn/status`` (functions, revisions, instances,
cold starts, eventing figures; the gateway's own), ``/_mlfn/graph`` (the pipeline, from
:func:`eventing.graph.pipeline_graph`) and ``/_mlfn/models`` (every model's versions with
their holdout metrics and gate decisions, from the model store).
"""

from localplatform.console.api import (
    UI_PATH,
    model_history,
    model_names,
    pipeline,
    static_response,
)

__all__ = ["UI_PATH", "model_history", "model_names", "pipeline", "static_response"]

"""swap (rollout ``replace``), canary (rollout ``canary``, 30%, accuracy >= 0.8) and boot (``canary``,
bootstrapped by its first instance): each answers its model's constant label; a version published with
``extra={"broken": True}`` makes the function fail."""

from __future__ import annotations

from pydantic import BaseModel

from runtime import LoadedModel, ModelStore, inference, register_bootstrap


class Req(BaseModel):
    x: float = 0.0


class Resp(BaseModel):
    label: int


def _answer(batch: list[Req], model: LoadedModel) -> list[Resp]:
    if model.metadata.get("extra", {}).get("broken"):
        raise RuntimeError(f"model v{model.version} is broken on purpose")
    labels = model.model.predict([[r.x, 0.0, 0.0] for r in batch])
    return [Resp(label=int(v)) for v in labels]


@inference(request=Req, response=Resp, model={"name": "swap-m", "poll_seconds": 0.2})
def swap(batch: list[Req], model: LoadedModel) -> list[Resp]:
    return _answer(batch, model)


@inference(
    request=Req,
    response=Resp,
    model={"name": "canary-m", "poll_seconds": 0.2},
    rollout={
        "strategy": "canary",
        "step_weight": 30,
        "max_weight": 60,
        "threshold": 2,  # one interval without data (a busy machine) is forgiven
        "min_success_rate": 95,
        "max_latency_p99": 5,  # seconds: latencies on a shared machine are noise
        "min_model_quality": 0.8,
    },
)
def canary(batch: list[Req], model: LoadedModel) -> list[Resp]:
    return _answer(batch, model)


@inference(
    request=Req,
    response=Resp,
    model={"name": "boot-m", "poll_seconds": 0.2},
    rollout={"strategy": "canary", "step_weight": 30},
)
def boot(batch: list[Req], model: LoadedModel) -> list[Resp]:
    """Its model has no version when ``mlfn dev`` starts: its first instance bootstraps one."""
    return _answer(batch, model)


@register_bootstrap("boot-m")
def _bootstrap(store: ModelStore) -> None:
    import numpy as np
    from sklearn.dummy import DummyClassifier

    clf = DummyClassifier(strategy="constant", constant=5).fit(np.zeros((2, 3)), [5, 9])
    store.publish("boot-m", clf, extra={"bootstrap": True})

"""mlfn's runtime: the function model (decorators, specs) and the server that runs one function.

User code in ``functions/`` imports only from here::

    from runtime import inference, event, CloudEvent, Context
"""

from eventing.codec import CloudEvent, new_event
from runtime.context import Context
from runtime.errors import (
    BatchError,
    DiscoveryError,
    MlfnError,
    ModelNotFoundError,
    ModelStoreError,
    SpecError,
)
from runtime.function import Function, event, inference
from runtime.spec import (
    Batching,
    Delivery,
    EventBatch,
    FunctionSpec,
    KafkaSource,
    ModelRef,
    Resources,
    RetrainPolicy,
    Rollout,
    Scaling,
    Subscription,
    Toleration,
)

__all__ = [
    "Batching",
    "BatchError",
    "CloudEvent",
    "Context",
    "Delivery",
    "DiscoveryError",
    "EventBatch",
    "Function",
    "FunctionSpec",
    "KafkaSource",
    "MlfnError",
    "ModelNotFoundError",
    "ModelRef",
    "ModelStoreError",
    "Resources",
    "RetrainPolicy",
    "Rollout",
    "Scaling",
    "SpecError",
    "Subscription",
    "Toleration",
    "event",
    "inference",
    "new_event",
]

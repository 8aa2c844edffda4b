"""mlfn's runtime: the function model (decorators, specs) and the server that runs one function.

User code in ``functions/`` imports only from here::

    from runtime import inference, event, CloudEvent, Context
"""

from runtime.arrays import Rows, stack
from runtime.context import Context
from runtime.datasets import DataRange, DatasetStore, Row
from runtime.errors import (
    BatchError,
    DiscoveryError,
    InvalidEvent,
    MlfnError,
    ModelNotFoundError,
    ModelStoreError,
    SpecError,
)
from runtime.events import CloudEvent, new_event
from runtime.function import Function, event, inference
from runtime.models import LoadedModel, ModelHandle, ModelStore, open_model, register_bootstrap
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
    "BatchError",
    "Batching",
    "CloudEvent",
    "Context",
    "DataRange",
    "DatasetStore",
    "Delivery",
    "DiscoveryError",
    "EventBatch",
    "Function",
    "FunctionSpec",
    "InvalidEvent",
    "KafkaSource",
    "LoadedModel",
    "MlfnError",
    "ModelHandle",
    "ModelNotFoundError",
    "ModelRef",
    "ModelStore",
    "ModelStoreError",
    "Resources",
    "RetrainPolicy",
    "Rollout",
    "Row",
    "Rows",
    "Scaling",
    "SpecError",
    "Subscription",
    "Toleration",
    "event",
    "inference",
    "new_event",
    "open_model",
    "register_bootstrap",
    "stack",
]

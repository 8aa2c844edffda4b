"""Decorators that record a function's spec, and the :class:`Function` they produce.

Decorators only *record*: they attach a :class:`Function` to the user's callable (as
``__mlfn__``) and return it unchanged, so user code stays plain Python that tests can
call directly.

Example:
    >>> from pydantic import BaseModel
    >>> class Req(BaseModel):
    ...     x: list[float]
    >>> class Resp(BaseModel):
    ...     y: int
    >>> @inference(request=Req, response=Resp, model="digits", batching={"max_batch_size": 64})
    ... def predict(batch: list[Req], model: object) -> list[Resp]:
    ...     return [Resp(y=0) for _ in batch]
    >>> predict.__mlfn__.spec.batching.max_batch_size
    64
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from runtime.errors import SpecError
from runtime.spec import (
    Batching,
    FunctionKind,
    FunctionSpec,
    KafkaSource,
    ModelRef,
    Resources,
    RetrainPolicy,
    Rollout,
    Scaling,
    Subscription,
)

__all__ = ["ATTR", "MODEL_PUBLISHED", "Function", "event", "function_of", "inference"]

MODEL_PUBLISHED = "mlfn.model.published"
"""CloudEvent type announcing a new model version; ``subject`` is the model name."""

ATTR = "__mlfn__"
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Function:
    """A user function with its spec.

    Attributes:
        spec: the recorded spec (single source of truth).
        target: the user's callable.
        request_model: pydantic model of one request (inference functions).
        response_model: pydantic model of one response (inference functions).
        wants_context: the callable takes a second ``ctx``/``model`` argument.
    """

    spec: FunctionSpec
    target: Callable[..., Any]
    request_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    wants_context: bool = False

    @property
    def name(self) -> str:
        return self.spec.name


def function_of(obj: object) -> Function | None:
    """The :class:`Function` recorded on ``obj`` by a decorator, if any."""
    fn = getattr(obj, ATTR, None)
    return fn if isinstance(fn, Function) else None


def default_name(target: Callable[..., Any]) -> str:
    return target.__name__.replace("_", "-").lower()


def _coerce(model: type[M], value: M | Mapping[str, Any] | None, what: str, where: str) -> M:
    if value is None:
        return model()
    if isinstance(value, model):
        return value
    try:
        return model.model_validate(value)
    except ValidationError as err:
        raise SpecError(f"{where}: invalid {what}: {err}") from err


def _positional_arity(target: Callable[..., Any]) -> int:
    params = inspect.signature(target).parameters.values()
    return sum(
        1
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    )


def _build_spec(target: Callable[..., Any], kind: FunctionKind, **fields: Any) -> FunctionSpec:
    where = f"{target.__module__}.{target.__qualname__}"
    try:
        return FunctionSpec(
            kind=kind, module=target.__module__, entrypoint=target.__name__, **fields
        )
    except ValidationError as err:
        raise SpecError(f"{where}: invalid spec: {err}") from err


def inference(
    *,
    request: type[BaseModel],
    response: type[BaseModel],
    name: str | None = None,
    model: str | ModelRef | Mapping[str, Any] | None = None,
    batching: Batching | Mapping[str, Any] | None = None,
    scaling: Scaling | Mapping[str, Any] | None = None,
    resources: Resources | Mapping[str, Any] | None = None,
    rollout: Rollout | Mapping[str, Any] | None = None,
    timeout_seconds: int = 300,
    description: str | None = None,
    env: Mapping[str, str] | None = None,
    grpc: bool | None = None,
) -> Callable[[F], F]:
    """Declare an HTTP inference function.

    The function takes a list of validated requests and the loaded model, and returns
    one response per request: ``def f(batch: list[Req], model: LoadedModel) -> list[Resp]``.
    Without ``batching`` the list always holds one request. ``grpc=True`` serves the
    Open Inference Protocol over gRPC too (see ``FunctionSpec.grpc``).
    """

    def record(target: F) -> F:
        where = f"{target.__module__}.{target.__qualname__}"
        if not (isinstance(request, type) and issubclass(request, BaseModel)):
            raise SpecError(f"{where}: request= must be a pydantic BaseModel subclass")
        if not (isinstance(response, type) and issubclass(response, BaseModel)):
            raise SpecError(f"{where}: response= must be a pydantic BaseModel subclass")
        arity = _positional_arity(target)
        if arity not in (1, 2):
            raise SpecError(
                f"{where}: an inference function takes (batch) or (batch, model); "
                f"it has {arity} required positional parameters"
            )
        model_ref = (
            ModelRef(name=model)
            if isinstance(model, str)
            else _coerce(ModelRef, model, "model", where)
            if model is not None
            else None
        )
        name_ = name or default_name(target)
        # An inference function with a model subscribes to that model's publications, so
        # a new version is swapped in on the event (the store poll is only a fallback).
        model_updates = (
            (
                Subscription(
                    name=f"{name_}-model-updates",
                    filters=({"exact": {"type": MODEL_PUBLISHED, "subject": model_ref.name}},),
                ),
            )
            if model_ref is not None
            else ()
        )
        spec = _build_spec(
            target,
            "inference",
            subscriptions=model_updates,
            name=name_,
            description=description or inspect.getdoc(target) or "",
            model=model_ref,
            batching=_coerce(Batching, batching, "batching", where) if batching else None,
            scaling=_coerce(Scaling, scaling, "scaling", where),
            resources=_coerce(Resources, resources, "resources", where),
            rollout=_coerce(Rollout, rollout, "rollout", where),
            timeout_seconds=timeout_seconds,
            reply_to_broker=None,
            env=dict(env or {}),
            **({} if grpc is None else {"grpc": grpc}),  # the default lives in the spec
        )
        fn = Function(spec, target, request, response, wants_context=arity == 2)
        setattr(target, ATTR, fn)
        return target

    return record


def event(
    *,
    name: str | None = None,
    sources: Iterable[KafkaSource | Mapping[str, Any]] = (),
    subscriptions: Iterable[Subscription | Mapping[str, Any]] = (),
    emits: Sequence[str] = (),
    reply_to_broker: str | None = "default",
    job: bool = False,
    retrain: RetrainPolicy | Mapping[str, Any] | None = None,
    scaling: Scaling | Mapping[str, Any] | None = None,
    resources: Resources | Mapping[str, Any] | None = None,
    timeout_seconds: int = 300,
    description: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Callable[[F], F]:
    """Declare an event function: ``def f(event: CloudEvent[, ctx: Context]) -> CloudEvent | None``.

    ``sources`` are KafkaSources (topics whose records become events); ``subscriptions``
    are Triggers on a broker, with Knative filters. A returned event goes to
    ``reply_to_broker``.
    """

    def record(target: F) -> F:
        where = f"{target.__module__}.{target.__qualname__}"
        arity = _positional_arity(target)
        if arity not in (1, 2):
            raise SpecError(
                f"{where}: an event function takes (event) or (event, ctx); "
                f"it has {arity} required positional parameters"
            )
        spec = _build_spec(
            target,
            "event",
            name=name or default_name(target),
            description=description or inspect.getdoc(target) or "",
            sources=tuple(_coerce(KafkaSource, s, "source", where) for s in sources),
            subscriptions=tuple(
                _coerce(Subscription, s, "subscription", where) for s in subscriptions
            ),
            emits=tuple(emits),
            reply_to_broker=reply_to_broker,
            job=job,
            retrain=_coerce(RetrainPolicy, retrain, "retrain", where) if retrain else None,
            scaling=_coerce(Scaling, scaling, "scaling", where),
            resources=_coerce(Resources, resources, "resources", where),
            timeout_seconds=timeout_seconds,
            env=dict(env or {}),
        )
        fn = Function(spec, target, wants_context=arity == 2)
        setattr(target, ATTR, fn)
        return target

    return record


def plain_function(target: Callable[..., Any], signature_type: str) -> Function:
    """Wrap a plain functions-framework function with a default spec."""
    kind: FunctionKind = "cloudevent" if signature_type == "cloudevent" else "http"
    spec = _build_spec(
        target,
        kind,
        name=default_name(target),
        description=inspect.getdoc(target) or "",
        reply_to_broker="default" if kind == "cloudevent" else None,
    )
    return Function(spec, target)

"""The dispatch core: decode -> call the function -> encode, for every entry point.

The plain JSON route, the Open Inference Protocol route, CloudEvents over HTTP and
``mlfn invoke`` all go through :class:`Dispatcher` (the shape of kserve's
``protocol/dataplane.py``): protocol codecs turn bodies into validated rows or events,
the dispatcher calls the function (through the batcher when the spec asks for it), and
the codecs turn results back into bodies.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import from_json

from runtime import events
from runtime.context import Context
from runtime.errors import InvalidEvent
from runtime.function import Function
from runtime.server import numeric, oip, oip_binary, oip_plan
from runtime.server.batching import Batcher, check_results
from runtime.server.errors import BadRequest, UnsupportedMediaType, from_validation
from runtime.server.metrics import Metrics
from runtime.server.versions import PinnedVersions
from runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from runtime.retraining.emit import EmitterFactory

__all__ = ["Dispatcher", "EventReply", "ModelSource"]

log = logging.getLogger("mlfn.server")


class ModelSource(Protocol):
    """What the server needs of ``runtime.models.ModelHandle``."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def current(self) -> Any: ...
    @property
    def ready(self) -> bool: ...


@dataclass(frozen=True)
class EventReply:
    """Reply of an event entry point: content type, headers and body (or none)."""

    status: int
    headers: dict[str, str]
    body: bytes


def _cooperative_yield() -> Callable[[], object] | None:
    """``gevent.sleep`` when gevent has patched threading (gunicorn's gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return None
    sleep: Callable[[], object] = sys.modules["gevent"].sleep
    return sleep


_PLANS = 128
"""Kept payloads whose :class:`_Plan` a dispatcher remembers (the readers keep 64 each)."""


class _Plan(NamedTuple):
    """The route of a binary header's one small tensor, worked out once (``Dispatcher._plan``)."""

    name: str
    """The request field it fills."""
    whole: bool
    """It holds one whole request (no request dimension)."""
    wanted: list[str] | None
    """The outputs the request names, or None for all."""


def _wanted(payload: Mapping[str, Any]) -> list[str] | None:
    """The outputs an OIP request names (``outputs``), or None for every output."""
    outputs = payload.get("outputs")
    if not isinstance(outputs, list):
        return None
    return [str(o.get("name")) for o in outputs if isinstance(o, dict)]


def _is_json(content_type: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return ctype in ("", "application/json") or ctype.endswith("+json")


class Dispatcher:
    """Runs one function for every protocol.

    Args:
        function: the discovered function.
        settings: settings read at the entry point.
        metrics: where batch sizes and the model version go.
        model: the model handle (inference functions with a model), or None.
        emitters: where the retraining loop's announcements go (``Context.emitters``).

    ``settings.server.batching`` false calls the function once per request, whatever
    ``spec.batching`` says.
    """

    def __init__(
        self,
        function: Function,
        settings: RuntimeSettings,
        metrics: Metrics,
        model: ModelSource | None = None,
        *,
        emitters: EmitterFactory | None = None,
    ) -> None:
        self.function = function
        self.spec = function.spec
        self.settings = settings
        self.metrics = metrics
        self.model = model
        self._version: object = None
        self._context = Context(
            function.spec,
            settings,
            logging.getLogger(f"mlfn.fn.{function.name}"),
            emitters=emitters,
        )
        self.batcher: Batcher[BaseModel, BaseModel] | None = None
        self.versions = PinnedVersions()
        self._plain = oip_plan.plain_fields(function.response_model)  # the fast OIP encoder
        self._binary = oip_binary.HeaderReader()  # binary OIP headers parsed once
        self._plans: dict[int, tuple[Any, _Plan | None]] = {}  # by id() of a kept payload
        # under gevent a request never yields while it runs the model: without a pause a
        # connection whose client answers fast is served again and again, others starve
        self._pause = _cooperative_yield()
        # rows of numbers decoded straight to arrays (None: pydantic decodes every body)
        self._lane = numeric.lane_for(function.request_model)
        if function.request_model is not None:
            self._one = function.request_model
            self._many: TypeAdapter[list[Any]] = TypeAdapter(list[function.request_model])  # type: ignore[name-defined]
        spec_batching = function.spec.batching
        if (
            settings.server.batching
            and spec_batching is not None
            and function.spec.kind == "inference"
        ):
            self.batcher = Batcher(
                self._call,
                spec_batching.max_batch_size,
                spec_batching.max_wait_ms / 1000.0,
                on_batch=metrics.batch_size.observe,
                pause=self._pause,
            )

    # --- inference: the core --------------------------------------------------------

    def _call(self, rows: list[BaseModel]) -> tuple[Sequence[BaseModel], object]:
        loaded = self.model.current() if self.model is not None else None
        version = getattr(loaded, "version", None)
        if version != self._version:
            self._version = version
            if loaded is not None and isinstance(version, int) and not isinstance(version, bool):
                self.metrics.show_model(
                    loaded.name, version, getattr(loaded, "metadata", None) or {}
                )
        target = self.function.target
        out = target(rows, loaded) if self.function.wants_context else target(rows)
        return out, version

    def predict(
        self, rows: list[BaseModel], *, announced: bool = False
    ) -> tuple[list[Any], object]:
        """Validated rows in, one response per row and the model version out."""
        if self.batcher is not None:
            return self.batcher.run(rows, announced=announced)
        if self._pause is not None:
            self._pause()
        self.metrics.batch_size.observe(len(rows))
        out, version = self._call(rows)
        return list(check_results(out, len(rows))), version

    def predict_with(self, loaded: Any, rows: list[BaseModel]) -> tuple[list[Any], object]:
        """Rows on a pinned version ``loaded`` (not the served one): one call, no batcher."""
        if self._pause is not None:
            self._pause()
        self.metrics.batch_size.observe(len(rows))
        target = self.function.target
        out = target(rows, loaded) if self.function.wants_context else target(rows)
        return list(check_results(out, len(rows))), loaded.version

    def announce(self) -> None:
        if self.batcher is not None:
            self.batcher.announce()

    def withdraw(self) -> None:
        if self.batcher is not None:
            self.batcher.withdraw()

    def _encode(self, response: Any, version: object) -> dict[str, Any]:
        if isinstance(response, BaseModel):
            out = response.model_dump(mode="json")
        elif self.function.response_model is not None:
            try:
                out = self.function.response_model.model_validate(response).model_dump(mode="json")
            except ValidationError as err:
                raise TypeError(
                    f"{self.spec.name} returned a value that is not a valid "
                    f"{self.function.response_model.__name__}: {err}"
                ) from err
        else:
            out = dict(response)
        out.setdefault("model_version", version)
        return out

    # --- plain JSON route -----------------------------------------------------------

    def decode_json(self, body: bytes, content_type: str) -> tuple[list[BaseModel], bool]:
        """Rows from a JSON object (one request) or array (many); and whether it was an array."""
        if not _is_json(content_type):
            raise UnsupportedMediaType(
                f"content type {content_type!r} is not supported here; "
                "send JSON with Content-Type: application/json"
            )
        many = body.lstrip()[:1] == b"["
        try:
            if many:
                return self._many.validate_json(body), True
            lane = self._lane
            fast = lane.decode(body) if lane and len(body) >= numeric.MIN_BYTES else None
            return [fast if fast is not None else self._one.model_validate_json(body)], False
        except ValidationError as err:
            raise from_validation(err) from None

    def json_route(self, body: bytes, content_type: str) -> bytes:
        """``POST /``: a request object (or array) in, response(s) with ``model_version`` out."""
        self.announce()
        try:
            rows, many = self.decode_json(body, content_type)
        except BaseException:
            self.withdraw()
            raise
        results, version = self.predict(rows, announced=True)
        encoded = [self._encode(r, version) for r in results]
        return json.dumps(encoded if many else encoded[0]).encode()

    # --- Open Inference Protocol ----------------------------------------------------

    def oip_infer(
        self, body: bytes, headers: Mapping[str, str], version: str | None = None
    ) -> tuple[dict[str, str], bytes]:
        """``POST /v2/models/{name}[/versions/{v}]/infer``: OIP tensors in and out, over REST.

        JSON, or the binary tensor extension when ``Inference-Header-Content-Length`` is
        set; outputs are binary where the request asks (:mod:`runtime.server.oip_binary`).
        """
        length = headers.get(oip_binary.HEADER)
        if length is not None:
            payload, arrays = self._binary.split(body, length)
            kept = self._binary.kept(payload)
            if kept is not None:  # the header seen before: its route and reply kept
                reply = self.oip_reply(payload, arrays, version, arrays_out=True, kept=True)
                return kept.encode_reply(reply, payload)
            choices = self._binary.choices(payload)
        else:
            ctype = headers.get("content-type", "")
            if not _is_json(ctype):
                raise UnsupportedMediaType(
                    f"content type {ctype!r} is not supported; send JSON, or binary tensors "
                    "with an Inference-Header-Content-Length header"
                )
            try:
                payload = from_json(body)  # pydantic-core's parser: json.loads' result, faster
            except ValueError as err:
                raise BadRequest(f"malformed JSON: {err}") from None
            arrays, choices = {}, None
        reply = self.oip_reply(payload, arrays, version, arrays_out=True)
        return oip_binary.encode_reply(reply, payload, choices)

    def _plan_of(self, payload: Any, arrays: Mapping[int, Any]) -> _Plan | None:
        """The :class:`_Plan` of a payload a header reader kept (the same object for
        every request with that header), worked out on its first request."""
        plans = self._plans
        known = plans.get(id(payload))
        if known is not None and known[0] is payload:
            return known[1]
        plan = self._plan(payload, arrays)
        if len(plans) >= _PLANS:
            plans.clear()
        plans[id(payload)] = (payload, plan)  # the payload held: its id stays its own
        return plan

    def _plan(self, payload: Any, arrays: Mapping[int, Any]) -> _Plan | None:
        """The route of a binary request's one small tensor: the field it fills and
        whether it holds one whole request; None where the general path decodes it."""
        if sum(a.size for a in arrays.values()) >= numeric.MIN_ELEMENTS:
            return None  # the numeric lane's (or pydantic's, as the general path says)
        found = oip.one_numeric_input(payload, self._one, arrays)
        if found is None:
            return None
        name, _, whole = found
        return _Plan(name, whole, _wanted(payload))

    def oip_reply(
        self,
        payload: Any,
        arrays: Mapping[int, Any] | None = None,
        version: str | None = None,
        *,
        arrays_out: bool = False,
        kept: bool = False,
    ) -> dict[str, Any]:
        """The protocol-neutral core of an inference request: tensors in, tensors out.

        ``payload`` is the OIP request object (``inputs``, ``outputs``, ``parameters``,
        ``id``); ``arrays`` holds inputs decoded from raw bytes by index; ``version``
        pins a model version (None or the served one: the batcher's current model).
        Both the REST and the gRPC binding call this. ``arrays_out``: an output's ``data``
        may be a flat numpy array (the bindings write it with ``tobytes`` or ``tolist``).
        ``kept``: the payload is one a header reader kept (shared by every request with
        that header, as ``HeaderReader`` and the gRPC ``RequestReader`` hand it out): how
        its tensor maps to rows is worked out once; the rows are the general path's.
        """
        pinned = self.versions.pinned(self.model, version) if version else None
        plan = self._plan_of(payload, arrays) if kept and arrays else None
        self.announce()
        try:
            if plan is not None:
                array = arrays[0]  # type: ignore[index]
                name = plan.name
                raw = (
                    [{name: array.tolist()}] if plan.whole else [{name: v} for v in array.tolist()]
                )
                try:
                    rows = self._many.validate_python(raw)
                except ValidationError as err:
                    raise from_validation(err, where="rows.") from None
                whole = plan.whole
            elif (found := self._lane_rows(payload, arrays)) is not None:
                rows, whole = found
            else:
                raw_rows, whole = oip.decode_inputs(payload, self._one, arrays)
                try:
                    rows = self._many.validate_python(raw_rows)
                except ValidationError as err:
                    raise from_validation(err, where="rows.") from None
        except BaseException:
            self.withdraw()
            raise
        if pinned is None:
            results, served = self.predict(rows, announced=True)
        else:
            self.withdraw()
            results, served = self.predict_with(pinned, rows)
        wanted = plan.wanted if plan is not None else _wanted(payload)
        outputs = None
        if self._plain is not None:
            model = self.function.response_model
            assert model is not None
            outputs = oip_plan.encode_plain(results, model, self._plain, wanted, whole=whole)
            if outputs is not None and not arrays_out:
                for out in outputs:
                    out["data"] = out["data"].tolist()
        if outputs is None:
            encoded = [self._encode(r, served) for r in results]
            for item in encoded:
                item.pop("model_version", None)
            outputs = oip.encode_outputs(encoded, wanted, whole=whole)
        reply: dict[str, Any] = {
            "model_name": self.spec.name,
            "model_version": None if served is None else str(served),
            "outputs": outputs,
        }
        if payload.get("id") not in (None, ""):
            reply["id"] = payload["id"]
        return reply

    def _lane_rows(
        self, payload: Any, arrays: Mapping[int, Any] | None
    ) -> tuple[list[BaseModel], bool] | None:
        """The common binary request (one numeric tensor, its field a rows field of the
        numeric lane) as requests built by the lane, or None: pydantic validates it."""
        if self._lane is None or not arrays:
            return None
        if sum(a.size for a in arrays.values()) < numeric.MIN_ELEMENTS:
            return None
        found = oip.one_numeric_input(payload, self._one, arrays)
        if found is None:
            return None
        name, values, whole = found
        rows = []
        for value in values:
            row = self._lane.from_array(name, value)
            if row is None:
                return None
            rows.append(row)
        return rows, whole

    def oip_metadata(self) -> dict[str, Any]:
        assert self.function.request_model is not None and self.function.response_model
        version = self._version
        return {
            "name": self.spec.name,
            "versions": [] if version is None else [str(version)],
            "platform": f"mlfn-{self.spec.model.backend}" if self.spec.model else "mlfn",
            "inputs": oip.tensor_metadata(self.function.request_model),
            "outputs": oip.tensor_metadata(self.function.response_model),
        }

    # --- CloudEvents ----------------------------------------------------------------

    def model_event(self, headers: Mapping[str, str], body: bytes) -> EventReply:
        """A CloudEvent POSTed to an inference function (``mlfn.model.published``):
        check the store now and swap in a newer version. 202, no reply event."""
        events, _ = self.decode_events(headers, body)
        if self.model is not None and hasattr(self.model, "refresh"):
            swapped = self.model.refresh()
            log.info(
                "model update event %s: %s",
                events[0]["id"],
                "swapped to a newer version" if swapped else "already current",
            )
        return EventReply(202, {}, b"")

    def decode_events(self, headers: Mapping[str, str], body: bytes) -> tuple[list[Any], bool]:
        """Events from binary, structured or batch mode; and whether it was a batch."""
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            if ctype == events.BATCH_CONTENT_TYPE:
                return events.from_http_batch(body), True
            if not events.is_cloudevent_http(headers):
                raise UnsupportedMediaType(
                    f"{self.spec.name} takes CloudEvents: send binary mode (ce-* headers), "
                    f"structured mode ({events.STRUCTURED_CONTENT_TYPE}) or a batch "
                    f"({events.BATCH_CONTENT_TYPE}); got content type {ctype or 'none'!r} "
                    "without ce-specversion"
                )
            return [events.from_http_message(headers, body)], False
        except events.CodecError as err:
            raise BadRequest(str(err)) from None
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            # the CloudEvents SDK trips over some malformed events (a specversion that is
            # a list: TypeError) instead of raising its own errors: still the client's input
            raise BadRequest(f"invalid CloudEvent: {type(err).__name__}: {err}") from None

    def call_event(self, event: Any) -> list[Any]:
        """Call the function with one event; its reply events (maybe none)."""
        target = self.function.target
        try:
            out = target(event, self._context) if self.function.wants_context else target(event)
        except ValidationError as err:  # the function validated the event's data: 400, dead-letter
            raise from_validation(err, where="data.") from None
        except InvalidEvent as err:
            raise BadRequest(f"invalid event {event['id']}: {err}") from None
        if out is None:
            return []
        replies = list(out) if isinstance(out, list | tuple) else [out]
        for r in replies:
            if not isinstance(r, events.CloudEvent):
                raise TypeError(
                    f"{self.spec.name} returned {type(r).__name__}; an event function returns "
                    "a CloudEvent, a list of them, or None"
                )
        return replies

    def events_route(
        self, headers: Mapping[str, str], body: bytes, each: Callable[[Any], Any]
    ) -> EventReply:
        """``POST /`` of an event function: replies in binary mode (a batch for a batch).

        ``each(event)`` wraps every call (the HTTP layer sets the request id there).

        In a batch, an event the function refuses (a 400: its data is invalid) does not
        stop the events after it: each is called, then the batch answers that 400, so a
        sink that stores rows (``retrain``) keeps every valid one and the delivery's
        retries and dead letter see the refusal. Any other failure stops the batch at once.
        The rows a retrain loop gets during a batch are stored together, in one
        transaction, before the answer (:mod:`runtime.retraining.together`).
        """
        received, batch = self.decode_events(headers, body)
        replies: list[Any] = []
        refused: BadRequest | None = None
        if batch:  # imported here: the package pulls in the whole loop (numpy, the stores)
            from runtime.retraining.together import rows_together
        with rows_together() if batch else nullcontext() as together:
            for ev in received:
                try:
                    replies.extend(each(ev))
                except BadRequest as err:
                    if not batch:
                        raise
                    refused = refused or err
            if together is not None:  # a retrain function's rows: one transaction
                together.flush()
        if refused is not None:
            raise refused
        if not replies:
            return EventReply(204, {}, b"")
        if batch or len(replies) > 1:
            msg = events.to_http_batch(replies)
        else:
            msg = events.to_http_binary(replies[0])
        return EventReply(200, msg.headers, msg.body)

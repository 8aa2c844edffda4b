"""Fuzzing the HTTP surface of a real `mlfn serve` with hypothesis.

Two servers (an inference function, an event function) in subprocesses on free ports; each
test throws a bounded number of generated requests at one of them over raw sockets: JSON
bodies, Open Inference Protocol bodies, CloudEvents in binary, structured and batch mode,
random methods, paths, headers and sizes. Every answer must be a 2xx (valid input) or a
4xx, never a 5xx, never a traceback; the server logs no error and keeps serving.
"""

from __future__ import annotations

import json
import socket
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.servers import ServerProcess, start_server

pytestmark = pytest.mark.integration

PKG = "tests.runtime.userfns"
MAX_BODY = 4096
EXAMPLES = 40  # per test: eight tests, about 20 s in all (servers included) on two cores
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    home = tmp_path_factory.mktemp("fuzz")
    env = {"MLFN_MAX_BODY_BYTES": str(MAX_BODY), "MLFN_LOG_LEVEL": "INFO"}
    started = {
        "inference": start_server(f"{PKG}.echo_inference", "summer", home, env),
        "event": start_server(f"{PKG}.fuzz_events", "summary", home, env),
    }
    try:
        for s in started.values():
            s.wait_ready()
        yield started
    finally:
        for s in started.values():
            s.terminate()


def send(
    server: ServerProcess, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    """One raw HTTP/1.1 request (no client-side checks); the status and the body."""
    host, port = server.url.removeprefix("http://").split(":")
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(body)}")
    raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    reply = b"".join(chunks)
    head_bytes, _, payload = reply.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1."), reply[:200]
    return int(head_bytes.split(b" ", 2)[1]), payload


def check(
    server: ServerProcess, method: str, path: str, headers: dict[str, str], body: bytes
) -> int:
    status, payload = send(server, method, path, headers, body)
    assert status < 500, (status, method, path, headers, body[:300], payload[:500])
    assert b"Traceback" not in payload and b'File "' not in payload, payload[:500]
    return status


def assert_healthy(server: ServerProcess) -> None:
    assert server.call(path="/healthz").status == 200
    errors = [r for r in server.logs() if r.get("level") in ("error", "critical")]
    assert not errors, errors[:3]


# --- strategies -----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
# the test functions fail on purpose when asked to ("fail": true) and sleep "work_ms"
keys = st.text(max_size=8).filter(lambda k: k not in ("fail", "work_ms"))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=25,
)
objects = st.dictionaries(keys, json_values, max_size=5)
numbers = st.integers(min_value=-(10**6), max_value=10**6) | st.floats(
    allow_nan=False, allow_infinity=False, width=32
)
requests = st.fixed_dictionaries(
    {"x": st.lists(numbers, max_size=8) | json_values},
    optional={"work_ms": st.integers(min_value=-1, max_value=2), "extra": json_values},
)
token = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
header_value = st.text(alphabet=string.printable.strip() + " ", max_size=40).map(str.strip)
random_headers = st.dictionaries(
    token.filter(
        lambda k: (
            k.lower() not in ("content-length", "transfer-encoding", "host", "connection", "expect")
        )
    ),
    header_value,
    max_size=4,
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/octet-stream",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/x-www-form-urlencoded",
        "",
    ]
)
bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.integers(min_value=0, max_value=2 * MAX_BODY).map(lambda n: b"[" * n)
    | st.integers(min_value=MAX_BODY - 10, max_value=MAX_BODY + 10).map(lambda n: b"1" * n)
)


def oip_tensor() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["x", "work_ms", "nope"]) | st.text(max_size=5) | json_values,
            "shape": st.lists(st.integers(min_value=-2, max_value=2**64), max_size=4) | json_values,
            "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL"]) | json_values,
            "data": st.lists(numbers, max_size=8) | json_values,
        },
    )


oip_bodies = st.fixed_dictionaries(
    {"inputs": st.lists(oip_tensor(), max_size=3) | json_values},
    optional={
        "id": json_values,
        "parameters": objects | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": json_values}), max_size=2) | json_values,
    },
)
ce_attributes = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.sampled_from(["1.0", "0.3", "2.0", ""]) | json_values,
        "id": st.text(max_size=10) | json_values,
        "type": st.sampled_from(["test.t", ""]) | json_values,
        "source": st.sampled_from(["/s", ""]) | json_values,
        "datacontenttype": content_types | json_values,
        "subject": json_values,
        "time": st.sampled_from(["2026-01-01T00:00:00Z", "yesterday"]) | json_values,
        "data": json_values,
        "data_base64": st.sampled_from(["aGk=", "not base64!"]) | json_values,
        "myext": json_values,
    },
)
ce_headers = st.fixed_dictionaries(
    {},
    optional={
        "ce-specversion": st.sampled_from(["1.0", "0.3", "2.0", ""]) | header_value,
        "ce-id": header_value,
        "ce-type": header_value,
        "ce-source": header_value,
        "ce-time": st.sampled_from(["2026-01-01T00:00:00Z", "yesterday"]) | header_value,
        "ce-subject": header_value,
        "Content-Type": content_types,
    },
)
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]) | token.map(
    str.upper
)
paths = st.sampled_from(
    [
        "/",
        "/summer",
        "/summary",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/summer",
        "/v2/models/summer/ready",
        "/v2/models/summer/infer",
        "/v2/models/summer/versions/1/infer",
        "/v2/models/x/infer",
        "//",
        "/%00",
        "/..%2f",
    ]
) | st.lists(
    st.text(alphabet=string.ascii_letters + string.digits + "-._~%", max_size=8), max_size=4
).map(lambda parts: "/" + "/".join(parts))

Check = Callable[..., int]


# --- the inference server -------------------------------------------------------------


def test_json_route(servers: dict[str, ServerProcess]) -> None:
    server = servers["inference"]
    seen: set[int] = set()

    @FUZZ
    @given(requests | objects | json_values, st.sampled_from(["/", "/summer"]), st.booleans())
    def case(request: Any, path: str, many: bool) -> None:
        payload = [request, request] if many else request
        body = json.dumps(payload).encode()
        seen.add(check(server, "POST", path, {"Content-Type": "application/json"}, body))

    case()
    assert 200 in seen and 400 in seen, seen  # the generator reaches both outcomes
    assert_healthy(server)


def test_oip_route(servers: dict[str, ServerProcess]) -> None:
    server = servers["inference"]
    seen: set[int] = set()

    @FUZZ
    @given(
        oip_bodies,
        st.sampled_from(["/v2/models/summer/infer", "/v2/models/summer/versions/7/infer"]),
    )
    def case(payload: dict[str, Any], path: str) -> None:
        body = json.dumps(payload).encode()
        seen.add(check(server, "POST", path, {"Content-Type": "application/json"}, body))

    case()
    assert 400 in seen, seen
    assert (
        server.call(
            "POST",
            "/v2/models/summer/infer",
            {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]},
        ).status
        == 200
    )
    assert_healthy(server)


def test_raw_bodies_methods_paths_and_headers(servers: dict[str, ServerProcess]) -> None:
    server = servers["inference"]

    @FUZZ
    @given(methods, paths, random_headers, content_types, bodies)
    def case(method: str, path: str, headers: dict[str, str], ctype: str, body: bytes) -> None:
        hdrs = {**headers, **({"Content-Type": ctype} if ctype else {})}
        check(server, method, path, hdrs, body)

    case()
    assert_healthy(server)


def test_cloudevents_to_an_inference_function(servers: dict[str, ServerProcess]) -> None:
    server = servers["inference"]

    @FUZZ
    @given(ce_headers, bodies)
    def case(headers: dict[str, str], body: bytes) -> None:
        check(server, "POST", "/", headers, body)

    case()
    assert_healthy(server)


# --- the event server -----------------------------------------------------------------


def test_binary_mode(servers: dict[str, ServerProcess]) -> None:
    server = servers["event"]
    seen: set[int] = set()
    valid = {"ce-specversion": "1.0", "ce-id": "e", "ce-type": "test.t", "ce-source": "/s"}

    @FUZZ
    @given(ce_headers, st.booleans(), json_values.map(lambda v: json.dumps(v).encode()) | bodies)
    def case(headers: dict[str, str], complete: bool, body: bytes) -> None:
        hdrs = {**valid, **headers} if complete else headers
        seen.add(check(server, "POST", "/", hdrs, body))

    case()
    assert seen & {200, 204} and seen & {400, 415}, seen
    assert_healthy(server)


def test_structured_mode(servers: dict[str, ServerProcess]) -> None:
    server = servers["event"]
    seen: set[int] = set()
    valid = {"specversion": "1.0", "id": "e", "type": "test.t", "source": "/s"}

    @FUZZ
    @given(
        ce_attributes,
        st.booleans(),
        st.sampled_from(
            ["application/cloudevents+json", "application/cloudevents+json; charset=utf-8"]
        ),
    )
    def case(attrs: dict[str, Any], complete: bool, ctype: str) -> None:
        event = {**valid, **attrs} if complete else attrs
        body = json.dumps(event).encode()
        seen.add(check(server, "POST", "/", {"Content-Type": ctype}, body))

    case()
    assert seen & {200, 204} and 400 in seen, seen
    assert_healthy(server)


def test_batch_mode(servers: dict[str, ServerProcess]) -> None:
    server = servers["event"]
    seen: set[int] = set()
    valid = {"specversion": "1.0", "id": "e", "type": "test.t", "source": "/s"}

    @FUZZ
    @given(
        st.lists(
            ce_attributes.map(lambda a: {**valid, **a}) | ce_attributes | json_values, max_size=4
        )
        | json_values
    )
    def case(batch: Any) -> None:
        body = json.dumps(batch).encode()
        seen.add(
            check(server, "POST", "/", {"Content-Type": "application/cloudevents-batch+json"}, body)
        )

    case()
    assert 400 in seen, seen
    assert_healthy(server)


def test_event_server_raw(servers: dict[str, ServerProcess]) -> None:
    server = servers["event"]

    @FUZZ
    @given(methods, paths, random_headers, content_types, bodies)
    def case(method: str, path: str, headers: dict[str, str], ctype: str, body: bytes) -> None:
        hdrs = {**headers, **({"Content-Type": ctype} if ctype else {})}
        check(server, method, path, hdrs, body)

    case()
    assert_healthy(server)

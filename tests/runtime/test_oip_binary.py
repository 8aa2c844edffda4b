"""The binary tensor extension: raw bytes <-> tensors, sizes checked, errors naming inputs."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from runtime.server.errors import BadRequest
from runtime.server.oip_binary import (
    HeaderReader,
    decode_raw,
    encode_raw,
    encode_reply,
    split_request,
)

pytestmark = pytest.mark.unit

_NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


@pytest.mark.parametrize("datatype", sorted(_NUMERIC))
def test_every_fixed_size_datatype_round_trips_little_endian(datatype: str) -> None:
    values = np.arange(6).astype(_NUMERIC[datatype]).reshape(2, 3)
    raw = values.astype(values.dtype.newbyteorder("<")).tobytes()
    decoded = decode_raw("inputs[0] (x)", datatype, [2, 3], raw)
    assert decoded.shape == (2, 3) and decoded.tolist() == values.tolist()
    assert encode_raw(datatype, values.flatten().tolist()) == raw


def test_big_endian_hosts_would_still_read_little_endian() -> None:
    raw = struct.pack("<i", 258)
    assert decode_raw("x", "INT32", [1], raw).tolist() == [258]


def test_bf16_is_the_upper_half_of_fp32() -> None:
    as_fp32 = np.array([1.5, -2.0], dtype="<f4")
    upper = (as_fp32.view("<u4") >> 16).astype("<u2").tobytes()
    assert decode_raw("x", "BF16", [2], upper).tolist() == [1.5, -2.0]


def test_bytes_elements_carry_4_byte_little_endian_lengths() -> None:
    raw = encode_raw("BYTES", ["ab", "", "ünï"])
    assert raw[:4] == b"\x02\x00\x00\x00"
    assert decode_raw("x", "BYTES", [3], raw).tolist() == [b"ab", b"", "ünï".encode()]


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP32", [2, 2], b"\x00" * 12, "a FP32 tensor of shape [2, 2] is 16 bytes, but 12"),
        ("INT64", [1], b"\x00" * 9, "is 8 bytes, but 9 bytes came"),
        ("BYTES", [2], encode_raw("BYTES", ["a"]), "shape [2] holds 2 BYTES elements but 1"),
        ("BYTES", [1], b"\x05\x00\x00\x00ab", "says 5 bytes but only 2 remain"),
        ("BYTES", [1], b"\x01\x00", "truncated length prefix"),
        ("FP8", [1], b"\x00", "unknown datatype 'FP8'"),
        ("FP32", [-1], b"", "shape must be a list of sizes"),
    ],
)
def test_sizes_that_do_not_fit_are_a_400_naming_the_input(
    datatype: str, shape: list[int], raw: bytes, message: str
) -> None:
    with pytest.raises(BadRequest) as err:
        decode_raw("inputs[0] (pixels)", datatype, shape, raw)
    assert err.value.message.startswith("inputs[0] (pixels)")
    assert message in err.value.message


def _binary_request(header: dict[str, object], *blobs: bytes) -> tuple[bytes, str]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), str(len(head))


def test_a_binary_request_splits_into_json_and_one_array_per_binary_input() -> None:
    x = np.array([[1, 2], [3, 4]], dtype="<f4")
    body, n = _binary_request(
        {
            "inputs": [
                {
                    "name": "a",
                    "datatype": "FP32",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": 16},
                },
                {"name": "b", "datatype": "INT64", "shape": [1], "data": [7]},
            ]
        },
        x.tobytes(),
    )
    payload, arrays = split_request(body, n)
    assert payload["inputs"][1]["data"] == [7]
    assert list(arrays) == [0] and arrays[0].tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    ("size", "extra", "message"),
    [
        (20, b"", "inputs[0] (a): binary_data_size is 20 but only 16 bytes remain"),
        (16, b"xx", "2 bytes follow the last binary input"),
        (12, b"", "inputs[0] (a): a FP32 tensor of shape [2, 2] is 16 bytes, but 12"),
    ],
)
def test_binary_sizes_are_checked_against_the_body(size: int, extra: bytes, message: str) -> None:
    header = {
        "inputs": [
            {
                "name": "a",
                "datatype": "FP32",
                "shape": [2, 2],
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    body, n = _binary_request(header, b"\x00" * 16, extra)
    with pytest.raises(BadRequest) as err:
        split_request(body, n)
    assert message in err.value.message


@pytest.mark.parametrize(
    ("length", "message"), [("x", "is not a number"), ("999", "but the body has")]
)
def test_the_header_length_must_fit_the_body(length: str, message: str) -> None:
    with pytest.raises(BadRequest) as err:
        split_request(b'{"inputs": []}', length)
    assert message in err.value.message


def test_outputs_go_binary_where_the_request_asks() -> None:
    reply = {
        "model_name": "m",
        "outputs": [
            {"name": "p", "datatype": "INT64", "shape": [2], "data": [3, 4]},
            {"name": "q", "datatype": "FP64", "shape": [1], "data": [0.5]},
        ],
    }
    request = {"outputs": [{"name": "p", "parameters": {"binary_data": True}}, {"name": "q"}]}
    headers, body = encode_reply(json.loads(json.dumps(reply)), request)
    n = int(headers["Inference-Header-Content-Length"])
    head = json.loads(body[:n])
    assert head["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert "data" not in head["outputs"][0] and head["outputs"][1]["data"] == [0.5]
    assert np.frombuffer(body[n:], dtype="<i8").tolist() == [3, 4]
    everything = encode_reply(
        json.loads(json.dumps(reply)), {"parameters": {"binary_data_output": True}}
    )
    assert len(everything[1]) - int(everything[0]["Inference-Header-Content-Length"]) == 24
    plain_headers, plain = encode_reply(json.loads(json.dumps(reply)), {})
    assert plain_headers == {"Content-Type": "application/json"} and json.loads(plain) == reply


def _binary(values: np.ndarray, datatype: str, extra: bytes = b"") -> tuple[bytes, str]:
    raw = values.tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(values.shape),
                    "datatype": datatype,
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    return head + raw + extra, str(len(head))


def test_the_header_reader_answers_what_split_request_does_and_keeps_the_header() -> None:
    reader = HeaderReader()
    for k in range(3):  # the same header, new tensor bytes: served from the kept header
        values = (np.arange(6, dtype="<f4") + k).reshape(2, 3)
        body, n = _binary(values, "FP32")
        payload, arrays = reader.split(body, n)
        want_payload, want_arrays = split_request(body, n)
        assert payload == want_payload
        assert arrays[0].dtype == want_arrays[0].dtype
        assert arrays[0].tolist() == want_arrays[0].tolist() == values.tolist()


@pytest.mark.parametrize("case", ["a byte too many", "BYTES", "a bad length header"])
def test_the_header_reader_refuses_what_split_request_refuses(case: str) -> None:
    reader = HeaderReader()
    values = np.arange(4, dtype="<i4")
    body, n = _binary(values, "INT32")
    reader.split(body, n)  # the header is kept
    if case == "a byte too many":
        body += b"\x00"
    elif case == "BYTES":
        body, n = _binary(values, "BYTES")
    else:
        n = "12x"
    with pytest.raises(BadRequest) as got:
        reader.split(body, n)
    with pytest.raises(BadRequest) as want:
        split_request(body, n)
    assert got.value.message == want.value.message

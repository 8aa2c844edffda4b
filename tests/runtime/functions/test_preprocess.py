from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from sklearn.datasets import load_digits

from functions.preprocess import preprocess
from runtime import new_event

pytestmark = pytest.mark.unit


def _raw(data: object, id: str = "digits.raw-0-42") -> object:
    return new_event("dev.knative.kafka.event", "/digits.raw", data, id=id)


def test_a_real_digit_becomes_scaled_features_with_a_stable_id() -> None:
    X, y = load_digits(return_X_y=True)
    ev = _raw({"pixels": X[5].tolist(), "label": int(y[5])})
    out = preprocess(ev)  # type: ignore[arg-type]
    assert out["type"] == "mlfn.digits.features"
    assert out["subject"] == "digits.raw-0-42"
    data = out.get_data()
    assert data["label"] == y[5]
    assert data["features"] == [p / 16 for p in X[5]]
    assert max(data["features"]) == 1.0
    again = preprocess(_raw({"pixels": X[5].tolist(), "label": int(y[5])}))  # type: ignore[arg-type]
    assert again["id"] == out["id"]  # redelivery keeps the id: idempotent downstream
    other = preprocess(_raw({"pixels": X[5].tolist()}, id="digits.raw-0-43"))  # type: ignore[arg-type]
    assert other["id"] != out["id"] and other.get_data()["label"] is None


def test_json_bytes_are_accepted() -> None:
    body = json.dumps({"pixels": [16] + [0] * 63}).encode()
    out = preprocess(_raw(body))  # type: ignore[arg-type]
    assert out.get_data()["features"][0] == 1.0


@pytest.mark.parametrize(
    ("data", "field", "why"),
    [
        ({"pixels": [0] * 63}, "pixels", "at least 64 items"),
        ({"pixels": [17] + [0] * 63}, "pixels.0", "less than or equal to 16"),
        ({"pixels": [0] * 64, "label": 12}, "label", "less than or equal to 9"),
        ({"pixels": [0] * 64, "colour": "red"}, "colour", "Extra inputs are not permitted"),
        ("not json", "", "Invalid JSON"),
        (None, "", "valid dictionary"),
    ],
)
def test_invalid_records_name_the_offending_field(data: object, field: str, why: str) -> None:
    with pytest.raises(ValidationError) as err:
        preprocess(_raw(data))  # type: ignore[arg-type]
    assert why in str(err.value)
    if field:
        assert field in str(err.value)

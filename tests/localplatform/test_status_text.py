"""``mlfn status`` text: dispatcher restarts, their last error, and dataset duplicates."""

from __future__ import annotations

import pytest

from localplatform.control import format_status

pytestmark = pytest.mark.unit


def test_status_shows_restarts_last_error_and_duplicates() -> None:
    state = {
        "gateway": "http://127.0.0.1:8080",
        "namespace": "default",
        "domain": "example.com",
        "functions": {},
        "eventing": {
            "bootstrap": "127.0.0.1:9092",
            "dispatchers": [
                {
                    "kind": "source",
                    "name": "preprocess",
                    "topics": ["digits.raw"],
                    "sink": "http://127.0.0.1:8080/preprocess",
                    "delivered": 10,
                    "restarts": 2,
                    "last_error": "KafkaUnavailableError: no Kafka answers",
                }
            ],
            "datasets": {"digits": {"rows": 3000, "duplicates": 4}},
        },
    }
    text = format_status(state)
    assert "restarts 2" in text
    assert "last stopped by: KafkaUnavailableError: no Kafka answers" in text
    assert "dataset digits" in text and "rows 3000  duplicates dropped 4" in text

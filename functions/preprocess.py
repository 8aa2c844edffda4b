"""``preprocess``: a raw digits record -> validated, featurized record."""

from __future__ import annotations

import json
import uuid

from functions._digits import FEATURES_TYPE, DigitFeatures, RawDigit
from runtime import CloudEvent, event, new_event

_IDS = uuid.UUID("6f1c1d52-3c1e-4a8e-9b7a-7e0d7f6b1a10")


def features_id(source: str, event_id: str) -> str:
    """The id of the features event made from raw event ``(source, id)``: stable on redelivery."""
    return str(uuid.uuid5(_IDS, f"{source}\x00{event_id}"))


@event(
    sources=[
        {
            "topics": ["digits.raw"],
            # records are independent (each one row, its id derived from the record's):
            # in parallel, up to MLFN_MAX_IN_FLIGHT per partition, not one at a time
            "ordering": "unordered",
            "delivery": {"retry": 2, "dead_letter_sink": "digits.dlq"},
        }
    ],
    emits=[FEATURES_TYPE],
    # a few microseconds of work per record: one instance carries what the dispatcher
    # has in flight (4 partitions x 32) instead of starting one per 7 of them
    scaling={"target": 100},
)
def preprocess(ev: CloudEvent) -> CloudEvent:
    """Validate a raw record (64 pixels 0..16, optional label) and scale it to 0..1.

    Raises:
        pydantic.ValidationError: the record is not a valid raw digit; the message names
            the offending fields (the server answers 400 and the event is dead-lettered).
    """
    data = ev.get_data()
    raw = (
        RawDigit.model_validate_json(data)
        if isinstance(data, bytes | str)
        else RawDigit.model_validate(data)
    )
    features = DigitFeatures(features=[p / 16.0 for p in raw.pixels], label=raw.label)
    return new_event(
        FEATURES_TYPE,
        "/mlfn/functions/preprocess",
        json.loads(features.model_dump_json()),
        id=features_id(ev["source"], ev["id"]),
        subject=ev["id"],
    )

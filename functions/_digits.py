"""What the digits functions share: the record schemas and the bundled data."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from runtime import stack

FEATURES_TYPE = "mlfn.digits.features"
PUBLISHED_TYPE = "mlfn.model.published"
MODEL = "digits"
DATASET = "digits"
PIXELS = 64

Pixel = Annotated[float, Field(ge=0, le=16)]
Feature = Annotated[float, Field(ge=0, le=1)]


class RawDigit(BaseModel):
    """A raw record on ``digits.raw``: 64 pixel intensities 0..16, row by row."""

    model_config = ConfigDict(extra="forbid")

    pixels: list[Pixel] = Field(min_length=PIXELS, max_length=PIXELS)
    label: int | None = Field(default=None, ge=0, le=9)


class DigitFeatures(BaseModel):
    """A featurized record (data of ``mlfn.digits.features``): pixels scaled to 0..1."""

    features: list[Feature] = Field(min_length=PIXELS, max_length=PIXELS)
    label: int | None = Field(default=None, ge=0, le=9)


Instance = Annotated[list[Feature], Field(min_length=PIXELS, max_length=PIXELS)]


class PredictRequest(BaseModel):
    """One request: one or many rows of 64 features in 0..1 (as ``preprocess`` makes)."""

    instances: list[Instance] = Field(min_length=1)
    probabilities: bool = False


class PredictResponse(BaseModel):
    """The digit for each row, and its class probabilities if asked for."""

    predictions: list[int]
    probabilities: list[list[float]] | None = None


@lru_cache(maxsize=1)
def digits() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """All 1,797 bundled digits rows: features scaled to 0..1, and labels."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return np.asarray(X, dtype=np.float64) / 16.0, np.asarray(y, dtype=np.int64)


def bootstrap_rows() -> int:
    """How many rows a bootstrap version trains on (the rest is its holdout)."""
    return 1000


def batch_rows(batch: list[PredictRequest]) -> tuple[NDArray[np.float64], list[int]]:
    """Stack the rows of every request into one array; return it and each request's size."""
    sizes = [len(r.instances) for r in batch]
    return stack(batch, "instances"), sizes


def split(
    batch: list[PredictRequest], labels: list[int], probs: NDArray[Any] | None
) -> list[PredictResponse]:
    """One response per request, from the predictions of the stacked rows."""
    out: list[PredictResponse] = []
    start = 0
    for req in batch:
        end = start + len(req.instances)
        p = probs[start:end].round(6).tolist() if probs is not None and req.probabilities else None
        out.append(PredictResponse(predictions=labels[start:end], probabilities=p))
        start = end
    return out

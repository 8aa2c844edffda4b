"""Fixtures for the knative tests: the tiny functions package, its specs and objects."""

from __future__ import annotations

import pytest

from knative.manifests import Rendered, RenderOptions, render
from runtime.registry import discover
from runtime.spec import FunctionSpec

PACKAGE = "tests.knative.fnpkg"


@pytest.fixture(scope="session")
def specs() -> list[FunctionSpec]:
    return [fn.spec for fn in discover(PACKAGE)]


@pytest.fixture(scope="session")
def opts() -> RenderOptions:
    return RenderOptions(namespace="ml", env={"MLFN_NAMESPACE": "ml"})


@pytest.fixture(scope="session")
def rendered(specs: list[FunctionSpec], opts: RenderOptions) -> Rendered:
    return render(specs, opts)


def find(objects: list[dict], kind: str, name: str) -> dict:  # type: ignore[type-arg]
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]

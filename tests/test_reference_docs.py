"""The generated reference pages in docs/ match the code they are generated from."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mlfn.reference import render_settings, render_spec
from tests.conftest import REPO

pytestmark = pytest.mark.unit

FIX = "stale: regenerate it with `make docs` and commit the result"


@pytest.mark.parametrize(
    ("page", "render"), [("settings.md", render_settings), ("spec.md", render_spec)]
)
def test_generated_page_is_current(page: str, render: Callable[[], str]) -> None:
    on_disk = (REPO / "docs" / page).read_text()
    assert on_disk == render(), f"docs/{page} is {FIX}"


def test_every_setting_and_spec_field_is_described() -> None:
    undocumented = [
        line.split("|")[1].strip()
        for text in (render_settings(), render_spec())
        for line in text.splitlines()
        if line.startswith("| `") and line.rstrip().endswith("|  |")
    ]
    assert undocumented == [], "add a description= (or a field docstring) to each of these"

"""``mlfn new``: a new function module and its test, from the templates in ``templates/``.

:func:`plan_scaffold` is pure: it validates the name (with the spec's own rule,
:func:`runtime.spec.check_function_name`) and renders the files; :func:`write_scaffold`
writes them, refusing to overwrite anything.

Where files go, for ``mlfn new my-model --kind inference`` with package ``functions``::

    functions/my_model.py                the function (module name: '-' becomes '_')
    tests/functions/test_my_model.py     its test: plain calls, no server

Example:
    >>> files = plan_scaffold("my-model", "inference", package="functions")
    >>> sorted(str(p) for p in files)
    ['functions/my_model.py', 'tests/functions/test_my_model.py']
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal

from runtime.errors import MlfnError
from runtime.spec import check_function_name

__all__ = ["KINDS", "ScaffoldError", "plan_scaffold", "write_scaffold"]

Kind = Literal["inference", "event", "retrain"]
KINDS: tuple[Kind, ...] = ("inference", "event", "retrain")
DEFAULT_TESTS_DIR = Path("tests") / "functions"


class ScaffoldError(MlfnError, ValueError):
    """The function cannot be scaffolded as asked (bad name, file exists)."""


@dataclass(frozen=True)
class _Names:
    name: str
    entry: str
    title: str
    module: str


def _names(name: str) -> _Names:
    try:
        check_function_name(name)
    except ValueError as err:
        raise ScaffoldError(str(err)) from None
    entry = name.replace("-", "_")
    if keyword.iskeyword(entry) or keyword.issoftkeyword(entry):
        raise ScaffoldError(
            f"function name {name!r} is a Python keyword, so its module and function could "
            f"not be imported; pick another name (for example {name}-fn)"
        )
    title = "".join(part.capitalize() for part in name.split("-"))
    return _Names(name, entry, title, entry)


def _template(name: str) -> Template:
    text = resources.files("runtime").joinpath("templates", f"{name}.tmpl").read_text("utf-8")
    return Template(text)


def plan_scaffold(
    name: str,
    kind: str,
    *,
    package: str = "functions",
    model: str | None = None,
    tests_dir: Path = DEFAULT_TESTS_DIR,
) -> dict[Path, str]:
    """The files ``mlfn new`` writes, relative to the project root, with their content.

    Raises:
        ScaffoldError: ``name`` is not a valid function name, ``kind`` is unknown, or
            ``model`` is not a valid model name.
    """
    if kind not in KINDS:
        raise ScaffoldError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    names = _names(name)
    model_name = model or name
    from runtime.errors import ModelStoreError
    from runtime.models.store import check_model_name

    try:
        check_model_name(model_name)
    except ModelStoreError as err:
        raise ScaffoldError(str(err)) from None
    values = {
        "name": names.name,
        "entry": names.entry,
        "title": names.title,
        "module": names.module,
        "package": package,
        "model": model_name,
    }
    package_dir = Path(*package.split("."))
    return {
        package_dir / f"{names.module}.py": _template(f"{kind}.py").substitute(values),
        tests_dir / f"test_{names.module}.py": _template(f"test_{kind}.py").substitute(values),
    }


def write_scaffold(root: Path, files: dict[Path, str]) -> list[Path]:
    """Write ``files`` under ``root``; create missing packages; never overwrite.

    A new directory on the way gets an empty ``__init__.py`` when its parent is a package
    (``tests/`` is one here), so the test module imports as ``tests.functions.test_x``.

    Raises:
        ScaffoldError: one of the files exists already (nothing is written then).
    """
    existing = [p for p in files if (root / p).exists()]
    if existing:
        raise ScaffoldError(
            f"{', '.join(str(p) for p in existing)} exists already; mlfn new never "
            "overwrites: pick another name or remove the file"
        )
    written: list[Path] = []
    for rel, text in files.items():
        path = root / rel
        _make_package_dirs(root, rel.parent)
        path.write_text(text, encoding="utf-8")
        written.append(rel)
    return written


def _make_package_dirs(root: Path, rel_dir: Path) -> None:
    current = root
    for part in rel_dir.parts:
        parent_is_package = (current / "__init__.py").exists() or current == root
        current = current / part
        if not current.exists():
            current.mkdir()
            if parent_is_package:
                (current / "__init__.py").write_text("")

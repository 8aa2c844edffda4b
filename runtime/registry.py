"""Discovery: import the functions package and collect every function in it.

Finds functions recorded by mlfn's decorators and plain functions-framework functions
(``@functions_framework.http`` / ``@functions_framework.cloud_event``), which get a
default spec.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType

from runtime.errors import DiscoveryError
from runtime.function import Function, default_name, function_of, plain_function

__all__ = ["Registry", "discover"]


@dataclass
class Registry:
    """Functions by name, in discovery order."""

    package: str
    functions: dict[str, Function] = field(default_factory=dict)

    def get(self, name: str) -> Function:
        """The function called ``name``; the error lists the names that exist."""
        fn = self.functions.get(name) or self.functions.get(name.replace("_", "-"))
        if fn is None:
            found = ", ".join(self.functions) or "none"
            raise DiscoveryError(
                f"no function named {name!r} in package {self.package!r}; found: {found}"
            )
        return fn

    def __iter__(self) -> Iterator[Function]:
        return iter(self.functions.values())

    def __len__(self) -> int:
        return len(self.functions)


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise DiscoveryError(
                f"cannot import {name!r}: no such module; check MLFN_FUNCTIONS_PACKAGE "
                "and that you run from the project root"
            ) from err
        raise DiscoveryError(f"importing {name!r} failed: {err}") from err
    except Exception as err:
        raise DiscoveryError(f"importing {name!r} failed: {type(err).__name__}: {err}") from err


def _modules(package: str) -> Iterator[ModuleType]:
    root = _import(package)
    yield root
    for info in pkgutil.iter_modules(getattr(root, "__path__", []), prefix=f"{package}."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        yield _import(info.name)


def _plain_signature(obj: object, module: ModuleType) -> str | None:
    from functions_framework import _function_registry

    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is None or getattr(obj, "__module__", None) != module.__name__:
        return None
    sig = _function_registry.REGISTRY_MAP.get(getattr(obj, "__name__", ""))
    return sig if sig in ("http", "cloudevent") else None


def discover(package: str) -> Registry:
    """Import ``package`` and its public submodules; collect their functions.

    Raises:
        DiscoveryError: a module cannot be imported, or two functions share a name.
    """
    registry = Registry(package)
    if package not in sys.modules:
        importlib.invalidate_caches()
    for module in _modules(package):
        for attr in vars(module).values():
            fn = function_of(attr)
            if fn is None:
                sig = _plain_signature(attr, module)
                if sig is None or function_of(getattr(attr, "__wrapped__", None)) is not None:
                    continue
                fn = plain_function(attr, sig)
            if fn.spec.module != module.__name__:
                continue  # imported from elsewhere; counted where it is defined
            existing = registry.functions.get(fn.name)
            if existing is not None and existing.target is not fn.target:
                raise DiscoveryError(
                    f"two functions are named {fn.name!r}: {existing.spec.module}."
                    f"{existing.spec.entrypoint} and {fn.spec.module}.{fn.spec.entrypoint}; "
                    "pass name= to one of the decorators"
                )
            registry.functions[fn.name] = fn
    return registry


__all__ += ["default_name"]

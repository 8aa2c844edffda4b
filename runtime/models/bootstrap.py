"""Bootstrap hooks: how a model gets its first version on a fresh clone.

A function module registers a hook per model name; the spec stays plain data. When an
inference function starts on a store with no version of its model, the runtime takes
the store's exclusive lock for that model and calls the hook, which publishes version 1
(say what it is in ``extra``, e.g. ``{"bootstrap": True}``)::

    @register_bootstrap("digits")
    def first_digits_model(store: ModelStore) -> None:
        store.publish("digits", train(...), extra={"bootstrap": True})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from runtime.models.store import ModelStore

__all__ = ["BootstrapHook", "bootstrap_for", "register_bootstrap"]

BootstrapHook = Callable[["ModelStore"], None]
H = TypeVar("H", bound=BootstrapHook)
_HOOKS: dict[str, BootstrapHook] = {}


def register_bootstrap(model: str) -> Callable[[H], H]:
    """Decorator: ``hook(store)`` publishes the first version of ``model``."""

    def record(hook: H) -> H:
        _HOOKS[model] = hook
        return hook

    return record


def bootstrap_for(model: str) -> BootstrapHook | None:
    """The hook registered for ``model``, if any."""
    return _HOOKS.get(model)

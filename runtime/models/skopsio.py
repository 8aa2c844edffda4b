"""``skops.io``, imported without importing torch.

Importing ``skops.io`` lists scikit-learn's estimators (``sklearn.utils.all_estimators``),
and that walk imports every scikit-learn package on its way, the ones it then skips too:
``sklearn.externals.array_api_compat.torch`` imports torch wherever torch is installed.
In a process that serves or trains a scikit-learn model that is 1.3 s more to import
skops (0.5 s instead of 1.8 after scikit-learn) and some 190 MB more memory, at every
cold start of a pod. :func:`skops_io` lets a placeholder stand for that one package while
skops loads: the list of estimators is the same (the package holds none), and a later
real import of it (scikit-learn's array API support for torch tensors) works as usual.

Example:
    >>> skops_io().dumps  # doctest: +ELLIPSIS
    <function dumps at ...>
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

__all__ = ["skops_io"]

_TORCH_COMPAT = "sklearn.externals.array_api_compat.torch"


@functools.cache
def skops_io() -> Any:
    """The ``skops.io`` module (imported on the first call)."""
    if "skops.io" in sys.modules or "torch" in sys.modules or _TORCH_COMPAT in sys.modules:
        import skops.io

        return skops.io
    placeholder = types.ModuleType(_TORCH_COMPAT)  # no __path__: the walk goes no deeper
    sys.modules[_TORCH_COMPAT] = placeholder
    try:
        import skops.io
    finally:
        if sys.modules.get(_TORCH_COMPAT) is placeholder:
            del sys.modules[_TORCH_COMPAT]
    return skops.io

"""Broken on purpose: imports a module that does not exist."""

import mlfn_no_such_module  # noqa: F401

"""Tiny user modules, one per scenario; each is used as MLFN_FUNCTIONS_PACKAGE on its own."""

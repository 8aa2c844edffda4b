"""The ``mlfn`` command line: one entry point whose commands come from each package."""

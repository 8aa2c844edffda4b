"""The example pipeline as the end-to-end test runs it: see :mod:`tests.e2e.loopfns.pipeline`."""

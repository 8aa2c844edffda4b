"""Tiny user functions for the local platform's tests (served by ``_server.run``)."""

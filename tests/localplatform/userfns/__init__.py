"""Tiny user functions for the local platform's tests, served by the real server."""

"""User functions the local platform's tests serve with the real server (``localplatform.instance``)."""

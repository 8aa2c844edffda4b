"""mlfn's local platform: runs every function on one machine with Knative's observable behaviour.

A gateway (routing, activator), a concurrency autoscaler, revisions and traffic splits,
and instances that run the same ``mlfn serve`` as the containers do.
"""

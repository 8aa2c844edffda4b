"""Inference functions with a model, for the model-revision tests (served by the real server)."""

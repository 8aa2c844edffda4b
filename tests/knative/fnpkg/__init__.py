"""A tiny functions package shaped like the example pipeline, for the knative tests."""

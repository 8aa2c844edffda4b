from tests.fixtures.models import datasets, store

__all__ = ["datasets", "store"]

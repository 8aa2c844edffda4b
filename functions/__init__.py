"""The example pipeline on scikit-learn's bundled digits (8x8 images of handwritten digits).

- ``preprocess`` (event, KafkaSource on ``digits.raw``): raw record -> validated, scaled
  features, replied as ``mlfn.digits.features``.
- ``predict`` (HTTP inference, batching): features -> digit, served from model ``digits``.
- ``retrain`` (event, trigger on ``mlfn.digits.features``): stores the features, trains,
  publishes a new ``digits`` version, replies ``mlfn.model.published``.
- ``predict-torch`` (HTTP inference, 1 GPU when deployed): a small torch MLP, model
  ``digits-torch``; serves on the CPU when no GPU is present.

User code: it imports only ``runtime``'s public API.
"""

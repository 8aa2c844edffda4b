"""mlfn's eventing: moves CloudEvents between Kafka and HTTP with Knative's semantics.

The embedded broker, producers, KafkaSource-style dispatchers, the Kafka broker and its
triggers. All CloudEvents conversion is in :mod:`eventing.codec`.
"""

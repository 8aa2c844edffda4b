"""Functions for the reliability tests of the local platform: a KafkaSource that stores rows."""

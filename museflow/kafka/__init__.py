"""The Kafka boundary: clients, admin and topic provisioning, lag reading, the local broker.

The only package of the core (with :mod:`museflow.cli`) allowed to import confluent_kafka.
"""

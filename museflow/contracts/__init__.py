"""Data contracts: Avro schemas and serde, event validation, dead-letter reasons, topic names."""

"""The hot path's role: steps over a batch that return what to send (no Kafka here)."""

"""The model: spec, features, registry of artifacts, batch scoring."""

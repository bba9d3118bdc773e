"""Demo and load tooling (not core): demo models, synthetic load, bad events, the demo view, supervision."""

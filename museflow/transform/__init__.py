"""The two-level score transform: quantile maps, sketches, references, refits."""

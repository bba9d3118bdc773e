"""The ``museflow`` command line: one CLI for everything users do."""

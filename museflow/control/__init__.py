"""The control plane: how routes, deployments, maps and references are keyed, written and decided.

:mod:`museflow.control.keys` names the records, :mod:`museflow.control.state` decides between them,
:mod:`museflow.kafka.plane` is the API every writer uses (CLI, demo, benchmarks, tests).
"""

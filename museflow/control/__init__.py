"""The control plane: how routes, deployments, maps and references are keyed, written and decided.

:mod:`museflow.control.keys` names the records, :mod:`museflow.state` decides between them,
:mod:`museflow.control.plane` is the API every writer uses (CLI, demo, benchmarks, tests).
"""

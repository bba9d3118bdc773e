"""Acting on the alert-rate watch: a verdict record for every breach, a rollback where the route asks for one.

The refit role runs the watch on the score log (:mod:`museflow.observe.contract_watch`) and hands
breaches over here; this thread publishes them (``museflow.verdicts``) and, when the route version
that breached is still in force and says ``auto_rollback``, rolls the route back to its previous
version as ``museflow-watch``. The champion and a canary are watched apart, possibly by two
workers: the rollback names the version it read, so only the first one lands. A version the watch itself
wrote is never rolled back again (that would flap between two bad versions): its breach is
recorded and alerted for an operator.
"""

from __future__ import annotations

import logging
import queue
import threading

from museflow.config import Settings
from museflow.control.contract import Contract
from museflow.control.state import PipelineState
from museflow.control.verdicts import breach_rows, verdict_record
from museflow.errors import ConflictError, MuseflowError
from museflow.kafka.plane import publish_verdict, rollback
from museflow.observe.contract_watch import RouteBreach

__all__ = ["ContractGuard"]

log = logging.getLogger(__name__)

BY = "museflow-watch"


class ContractGuard:
    """Called with each :class:`RouteBreach` (non-blocking); publishes and rolls back on its own thread."""

    def __init__(self, settings: Settings, state: PipelineState) -> None:
        self.settings, self.state = settings, state
        self._queue: queue.Queue[RouteBreach] = queue.Queue()
        self._handled: set[tuple[str, str, int]] = set()
        self._thread = threading.Thread(target=self._run, name="museflow-contract-guard", daemon=True)
        self._thread.start()

    def __call__(self, breach: RouteBreach) -> None:
        key = (breach.tenant, breach.intent, breach.route_version)
        if key not in self._handled:
            self._handled.add(key)
            self._queue.put_nowait(breach)

    def _run(self) -> None:
        while True:
            breach = self._queue.get()
            try:
                self.handle(breach)
            except MuseflowError:
                log.exception("could not act on the alert-rate breach of %s/%s v%d", breach.tenant, breach.intent,
                              breach.route_version)

    def handle(self, breach: RouteBreach) -> None:
        settings, contract = self.settings, Contract.from_settings(self.settings)
        tenant, intent, version = breach.tenant, breach.intent, breach.route_version
        where = ", ".join(f"{b.threshold:g}: {b.observed:.3%} {b.direction} target {b.target:.3%} after {b.samples:,} "
                          "scores" for b in breach.breaches)
        log.warning("alert-rate contract breached on %s/%s v%d (%s)", tenant, intent, version, where)
        publish_verdict(settings, verdict_record(
            "breach", tenant=tenant, intent=intent, model=breach.model[0], model_version=breach.model[1],
            route_version=version, contract=contract, rows=breach_rows(breach.breaches, contract),
            detail=f"served alert rate outside {contract.describe()} at {where}", by=BY))
        route = self.state.routes.get(tenant, intent)
        if route is None or route.version != version or not route.auto_rollback:
            return
        if route.updated_by == BY:
            log.warning("route %s v%d is the watch's own rollback and breaches too: left for an operator (no "
                        "rollback of a rollback)", route.key, version)
            return
        try:
            restored, target = rollback(settings, route.key, if_version=version, by=BY)
        except ConflictError:
            log.info("route %s moved on from v%d before the watch rolled it back (another worker did)", route.key,
                     version)
            return
        log.warning("rolled route %s back to v%d (%s) as v%d after the breach", route.key, target.version,
                    target.champion, restored.version)
        publish_verdict(settings, verdict_record(
            "rollback", tenant=tenant, intent=intent, model=breach.model[0], model_version=breach.model[1],
            route_version=restored.version, contract=contract, rows=breach_rows(breach.breaches, contract),
            detail=f"rolled back from v{version} to v{target.version} (champion {target.champion}) after the "
                   f"breach at {where}", by=BY))

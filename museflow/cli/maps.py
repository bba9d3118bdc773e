"""``museflow maps``: list the published quantile maps; refit them on demand from the score log."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from museflow.cli.options import kafka_options, settings_from
from museflow.transform.qmap import QuantileMap

__all__ = ["maps_group"]


@click.group("maps")
def maps_group() -> None:
    """Quantile maps: (model version, tenant) -> the tenant's reference distribution."""


@maps_group.command("list")
@kafka_options
def list_maps(bootstrap_servers: str | None, topic_prefix: str | None) -> None:
    """Published maps with their version, samples, fit window and age."""
    from museflow.kafka.plane import read_state

    state = read_state(settings_from(bootstrap_servers, topic_prefix))
    now = time.time()
    table = Table("model", "tenant", "intent", "version", "source", "reference", "samples", "tail", "age",
                  "rehearsal map on this traffic")
    for m in sorted(state.maps, key=lambda m: (m.model, m.model_version, m.tenant or "", m.intent)):
        table.add_row(f"{m.model}@{m.model_version}", m.tenant or "(pooled)", m.intent, str(m.version), m.source,
                      f"{m.reference_name}@{m.reference_version}", f"{m.sample_count:,}", f"{m.tail_sample_count:,}",
                      f"{now - m.created_at_ms / 1000:.0f}s", _versus_rehearsal(state, m))
    Console().print(table)


def _versus_rehearsal(state: Any, shadow: QuantileMap) -> str:
    """For a map fitted on live traffic: the alert rates the rehearsal's map of the same key gives on it."""
    from museflow.control.rehearsal import rehearsal_vs_shadow
    from museflow.transform.qmap import map_key

    if shadow.source != "shadow":
        return "-"
    rehearsed = [m for m in state.keys_of("map", map_key(shadow)).values() if m is not None and m.source == "rehearsal"]
    if not rehearsed:
        return "-"
    reference = state.reference(f"{shadow.reference_name}@{shadow.reference_version}")
    found = rehearsal_vs_shadow(max(rehearsed, key=lambda m: m.version), shadow, reference)
    return ", ".join(f"{rate:.0%} -> {got:.2%}" for rate, got in found.items())


@maps_group.command("contract")
@kafka_options
@click.option("--tenant", default=None, help="Only this tenant.")
def contract_table(bootstrap_servers: str | None, topic_prefix: str | None, tenant: str | None) -> None:
    """Per route, model and threshold: samples the alert-rate contract needs, samples the map has, verdict."""
    from museflow.control.contract import Contract, judge_fit
    from museflow.kafka.plane import read_state
    from museflow.transform.refit import DEFAULT_CONTRACT_RATES

    settings = settings_from(bootstrap_servers, topic_prefix)
    state, contract = read_state(settings), Contract.from_settings(settings)
    table = Table("tenant", "intent", "model", "role", "threshold", "target", "samples needed", "map", "samples",
                  "verdict", title=f"alert-rate contract: {contract.describe()}")
    for route in state.routes:
        if tenant and route.tenant != tenant:
            continue
        reference = state.reference(route.reference)
        taus = route.watch_thresholds or tuple(float(t) for t in reference.threshold_for(DEFAULT_CONTRACT_RATES))
        roles = [(route.champion, "champion"), *((c.model, c.mode) for c in route.candidates)]
        for ref, role in roles:
            qmap = state.maps.get(ref.name, ref.version, route.tenant, route.reference)
            for tau in taus:
                target = float(reference.alert_rate(tau))
                if not 0 < target < 1:
                    continue
                if qmap is None:
                    table.add_row(route.tenant, route.intent, str(ref), role, f"{tau:g}", f"{target:.2%}",
                                  f"{contract.samples_needed(target):,}", "-", "0", "no map")
                    continue
                judged = judge_fit(qmap, tau, target, contract)
                table.add_row(route.tenant, route.intent, str(ref), role, f"{tau:g}", f"{target:.2%}",
                              f"{judged.samples_needed:,}", f"v{qmap.version} {qmap.source}",
                              f"{judged.effective_samples:,.0f}", judged.verdict)
    Console().print(table)


@maps_group.command("refit")
@kafka_options
@click.option("--since", "since_s", type=float, default=None,
              help="Fit on scores logged in the last SECONDS (default: MUSEFLOW_REFIT_WINDOW_SECONDS).")
@click.option("--force", is_flag=True, help="Override the alert-rate-shift guard (sample guards still hold).")
@click.option("--dry-run", is_flag=True, help="Show what would be published without publishing.")
def refit(bootstrap_servers: str | None, topic_prefix: str | None, since_s: float | None, force: bool,
          dry_run: bool) -> None:
    """Refit every (model version, tenant) map now from the score log, with the same guards as the agent."""
    from museflow.kafka.plane import publish_map, read_state, refitter_for_settings
    from museflow.kafka.scorelog import read_score_log

    settings = settings_from(bootstrap_servers, topic_prefix)
    window = since_s or settings.refit_window_seconds
    state = read_state(settings)
    refitter = refitter_for_settings(settings, state, window_seconds=window)
    now = time.time()
    counts = refitter.observe_log(read_score_log(settings, since_ms=int((now - window) * 1000)), now)
    table = Table("model", "tenant", "intent", "outcome", "reason", "samples")
    for outcome in refitter.refit(now, force=force):
        model, version, intent, tenant = outcome.key
        published = outcome.published and outcome.candidate is not None
        if published and not dry_run and outcome.candidate is not None:
            publish_map(settings, outcome.candidate, state=state)
        verdict = (f"published v{outcome.candidate.version}" if published and outcome.candidate and not dry_run
                   else "would publish" if published else "held")
        table.add_row(f"{model}@{version}", tenant or "(pooled)", intent, verdict, outcome.decision.message[:80],
                      f"{counts.get((model, version, tenant, intent), 0) if tenant else '-'}")
    Console().print(table)

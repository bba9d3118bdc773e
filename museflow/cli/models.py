"""``museflow models``: validate, deploy, list, show, promote and retire models; train the demo ones."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from museflow.cli.options import kafka_options, settings_from
from museflow.demo.models import DEFAULT_DEMO_EVENTS, DEMO_ROUTES_FILE, demo_routes_yaml, train_demo_models
from museflow.errors import ArtifactError, SpecError
from museflow.model.registry import ModelRegistry

__all__ = ["models_group"]


@click.group("models")
def models_group() -> None:
    """Model specs and artifacts: validate, deploy, list, show, promote, retire; demo models."""


@models_group.command("validate")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
def validate(specs: tuple[Path, ...]) -> None:
    """Validate SPECS and their artifacts (sha256, format, feature count, warm-up predict)."""
    registry = ModelRegistry()
    failed = 0
    for path in specs:
        try:
            model = registry.load(path)
        except (SpecError, ArtifactError) as exc:
            failed += 1
            click.echo(f"FAIL {path}\n{_indent(str(exc))}", err=True)
            continue
        spec = model.spec
        click.echo(
            f"OK   {path}: {spec.name} version {spec.version}, {len(spec.features)} features "
            f"({len(spec.columns)} columns), beta={spec.negative_sampling_rate}, digest {spec.digest[:12]}"
        )
    if failed:
        click.echo(f"{failed} of {len(specs)} spec(s) failed validation", err=True)
        raise SystemExit(1)


@models_group.command("train-demo")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write specs and artifacts into.")
@click.option("--seed", default=0, show_default=True, help="Seed for data generation and training.")
@click.option("--events", "n_events", default=DEFAULT_DEMO_EVENTS, show_default=True,
              help="Synthetic events to generate (train on the first 80%, evaluate on the rest).")
def train_demo_command(out_dir: Path, seed: int, n_events: int) -> None:
    """Train the demo models (fraud-cnp v1 and v2, ato v1) on synthetic traffic; also write routes.yaml."""
    console = Console()
    with console.status("training demo models") as status:
        models = train_demo_models(out_dir, seed=seed, n_events=n_events, progress=status.update)
    table = Table(title=f"demo models in {out_dir}")
    for column in ("model", "version", "beta", "train rows", "AUC", "mean p", "fraud rate"):
        table.add_column(column, no_wrap=True)
    for m in models:
        table.add_row(
            m.name, m.version, f"{m.beta:g}", f"{m.train_rows:,}", f"{m.auc:.3f}",
            f"{m.mean_probability:.4f}", f"{m.holdout_fraud_rate:.4f}",
        )
    console.print(table)
    console.print("AUC and mean corrected probability are on held-out events (the last 20%).")
    for m in models:
        click.echo(f"wrote {m.spec_path}")
    (out_dir / DEMO_ROUTES_FILE).write_text(demo_routes_yaml(), encoding="utf-8")
    click.echo(f"wrote {out_dir / DEMO_ROUTES_FILE} (every tenant on the v1 champions; museflow routes set -f)")


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


@models_group.command("deploy")
@kafka_options
@click.argument("specs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", default="cli", show_default=True, help="Who deploys (recorded in the deployment record).")
def deploy(bootstrap_servers: str | None, topic_prefix: str | None, specs: tuple[Path, ...], by: str) -> None:
    """Validate SPEC(s) and their artifacts, then publish deployment records; workers load them live."""
    from museflow.kafka.plane import deploy as deploy_spec

    settings = settings_from(bootstrap_servers, topic_prefix)
    for spec in specs:
        click.echo(deploy_spec(settings, spec, by=by))


@models_group.command("retire")
@kafka_options
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--by", default="cli", show_default=True)
def retire(bootstrap_servers: str | None, topic_prefix: str | None, spec: Path, by: str) -> None:
    """Unload a model version from every worker (refused while a route still uses it)."""
    from museflow.kafka.plane import retire as retire_spec

    click.echo(retire_spec(settings_from(bootstrap_servers, topic_prefix), spec, by=by))


@models_group.command("list")
@kafka_options
def list_models(bootstrap_servers: str | None, topic_prefix: str | None) -> None:
    """Deployed model versions, the routes that use them and their fitted maps."""
    from museflow.kafka.plane import read_state

    state = read_state(settings_from(bootstrap_servers, topic_prefix))
    table = Table("model", "version", "deployed", "by", "used by routes", "fitted maps")
    for ref, dep in sorted(state.deployments.items()):
        users = [f"{r.key} ({'champion' if r.champion == ref else 'candidate'})" for r in state.routes
                 if ref in r.models()]
        maps = [m for m in state.maps if (m.model, m.model_version) == (ref.name, ref.version)]
        table.add_row(ref.name, ref.version, time.strftime("%Y-%m-%d %H:%M", time.gmtime(dep.deployed_at / 1000)),
                      dep.deployed_by, "\n".join(users) or "-",
                      ", ".join(sorted(f"{m.tenant or 'pooled:' + m.intent} v{m.version}" for m in maps)) or "-")
    Console().print(table)


@models_group.command("show")
@kafka_options
@click.argument("model")
def show(bootstrap_servers: str | None, topic_prefix: str | None, model: str) -> None:
    """The deployed spec of MODEL (NAME@VERSION)."""
    from museflow.control.routing import ModelRef
    from museflow.kafka.plane import read_state

    ref = ModelRef.parse(model)
    state = read_state(settings_from(bootstrap_servers, topic_prefix))
    dep = state.deployments.get(ref)
    if dep is None:
        raise click.ClickException(f"{ref} is not deployed; deployed: {sorted(map(str, state.deployments)) or 'none'}")
    click.echo(f"# {ref} deployed {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(dep.deployed_at / 1000))} "
               f"by {dep.deployed_by}; artifact {dep.artifact_uri} sha256 {dep.artifact_sha256}")
    click.echo(dep.spec_yaml)


@models_group.command("promote")
@kafka_options
@click.argument("route")
@click.argument("candidate")
@click.option("--allow-pooled", is_flag=True, help="Accept the pooled (model, intent) map for a low-traffic tenant.")
@click.option("--by", default="cli", show_default=True)
@click.option("--if-version", type=int, default=None,
              help="Refuse unless the route is still at this version (the one you read).")
@click.option("--require-recall", "recall_margin", type=float, default=None, metavar="MARGIN",
              help="Also refuse while the candidate's estimated recall (CBPE on its shadow or canary traffic, no "
                   "labels needed) at any of the route's thresholds is more than MARGIN below the champion's "
                   "(0.03 is about three standard errors of a few hours of shadow traffic).")
@click.option("--recall-window", "recall_window_s", type=float, default=3600.0, show_default=True,
              help="Seconds of score log the recall gate reads.")
@click.option("--explain", is_flag=True,
              help="Print the gates' tables: per threshold the target, the candidate map's estimated alert rate "
                   "with its interval, its samples, the samples the contract needs, and the verdict.")
@click.option("--accept-insufficient", is_flag=True,
              help="Promote although some thresholds lack the samples the alert-rate contract needs; they are "
                   "flagged on the route. A threshold whose evidence shows a breach is refused all the same.")
def promote(bootstrap_servers: str | None, topic_prefix: str | None, route: str, candidate: str,
            allow_pooled: bool, by: str, if_version: int | None, recall_margin: float | None,
            recall_window_s: float, explain: bool, accept_insufficient: bool) -> None:
    """Make CANDIDATE (NAME@VERSION) the champion of ROUTE (TENANT/INTENT), once its maps are fitted."""
    from museflow.control.routing import ModelRef
    from museflow.kafka.plane import promote as promote_candidate

    settings = settings_from(bootstrap_servers, topic_prefix)
    promoted = promote_candidate(settings, route, ModelRef.parse(candidate), by=by, allow_pooled=allow_pooled,
                                 if_version=if_version, recall_margin=recall_margin,
                                 recall_window_s=recall_window_s, explain=click.echo if explain else None,
                                 accept_insufficient=accept_insufficient)
    click.echo(f"route {route} v{promoted.version}: champion {promoted.champion} "
               f"(rollback: museflow routes rollback {route})" + (f"; {promoted.comment}" if promoted.comment else ""))

"""``museflow models``: validate model specs with their artifacts, train the demo models.

The group is importable on its own (``from museflow.cli.models import models_group``) so the
main CLI can mount it and other commands (deploy, list, show) can be added to it.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from museflow.demo_models import DEFAULT_DEMO_EVENTS, train_demo_models
from museflow.errors import ArtifactError, SpecError
from museflow.registry import ModelRegistry

__all__ = ["models_group"]


@click.group("models")
def models_group() -> None:
    """Model specs, artifacts and demo models."""


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
    """Train the demo models (fraud-cnp v1 and v2, ato v1) on synthetic traffic."""
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


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())

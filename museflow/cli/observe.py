"""``museflow observe``: generate the Grafana dashboards and Prometheus alert rules from code."""

from __future__ import annotations

from pathlib import Path

import click

from museflow.observe import alerts, dashboards

__all__ = ["observe_group", "outputs"]


def outputs() -> dict[str, str]:
    """Relative path under the output directory -> generated text."""
    files = {f"grafana/dashboards/{stem}.json": dashboards.render(board)
             for stem, board in dashboards.dashboards().items()}
    files["prometheus/alerts.yml"] = alerts.render()
    return files


@click.group("observe")
def observe_group() -> None:
    """Dashboards and alert rules as code."""


@observe_group.command("export")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("deploy"), show_default=True,
              help="Directory to write grafana/dashboards/*.json and prometheus/alerts.yml under.")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a generated file is missing or differs.")
def export(out: Path, check: bool) -> None:
    """Write the SRE and model-owner dashboards and the alert rules."""
    stale = []
    for relative, text in outputs().items():
        path = out / relative
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        click.echo(f"wrote {path}")
    if stale:
        raise click.ClickException(f"out of date (run `museflow observe export --out {out}`): {', '.join(stale)}")

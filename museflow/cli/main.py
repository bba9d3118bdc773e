"""``museflow``: the root command and the registry of its subcommands."""

from __future__ import annotations

import importlib
import logging
import sys

import click

from museflow import __version__
from museflow.errors import MuseflowError

__all__ = ["cli", "main"]

# (module, attribute) of each subcommand; imported lazily so `museflow --help` stays fast.
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "acls": ("museflow.cli.acls", "acls_command"),
    "demo": ("museflow.cli.demo", "demo_command"),
    "dlq": ("museflow.cli.dlq", "dlq_group"),
    "kafka": ("museflow.cli.kafka", "kafka_group"),
    "lag": ("museflow.cli.lag", "lag_command"),
    "observe": ("museflow.cli.observe", "observe_group"),
    "produce": ("museflow.cli.produce", "produce_command"),
    "maps": ("museflow.cli.maps", "maps_group"),
    "models": ("museflow.cli.models", "models_group"),
    "references": ("museflow.cli.references", "references_group"),
    "rehearse": ("museflow.cli.rehearse", "rehearse_command"),
    "report": ("museflow.cli.report", "report_group"),
    "routes": ("museflow.cli.routes", "routes_group"),
    "tail": ("museflow.cli.tail", "tail_command"),
    "topics": ("museflow.cli.worker", "topics_group"),
    "worker": ("museflow.cli.worker", "worker_command"),
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported only when used (faust and xgboost load slowly)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(target[0])
        command: click.Command = getattr(module, target[1])
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="museflow")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """museflow: multi-tenant Score-as-a-Service on Kafka.

    Settings come from MUSEFLOW_* environment variables (e.g. MUSEFLOW_BOOTSTRAP_SERVERS);
    options on each command override them.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Console entry point: museflow errors print one clear line and exit 1, no traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MuseflowError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

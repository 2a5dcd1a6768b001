"""Root typer app: one sub-app per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from peer import __version__
from peer.cli import acls_cmd, admin_cmd, demo_cmd, health_cmd, kafka_cmd, run_cmd, sim_cmd

app = typer.Typer(
    name="mdpeer",
    help="Stream MigratoryData subjects into Apache Kafka topics, exactly once.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(kafka_cmd.app, name="kafka")
app.add_typer(sim_cmd.app, name="sim")
run_cmd.register(app)
admin_cmd.register(app)
acls_cmd.register(app)
demo_cmd.register(app)
health_cmd.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mdpeer {__version__}")
        raise typer.Exit(0)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """mdpeer: a fleet of identical peers bridging MigratoryData into Kafka."""

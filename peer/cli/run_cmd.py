"""`mdpeer run`: one peer of the fleet (docs/RUNNING.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from peer.cli.common import expected_errors
from peer.cli.options import Servers, Token, TokenFile


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to the root app."""
    app.command("run")(run)


def run(
    *,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            envvar="MDPEER_CONFIG",
            help="TOML config file (or the vendor connector's JSON).",
            show_default=False,
        ),
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            envvar="MDPEER_BOOTSTRAP",
            help="Kafka bootstrap servers.",
            show_default=False,
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group",
            envvar="MDPEER_GROUP",
            help="Consumer group shared by all peers (default: mdpeer).",
            show_default=False,
        ),
    ] = None,
    servers: Servers = None,
    token: Token = None,
    token_file: TokenFile = None,
    peer_id: Annotated[
        str | None,
        typer.Option(
            "--peer-id",
            envvar="MDPEER_PEER_ID",
            help="Stable peer id (default: host name); transactional.id = <group>-<peer id>.",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar="MDPEER_METRICS_PORT",
            help="Port of /metrics, /healthz, /readyz (0 = off).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run one peer: join the group, own shards, stream their subjects into Kafka exactly once.

    SIGTERM / SIGINT: stop fetching, commit, leave the group, exit 0. Exit 1: bad
    configuration; exit 2: a fatal Kafka error or fencing (another instance took over).
    """
    from peer import logs
    from peer.configload import load_settings
    from peer.runner import run_peer

    # Env values are read by load_settings itself (MDPEER_*); typer's envvar= only documents
    # them and fills the flags, which win anyway.
    overrides: dict[str, object] = {
        "bootstrap": bootstrap,
        "group": group,
        "servers": servers,
        "token": token,
        "token_file": str(token_file) if token_file is not None else None,
        "peer_id": peer_id,
        "metrics_port": metrics_port,
    }
    with expected_errors():
        settings = load_settings(config, os.environ, overrides)
        logs.configure(settings.log_level, json_lines=settings.log_format == "json")
        for note in settings.notes:
            typer.echo(f"note: {note}", err=True)
        code = run_peer(settings)
    raise typer.Exit(code)

"""``mdpeer demo``: the whole job on this machine (see docs/DEMO.md)."""

from __future__ import annotations

import faulthandler
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

#: after the demo has stopped everything, how long the process may take to exit
EXIT_BUDGET_S = 30.0


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""
    app.command()(demo)


def demo(
    *,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            min=1.0,
            help="Publish for this many seconds, then stop everything, print a summary and "
            "exit 0 only if the exactly-once check holds. Default: until Ctrl-C.",
            show_default=False,
        ),
    ] = None,
    kill_one: Annotated[
        bool,
        typer.Option(
            "--kill-one",
            help="SIGKILL one peer after a third of --duration (or after 10 s) to show the "
            "failover.",
        ),
    ] = False,
    rate: Annotated[
        float,
        typer.Option("--rate", min=0.1, max=10_000, help="Messages per second per subject."),
    ] = 50.0,
    peers: Annotated[int, typer.Option("--peers", min=2, max=9, help="Peers to start.")] = 3,
    shards: Annotated[
        int, typer.Option("--shards", min=1, max=1000, help="Shards (control partitions).")
    ] = 6,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Where logs, the peer config and Kafka's data go "
            "(default: a new run-* directory under the mdpeer cache).",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the summary as JSON on stdout (the live lines go to stderr)."
        ),
    ] = False,
) -> None:
    """Run a whole deployment locally: Kafka, the reference server, peers, a publisher.

    Starts a local Kafka on free ports, the reference MigratoryData server, creates the
    control topic and the vendor quick-start routes (/server/status1 → topic1,
    /server/status2 → topic2 with key mykey), starts the peers and a publisher, and shows
    what a read_committed consumer sees. Ctrl-C stops everything it started.

    Exit: 0 when the exactly-once check holds (with --duration), 1 when it fails or a step
    failed (the reason is printed), 130 when interrupted.

    Examples:
      mdpeer demo
      mdpeer demo --duration 30 --kill-one
      mdpeer demo --duration 20 --json > summary.json
    """
    from peer.dev.demo.orchestrate import Demo, DemoError, DemoOptions

    try:
        options = DemoOptions(
            duration=duration,
            kill_one=kill_one,
            rate=rate,
            peers=peers,
            shards=shards,
            run_dir=run_dir,
        )
    except DemoError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    view_out = sys.stderr if json_out else sys.stdout
    result = Demo(options, view_out=view_out).run()
    # Everything it started is stopped: leaving must not hang either (a client's destructor
    # waiting on a stopped Kafka); if it does, the stacks say where and the exit code is 1.
    faulthandler.dump_traceback_later(EXIT_BUDGET_S, exit=True)
    for line in result.lines():
        print(line, file=view_out, flush=True)
    if json_out:
        typer.echo(json.dumps(result.as_json()))
    if result.interrupted:
        raise typer.Exit(130)
    # Without --duration the demo only ends by Ctrl-C; a step that failed is still an error.
    raise typer.Exit(0 if result.ok else 1)

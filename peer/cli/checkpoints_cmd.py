"""`mdpeer checkpoints list|reset`: where each subject stands, and moving it.

A reset is never written as a checkpoint by the CLI: only a subject's owner writes
checkpoints, inside the transaction that carries the data they cover (I2). The CLI writes a
``cmd:<subject>`` record instead; the owning peer applies it in order with the rest of its
shard and acknowledges it in its next checkpoint, so a reset never races a running peer and
survives the owner dying half-way.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from typing import Annotated, Any

import typer

from peer.cli.common import expected_errors
from peer.cli.options import JsonOut, Target, with_target
from peer.cli.routes_cmd import UnknownSubjectError, open_producer, read_snapshot
from peer.control import CheckpointRecord, Command, CommandRecord
from peer.control.admin import write_command
from peer.control.reader import ControlSnapshot
from peer.control.shards import shard_of
from peer.errors import ConfigError

app = typer.Typer(
    help="Show the checkpoint (epoch, seq) of each subject, and reset it.",
    no_args_is_help=True,
)


def checkpoint_text(ckpt: CheckpointRecord | None) -> str:
    """``E:S``, ``reset to <policy>`` (reset, nothing since) or ``-`` (never written)."""
    if ckpt is None:
        return "-"
    if ckpt.position is not None:
        return str(ckpt.position)
    return f"reset to {ckpt.start}" if ckpt.start is not None else "-"


def checkpoint_json(ckpt: CheckpointRecord | None) -> dict[str, Any] | None:
    if ckpt is None:
        return None
    pos = ckpt.position
    return {
        "epoch": pos.epoch if pos is not None else None,
        "seq": pos.seq if pos is not None else None,
        "start": str(ckpt.start) if ckpt.start is not None else None,
        "cmd": ckpt.cmd,
        "meta": dict(ckpt.meta),
    }


def command_json(rec: CommandRecord | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    cmd = rec.command
    return {"op": cmd.op.value, "to": cmd.target_text(), "id": cmd.id, "meta": dict(rec.meta)}


def subject_rows(snapshot: ControlSnapshot) -> list[dict[str, Any]]:
    """One row per subject with a route, a checkpoint or a pending command."""
    routes = snapshot.routes()
    ckpts = snapshot.checkpoints()
    pending = snapshot.pending_commands()
    shards = snapshot.partitions
    rows = []
    for subject in sorted(set(routes) | set(ckpts) | set(pending)):
        route = routes.get(subject)
        rows.append(
            {
                "subject": subject,
                "shard": shard_of(subject, shards),
                "topic": route.topic if route is not None else None,
                "routed": route is not None,
                "checkpoint": checkpoint_json(ckpts.get(subject)),
                "checkpoint_text": checkpoint_text(ckpts.get(subject)),
                "pending": command_json(pending.get(subject)),
            }
        )
    return rows


@app.command("list")
@with_target
def list_checkpoints(
    *,
    subject: Annotated[
        str | None, typer.Option("--subject", "-s", help="Only this subject.")
    ] = None,
    target: Target,
    json_out: JsonOut = False,
) -> None:
    """List each subject's checkpoint and any reset still waiting for its owner.

    The checkpoint is the (epoch, seq) of the subject's last message committed to Kafka.

    Example: mdpeer checkpoints list --subject /server/status1 --group orders
    """
    from rich.console import Console
    from rich.table import Table

    with expected_errors():
        dep = target.deployment()
        snapshot = read_snapshot(dep)
        rows = subject_rows(snapshot)
        if subject is not None:
            rows = [r for r in rows if r["subject"] == subject]
            if not rows:
                raise UnknownSubjectError(subject, dep.topic)
    if json_out:
        for r in rows:
            del r["checkpoint_text"]
        typer.echo(json.dumps({"control_topic": dep.topic, "subjects": rows}))
        return
    if not rows:
        typer.echo(f"no subjects in {dep.topic}", err=True)
        return
    table = Table(title=f"checkpoints in {dep.topic}")
    for name in ("subject", "shard", "topic", "checkpoint", "pending command"):
        table.add_column(name, overflow="fold")
    for r in rows:
        pending = r["pending"]
        table.add_row(
            r["subject"],
            str(r["shard"]),
            r["topic"] or "(no route)",
            r["checkpoint_text"],
            f"reset to {pending['to']}" if pending else "-",
        )
    Console().print(table)


@app.command()
@with_target
def reset(
    subject: Annotated[str, typer.Argument(help="The subject to move.")],
    *,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="snapshot (its current snapshot, then on), latest (only new messages), "
            "history:N (up to N cached messages), or EPOCH:SEQ (resume strictly after it).",
            show_default=False,
        ),
    ],
    target: Target,
    json_out: JsonOut = False,
) -> None:
    """Move SUBJECT's checkpoint: the owning peer applies it in order, then fetches from there.

    Written as a command record to the subject's shard; `checkpoints list` shows it pending
    until the owner has applied it (with no peer running it waits for the next owner).

    Example: mdpeer checkpoints reset /server/status1 --to 7:1200 --group orders
    """
    with expected_errors():
        try:
            command = Command.reset(to)
        except ConfigError as exc:
            raise ConfigError("--to", exc.value, exc.reason) from None
        dep = target.deployment()
        snapshot = read_snapshot(dep)
        if subject not in snapshot.routes():
            raise UnknownSubjectError(subject, dep.topic)
        write_command(
            open_producer(dep),
            dep.topic,
            snapshot.partitions,
            subject,
            command,
            timeout=dep.timeout,
            by=_who(),
            at_ms=int(time.time() * 1000),
        )
    if json_out:
        typer.echo(
            json.dumps(
                {"subject": subject, "to": command.target_text(), "id": command.id, "queued": True}
            )
        )
        return
    typer.echo(f"reset {subject} to {command.target_text()}: queued as command {command.id}")
    typer.echo(
        "the peer that owns its shard applies it in order; `mdpeer checkpoints list` shows it "
        "pending until then",
        err=True,
    )


def _who() -> str:
    """Who asked, for the record (user@host); no secrets."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"

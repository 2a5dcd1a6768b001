"""`mdpeer routes apply|list|add|remove`: the routes in the control topic.

Every change is one Kafka transaction of the group's admin producer (peer.control.admin), so peers,
which read the control topic read_committed, see all of an apply or none of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka import Producer

from peer.cli.common import expected_errors
from peer.cli.options import Deployment, JsonOut, Lenient, Target, resolve_lenient, with_target
from peer.cli.topic_check import CreateTopics, check_and_report
from peer.config.routesfile import load_routes
from peer.control.admin import RouteRemoval, admin_producer, write_routes
from peer.control.reader import ControlSnapshot, read_control_topic
from peer.control.shards import shard_of
from peer.errors import MdpeerError
from peer.routes.model import Route, RouteDiff, RoutesFile, RouteTable

app = typer.Typer(
    help="Show and change the routes (subject -> Kafka topic) in the control topic.",
    no_args_is_help=True,
)


class UnknownSubjectError(MdpeerError):
    """The subject has no route in the control topic."""

    def __init__(self, subject: str, topic: str) -> None:
        self.subject = subject
        super().__init__(
            f"subject {subject!r} has no route in control topic {topic!r}",
            hint="`mdpeer routes list` shows the routed subjects (check --group too)",
        )


# --- helpers shared with the other admin commands ------------------------------------------


def read_snapshot(dep: Deployment) -> ControlSnapshot:
    """Every shard of the control topic, read to its end (bounded by the timeout)."""
    return read_control_topic(dep.client_conf("kafka_consumer"), dep.topic, dep.timeout)


def open_producer(dep: Deployment) -> Producer:
    return admin_producer(dep.client_conf("kafka_producer"), dep.group, timeout=dep.timeout)


def describe(route: Route) -> str:
    """``/a/b -> topic`` plus the options that differ from the defaults."""
    extras = [f"key {route.key}"] if route.key is not None else []
    if route.on_oversize.value != "fail":
        extras.append(f"on_oversize {route.on_oversize.value}")
    if route.dead_letter_topic is not None:
        extras.append(f"dead_letter_topic {route.dead_letter_topic}")
    if str(route.start) != "snapshot":
        extras.append(f"start {route.start}")
    return f"{route.subject} -> {route.topic}" + (f" ({', '.join(extras)})" if extras else "")


def _changes(before: Route, after: Route) -> str:
    a, b = before.options(), after.options()
    return ", ".join(
        f"{name} {a[name] or 'none'} -> {b[name] or 'none'}" for name in a if a[name] != b[name]
    )


def diff_lines(diff: RouteDiff) -> list[str]:
    """``+ added``, ``~ changed``, ``- removed``, one per line, by subject."""
    lines = [(r.subject, f"+ {describe(r)}") for r in diff.added]
    lines += [(a.subject, f"~ {a.subject}: {_changes(b, a)}") for b, a in diff.changed]
    lines += [(r.subject, f"- {describe(r)}") for r in diff.removed]
    return [text for _, text in sorted(lines)]


def diff_json(diff: RouteDiff) -> dict[str, Any]:
    return {
        "added": [r.to_dict() for r in diff.added],
        "changed": [{"before": b.to_dict(), "after": a.to_dict()} for b, a in diff.changed],
        "removed": [r.to_dict() for r in diff.removed],
    }


def print_notes(notes: tuple[str, ...] | list[str]) -> None:
    for note in notes:
        typer.echo(f"note: {note}", err=True)


def apply_routes(
    dep: Deployment,
    snapshot: ControlSnapshot,
    desired: RouteTable,
    *,
    json_out: bool,
    source: str,
    prune: bool = False,
    dry_run: bool = False,
    create_topics: bool = False,
) -> dict[str, Any]:
    """Diff ``desired`` against the control topic, print the diff, write it (one transaction).

    The topics ``desired`` needs that do not exist are named first (and created first with
    ``create_topics``, so the peers find them; a creation that fails writes nothing)."""
    full = snapshot.routes().diff(desired)
    kept = () if prune else full.removed
    diff = RouteDiff(full.added, full.removed if prune else (), full.changed)
    topics = check_and_report(
        dep, desired, create=create_topics, dry_run=dry_run, json_out=json_out
    )
    written = 0
    if diff and not dry_run:
        written = write_routes(
            open_producer(dep), dep.topic, snapshot.partitions, diff, timeout=dep.timeout
        )
    result = {
        **diff_json(diff),
        "kept": [r.to_dict() for r in kept],
        "dry_run": dry_run,
        "written": written,
        **topics,
    }
    if json_out:
        return result
    for line in diff_lines(diff):
        typer.echo(line)
    if kept:
        typer.echo(
            f"{len(kept)} route(s) in {dep.topic} but not in {source} kept (--prune removes them)",
            err=True,
        )
    if not diff:
        typer.echo(f"no changes: {dep.topic} already has the routes of {source}", err=True)
    elif dry_run:
        typer.echo(f"dry run: {_count(diff)}; nothing written", err=True)
    else:
        typer.echo(f"applied {_count(diff)} to {dep.topic} in one transaction", err=True)
    return result


def _count(diff: RouteDiff) -> str:
    return f"{len(diff.added)} added, {len(diff.changed)} changed, {len(diff.removed)} removed"


def load_routes_file(path: Path, *, lenient: bool = False) -> RoutesFile:
    routes = load_routes(path, lenient=lenient)
    if routes.table.templates and not routes.table:
        typer.echo(
            f"note: {path} has templates but no [[route]]: templates only fill in routes "
            "listed in the file (MigratoryData has no wildcard subscriptions)",
            err=True,
        )
    return routes


# --- commands ---------------------------------------------------------------------------------


@app.command()
@with_target
def apply(
    file: Annotated[
        Path,
        typer.Argument(help="A routes file: .toml, or the vendor connector's .json as is."),
    ],
    *,
    target: Target,
    prune: Annotated[
        bool, typer.Option("--prune", help="Also remove routes that are not in FILE.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the diff, write nothing.")
    ] = False,
    json_out: JsonOut = False,
    lenient: Lenient = False,
    create_topics: CreateTopics = False,
) -> None:
    """Make the control topic's routes match FILE (TOML or connector JSON).

    Prints the diff (+ added, ~ changed, - removed) and writes it in one transaction.
    Without --prune, routes that FILE does not mention are kept (the output says how many).
    Applying the same file again changes nothing. Target, dead-letter and audit topics
    that do not exist are named with what the peers will do about them; --create-topics
    creates them first.

    Example: mdpeer routes apply routes.toml --bootstrap kafka:9092 --group orders --dry-run
    """
    with expected_errors():
        relaxed = resolve_lenient(lenient)
        routes = load_routes_file(file, lenient=relaxed)
        print_notes(routes.notes)
        dep = target.deployment(lenient=relaxed)
        result = apply_routes(
            dep,
            read_snapshot(dep),
            routes.table,
            prune=prune,
            dry_run=dry_run,
            json_out=json_out,
            source=str(file),
            create_topics=create_topics,
        )
    if json_out:
        typer.echo(json.dumps(result))


@app.command("list")
@with_target
def list_routes(
    *,
    target: Target,
    json_out: JsonOut = False,
) -> None:
    """List the routes in the control topic, with each subject's shard.

    Example: mdpeer routes list --group orders --json
    """
    from rich.console import Console
    from rich.table import Table

    with expected_errors():
        dep = target.deployment()
        snapshot = read_snapshot(dep)
    shards = snapshot.partitions
    routes = snapshot.route_list()
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "control_topic": dep.topic,
                    "shards": shards,
                    "routes": [
                        {**r.to_dict(), "shard": shard_of(r.subject, shards)} for r in routes
                    ],
                }
            )
        )
        return
    if not routes:
        typer.echo(f"no routes in {dep.topic} (add some with `mdpeer routes apply FILE`)", err=True)
        return
    table = Table(title=f"routes in {dep.topic} ({len(routes)})")
    for name in ("subject", "topic", "key", "shard", "on_oversize", "start"):
        table.add_column(name, overflow="fold")
    for r in routes:
        table.add_row(
            r.subject,
            r.topic,
            r.key or "-",
            str(shard_of(r.subject, shards)),
            r.on_oversize.value
            + (f" -> {r.dead_letter_topic}" if r.dead_letter_topic is not None else ""),
            str(r.start),
        )
    Console().print(table)


@app.command()
@with_target
def add(
    subject: Annotated[str, typer.Argument(help="MigratoryData subject, e.g. /server/status1.")],
    topic: Annotated[str, typer.Argument(help="Kafka topic its messages go to.")],
    *,
    target: Target,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Record key (default: none; records spread by subject)."),
    ] = None,
    on_oversize: Annotated[
        str,
        typer.Option(
            "--on-oversize", help="fail, skip or dead-letter (needs --dead-letter-topic)."
        ),
    ] = "fail",
    dead_letter_topic: Annotated[
        str | None, typer.Option("--dead-letter-topic", help="Topic for oversized messages.")
    ] = None,
    start: Annotated[
        str,
        typer.Option(
            "--start",
            help="Where a subject with no checkpoint begins: snapshot, latest, history:N.",
        ),
    ] = "snapshot",
    json_out: JsonOut = False,
    create_topics: CreateTopics = False,
) -> None:
    """Add a route for SUBJECT, or change its existing one.

    A target or dead-letter topic that does not exist is named with what the peers will do
    about it; --create-topics creates it first.

    Example: mdpeer routes add /server/status2 topic2 --key mykey --group orders
    """
    data: dict[str, object] = {
        "subject": subject,
        "topic": topic,
        "on_oversize": on_oversize,
        "start": start,
    }
    if key is not None:
        data["key"] = key
    if dead_letter_topic is not None:
        data["dead_letter_topic"] = dead_letter_topic
    with expected_errors():
        route = Route.from_dict(data)
        dep = target.deployment()
        snapshot = read_snapshot(dep)
        desired = RouteTable([*(r for r in snapshot.route_list() if r.subject != subject), route])
        result = apply_routes(
            dep,
            snapshot,
            desired,
            prune=False,
            dry_run=False,
            json_out=json_out,
            source="the command line",
            create_topics=create_topics,
        )
    if json_out:
        typer.echo(json.dumps(result))


@app.command()
@with_target
def remove(
    subject: Annotated[str, typer.Argument(help="The subject whose route goes.")],
    *,
    target: Target,
    json_out: JsonOut = False,
) -> None:
    """Remove the route of SUBJECT; its owner stops fetching it.

    Its checkpoint stays, so adding the route again resumes where it stopped.

    Example: mdpeer routes remove /server/status2 --group orders
    """
    with expected_errors():
        dep = target.deployment()
        snapshot = read_snapshot(dep)
        current = snapshot.routes().get(subject)
        if current is None:
            raise UnknownSubjectError(subject, dep.topic)
        write_routes(
            open_producer(dep),
            dep.topic,
            snapshot.partitions,
            [RouteRemoval(subject)],
            timeout=dep.timeout,
        )
    if json_out:
        typer.echo(json.dumps({"removed": [current.to_dict()]}))
    else:
        typer.echo(f"- {describe(current)}")
        typer.echo(f"removed the route of {subject} from {dep.topic}", err=True)

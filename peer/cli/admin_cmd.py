"""Admin commands: ``init``, ``validate``, ``status`` and the ``routes`` / ``checkpoints``
sub-apps (peer.cli.routes_cmd, peer.cli.checkpoints_cmd, peer.cli.status_cmd)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final

import typer

from peer.cli import checkpoints_cmd, routes_cmd, status_cmd
from peer.cli.common import expected_errors
from peer.cli.options import (
    DEFAULT_TIMEOUT,
    Deployment,
    JsonOut,
    Lenient,
    Target,
    Timeout,
    resolve_lenient,
    with_target,
)
from peer.cli.topic_check import CreateTopics, missing_topics
from peer.config.load import load_settings
from peer.config.routesfile import load_routes, read_text
from peer.config.servers import parse_servers, resolve_encryption
from peer.config.settings import PeerSettings, SourceSettings
from peer.control.admin import admin_client, ensure_control_topic
from peer.errors import ConfigError
from peer.routes.model import RoutesFile, RouteTable

DEFAULT_SHARDS: Final = 12
#: stands in for a bootstrap a config file leaves to the environment (validate never connects)
_NO_BOOTSTRAP: Final = "unset.invalid:9092"


def register(app: typer.Typer) -> None:
    """Add the admin commands and sub-apps to the root app."""
    app.command()(init)
    app.command()(validate)
    app.command()(status_cmd.status)
    app.add_typer(routes_cmd.app, name="routes")
    app.add_typer(checkpoints_cmd.app, name="checkpoints")


@with_target
def init(
    *,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            min=1,
            max=10_000,
            help=f"Shards (control topic partitions); default {DEFAULT_SHARDS}, or tasks.max "
            "of --from-connector when that is larger. Fixed for the life of the deployment; "
            "more shards let more peers share the work.",
            show_default=False,
        ),
    ] = None,
    replication_factor: Annotated[
        int | None,
        typer.Option(
            "--replication-factor",
            min=1,
            max=32,
            help="Replicas of the control topic (default: the broker's default); 3 in "
            "production (min.insync.replicas is then 2).",
            show_default=False,
        ),
    ] = None,
    from_connector: Annotated[
        Path | None,
        typer.Option(
            "--from-connector",
            help="The vendor connector's JSON as is: its subject routes are applied, and "
            f"its tasks.max is the shard count when above {DEFAULT_SHARDS} (unless --shards).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    target: Target,
    json_out: JsonOut = False,
    lenient: Lenient = False,
    create_topics: CreateTopics = False,
) -> None:
    """Create the deployment's control topic (compacted, one partition per shard).

    Idempotent: running it again on the same deployment changes nothing. It refuses to
    change the shard count of an existing deployment (see docs/OPERATIONS.md for how to
    migrate to another count).

    Examples:
      mdpeer init --bootstrap kafka:9092 --group orders --shards 24 --replication-factor 3
      mdpeer init --bootstrap kafka:9092 --from-connector connector.json
    """
    with expected_errors():
        relaxed = resolve_lenient(lenient)
        routes: RoutesFile | None = None
        if from_connector is not None:
            routes = load_routes(from_connector, lenient=relaxed)
            routes_cmd.print_notes(routes.notes)
        count, why = shard_count(shards, routes)
        dep = target.deployment(lenient=relaxed)
        info = ensure_control_topic(
            admin_client(dep.client_conf()),
            dep.topic,
            count,
            replication_factor,
            bootstrap=dep.bootstrap,
            timeout=dep.timeout,
        )
        if not json_out:
            state = "created" if info.created else "exists already, unchanged:"
            typer.echo(
                f"control topic {info.topic} {state} {info.partitions} shards ({why}), "
                f"replication factor {info.replication_factor}",
                err=True,
            )
        applied: dict[str, Any] | None = None
        if routes is not None and from_connector is not None:
            applied = routes_cmd.apply_routes(
                dep,
                routes_cmd.read_snapshot(dep),
                routes.table,
                source=str(from_connector),
                json_out=json_out,
                create_topics=create_topics,
            )
            if not json_out and routes.source is not None:
                typer.echo(
                    f"the MigratoryData settings of {from_connector} (servers, token) are "
                    f"used by: mdpeer run --config {from_connector}",
                    err=True,
                )
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "control_topic": info.topic,
                    "created": info.created,
                    "shards": info.partitions,
                    "shards_reason": why,
                    "replication_factor": info.replication_factor,
                    "routes": applied,
                }
            )
        )


def shard_count(shards: int | None, routes: RoutesFile | None) -> tuple[int, str]:
    """The shard count ``init`` creates, and why: ``--shards``, else the default or a larger
    ``tasks.max`` of the connector.

    Not ``tasks.max`` as such: it is small in most connectors (the vendor's quick start has
    2, which put both its subjects on one shard and idled the second peer), and the count
    cannot grow later, while a spare shard costs little.
    """
    if shards is not None:
        return shards, "--shards"
    tasks = routes.shards if routes is not None else None
    if routes is None or tasks is None:
        return DEFAULT_SHARDS, "the default"
    if tasks > DEFAULT_SHARDS:
        return tasks, f"tasks.max={tasks} of {routes.path}, above the default {DEFAULT_SHARDS}"
    return DEFAULT_SHARDS, (
        f"the default; tasks.max={tasks} of {routes.path} is not above it, and more shards "
        "let more peers share the work"
    )


def validate(
    file: Annotated[
        Path,
        typer.Argument(
            help="A peer config (.toml), a routes file (.toml) or a connector .json.",
            dir_okay=False,
        ),
    ],
    *,
    json_out: JsonOut = False,
    lenient: Annotated[
        bool,
        typer.Option(
            "--lenient",
            help="Unknown migratorydata.* keys of a connector JSON are notes, not errors "
            "(the environment is not read: MDPEER_LENIENT does not apply).",
        ),
    ] = False,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap",
            "-b",
            help="Also ask this Kafka which target, dead-letter and audit topics do not "
            "exist, and say what the peers will do about them (no envvar: validate reads "
            "only the file unless told).",
            show_default=False,
        ),
    ] = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> None:
    """Check a peer config or routes file without touching Kafka; print what it holds.

    A .toml with only [[route]]/[[template]] tables is a routes file, any other .toml a peer
    config (its routes_file is checked too). A .json is the vendor connector's config, which
    serves as both. The first error is printed with the field it concerns; exit 1.

    Examples:
      mdpeer validate routes.toml
      mdpeer validate /etc/mdpeer/peer.toml
      mdpeer validate connector.json --json
    """
    with expected_errors():
        report = _validate(file, lenient=lenient)
        if bootstrap is not None:
            report["missing_topics"] = _check_topics(file, report, bootstrap, timeout, lenient)
    if json_out:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{file}: valid {report['kind']}")
    for name, value in report.items():
        if name not in ("kind", "notes", "file", "missing_topics") and value is not None:
            shown = json.dumps(value) if isinstance(value, bool) else value  # true, as in TOML
            if name == "source_mode":
                shown = f"{value['mode']} ({value['reason']})"
            typer.echo(f"  {name}: {shown}")
    routes_cmd.print_notes(report["notes"])
    for missing in report.get("missing_topics") or []:
        kind = "warning" if missing["blocking"] else "note"
        typer.echo(
            f"{kind}: topic {missing['topic']} does not exist "
            f"({', '.join(missing['used_by'][:3])}): {missing['fate']}",
            err=True,
        )
    if bootstrap is not None and not report.get("missing_topics"):
        typer.echo(f"every topic {file} needs exists at {bootstrap}", err=True)


def _check_topics(
    file: Path, report: dict[str, Any], bootstrap: str, timeout: float, lenient: bool
) -> list[dict[str, Any]]:
    """``validate --bootstrap``: the topics the file's routes (and audit topic) need that the
    cluster does not have, with what the peers will do about them."""
    if report["kind"] == "routes file":
        settings = PeerSettings(bootstrap=bootstrap)
        table = load_routes(file).table
    else:
        settings = load_settings(file, {}, {"bootstrap": bootstrap}, lenient=lenient)
        routes_path = file if report["kind"] == "connector config" else settings.routes_file
        table = (
            load_routes(routes_path, lenient=lenient).table
            if routes_path is not None
            else RouteTable([])
        )
    return [m.to_dict() for m in missing_topics(Deployment(settings, timeout), table)]


def _validate(file: Path, *, lenient: bool) -> dict[str, Any]:
    suffix = file.suffix.lower()
    if suffix == ".json":
        routes = load_routes(file, lenient=lenient)
        return {**_routes_report(routes, "connector config"), "file": str(file)}
    if suffix != ".toml":
        raise ConfigError("FILE", str(file), "expected a .toml (config or routes) or a .json")
    try:
        doc = tomllib.loads(read_text(file, "FILE"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(file), "", f"not valid TOML: {exc}") from None
    if doc and set(doc) <= {"route", "template"}:
        return {**_routes_report(load_routes(file), "routes file"), "file": str(file)}
    overrides = {} if "bootstrap" in doc else {"bootstrap": _NO_BOOTSTRAP}
    # The file alone: the environment is what `run` adds at start, not part of the file.
    settings = load_settings(file, {}, overrides, lenient=lenient)
    report: dict[str, Any] = {
        "kind": "peer config",
        "file": str(file),
        "bootstrap": settings.bootstrap if "bootstrap" in doc else None,
        "group": settings.group,
        "control_topic": settings.control_topic,
        "servers": ", ".join(settings.source.servers) if settings.source.servers else None,
        "encryption": settings.source.effective_encryption if settings.source.servers else None,
        "source_mode": _doorbell(settings.source),
        "routes_file": str(settings.routes_file) if settings.routes_file else None,
        "notes": list(settings.notes),
    }
    if "bootstrap" not in doc:
        report["notes"].append("bootstrap is not set: give it with --bootstrap or MDPEER_BOOTSTRAP")
    if settings.routes_file is not None:
        routes = load_routes(settings.routes_file, lenient=lenient)
        report["routes"] = len(routes.table)
        report["notes"].extend(routes.notes)
    return report


def _doorbell(source: SourceSettings) -> dict[str, str]:
    """Which mode the peer will use and why: it imports the client module, as ``run`` will.
    ``doorbell = "on"`` without a usable client is an error, since ``run`` refuses it."""
    from peer.source.doorbell import plan_for

    plan = plan_for(source)
    plan.require()
    return plan.as_dict()


def _routes_report(routes: RoutesFile, kind: str) -> dict[str, Any]:
    report: dict[str, Any] = {
        "kind": kind,
        "routes": len(routes.table),
        "templates": len(routes.table.templates) or None,
        "tasks_max": routes.shards,
        "suggested_shards": None,
        "suggested_shards_reason": None,
        "servers": None,
        "encryption": None,
        "source_mode": _doorbell(SourceSettings()) if kind == "connector config" else None,
        "topic_partitions": routes.topic_partitions,
        "topic_replication_factor": routes.topic_replication_factor,
        "notes": list(routes.notes),
    }
    if kind == "connector config":
        count, why = shard_count(None, routes)
        report["suggested_shards"], report["suggested_shards_reason"] = count, why
    source = routes.source
    if source is not None and source.servers:
        report["servers"] = ", ".join(source.servers)
    if source is not None and (source.servers or source.encryption is not None):
        servers = parse_servers(source.servers) if source.servers else ()
        report["encryption"] = resolve_encryption(servers, source.encryption)
    return report

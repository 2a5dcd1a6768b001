"""`mdpeer acls`: the ACLs a deployment's peers or operators need, printed or granted.

What each role needs was found by experiment against a secured Kafka (docs/SECURITY.md,
peer.control.acls). The topics come from the routes in the control topic (targets and
dead-letter topics) and the audit topic of the settings, else from ``--topics``.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from peer.cli.common import expected_errors
from peer.cli.options import Deployment, JsonOut, Target, with_target
from peer.cli.routes_cmd import read_snapshot
from peer.control.acls import ROLES, Acl, admin_acls, apply, peer_acls, route_topics
from peer.control.admin import admin_client
from peer.errors import ConfigError, MdpeerError
from peer.routes.model import validate_topic

_PRINCIPAL = re.compile(r"^[A-Za-z]+:\S+$")


def register(app: typer.Typer) -> None:
    """Add the ``acls`` command to the root app."""
    app.command("acls")(acls)


@with_target
def acls(
    *,
    principal: Annotated[
        str,
        typer.Option(
            "--principal",
            help="Who gets them, as Kafka names principals: User:<SASL user> (or the name "
            "the brokers map a TLS certificate to).",
            show_default=False,
        ),
    ],
    role: Annotated[
        str,
        typer.Option(
            "--role", help="peer (what `mdpeer run` needs) or admin (the admin commands)."
        ),
    ] = "peer",
    topics: Annotated[
        str | None,
        typer.Option(
            "--topics",
            help="Target / dead-letter / audit topics, comma-separated: added to those the "
            "control topic's routes name, and used alone when it cannot be read.",
            show_default=False,
        ),
    ] = None,
    peer_ids: Annotated[
        str | None,
        typer.Option(
            "--peer-ids",
            help="Peer ids, comma-separated: one literal ACL per transactional id "
            "<group>-<id> instead of the prefix <group>- (which also covers <group>-admin).",
            show_default=False,
        ),
    ] = None,
    create_topics: Annotated[
        bool,
        typer.Option(
            "--create-topics",
            help="Also Create on the topics: the peers' topic_creation create (or cluster "
            "with brokers that auto-create), or the admin's --create-topics.",
        ),
    ] = False,
    do_apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Create them now (idempotent; needs Describe and Alter on the cluster).",
        ),
    ] = False,
    command_config: Annotated[
        str,
        typer.Option(
            "--command-config",
            help="The --command-config file named in the printed kafka-acls lines.",
        ),
    ] = "admin.properties",
    target: Target,
    json_out: JsonOut = False,
) -> None:
    """Print (or --apply) the ACLs a principal needs for one deployment, as kafka-acls lines.

    Examples:
      mdpeer acls --group orders --principal User:peer --bootstrap kafka:9093 --config admin.toml
      mdpeer acls --group orders --principal User:ops --role admin --apply --json
    """
    with expected_errors():
        if not _PRINCIPAL.match(principal):
            raise ConfigError("--principal", principal, "expected <type>:<name>, e.g. User:peer")
        if role not in ROLES:
            raise ConfigError("--role", role, f"expected one of {', '.join(ROLES)}")
        given = _names(topics)
        for topic in given:
            validate_topic(topic, "--topics")
        dep = target.deployment()
        found, source = _route_topics(dep, given)
        wanted = sorted(set(found) | set(given))
        if role == "peer":
            plan = peer_acls(
                dep.group,
                dep.topic,
                wanted,
                audit_topic=dep.settings.audit_topic,
                peer_ids=_names(peer_ids),
                create_topics=create_topics,
            )
        else:
            audit = [dep.settings.audit_topic] if dep.settings.audit_topic else []
            every = sorted(set(wanted) | set(audit))
            plan = admin_acls(dep.group, dep.topic, every, create_topics=create_topics)
        added: list[Acl] | None = None
        if do_apply:
            added, kept = apply(admin_client(dep.client_conf()), principal, plan, dep.timeout)
            typer.echo(
                f"added {len(added)} ACL(s) for {principal}, {len(kept)} were there already",
                err=True,
            )
    if json_out:
        out = {
            "group": dep.group,
            "control_topic": dep.topic,
            "principal": principal,
            "role": role,
            "topics": wanted,
            "topics_from": source,
            "acls": [a.to_dict(principal, dep.bootstrap, command_config) for a in plan],
            "added": None if added is None else len(added),
        }
        typer.echo(json.dumps(out))
        return
    typer.echo(f"# {role} ACLs of group {dep.group} for {principal} (topics: {source})")
    for acl in plan:
        typer.echo(f"# {acl.operation} on {acl.resource_type} {acl.name}: {acl.why}")
        typer.echo(acl.kafka_acls(principal, dep.bootstrap, command_config))


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def _route_topics(dep: Deployment, given: list[str]) -> tuple[list[str], str]:
    """The routes' target and dead-letter topics, and where they came from."""
    try:
        targets, dead = route_topics(read_snapshot(dep).route_list())
    except MdpeerError as exc:
        if not given:
            raise
        typer.echo(f"note: the routes of {dep.topic} were not read ({exc}): --topics", err=True)
        return [], "--topics"
    return [*targets, *dead], f"the routes in {dep.topic}" + (" and --topics" if given else "")

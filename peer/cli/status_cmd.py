"""`mdpeer status`: the peers of a group, which shard each owns, and where each subject stands.

Everything comes from Kafka (the group's assignment and the control topic), never from the
peers themselves, so it works with no peer running (every shard shows as unowned) and while
they run (it never joins the group: the control topic is read with ``assign``).
"""

from __future__ import annotations

import json
from typing import Any

import typer

from peer.admin import GroupInfo, admin_client, describe_group
from peer.cli.checkpoints_cmd import subject_rows
from peer.cli.common import expected_errors
from peer.cli.options import (
    DEFAULT_TIMEOUT,
    Bootstrap,
    ConfigFile,
    Deployment,
    Group,
    JsonOut,
    Timeout,
    deployment,
)
from peer.cli.routes_cmd import read_snapshot
from peer.controlreader import ControlSnapshot

UNOWNED = "(unowned)"


def gather(dep: Deployment) -> dict[str, Any]:
    """The whole status as plain data (what --json prints)."""
    snapshot = read_snapshot(dep)
    admin = admin_client(dep.client_conf())
    info = describe_group(admin, dep.group, dep.topic, bootstrap=dep.bootstrap, timeout=dep.timeout)
    return build(dep, snapshot, info)


def build(dep: Deployment, snapshot: ControlSnapshot, info: GroupInfo) -> dict[str, Any]:
    owners = info.owners()
    rows = subject_rows(snapshot)
    for row in rows:
        member = owners.get(row["shard"])
        row["owner"] = member.peer if member is not None else None
    shards = []
    for shard in range(snapshot.partitions):
        member = owners.get(shard)
        subjects = [r["subject"] for r in rows if r["shard"] == shard and r["routed"]]
        shards.append(
            {"shard": shard, "owner": member.peer if member else None, "subjects": subjects}
        )
    return {
        "group": dep.group,
        "state": info.state,
        "control_topic": dep.topic,
        "shards": snapshot.partitions,
        "peers": [
            {
                "peer": m.peer,
                "client_id": m.client_id,
                "member_id": m.member_id,
                "instance_id": m.instance_id,
                "host": m.host,
                "shards": list(m.shards),
            }
            for m in info.members
        ],
        "shard_owners": shards,
        "subjects": [{k: v for k, v in r.items() if k != "checkpoint_text"} for r in rows],
        "_checkpoint_text": {r["subject"]: r["checkpoint_text"] for r in rows},
        "problems": [str(p) for p in snapshot.problems()],
    }


def render(data: dict[str, Any]) -> None:
    """Rich tables for people: peers, shard owners, subjects."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    owned = sum(1 for s in data["shard_owners"] if s["owner"] is not None)
    console.print(
        f"group [bold]{data['group']}[/bold] ({data['state']}): {len(data['peers'])} peer(s), "
        f"{owned}/{data['shards']} shards owned, control topic {data['control_topic']}",
        highlight=False,
    )
    if data["peers"]:
        peers = Table(title="peers")
        for name in ("peer", "host", "shards", "member id"):
            peers.add_column(name, overflow="fold")
        for p in data["peers"]:
            peers.add_row(
                p["peer"], p["host"], ",".join(map(str, p["shards"])) or "-", p["member_id"]
            )
        console.print(peers)
    else:
        console.print("no peers in the group: every shard is unowned", highlight=False)
    shards = Table(title="shards")
    for name in ("shard", "owner", "subjects"):
        shards.add_column(name, overflow="fold")
    for s in data["shard_owners"]:
        subjects = s["subjects"]
        shown = ", ".join(subjects[:5]) + (f" (+{len(subjects) - 5})" if len(subjects) > 5 else "")
        shards.add_row(str(s["shard"]), s["owner"] or UNOWNED, shown or "-")
    console.print(shards)
    if data["subjects"]:
        subjects_table = Table(title="subjects")
        for name in ("subject", "topic", "shard", "owner", "checkpoint", "pending"):
            subjects_table.add_column(name, overflow="fold")
        for r in data["subjects"]:
            pending = r["pending"]
            subjects_table.add_row(
                r["subject"],
                r["topic"] or "(no route)",
                str(r["shard"]),
                r["owner"] or UNOWNED,
                data["_checkpoint_text"][r["subject"]],
                f"reset to {pending['to']}" if pending else "-",
            )
        console.print(subjects_table)
    else:
        console.print("no routes yet (mdpeer routes apply FILE)", highlight=False)
    for problem in data["problems"]:
        typer.echo(f"warning: {problem}", err=True)


def status(
    *,
    bootstrap: Bootstrap = None,
    group: Group = None,
    config: ConfigFile = None,
    timeout: Timeout = DEFAULT_TIMEOUT,
    json_out: JsonOut = False,
) -> None:
    """Show the peers, the owner and subjects of each shard, and each subject's checkpoint.

    Per subject: its topic, shard, owner, checkpoint (epoch:seq) and any pending reset.
    Reads Kafka only: works with no peer running (shards show as unowned) and while peers
    run, without disturbing them.

    Example: mdpeer status --group orders --json | jq '.shard_owners'
    """
    with expected_errors():
        dep = deployment(bootstrap, group, config, timeout)
        data = gather(dep)
    if json_out:
        data.pop("_checkpoint_text")
        typer.echo(json.dumps(data))
    else:
        render(data)

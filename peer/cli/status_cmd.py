"""`mdpeer status`: the peers of a group, which shard each owns, and where each subject stands.

Everything comes from Kafka (the group's assignment and the control topic), never from the
peers themselves, so it works with no peer running (every shard shows as unowned) and while
they run (it never joins the group: the control topic is read with ``assign``).

Peers report into the control topic what only they know: a subject stopped at its checkpoint
by a fault of its own (``block:`` notes: topic missing, oversized message, entitlement
denied...) and a peer that cannot reach MigratoryData (``peer:`` notes). ``--check`` turns
all of it into an exit status for scripts and alerts.

Lag needs the other side: when MigratoryData servers are known (the ``--servers`` /
``MDPEER_SERVERS`` / ``[source]`` settings of ``mdpeer run``), the head of each subject is
asked over REST (peer.source.heads) within a time budget. A source that does not answer makes
the lag *unknown* (with the reason), never an error: what Kafka knows is still shown, exit 0.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from peer.cli.checkpoints_cmd import subject_rows
from peer.cli.common import expected_errors
from peer.cli.options import Deployment, JsonOut, Servers, Target, Token, TokenFile, with_target
from peer.cli.routes_cmd import read_snapshot
from peer.config.settings import SourceSettings
from peer.control import PeerRecord
from peer.control.admin import admin_client
from peer.control.group import GroupInfo, describe_group
from peer.control.reader import ControlSnapshot
from peer.model import Position

if TYPE_CHECKING:
    from peer.source.heads import Head, HeadUnknown, Lag

#: seconds for all head requests together (peer.source.heads.DEFAULT_BUDGET; not imported:
#: the source pulls in aiohttp, which every other command, ``mdpeer health`` among them,
#: would then pay for at start)
DEFAULT_BUDGET: Final = 5.0

UNOWNED = "(unowned)"
#: exit status of ``--check`` when something needs attention (1 is: status itself failed)
EXIT_CHECK: Final = 3
#: default --max-lag: a subject further behind its head than this counts as lagging
DEFAULT_MAX_LAG: Final = 1000
NO_SOURCE = (
    "no MigratoryData servers given (--servers, MDPEER_SERVERS or source.servers in --config)"
)


def gather(dep: Deployment, *, lag: bool = True, budget: float = DEFAULT_BUDGET) -> dict[str, Any]:
    """The whole status as plain data (what --json prints); with ``lag`` and known servers,
    each subject's head and lag too."""
    snapshot = read_snapshot(dep)
    admin = admin_client(dep.client_conf())
    info = describe_group(admin, dep.group, dep.topic, bootstrap=dep.bootstrap, timeout=dep.timeout)
    data = build(dep, snapshot, info)
    source = dep.settings.source
    if not lag:
        add_lag(data, None, "not asked (--no-lag)", budget)
    elif not source.servers:
        add_lag(data, None, NO_SOURCE, budget)
    else:
        add_lag(data, source, None, budget)
    return data


def add_lag(
    data: dict[str, Any], source: SourceSettings | None, why_not: str | None, budget: float
) -> None:
    """Ask the source (if given) for every listed subject's head; set head/lag per subject."""
    subjects = [r["subject"] for r in data["subjects"]]
    heads: dict[str, Head | HeadUnknown] = {}
    started = time.monotonic()
    if source is not None:
        from peer.source.heads import ask_heads  # lazily: see DEFAULT_BUDGET
        from peer.source.rest_config import RestSourceConfig

        config = RestSourceConfig.from_settings(source.rest_settings())
        heads = ask_heads(config, subjects, budget=budget)
    data["source"] = {
        "asked": source is not None,
        "reason": why_not,
        "servers": list(source.servers) if source is not None else [],
        "budget_s": budget,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    from peer.source.heads import lag_of  # lazily: see DEFAULT_BUDGET

    for row in data["subjects"]:
        ckpt = row["checkpoint"]
        position = None
        if ckpt is not None and ckpt["epoch"] is not None and ckpt["seq"] is not None:
            position = Position(ckpt["epoch"], ckpt["seq"])
        lag = lag_of(position, heads.get(row["subject"]) if source is not None else None)
        row.update(lag_json(lag))
        data["_lag"][row["subject"]] = lag


def lag_json(lag: Lag) -> dict[str, Any]:
    head = lag.head
    return {
        "head": None
        if head is None or head.position is None
        else {"epoch": head.position.epoch, "seq": head.position.seq, "via": head.via},
        "lag": lag.messages,
        "lag_state": lag.state.value,
        "lag_reason": lag.reason,
    }


def build(dep: Deployment, snapshot: ControlSnapshot, info: GroupInfo) -> dict[str, Any]:
    owners = info.owners()
    rows = subject_rows(snapshot)
    blocks = snapshot.blocks()
    for row in rows:
        member = owners.get(row["shard"])
        row["owner"] = member.peer if member is not None else None
        block = blocks.get(row["subject"]) if row["routed"] else None
        row["blocked"] = (
            None
            if block is None
            else {
                "reason": block.reason,
                "since": block.since,
                "topic": block.topic,
                "detail": block.detail,
                "peer": block.peer,
            }
        )
    reports = snapshot.peers()
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
                "source": _source_state(reports.get(m.peer)),
            }
            for m in info.members
        ],
        "shard_owners": shards,
        "subjects": [{k: v for k, v in r.items() if k != "checkpoint_text"} for r in rows],
        "_checkpoint_text": {r["subject"]: r["checkpoint_text"] for r in rows},
        "_lag": {},
        "problems": [str(p) for p in snapshot.problems()],
    }


def _source_state(report: PeerRecord | None) -> dict[str, Any]:
    if report is None:
        return {"state": "ok"}
    return {"state": report.source, "since": report.since, "error": report.error}


def findings(data: dict[str, Any], max_lag: int) -> list[str]:
    """What needs attention, one line each (``--check`` fails on any): stopped subjects,
    subjects lagging more than ``max_lag``, peers that cannot reach MigratoryData, shards
    holding subjects with no owner while peers run, and idle peers (more peers than shards
    with subjects: a note, not a failure)."""
    out: list[str] = []
    blocked = [r for r in data["subjects"] if r["blocked"] is not None]
    by_reason: dict[str, list[str]] = defaultdict(list)
    for r in blocked:
        by_reason[r["blocked"]["reason"]].append(r["subject"])
    for reason, subjects in sorted(by_reason.items()):
        out.append(f"{len(subjects)} subject(s) blocked ({reason}): {_few(subjects)}")
    lagging = [
        r["subject"]
        for r in data["subjects"]
        if r.get("lag_state") == "measured" and (r.get("lag") or 0) > max_lag
    ]
    if lagging:
        out.append(f"{len(lagging)} subject(s) lag more than {max_lag}: {_few(lagging)}")
    out.extend(
        f"peer {p['peer']}: MigratoryData {p['source']['state']} since "
        f"{p['source']['since']} ({p['source']['error']})"
        for p in data["peers"]
        if p["source"]["state"] != "ok"
    )
    if data["peers"]:
        orphans = [s["shard"] for s in data["shard_owners"] if s["subjects"] and not s["owner"]]
        if orphans:
            out.append(f"shards with subjects but no owner: {orphans}")
    return out


def idle_peers_note(data: dict[str, Any]) -> str | None:
    """More live peers than shards holding subjects: some peers have nothing to do."""
    busy = sum(1 for s in data["shard_owners"] if s["subjects"])
    peers = len(data["peers"])
    if peers > busy:
        return (
            f"{peers} peers but only {busy} shard(s) hold subjects: {peers - busy} peer(s) "
            "idle (shard = murmur2(subject) mod shards; more shards or subjects spread them)"
        )
    return None


def _few(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" (+{len(items) - 3})" if len(items) > 3 else "")


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
    asked = data["source"]["asked"]
    if data["subjects"]:
        subjects_table = Table(title="subjects")
        columns = ["subject", "topic", "shard", "owner", "checkpoint"]
        columns += ["head", "lag"] if asked else []
        for name in [*columns, "pending", "state"]:
            subjects_table.add_column(name, overflow="fold")
        for r in data["subjects"]:
            pending = r["pending"]
            cells = [
                r["subject"],
                r["topic"] or "(no route)",
                str(r["shard"]),
                r["owner"] or UNOWNED,
                data["_checkpoint_text"][r["subject"]],
            ]
            if asked:
                lag_ = data["_lag"][r["subject"]]
                cells += [_head_text(r["head"], lag_), lag_.text()]
            cells.append(f"reset to {pending['to']}" if pending else "-")
            blocked = r["blocked"]
            cells.append(
                f"blocked: {blocked['reason']} since {blocked['since']}" if blocked else "ok"
            )
            subjects_table.add_row(*cells)
        console.print(subjects_table)
        if not asked:
            reason = data["source"]["reason"]
            console.print(f"lag not shown: {reason}", highlight=False, markup=False)
    else:
        console.print("no routes yet (mdpeer routes apply FILE)", highlight=False)
    for problem in data["problems"]:
        typer.echo(f"warning: {problem}", err=True)
    for reason, subjects in _unknown_by_reason(data).items():
        named = ", ".join(subjects[:3]) + (f" (+{len(subjects) - 3})" if len(subjects) > 3 else "")
        typer.echo(f"warning: lag unknown for {named}: {reason}", err=True)


def _head_text(head: dict[str, Any] | None, lag: Lag) -> str:
    if head is None:
        return "none" if lag.head is not None else "?"
    text = f"{head['epoch']}:{head['seq']}"
    # a snapshot is the newest *retained* message: newer non-retained ones do not show
    return text + " (snapshot)" if head["via"] == "snapshot" else text


def _unknown_by_reason(data: dict[str, Any]) -> dict[str, list[str]]:
    by_reason: dict[str, list[str]] = defaultdict(list)
    for r in data["subjects"]:
        if r["lag_state"] == "unknown":
            by_reason[r["lag_reason"]].append(r["subject"])
    return by_reason


@with_target
def status(
    *,
    target: Target,
    servers: Servers = None,
    token: Token = None,
    token_file: TokenFile = None,
    lag: Annotated[
        bool,
        typer.Option(
            "--lag/--no-lag",
            help="Ask MigratoryData each subject's head to show its lag (needs the servers).",
        ),
    ] = True,
    source_timeout: Annotated[
        float,
        typer.Option(
            "--source-timeout",
            min=0.1,
            max=600.0,
            help="Seconds for asking MigratoryData the heads of all subjects together; "
            "subjects not answered by then show lag unknown.",
        ),
    ] = DEFAULT_BUDGET,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help=f"Exit {EXIT_CHECK} when anything needs attention: a subject blocked, a "
            "subject lagging more than --max-lag, a peer that cannot reach MigratoryData, a "
            "shard holding subjects with no owner while peers run.",
        ),
    ] = False,
    max_lag: Annotated[
        int,
        typer.Option("--max-lag", min=0, help="With --check: the most lag that is fine."),
    ] = DEFAULT_MAX_LAG,
    json_out: JsonOut = False,
) -> None:
    """Show the peers, each shard's owner and subjects, each subject's checkpoint and lag.

    Per subject: topic, shard, owner, checkpoint (epoch:seq), pending reset.
    Lag: with MigratoryData servers given as for mdpeer run (--servers,
    MDPEER_SERVERS or source.servers in --config), each subject's head is
    asked and lag = head seq - checkpoint seq; "epoch changed" when the
    epochs differ; "unknown" (with the reason, still exit 0) when the
    source does not answer within --source-timeout.
    Reads Kafka without joining the group: works with no peer running
    (shards show as unowned) and while peers run.

    A subject stopped at its checkpoint by a fault of its own shows as
    "blocked: <reason> since <time>"; a peer that cannot reach MigratoryData
    is flagged. --check exits 3 when anything needs attention (for scripts
    and alerts); 1 means status itself failed.

    Example: mdpeer status -g orders --servers md1:8800 --json | jq .subjects
    """
    with expected_errors():
        dep = target.deployment_with_source(servers=servers, token=token, token_file=token_file)
        data = gather(dep, lag=lag, budget=source_timeout)
    found = findings(data, max_lag)
    data["findings"] = found
    if json_out:
        data.pop("_checkpoint_text")
        data.pop("_lag")
        typer.echo(json.dumps(data))
    else:
        render(data)
        for line in found:
            typer.echo(f"attention: {line}", err=True)
    note = idle_peers_note(data)
    if note is not None:
        typer.echo(f"note: {note}", err=True)
    if check and found:
        raise typer.Exit(EXIT_CHECK)

"""`mdpeer kafka install|up|down|status|tool`: a real local Apache Kafka (KRaft) on loopback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from peer.cli.common import expected_errors
from peer.errors import MdpeerError

if TYPE_CHECKING:
    from peer.dev.localkafka import Cluster

app = typer.Typer(
    help="Run a real local Apache Kafka (KRaft, on 127.0.0.1) for the demo and the tests.",
    no_args_is_help=True,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="MDPEER_KAFKA_DATA_DIR",
        help="Configs, storage, logs and state of the cluster. "
        "(default: $MDPEER_CACHE_DIR/kafka-data, i.e. ~/.cache/mdpeer/kafka-data)",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def _err(line: str) -> None:
    typer.echo(line, err=True)


@app.command()
def install(
    *,
    connect: Annotated[
        bool,
        typer.Option(
            "--connect",
            help="Also resolve Kafka Connect of the same release (connect-runtime and "
            "connect-file, ~36 MB): scripts/bench.py runs a worker beside mdpeer.",
        ),
    ] = False,
    json_out: Json = False,
) -> None:
    """Resolve the pinned Apache Kafka jars (Maven, or KAFKA_HOME) and check Java.

    Downloads only the first time; later runs return at once. The first run also starts a
    throwaway broker once to build a class-data-sharing archive that makes every later
    broker start about a second faster (MDPEER_KAFKA_CDS=0 skips it).

    Example: mdpeer kafka install
    """
    from peer.dev.localkafka import find_java, resolve_jars
    from peer.dev.localkafka.cds import build_cds_archive
    from peer.dev.localkafka.connect import resolve_connect_jars

    with expected_errors():
        jars = resolve_jars()
        java = find_java()
        connect_libs = resolve_connect_jars().libs if connect else None
    archive: Path | None = None
    try:
        archive = build_cds_archive()
    except MdpeerError as exc:  # an optimisation only: say so and carry on
        first = str(exc).splitlines()[0]
        _err(f"warning: no class-data-sharing archive (brokers start a bit slower): {first}")
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "kafka_version": jars.version,
                    "source": jars.source,
                    "libs": str(jars.libs),
                    "java": java.path,
                    "java_version": java.major,
                    "cds_archive": str(archive) if archive else None,
                    "connect_libs": str(connect_libs) if connect_libs else None,
                }
            )
        )
    else:
        _err(f"Apache Kafka {jars.version} ({jars.source}), Java {java.major} at {java.path}")
        typer.echo(str(jars.libs))
        if connect_libs is not None:
            _err(f"Kafka Connect {jars.version}: {connect_libs}")


@app.command()
def up(
    *,
    nodes: Annotated[
        int,
        typer.Option(
            "--nodes",
            envvar="MDPEER_KAFKA_NODES",
            help="1, or 3 for a real quorum (replication 3, min ISR 2) that survives losing "
            "one node.",
        ),
    ] = 1,
    port: Annotated[
        int,
        typer.Option(
            "--port",
            envvar="MDPEER_KAFKA_PORT",
            min=1,
            max=65535,
            help="First client port; node i listens on port+i.",
        ),
    ] = 9092,
    controller_port: Annotated[
        int | None,
        typer.Option(
            "--controller-port",
            envvar="MDPEER_KAFKA_CONTROLLER_PORT",
            min=1,
            max=65535,
            help="First KRaft controller port (default: port+100).",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
    heap_mb: Annotated[
        int,
        typer.Option("--heap-mb", envvar="MDPEER_KAFKA_HEAP_MB", min=64, help="JVM heap per node."),
    ] = 512,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            envvar="MDPEER_KAFKA_READY_TIMEOUT",
            min=1.0,
            help="Seconds to wait until every node answers a metadata request.",
        ),
    ] = 90.0,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Wipe the storage of an earlier run first.")
    ] = False,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="TLS and SASL/SCRAM-SHA-512 logins for clients, ACLs (StandardAuthorizer, "
            "deny by default), super user admin. Passwords and client files go to "
            "<data-dir>/secure/; --json names them.",
        ),
    ] = False,
    users: Annotated[
        list[str] | None,
        typer.Option(
            "--user",
            help="With --secure: a SCRAM user to create (repeat it; admin always is one). "
            "(default: peer and operator)",
            show_default=False,
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Start a local Kafka and wait until it answers; print its bootstrap servers.

    Storage of an earlier run with the same nodes and ports is reused (topics survive);
    the nodes keep running after this command returns. Stop them with `mdpeer kafka down`.

    Example: mdpeer kafka up --nodes 3 --port 19092 --json
    """
    from peer.dev.localkafka import LocalKafka
    from peer.dev.localkafka.secure import ADMIN_USER, DEFAULT_USERS

    if users and not secure:
        raise typer.BadParameter("SCRAM users need --secure", param_hint="--user")
    with expected_errors():
        cluster = LocalKafka(
            data_dir,
            nodes=nodes,
            port=port,
            controller_port=controller_port,
            heap_mb=heap_mb,
            ready_timeout=timeout,
            fresh=fresh,
            secure=secure,
            users=DEFAULT_USERS if users is None else [ADMIN_USER, *users],
        ).start()
    if json_out:
        typer.echo(json.dumps(cluster.describe()))
        return
    _err(f"Kafka {cluster.layout.kafka_version} is up ({len(cluster.node_ids)} node(s)):")
    for node in cluster.layout.nodes:
        pid, log = cluster.pid(node.id), cluster.log_path(node.id)
        _err(f"  node {node.id}: pid {pid}, port {node.port}, log {log}")
    _say_security(cluster)
    _err(f"stop it with: mdpeer kafka down --data-dir {cluster.data_dir}")
    typer.echo(cluster.bootstrap)


def _say_security(cluster: Cluster) -> None:
    security = cluster.security
    if security is None:
        return
    _err(
        f"secured: SASL_SSL with SCRAM-SHA-512, CA {security.ca_file}; users "
        f"{', '.join(security.users)} (admin is a super user; the others need ACLs)"
    )
    _err(
        f"  passwords: {security.dir}/<user>.password; for Kafka's tools: --command-config "
        f"{security.properties_file('admin')}"
    )


@app.command()
def down(
    *,
    data_dir: DataDir = None,
    grace: Annotated[
        float,
        typer.Option("--grace", min=0.0, help="Seconds to wait after SIGTERM before SIGKILL."),
    ] = 15.0,
    json_out: Json = False,
) -> None:
    """Stop the nodes `mdpeer kafka up` started (SIGTERM, then SIGKILL after --grace).

    Only processes that still run Kafka with this data dir's config are signalled.
    Storage is kept: a later `up` with the same nodes and ports continues from it.

    Example: mdpeer kafka down --data-dir /tmp/kafka
    """
    from peer.dev.localkafka import Cluster

    with expected_errors():
        cluster = Cluster.load(data_dir)
        outcome = cluster.stop(grace) if cluster is not None else {}
    if json_out:
        typer.echo(json.dumps({"nodes": [{"id": i, "result": r} for i, r in outcome.items()]}))
        return
    if cluster is None or not any(r != "not running" for r in outcome.values()):
        _err("no local Kafka was running")
        return
    for node_id, result in outcome.items():
        _err(f"node {node_id}: {result}")


@app.command()
def status(*, data_dir: DataDir = None, json_out: Json = False) -> None:
    """Show each node and whether it answers. Exit code 0 only when every node answers.

    Example: mdpeer kafka status --json
    """
    from peer.dev.localkafka import Cluster

    with expected_errors():
        cluster = Cluster.load(data_dir)
        nodes = cluster.status() if cluster is not None else []
        security = cluster.security if cluster is not None else None
    ok = bool(nodes) and all(n.answering for n in nodes)
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "bootstrap": cluster.bootstrap if cluster else None,
                    "security": security.to_json() if security else None,
                    "nodes": [
                        {
                            "id": n.id,
                            "pid": n.pid,
                            "port": n.port,
                            "running": n.running,
                            "answering": n.answering,
                        }
                        for n in nodes
                    ],
                }
            )
        )
    elif cluster is None:
        _err("no local Kafka has been started in this data dir")
    else:
        for n in nodes:
            state = (
                "answering" if n.answering else "running, not answering" if n.running else "down"
            )
            _err(f"node {n.id}: port {n.port}, pid {n.pid or '-'}: {state}")
        _say_security(cluster)
        typer.echo(cluster.bootstrap)
    if not ok:
        raise typer.Exit(1)


@app.command(
    context_settings={
        # everything after NAME is the tool's, --help included, exactly as typed
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
def tool(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            help="The tool, as named in a Kafka release's bin/ (with or without .sh). "
            "Every argument after it goes to the tool unchanged.",
            show_default=False,
        ),
    ] = None,
    list_tools: Annotated[
        bool, typer.Option("--list", help="List the tools and the class each one runs.")
    ] = False,
) -> None:
    """Run one of Apache Kafka's own command-line tools on the local install's jars.

    The same tools as a release's bin/kafka-*.sh scripts (kafka-topics,
    kafka-console-consumer, kafka-consumer-groups, kafka-transactions, ...), run with the
    broker's Java and jars: output and exit code are the tool's. Like the scripts,
    KAFKA_HEAP_OPTS replaces the heap (256 MB) and KAFKA_OPTS adds JVM flags. Kafka's tools
    need --bootstrap-server; none is added for you.

    Example: mdpeer kafka tool kafka-topics --bootstrap-server localhost:9092 --list
    """
    from peer.dev.localkafka.tools import TOOLS, UNKNOWN_TOOL_EXIT, UnknownToolError, tool_command

    if list_tools:
        width = max(len(n) for n in TOOLS) + 2
        for tool_name, spec in sorted(TOOLS.items()):
            typer.echo(f"{tool_name:<{width}}{spec.main_class}")
        return
    if name is None:
        _err("error: name the tool to run, e.g. kafka-topics")
        _err("  hint: `mdpeer kafka tool --list` lists them")
        raise typer.Exit(UNKNOWN_TOOL_EXIT)
    with expected_errors():
        try:
            command = tool_command(name, ctx.args)
        except UnknownToolError as exc:  # a usage error, like the tools' own (exit 2)
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            _err(f"  hint: {exc.hint}")
            raise typer.Exit(UNKNOWN_TOOL_EXIT) from None
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process, like the release's `exec kafka-run-class.sh`: the tool owns
    # stdin, stdout, stderr, the signals (Ctrl-C stops a console consumer) and the exit code.
    os.execv(command[0], command)

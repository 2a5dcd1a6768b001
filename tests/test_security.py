"""Production Kafka (issue 13): TLS, SASL/SCRAM and least-privilege ACLs, against a real
secured broker (`mdpeer kafka up --secure`, one per module).

* a whole secured deployment: the cluster admin grants what `mdpeer acls` prints, the
  operator runs `init`, `routes apply`, `status`, `checkpoints reset`; two peers with the
  peer ACLs only; a SIGKILL failover; exactly once; and no password or token anywhere in
  what was logged, printed or served;
* each ACL that a role needs is necessary: without it, the named refusal (a peer stops with
  exit 2, an admin command exits 1; a target topic's routes stop, the rest flows);
* a login the cluster refuses ends a command or a peer at once, with one line naming it.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from peer.control.acls import Acl, admin_acls, any_filter, apply, peer_acls
from peer.control.admin import ensure_control_topic
from peer.dev.localkafka import Cluster, Security
from peer.dev.sim.server import SimServer
from peer.model import StartPolicy
from peer.routes.model import Oversize, Route
from peer.testing import (
    PeerProcess,
    create_topics,
    run_mdpeer,
    split_evenly,
    wait_until,
)
from tests.fixtures.deploy import Deploy
from tests.fixtures.secured import *  # noqa: F403 - the module's cluster: secured, security, admin
from tests.peers import (
    FAST,
    Publisher,
    check_exactly_once,
    deployment,
    read_committed,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.sim, pytest.mark.slow]

S1, S2 = "/sec/one", "/sec/two"
HISTORY = StartPolicy.parse("history:1000")
USERS = ("admin", "peer", "operator")


# -- the module's cluster (tests/fixtures/secured.py), and how to log in to it -------------------
@pytest.fixture
def sim(sim_factory: Callable[..., SimServer]) -> SimServer:
    return sim_factory(cache_size=100_000)


def login(security: Security, user: str, **changed: str) -> dict[str, str]:
    """The ``[kafka]`` table that logs ``user`` in: the password from its file."""
    table = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password_file": str(security.password_file(user)),
        "ssl.ca.location": str(security.ca_file),
    }
    return {**table, **changed}


def config(
    path: Path, secured: Cluster, kafka: dict[str, str], group: str, **settings: Any
) -> Path:
    source = settings.pop("source", {"servers": "127.0.0.1:1"})
    base = {"bootstrap": secured.bootstrap, "group": group, **settings}
    return write_config(path, base, source, kafka=kafka)


def mdpeer(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_mdpeer(args, timeout)


def grant(admin: AdminClient, principal: str, acls: list[Acl]) -> None:
    """Add ``acls`` and wait until the broker's authorizer has them (it learns them from
    the metadata log, a moment after the request returns)."""
    apply(admin, principal, acls, 15)
    wanted = {a.binding(principal) for a in acls}
    wait_until(
        lambda: wanted <= set(admin.describe_acls(any_filter(principal)).result(15)),
        20,
        f"the broker knows the ACLs of {principal}",
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def secrets_of(security: Security) -> list[str]:
    return [security.password(u).reveal() for u in USERS]


def assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    assert texts
    for secret in secrets:
        assert len(secret) >= 8
        for text in texts:
            assert secret not in text


@pytest.fixture
def deploy_secured(
    secured: Cluster, security: Security, admin: AdminClient, tmp_path: Path, sim: SimServer
) -> Deploy:
    """``deploy_secured(routes, **options)``: a deployment on the secured cluster, fed by
    ``sim``, whose peers log in as ``peer`` and whose routes the ``admin`` user writes."""
    return functools.partial(
        deployment,
        secured.bootstrap,
        admin,
        tmp_path,
        f"127.0.0.1:{sim.port}",
        kafka=login(security, "peer"),
        admin_conf=secured.client_config("admin"),
    )


# -- a whole secured deployment ---------------------------------------------------------------
def test_a_secured_deployment_with_least_privilege_runs_exactly_once_and_keeps_secrets(
    secured: Cluster,
    security: Security,
    admin: AdminClient,
    sim_factory: Callable[..., SimServer],
    tmp_path: Path,
) -> None:
    token = "md-token-" + uuid.uuid4().hex
    sim = sim_factory(cache_size=100_000, token_sub=token)
    token_file = tmp_path / "md_token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    group = unique("sec")
    t1, t2, idle = f"{group}.t1", f"{group}.t2", "/sec/idle"
    create_topics(admin, [t1, t2], 2)
    as_admin = config(tmp_path / "admin.toml", secured, login(security, "admin"), group)
    as_operator = config(tmp_path / "op.toml", secured, login(security, "operator"), group)
    as_peer = config(
        tmp_path / "peer.toml",
        secured,
        login(security, "peer"),
        group,
        source={"servers": f"127.0.0.1:{sim.port}", "token_file": str(token_file)},
        **FAST,
    )
    routes = tmp_path / "routes.toml"
    routes.write_text(
        f'[[route]]\nsubject = "{S1}"\ntopic = "{t1}"\nstart = "history:1000"\n'
        f'[[route]]\nsubject = "{S2}"\ntopic = "{t2}"\nkey = "k"\nstart = "history:1000"\n'
        f'[[route]]\nsubject = "{idle}"\ntopic = "{t1}"\n'
    )
    printed: list[str] = []

    def cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
        done = mdpeer(*args, "--config", str(path))
        printed.append(done.stdout + done.stderr)
        assert done.returncode == 0, done.stderr
        return done

    # The cluster admin grants the operator its ACLs: no control topic yet, so --topics.
    cli(as_admin, "acls", "--principal", "User:operator", "--role", "admin", "--topics",
        f"{t1},{t2}", "--apply")  # fmt: skip
    operator = {a.binding("User:operator") for a in admin_acls(group, f"{group}.control", [t1, t2])}
    wait_until(
        lambda: operator <= set(admin.describe_acls(any_filter("User:operator")).result(15)),
        20,
        "the broker knows the operator's ACLs",
    )
    cli(as_operator, "init", "--shards", "4")
    cli(as_operator, "routes", "apply", str(routes))
    # ... and the peers theirs, for the topics the routes name (read from the control topic)
    admin_properties = str(security.properties_file("admin"))
    plan = json.loads(
        cli(as_admin, "acls", "--principal", "User:peer", "--json",
            "--command-config", admin_properties).stdout
    )  # fmt: skip
    assert plan["topics"] == [t1, t2]
    assert plan["topics_from"] == f"the routes in {group}.control"
    # The printed lines are Kafka's own tool's: run the most intricate one (a prefix) with it.
    [prefixed] = [a["kafka_acls"] for a in plan["acls"] if a["pattern"] == "PREFIXED"]
    argv = shlex.split(prefixed)
    assert argv[0] == "kafka-acls"
    tool = mdpeer("kafka", "tool", *argv, timeout=120)
    printed.append(tool.stdout + tool.stderr)
    assert tool.returncode == 0, tool.stderr
    applied = json.loads(
        cli(as_admin, "acls", "--principal", "User:peer", "--apply", "--json").stdout
    )
    assert applied["added"] == len(plan["acls"]) - 1  # the tool's was there: idempotent
    grant(admin, "User:peer", peer_acls(group, f"{group}.control", [t1, t2]))  # in force

    p1, p2 = PeerProcess(as_peer, "p1"), PeerProcess(as_peer, "p2")
    bodies: list[str] = []
    try:
        with Publisher(sim, [S1, S2]) as pub:
            wait_until(lambda: split_evenly([p1, p2], 4), 60, "two peers sharing the shards")

            def seen() -> int:
                return len(read_committed(secured.bootstrap, [t1, t2], login=admin_login))

            admin_login = secured.client_config("admin")
            wait_until(lambda: seen() >= 50, 60, "records committed")
            status = json.loads(cli(as_operator, "status", "--json", "--no-lag").stdout)
            assert {p["peer"] for p in status["peers"]} >= {"p1", "p2"}, status
            cli(as_operator, "checkpoints", "reset", idle, "--to", "1:0")

            def acknowledged() -> bool:
                done = cli(as_operator, "checkpoints", "list", "--subject", idle, "--json")
                [row] = json.loads(done.stdout)["subjects"]
                return row["pending"] is None and (row["checkpoint"] or {}).get("seq") == 0

            wait_until(acknowledged, 30, "the reset applied by its owner")
            bodies += [p1.scrape(), p2.scrape(), p1.scrape("/readyz"), p2.scrape("/readyz")]
            p1.signal(signal.SIGKILL)
            p1.wait(10)
            mark = pub.total()
            wait_until(lambda: p2.owned() == {0, 1, 2, 3}, 60, "the shards moved to p2")
            wait_until(lambda: seen() >= mark + 50, 60, "p2 producing")
        wait_until(lambda: seen() >= pub.total(), 60, "everything committed")
        check_exactly_once(read_committed(secured.bootstrap, [t1, t2], login=admin_login), pub.sent)
        bodies.append(p2.scrape())
        assert "mdpeer_messages_out_total" in bodies[-1]
        assert p2.stop() == 0
    finally:
        p1.close()
        p2.close()
    texts = printed + bodies + [p1.logs(), p2.logs()]
    assert_no_secret(texts, [*secrets_of(security), token])


# -- each ACL is necessary ------------------------------------------------------------------
def without(acls: list[Acl], resource_type: str, name: str, operation: str) -> list[Acl]:
    kept = [
        a
        for a in acls
        if not (a.resource_type == resource_type and a.name == name and a.operation == operation)
    ]
    assert len(kept) == len(acls) - 1, (resource_type, name, operation)
    return kept


PEER_STOPS = {
    # the ACL the peer goes without -> what it stops with
    "group-read": ("Group", "{group}", "Read"),
    "control-read": ("Topic", "{control}", "Read"),
    "control-write": ("Topic", "{control}", "Write"),
    "transactional-id": ("TransactionalId", "{group}-", "Write"),
}


@pytest.mark.parametrize("missing", sorted(PEER_STOPS))
def test_a_peer_without_one_of_its_acls_stops_naming_it(
    security: Security, admin: AdminClient, sim: SimServer, deploy_secured: Deploy, missing: str
) -> None:
    topic = unique("sec.t")
    create_topics(admin, [topic])
    with deploy_secured([Route(S1, topic, start=HISTORY)]) as dep:
        kind, name, operation = PEER_STOPS[missing]
        name = name.format(group=dep.group, control=dep.control)
        full = peer_acls(dep.group, dep.control, [topic])
        grant(admin, "User:peer", without(full, kind, name, operation))
        sim.publish(S1, "m")
        peer = dep.start_peer("p1")
        started = time.monotonic()
        assert peer.wait(30) == 2
        took = time.monotonic() - started
        shown = name if kind != "TransactionalId" else f"{dep.group}-p1"
        expected = (
            f"not authorized: {operation} on {kind} '{shown}' for User:peer "
            f"(grant it: mdpeer acls --group {dep.group} --principal User:peer --apply)"
        )
        assert expected in peer.logs(), peer.logs()[-2000:]
        assert took < 20, f"stopped after {took:.1f}s"  # not some 30 s timeout
        assert_no_secret([peer.logs()], secrets_of(security))


@pytest.mark.parametrize("missing", ["Write", "DescribeConfigs"])
def test_a_topic_without_its_acl_stops_its_routes_only(
    secured: Cluster,
    security: Security,
    admin: AdminClient,
    sim: SimServer,
    deploy_secured: Deploy,
    tmp_path: Path,
    missing: str,
) -> None:
    """Write: the topic's routes stop (``topic_unauthorized``). DescribeConfigs: the topic's
    size limit cannot be learned after it refused a batch, so a route that would skip an
    oversize message stops at it instead (``record_too_large``). The other topic flows."""
    small, other = unique("sec.small"), unique("sec.other")
    create_topics(admin, [small], config={"max.message.bytes": "2000"})
    create_topics(admin, [other])
    routes = [
        Route(S1, small, start=HISTORY, on_oversize=Oversize.SKIP),
        Route(S2, other, start=HISTORY),
    ]
    with deploy_secured(routes) as dep:
        full = peer_acls(dep.group, dep.control, [small, other])
        grant(admin, "User:peer", without(full, "Topic", small, missing))
        sim.publish(S1, "x" * 5000)  # over the topic's limit, under the producer's
        for i in range(10):
            sim.publish(S1, f"m{i}")
            sim.publish(S2, f"m{i}")
        peer = dep.start_peer("p1")
        reason = "topic_unauthorized" if missing == "Write" else "record_too_large"
        wait_until(lambda: peer.blocked() == {S1: reason}, 30, f"{S1} stopped ({reason})")
        admin_login = secured.client_config("admin")
        wait_until(
            lambda: len(read_committed(dep.bootstrap, [other], login=admin_login)) >= 10,
            30,
            "the other route flowing",
        )
        state = peer.readiness()
        assert state is not None
        assert state.ready
        as_admin = config(tmp_path / "status.toml", secured, login(security, "admin"), dep.group)

        def reported() -> bool:
            done = mdpeer("status", "--json", "--no-lag", "--config", str(as_admin))
            rows = {r["subject"]: r for r in json.loads(done.stdout)["subjects"]}
            return (rows[S1].get("blocked") or {}).get("reason") == reason

        wait_until(reported, 30, "mdpeer status showing the stopped route")
        assert peer.stop() == 0


ADMIN_REFUSALS = {
    # the ACL the operator goes without -> the command that needs it, and what it prints
    "control-read": ("Topic", "{control}", "Read", ("routes", "list")),
    "group-describe": ("Group", "{group}", "Describe", ("routes", "list")),
    "control-write": ("Topic", "{control}", "Write", ("routes", "add", "/sec/new", "{topic}")),
    "admin-transactional-id": (
        "TransactionalId",
        "{group}-admin",
        "Write",
        ("routes", "add", "/sec/new", "{topic}"),
    ),
    "control-create": ("Topic", "{control}", "Create", ("init", "--shards", "2")),
    "control-describe-configs": (
        "Topic",
        "{control}",
        "DescribeConfigs",
        ("init", "--shards", "2"),
    ),
}


@pytest.mark.parametrize("missing", sorted(ADMIN_REFUSALS))
def test_an_admin_command_without_one_of_its_acls_names_it(
    secured: Cluster, security: Security, admin: AdminClient, tmp_path: Path, missing: str
) -> None:
    group = unique("adm")
    control, topic = f"{group}.control", f"{group}.t"
    kind, name, operation, command = ADMIN_REFUSALS[missing]
    name = name.format(group=group, control=control)
    if command[0] != "init" or operation != "Create":
        ensure_control_topic(admin, control, 2)  # init's Create is what the others skip
    grant(
        admin, "User:operator", without(admin_acls(group, control, [topic]), kind, name, operation)
    )
    as_operator = config(tmp_path / "op.toml", secured, login(security, "operator"), group)
    args = [a.format(topic=topic) for a in command]
    done = mdpeer(*args, "--config", str(as_operator))
    assert done.returncode == 1, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert line == (
        f"error: not authorized: {operation} on {kind} '{name}' for User:operator (grant it: "
        f"mdpeer acls --group {group} --principal User:operator --role admin --apply)"
    )
    assert_no_secret([done.stdout, done.stderr], secrets_of(security))


def test_an_admin_may_not_tell_a_topic_it_may_not_describe_from_a_missing_one(
    secured: Cluster, security: Security, admin: AdminClient, tmp_path: Path
) -> None:
    group = unique("adm")
    control, topic = f"{group}.control", f"{group}.t"
    create_topics(admin, [topic])
    ensure_control_topic(admin, control, 2)
    acls = admin_acls(group, control, [topic])
    grant(admin, "User:operator", without(acls, "Topic", topic, "Describe"))
    as_operator = config(tmp_path / "op.toml", secured, login(security, "operator"), group)
    done = mdpeer("routes", "add", "/sec/a", topic, "--config", str(as_operator))
    assert done.returncode == 0, done.stderr
    assert f"note: topic {topic} is not visible (target of /sec/a)" in done.stderr
    grant(admin, "User:operator", acls)
    done = mdpeer("routes", "add", "/sec/b", topic, "--config", str(as_operator))
    assert done.returncode == 0, done.stderr
    assert topic not in done.stderr  # it exists, and now it shows


# -- a refused login, named at once -----------------------------------------------------------
_LOGIN = "refused the login of user '{user}' with SASL SCRAM-SHA-512 over SASL_SSL"
REFUSED = {
    # case -> (user, changed [kafka] properties, what the error line says)
    "wrong-password": ("peer", {"sasl.password_file": "{wrong}"}, _LOGIN),
    "unknown-user": ("nobody", {"sasl.password_file": "{wrong}"}, _LOGIN),
    "ca-that-does-not-verify": (
        "peer",
        {"ssl.ca.location": "{other_ca}"},
        "certificate verify failed",
    ),
    "missing-ca-file": (
        "peer",
        {"ssl.ca.location": "{nowhere}"},
        "kafka.ssl.ca.location='{nowhere}': no such file or directory",
    ),
}


@pytest.mark.parametrize("command", [("run", "--peer-id", "p1"), ("status", "--no-lag")],
                         ids=["run", "status"])  # fmt: skip
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_refused_login_is_one_line_at_once_without_the_secret(
    secured: Cluster, security: Security, tmp_path: Path, case: str, command: tuple[str, ...]
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    files = {
        "wrong": tmp_path / "wrong.password",
        "other_ca": Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")),
        "nowhere": tmp_path / "no-such-ca.pem",
    }
    files["wrong"].write_text(wrong + "\n")
    if case == "ca-that-does-not-verify" and not files["other_ca"].is_file():
        pytest.skip("no system CA bundle to stand for a CA that did not sign the brokers")
    user, changed, expected = REFUSED[case]
    names = {k: str(v) for k, v in files.items()}
    kafka = login(security, "peer", **{k: v.format(**names) for k, v in changed.items()})
    kafka["sasl.username"] = user
    path = config(tmp_path / "c.toml", secured, kafka, unique("ref"))
    started = time.monotonic()
    # status's own timeout well above the bound below: a refusal must beat it, not meet it
    timeout = ("--timeout", "30") if command[0] == "status" else ()
    done = mdpeer(*command, *timeout, "--config", str(path))
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert expected.format(user=user, **names) in line
    if case != "missing-ca-file":
        assert f"'{secured.bootstrap}'" in line  # where it tried
    assert took < 10, f"took {took:.1f}s"  # named at once, not after a timeout
    assert_no_secret([done.stdout, done.stderr], [wrong, *secrets_of(security)])

"""The deploy files (docker/): schema-valid, and their commands run with the real mdpeer.

There is no Docker engine here, so what Docker would run is run outside it: the command lines
are read from docker/Dockerfile, docker/stack.yml and docker/compose.yml (never copied into
this test), then executed with this environment's ``mdpeer`` or parsed by its real CLI. A
change to the CLI that breaks a deploy file fails here, not in production.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer.core
import typer.main
import yaml

from peer.cli import app
from peer.config.load import SETTINGS, env_name, load_settings
from peer.config.settings import PeerSettings
from peer.dev.sim.server import SimServer
from peer.kafka.clients import consumer_config
from peer.ops.health import Health, ObservabilityServer
from peer.ops.metrics import PeerMetrics

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
STACK = DOCKER / "stack.yml"
COMPOSE = DOCKER / "compose.yml"
SCHEMA = DOCKER / "schema" / "compose-spec.json"
#: where the image installs the virtualenv (its bin/ is on the image's PATH)
IMAGE_VENV = "/opt/mdpeer"
_RUN_TIMEOUT_S = 30.0


# --- reading the Dockerfile -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    stage: str
    keyword: str
    args: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, tagged by stage."""
    out: list[Instruction] = []
    stage, pending = "", ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines inside a continuation too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else words[0]
        out.append(Instruction(stage, keyword, args))
    assert not pending, f"{path}: ends inside a continuation line"
    return out


def exec_form(args: str, what: str) -> list[str]:
    """A JSON-array (exec form) argument; the shell form would put /bin/sh before mdpeer."""
    try:
        value = json.loads(args)
    except ValueError:
        value = None
    assert isinstance(value, list), f"{what} must be in exec form (a JSON array): {args!r}"
    assert all(isinstance(v, str) for v in value), f"{what}: {args!r}"
    return [str(v) for v in value]


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = instructions[-1].stage
    return [i for i in instructions if i.stage == last]


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"the runtime stage needs exactly one {keyword}, has {len(found)}"
    return found[0]


def env_pairs(args: str) -> dict[str, str]:
    """ENV KEY=VALUE KEY2=VALUE2 (the ``ENV KEY VALUE`` legacy form is not used here)."""
    pairs = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        assert sep, f"ENV {args!r}: use the KEY=VALUE form"
        pairs[key] = value
    return pairs


def healthcheck_options(args: str) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    words = args.split(" ")
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        options[key] = value
    rest = " ".join(w for w in words if w)
    assert rest.startswith("CMD "), f"HEALTHCHECK {args!r}: expected options then CMD"
    return options, exec_form(rest[4:], "HEALTHCHECK CMD")


def seconds(duration: str) -> float:
    """A Docker duration (``1m30s``, ``500ms``, ``15s``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    assert parts, f"empty duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def runtime() -> list[Instruction]:
    return final_stage(parse_dockerfile(DOCKERFILE))


def image_env(runtime: list[Instruction], **overrides: str) -> dict[str, str]:
    """The process environment the image gives ``mdpeer``, with this venv's bin/ in place of
    the image's virtualenv."""
    env = dict(os.environ)
    for ins in runtime:
        if ins.keyword == "ENV":
            env.update(env_pairs(ins.args))
    here = str(Path(sys.executable).parent)
    env["PATH"] = (
        env["PATH"].replace(f"{IMAGE_VENV}/bin", here).replace("$PATH", os.environ["PATH"])
    )
    env.update(overrides)
    return env


def run(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(argv[0], path=env["PATH"])
    assert exe is not None, f"{argv[0]!r} is not on the image's PATH (here: {env['PATH']})"
    return subprocess.run(
        [exe, *argv[1:]],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )


# --- the Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_runtime_stage_is_non_root_exec_form_and_labelled(
    runtime: list[Instruction],
) -> None:
    stages = {i.stage for i in parse_dockerfile(DOCKERFILE)}
    assert len(stages) >= 2, "multi-stage: a builder and a slim runtime"
    user = only(runtime, "USER").args.split(":")[0]
    assert user not in ("root", "0"), "the peer must not run as root"
    assert exec_form(only(runtime, "ENTRYPOINT").args, "ENTRYPOINT") == ["mdpeer"]
    assert exec_form(only(runtime, "CMD").args, "CMD") == ["run"]
    assert only(runtime, "STOPSIGNAL").args == "SIGTERM"
    labels = " ".join(i.args for i in runtime if i.keyword == "LABEL")
    for key in ("title", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    copies = [i.args for i in runtime if i.keyword == "COPY"]
    assert copies
    assert all(c.startswith("--from=builder ") for c in copies), (
        "the runtime stage takes only the built virtualenv, nothing from the build context"
    )


def test_no_secret_is_baked_into_the_image() -> None:
    for ins in parse_dockerfile(DOCKERFILE):
        if ins.keyword in ("ARG", "ENV"):
            names = [w.partition("=")[0] for w in shlex.split(ins.args)]
            for name in names:
                assert not re.search(r"TOKEN|PASSWORD|SECRET|KEY", name, re.I), (
                    f"{ins.keyword} {name}: build args and env end up in the image's history"
                )


def test_dockerignore_admits_only_what_the_build_copies() -> None:
    lines = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    assert lines[0] == "*", "allow-list: exclude everything first"
    admitted = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    copied: set[str] = set()
    for ins in parse_dockerfile(DOCKERFILE):
        if ins.keyword == "COPY" and not ins.args.startswith("--from="):
            copied.update(p.rstrip("/") for p in ins.args.split()[:-1])
    assert copied == admitted, f"COPY sources {sorted(copied)} vs .dockerignore {sorted(admitted)}"


def test_entrypoint_and_default_command_run(runtime: list[Instruction]) -> None:
    entrypoint = exec_form(only(runtime, "ENTRYPOINT").args, "ENTRYPOINT")
    cmd = exec_form(only(runtime, "CMD").args, "CMD")
    env = image_env(runtime)

    top = run([*entrypoint, "--help"], env)
    assert top.returncode == 0, top.stderr
    assert "Usage: mdpeer" in top.stdout

    default = run([*entrypoint, *cmd, "--help"], env)
    assert default.returncode == 0, default.stderr
    assert "Usage: mdpeer run" in default.stdout


# --- the health check -------------------------------------------------------------------------


def healthchecks(runtime: list[Instruction]) -> dict[str, list[str]]:
    """Every peer health check of the deploy files, by where it comes from."""
    found = {"Dockerfile": healthcheck_options(only(runtime, "HEALTHCHECK").args)[1]}
    for path in (STACK, COMPOSE):
        for name, service in load_yaml(path)["services"].items():
            if service.get("command") == ["run"]:
                test = service["healthcheck"]["test"]
                assert test[0] == "CMD", f"{path.name} {name}: healthcheck without a shell"
                found[f"{path.name}:{name}"] = test[1:]
    return found


@pytest.fixture
def live_peer_endpoint() -> Iterator[tuple[ObservabilityServer, list[float]]]:
    """The peer's real metrics/health server on a free port; the clock can be moved on."""
    now = [0.0]
    health = Health(heartbeat_timeout=30.0, clock=lambda: now[0])
    with ObservabilityServer(PeerMetrics(), health, port=0) as server:
        yield server, now


def test_healthcheck_timing_leaves_room_for_the_probe(runtime: list[Instruction]) -> None:
    options, argv = healthcheck_options(only(runtime, "HEALTHCHECK").args)
    assert argv[0] == "mdpeer"
    probe = cli_command(argv[1:])
    timeout = next(p.default for p in probe.params if p.name == "timeout")
    assert isinstance(timeout, float)
    # Docker kills a probe at --timeout and records no cause: the probe must give up first.
    assert seconds(options["timeout"]) > timeout
    assert seconds(options["start-period"]) >= 30


def test_healthcheck_passes_against_a_live_peer(
    runtime: list[Instruction], live_peer_endpoint: tuple[ObservabilityServer, list[float]]
) -> None:
    server, _ = live_peer_endpoint
    env = image_env(runtime, MDPEER_METRICS_PORT=str(server.port))
    checks = healthchecks(runtime)
    assert len(checks) >= 5, checks  # the image, the stack's peer, compose's 3 peers
    # Run each distinct command once (they are the same today; Python starts in ~1 s here).
    for argv in {tuple(a) for a in checks.values()}:
        where = [w for w, a in checks.items() if tuple(a) == argv]
        result = run(list(argv), env)
        assert result.returncode == 0, f"{where}: {result.stderr}"
        assert result.stdout.startswith("healthy:"), where


def test_healthcheck_fails_when_the_main_loop_is_stuck(
    runtime: list[Instruction], live_peer_endpoint: tuple[ObservabilityServer, list[float]]
) -> None:
    server, now = live_peer_endpoint
    now[0] += 31.0  # the loop has not beaten for longer than the limit
    argv = healthchecks(runtime)["Dockerfile"]
    result = run(argv, image_env(runtime, MDPEER_METRICS_PORT=str(server.port)))
    assert result.returncode == 1
    assert "HTTP 503" in result.stderr
    assert "heartbeat" in result.stderr


def test_healthcheck_fails_when_nothing_listens(runtime: list[Instruction]) -> None:
    # A bound but not listening socket: the port is ours, connections are refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        argv = healthchecks(runtime)["Dockerfile"]
        result = run(argv, image_env(runtime, MDPEER_METRICS_PORT=str(port)))
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy:")
    assert "refused" in result.stderr.lower()


def test_healthcheck_gives_up_on_a_peer_that_does_not_answer(runtime: list[Instruction]) -> None:
    # Listening but never answering: the probe's own timeout ends it, not Docker's kill.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        argv = healthchecks(runtime)["Dockerfile"]
        result = run(argv, image_env(runtime, MDPEER_METRICS_PORT=str(sock.getsockname()[1])))
    assert result.returncode == 1
    assert "timed out" in result.stderr


@pytest.mark.sim
def test_compose_sim_healthcheck_passes_against_the_reference_server(
    runtime: list[Instruction], sim_factory: Callable[..., SimServer]
) -> None:
    test = load_yaml(COMPOSE)["services"]["sim"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    url = sim_factory().start()
    # the same command, pointed at this server's free port instead of the container's 8800
    argv = [re.sub(r"^http://127\.0\.0\.1:\d+", url, a) for a in test[1:]]
    result = run(argv, image_env(runtime))
    assert result.returncode == 0, result.stderr


# --- stack.yml and compose.yml ----------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_pinned_schema_is_the_recorded_copy() -> None:
    note = (DOCKER / "schema" / "README.md").read_text(encoding="utf-8")
    digest = hashlib.sha256(SCHEMA.read_bytes()).hexdigest()
    assert f"sha256 `{digest}`" in note, "docker/schema/README.md must record the copy's sha256"


@pytest.mark.parametrize("path", [STACK, COMPOSE], ids=lambda p: p.name)
def test_file_is_valid_compose(path: Path, validator: jsonschema.Draft7Validator) -> None:
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(load_yaml(path))
    ]
    assert errors == []


def test_schema_catches_a_broken_file(validator: jsonschema.Draft7Validator) -> None:
    broken = load_yaml(STACK)
    broken["services"]["peer"]["deploy"]["replica"] = 3  # a typo
    broken["services"]["peer"]["healthcheck"]["interval"] = 15
    assert len(list(validator.iter_errors(broken))) == 2


def test_stack_loads_with_the_docker_cli() -> None:
    """``docker stack deploy`` reads the Docker CLI's own (version 3) format; its loader runs
    without an engine, so use it where a Docker CLI is installed."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on PATH")
    done = subprocess.run(
        [docker, "stack", "config", "-c", str(STACK)],
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"},
    )
    assert done.returncode == 0, done.stderr
    loaded = yaml.safe_load(done.stdout)
    peer = loaded["services"]["peer"]
    assert peer["deploy"]["update_config"]["order"] == "stop-first"
    assert peer["secrets"][0]["mode"] == 0o400  # octal in the file, as Swarm reads it
    assert loaded["services"]["admin"]["deploy"]["mode"] == "replicated-job"


def mounted_files(path: Path, service: Mapping[str, Any], tmp_path: Path) -> dict[str, Path]:
    """What a task of ``service`` sees at each config/secret target, as local files: configs
    are the files the stack names, secrets are made up (``<name>-value``) in ``tmp_path``."""
    top = load_yaml(path)
    mounts: dict[str, Path] = {}
    for ref in service.get("configs", []):
        target = ref.get("target", f"/{ref['source']}")
        mounts[target] = path.parent / top["configs"][ref["source"]]["file"]
    for ref in service.get("secrets", []):
        secret = tmp_path / ref["source"]
        secret.write_text(f"  {ref['source']}-value\n", encoding="utf-8")
        mounts[f"/run/secrets/{ref.get('target', ref['source'])}"] = secret
    return mounts


def task_view(
    path: Path, service: Mapping[str, Any], tmp_path: Path, slot: str = "1"
) -> Callable[[str], str]:
    """Rewrite a value as the task would see it: the slot filled in, mounts made local.
    An absolute path that is neither mounted nor a URL fails the test."""
    mounts = mounted_files(path, service, tmp_path)

    def view(value: str) -> str:
        value = value.replace("{{.Task.Slot}}", slot)
        if value.startswith(("/etc/", "/run/")):
            assert value in mounts, f"{path.name}: {value} is not a mounted config or secret"
            return str(mounts[value])
        return value

    return view


def mdpeer_commands(path: Path, tmp_path: Path) -> list[tuple[str, list[str], dict[str, str]]]:
    """(service, argv, environment) of every mdpeer invocation in a stack or compose file,
    as a task would run it (see :func:`task_view`).

    A service runs mdpeer when it uses the mdpeer image with no entrypoint (the image's is
    ``mdpeer``) or with a ``/bin/sh -ec`` script whose lines are mdpeer commands.
    """
    found = []
    for name, service in load_yaml(path)["services"].items():
        if "mdpeer:" not in str(service.get("image", "")):
            continue
        view = task_view(path, service, tmp_path)
        env = {k: view(str(v)) for k, v in (service.get("environment") or {}).items()}
        entrypoint = service.get("entrypoint")
        if entrypoint is None:
            found.append((name, ["mdpeer", *map(view, service["command"])], env))
            continue
        assert entrypoint == ["/bin/sh", "-ec"], f"{path.name} {name}: {entrypoint}"
        (script,) = service["command"]
        for line in script.splitlines():
            if line.strip():
                argv = shlex.split(line)
                assert argv[0] == "mdpeer", f"{path.name} {name}: {line!r}"
                found.append((name, [*map(view, argv)], env))
    return found


def cli_command(names: list[str]) -> Any:
    """The real CLI's command object for ``names`` (e.g. ``["routes", "apply"]``)."""
    command = typer.main.get_command(app)
    for name in names:
        assert isinstance(command, typer.core.TyperGroup), f"{names}: {name!r} under a command"
        sub = command.commands.get(name)
        assert sub is not None, f"mdpeer has no command {' '.join(names)!r}"
        command = sub
    return command


def parse_with_cli(argv: list[str]) -> tuple[str, ...]:
    """Parse ``argv`` with the real CLI (types, ranges, required arguments), run nothing.
    Raises the CLI's usage error (what would exit 2) when it does not parse."""
    args = argv[1:]
    path: list[str] = []
    while isinstance(cli_command(path), typer.core.TyperGroup):
        assert args, f"{argv}: a command group needs a command"
        path.append(args.pop(0))
    root = typer.main.get_command(app)
    with (
        root.make_context("mdpeer", [], resilient_parsing=True) as parent,
        cli_command(path).make_context(" ".join(["mdpeer", *path]), args, parent=parent),
    ):
        pass
    return tuple(path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (STACK, {("init",), ("routes", "apply"), ("run",)}),
        (COMPOSE, {("init",), ("routes", "apply"), ("run",), ("sim", "serve"), ("sim", "publish")}),
    ],
    ids=["stack.yml", "compose.yml"],
)
def test_commands_parse_with_the_real_cli(
    path: Path, expected: set[tuple[str, ...]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = set()
    for service, argv, env in mdpeer_commands(path, tmp_path):
        with monkeypatch.context() as m:
            for key, value in env.items():  # env-backed options are parsed too
                m.setenv(key, value)
            try:
                seen.add(parse_with_cli(argv))
            except typer.BadParameter as exc:
                pytest.fail(f"{path.name} {service}: {shlex.join(argv)}: {exc.format_message()}")
            except Exception as exc:  # the CLI's other usage errors (no such option, ...)
                pytest.fail(f"{path.name} {service}: {shlex.join(argv)}: {exc}")
    assert seen == expected


def test_cli_parse_check_rejects_a_wrong_flag() -> None:
    with pytest.raises(Exception, match="No such option: --purge"):
        parse_with_cli(["mdpeer", "routes", "apply", "r.toml", "--purge"])
    with pytest.raises(typer.BadParameter, match="greater than or equal to 1"):
        parse_with_cli(["mdpeer", "init", "--shards", "0"])
    with pytest.raises(Exception, match="Missing parameter: file"):
        parse_with_cli(["mdpeer", "routes", "apply"])


def known_env_vars() -> set[str]:
    """Every MDPEER_* variable mdpeer reads: the settings, and the CLI's env-backed options."""
    names = {env_name(s) for s in SETTINGS} | {"MDPEER_CONFIG"}

    def walk(command: Any) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
        if isinstance(command, typer.core.TyperGroup):
            for sub in command.commands.values():
                walk(sub)

    walk(typer.main.get_command(app))
    return names


@pytest.mark.parametrize("path", [STACK, COMPOSE], ids=lambda p: p.name)
def test_environment_names_are_real_settings(path: Path) -> None:
    known = known_env_vars()
    for name, service in load_yaml(path)["services"].items():
        for key in service.get("environment") or {}:
            if key.startswith("MDPEER_") and not key.startswith("MDPEER_RDKAFKA_"):
                # mdpeer ignores unknown MDPEER_* variables: a typo would pass silently
                assert key in known, f"{path.name} {name}: {key} is not an mdpeer setting"


def stack_service_settings(name: str, slot: str, tmp_path: Path) -> PeerSettings:
    """Load the settings a stack task would: its env, its configs and secrets as files."""
    service = load_yaml(STACK)["services"][name]
    view = task_view(STACK, service, tmp_path, slot)
    env = {key: view(str(value)) for key, value in service["environment"].items()}
    return load_settings(None, env, {})


def test_stack_peer_settings_come_from_slot_config_and_secrets(tmp_path: Path) -> None:
    settings = stack_service_settings("peer", "2", tmp_path)
    assert settings.peer_id == "peer-2"
    assert settings.static_membership is True
    assert settings.metrics_port == 9464
    assert settings.source.token is not None
    assert settings.source.token.reveal() == "md_token-value"
    conf = consumer_config(settings)
    assert conf["group.instance.id"] == "peer-2"
    assert conf["sasl.password"] == "kafka_password-value"
    assert conf["sasl.username"] == "mdpeer"
    assert Path(str(conf["ssl.ca.location"])).read_text() == "  kafka_ca-value\n"
    assert settings.transactional_id == f"{settings.group}-peer-2"


def test_stack_admin_settings_load(tmp_path: Path) -> None:
    settings = stack_service_settings("admin", "1", tmp_path)
    conf = consumer_config(settings)
    # its own principal and password (the admin role's ACLs), the same CA
    assert conf["sasl.username"] == "mdpeer-admin"
    assert conf["sasl.password"] == "kafka_admin_password-value"
    assert conf["security.protocol"] == "SASL_SSL"
    assert Path(str(conf["ssl.ca.location"])).read_text() == "  kafka_ca-value\n"


def test_stack_rollout_policy() -> None:
    peer = load_yaml(STACK)["services"]["peer"]
    update = peer["deploy"]["update_config"]
    assert update["order"] == "stop-first"
    assert update["parallelism"] == 1
    assert update["failure_action"] == "rollback"
    assert seconds(update["delay"]) > 0
    assert peer["deploy"]["rollback_config"]["order"] == "stop-first"
    assert peer["deploy"]["restart_policy"]["condition"] in ("any", "on-failure")
    assert set(peer["deploy"]["resources"]["limits"]) >= {"cpus", "memory"}
    # the final commit must fit before Swarm's SIGKILL
    assert seconds(peer["stop_grace_period"]) * 1000 > 10_000  # transaction_timeout_ms default


def test_compose_secure_profile_logs_in_with_secret_files(tmp_path: Path) -> None:
    """Profile ``secure``: SASL_SSL, each service its own principal, the password and the
    CA from compose secrets (files at /run/secrets, as Swarm mounts them)."""
    for name, user in (("secure-peer-1", "peer"), ("secure-admin", "operator")):
        service = load_yaml(COMPOSE)["services"][name]
        assert service["profiles"] == ["secure"]
        view = task_view(COMPOSE, service, tmp_path)
        env = {key: view(str(value)) for key, value in service["environment"].items()}
        conf = consumer_config(load_settings(None, env, {}))
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.username"] == user
        assert conf["sasl.password"] == f"{user}_password-value"
        assert Path(str(conf["ssl.ca.location"])).read_text() == "  kafka_ca-value\n"


def test_compose_runs_three_distinct_peers() -> None:
    services = load_yaml(COMPOSE)["services"]
    peers = {
        n: s["environment"]["MDPEER_PEER_ID"]
        for n, s in services.items()
        if s.get("command") == ["run"] and not s.get("profiles")  # `secure`: its own two
    }
    assert len(peers) == 3
    assert len(set(peers.values())) == 3
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


# --- the builder stage, replayed outside Docker ----------------------------------------------


@pytest.mark.slow
def test_builder_stage_installs_the_locked_runtime_dependencies(tmp_path: Path) -> None:
    """Replay the builder's COPY and ``uv`` steps in a temporary directory: the lock installs
    with --locked, the entry point works, and no dev dependency lands in the image."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    venv = tmp_path / "opt"
    env = {**os.environ, "PATH": f"{Path(uv).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("VIRTUAL_ENV", None)
    workdir = tmp_path
    builder = [i for i in parse_dockerfile(DOCKERFILE) if i.stage == "builder"]
    assert builder, "a stage named builder"
    for ins in builder:
        if ins.keyword == "ENV":
            for key, value in env_pairs(ins.args).items():
                env[key] = value.replace(IMAGE_VENV, str(venv))
            env["UV_PYTHON"] = sys.executable
            env.pop("UV_NO_CACHE", None)  # reuse this machine's cache of the same wheels
        elif ins.keyword == "WORKDIR":
            workdir = tmp_path / ins.args.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins.keyword == "COPY":
            *sources, dest = ins.args.split()
            for src in sources:
                target = workdir / dest / Path(src).name if dest.endswith("/") else workdir / dest
                if (REPO / src).is_dir():
                    shutil.copytree(
                        REPO / src, target, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(REPO / src, target)
        elif ins.keyword == "RUN" and "uv sync" in ins.args:
            script = ins.args.replace(IMAGE_VENV, str(venv))
            done = subprocess.run(
                ["/bin/sh", "-ec", script],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, f"RUN {ins.args}\n{done.stderr}"
    version = subprocess.run(
        [str(venv / "bin" / "mdpeer"), "--version"],
        capture_output=True,
        text=True,
        timeout=_RUN_TIMEOUT_S,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    site = next((venv / "lib").glob("python3*/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"mdpeer", "confluent_kafka", "typer"} <= installed
    assert not installed & {"pytest", "mypy", "ruff", "hypothesis"}, "dev dependencies leaked"

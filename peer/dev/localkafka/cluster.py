"""Start, inspect and stop a local KRaft cluster (1 node, or a real 3-node quorum)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from peer.dev.localkafka import layout as lay
from peer.dev.localkafka import process as proc
from peer.dev.localkafka import secure as sec
from peer.dev.localkafka.process import NodeStatus
from peer.dev.localkafka.runtime import (
    Java,
    KafkaJars,
    Progress,
    cache_dir,
    cds_archive,
    class_sharing_enabled,
    find_java,
    resolve_jars,
    stderr_progress,
)
from peer.dev.localkafka.storage import format_storage
from peer.errors import ConfigError, LocalKafkaError

log = logging.getLogger(__name__)

DEFAULT_READY_TIMEOUT: Final = 90.0
DEFAULT_GRACE: Final = 15.0


def default_data_dir() -> Path:
    """``<cache>/kafka-data`` (see :func:`peer.dev.localkafka.runtime.cache_dir`)."""
    return cache_dir() / "kafka-data"


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    # One `up`/`down`/restart at a time per data dir, across processes.
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LocalKafka:
    """Recipe for a local cluster; :meth:`start` makes it run and returns a :class:`Cluster`.

    >>> cluster = LocalKafka(Path("/tmp/k"), nodes=3, port=19092).start()
    >>> cluster.bootstrap
    '127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094'
    >>> cluster.kill(1); cluster.restart(1); cluster.stop()

    The storage in ``data_dir`` is reused when it holds a cluster of the same shape (nodes
    and ports), so topics survive ``stop``/``start``; otherwise (or with ``fresh=True``) it is
    wiped and formatted again. A non-empty directory that mdpeer did not create is refused.

    ``secure=True`` starts it with TLS, SASL/SCRAM-SHA-512 users and ACLs
    (:mod:`peer.dev.localkafka.secure`); :attr:`Cluster.security` then says where the CA
    and each user's password and properties files are.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        nodes: int = 1,
        port: int = 9092,
        *,
        controller_port: int | None = None,
        heap_mb: int = lay.MAX_HEAP_MB,
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        fresh: bool = False,
        overrides: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] | None = None,
        tie_to_parent: bool = False,
        progress: Progress = stderr_progress,
        secure: bool = False,
        users: Sequence[str] = sec.DEFAULT_USERS,
    ) -> None:
        """
        Args:
            data_dir: where configs, storage, logs and the state file go
                (default :func:`default_data_dir`).
            nodes: 1, or 3 for a quorum that survives losing one node.
            port: first client port; node *i* listens on ``port + i``.
            controller_port: first KRaft controller port (default ``port + 100``).
            heap_mb: JVM heap per node (-Xmx).
            ready_timeout: seconds to wait for every node to answer a metadata request.
            fresh: wipe existing storage first.
            overrides: extra broker settings, applied last (e.g. a test's timeouts).
            jvm_options: extra JVM flags, last on the command line
                (default: ``$MDPEER_KAFKA_JVM_OPTS``, split like a shell would).
            tie_to_parent: on Linux, the JVMs die with this process (for test fixtures).
            progress: where download progress lines go.
            secure: TLS, SASL/SCRAM-SHA-512 and the StandardAuthorizer (docs/LOCALKAFKA.md).
            users: with ``secure``, the SCRAM users to create (``admin``, the super user,
                always is one).
        """
        if heap_mb < 64:
            raise ConfigError("heap_mb", heap_mb, "must be at least 64")
        self.data_dir = (data_dir or default_data_dir()).expanduser().absolute()
        self.nodes = nodes
        self.port = port
        self.controller_port = controller_port
        self.heap_mb = heap_mb
        self.ready_timeout = ready_timeout
        self.fresh = fresh
        self.overrides = dict(overrides or {})
        self.jvm_options = list(
            shlex.split(os.environ.get("MDPEER_KAFKA_JVM_OPTS", ""))
            if jvm_options is None
            else jvm_options
        )
        self.tie_to_parent = tie_to_parent
        self.progress = progress
        self.secure = secure
        self.users = sec.check_users(users)

    def start(self) -> Cluster:
        """Check tools and ports, resolve jars, format storage, start every node, wait ready.

        Raises :class:`peer.errors.LocalKafkaError` (or a subclass) with a hint; on failure
        every node this call started is stopped again.
        """
        java = find_java()
        with _data_dir_lock(self.data_dir):
            lay.ensure_ours(self.data_dir)
            previous = lay.load_state(self.data_dir)
            if previous is not None:
                running = Cluster(self.data_dir, previous).running_pids()
                if running:
                    raise LocalKafkaError(
                        f"a local Kafka is already running from {self.data_dir} "
                        f"(pids {', '.join(map(str, running.values()))}, "
                        f"bootstrap {previous.layout.bootstrap})",
                        hint=f"stop it first: mdpeer kafka down --data-dir {self.data_dir}",
                    )
            wanted = lay.ClusterLayout.new(
                nodes=self.nodes,
                port=self.port,
                controller_port=self.controller_port,
                kafka_version="",
                secure=self.secure,
            )
            lay.check_ports_free(wanted)
            # Cheap checks first: a download is only worth it when the rest can work.
            jars = resolve_jars(progress=self.progress)
            wanted = dataclasses.replace(wanted, kafka_version=jars.version)
            reuse = (
                previous is not None
                and not self.fresh
                and previous.layout.same_shape(wanted)
                and previous.layout.kafka_version == jars.version
                and all(lay.is_formatted(self.data_dir, n.id) for n in previous.layout.nodes)
                and (not self.secure or sec.can_keep(self.data_dir, self.users))
            )
            if reuse and previous is not None:
                layout = previous.layout
            else:
                layout = wanted
                self._wipe(previous)
            security = (
                sec.prepare(self.data_dir, self.users, keep_passwords=reuse)
                if self.secure
                else None
            )
            state = lay.State(
                layout=layout, security=None if security is None else security.to_json()
            )
            self._write_configs(layout, security)
            for node in layout.nodes:
                state.commands[node.id] = self._command(java, jars, node)
            if not reuse:
                format_storage(
                    java,
                    jars,
                    layout,
                    self.data_dir,
                    jvm_options=self._class_sharing(jars, java),
                    security=security,
                )
            cluster = Cluster(self.data_dir, state, tie_to_parent=self.tie_to_parent)
            try:
                for node in layout.nodes:
                    cluster._spawn(node.id)
                lay.save_state(self.data_dir, state)
                cluster.wait_ready(self.ready_timeout)
            except BaseException:
                cluster._stop_locked(grace=5.0)
                raise
        return cluster

    def _wipe(self, previous: lay.State | None) -> None:
        # Only what we created: node dirs of the old layout and of any node-* leftovers.
        for child in self.data_dir.glob("node-*"):
            if child.is_dir():
                shutil.rmtree(child)
        if previous is not None:
            (self.data_dir / lay.STATE_FILE).unlink(missing_ok=True)
        # the passwords of the old storage's SCRAM users mean nothing to a new one
        shutil.rmtree(sec.secure_dir(self.data_dir), ignore_errors=True)

    def _write_configs(self, layout: lay.ClusterLayout, security: sec.Security | None) -> None:
        (self.data_dir / lay.LOG4J_FILE).write_text(lay.LOG4J2_PROPERTIES, encoding="utf-8")
        for node in layout.nodes:
            lay.logs_dir(self.data_dir, node.id).mkdir(parents=True, exist_ok=True)
            settings = lay.broker_settings(layout, node, self.data_dir)
            if security is not None:
                settings.update(sec.broker_settings(node, security))
            settings.update(self.overrides)
            lay.config_path(self.data_dir, node.id).write_text(
                lay.render_properties(settings), encoding="utf-8"
            )

    def _command(self, java: Java, jars: KafkaJars, node: lay.NodeSpec) -> list[str]:
        extra = [*self._class_sharing(jars, java), *self.jvm_options]
        return [
            *proc.jvm_command(
                java.path,
                jars.classpath,
                heap_mb=self.heap_mb,
                logs_dir=lay.logs_dir(self.data_dir, node.id),
                log4j_config=self.data_dir / lay.LOG4J_FILE,
                extra=extra,
            ),
            proc.MAIN_CLASS,
            str(lay.config_path(self.data_dir, node.id)),
        ]

    @staticmethod
    def _class_sharing(jars: KafkaJars, java: Java) -> list[str]:
        # Classes pre-parsed by `mdpeer kafka install` (peer.dev.localkafka.cds): about a second
        # less per JVM start. A stale archive is only a warning; the JVM then loads normally.
        archive = cds_archive(jars, java)
        if class_sharing_enabled() and archive.is_file():
            return [f"-XX:SharedArchiveFile={archive}"]
        return []


class Cluster:
    """A local cluster that was started (or is described by a state file).

    Works the same in the process that started it and in any other one
    (:meth:`load`): nodes are found and signalled by pid, after checking the pid is still
    the JVM we started.
    """

    def __init__(self, data_dir: Path, state: lay.State, *, tie_to_parent: bool = False) -> None:
        self.data_dir = data_dir
        self._state = state
        self._tie = tie_to_parent
        #: Popen handles of nodes started by this object (so they are reaped, not zombies)
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        #: size of each server.log when its node was last started: errors before are old
        self._log_start: dict[int, int] = {}

    @classmethod
    def load(cls, data_dir: Path | None = None) -> Cluster | None:
        """The cluster recorded in ``data_dir``, or None when nothing was started there."""
        root = (data_dir or default_data_dir()).expanduser().absolute()
        state = lay.load_state(root)
        return None if state is None else cls(root, state)

    # -- what it is ---------------------------------------------------------------------
    @property
    def layout(self) -> lay.ClusterLayout:
        return self._state.layout

    @property
    def bootstrap(self) -> str:
        """``host:port,...`` of every node, for ``bootstrap.servers``."""
        return self.layout.bootstrap

    @property
    def node_ids(self) -> list[int]:
        return [n.id for n in self.layout.nodes]

    @property
    def security(self) -> sec.Security | None:
        """A secured cluster's CA and user files (:mod:`~peer.dev.localkafka.secure`), else None."""
        data = self._state.security
        return None if data is None else sec.Security.from_json(data)

    def client_config(self, user: str = sec.ADMIN_USER) -> dict[str, Any]:
        """librdkafka properties for ``user``: ``bootstrap.servers`` and, if secured, the login.

        The probes use it too: a secured cluster answers nobody anonymous (``admin`` is a
        super user).
        """
        security = self.security
        login = {} if security is None else security.client_config(user)
        return {"bootstrap.servers": self.bootstrap, **login}

    def log_path(self, node_id: int) -> Path:
        return lay.logs_dir(self.data_dir, node_id) / "server.log"

    def pid(self, node_id: int) -> int | None:
        """The pid of a node's JVM, when it runs."""
        pid = self._state.pids.get(node_id)
        return pid if pid is not None and self._alive(node_id) else None

    def running_pids(self) -> dict[int, int]:
        return {i: p for i in self.node_ids if (p := self.pid(i)) is not None}

    def describe(self) -> dict[str, object]:
        """The ``up --json`` shape: bootstrap, data dir, nodes, ``security`` (files, or None)."""
        return {
            "bootstrap": self.bootstrap,
            "data_dir": str(self.data_dir),
            "nodes": [
                {
                    "id": n.id,
                    "pid": self.pid(n.id),
                    "port": n.port,
                    "controller_port": n.controller_port,
                    **({} if n.internal_port is None else {"internal_port": n.internal_port}),
                }
                for n in self.layout.nodes
            ],
            "security": self._state.security,
        }

    def status(self, timeout: float = 3.0) -> list[NodeStatus]:
        """Every node: running, and answering a metadata request as a registered broker."""
        running = {i: self.pid(i) for i in self.node_ids}
        brokers: set[int] = set()
        live_ports = [n for n in self.layout.nodes if running[n.id] and proc.port_accepts(n.port)]
        if live_ports:
            bootstrap = ",".join(n.address for n in live_ports)
            brokers = proc.metadata_brokers(bootstrap, timeout, self.client_config()) or set()
        return [
            NodeStatus(
                id=n.id,
                port=n.port,
                controller_port=n.controller_port,
                pid=running[n.id],
                running=running[n.id] is not None,
                answering=n in live_ports and n.id in brokers,
            )
            for n in self.layout.nodes
        ]

    # -- changing it --------------------------------------------------------------------
    def wait_ready(
        self, timeout: float = DEFAULT_READY_TIMEOUT, node_ids: list[int] | None = None
    ) -> None:
        """Wait until every running node (or ``node_ids``) is a broker answering metadata."""
        wanted = node_ids or self.node_ids
        deadline = time.monotonic() + timeout
        login = self.client_config()
        while True:
            for i in wanted:
                if not self._alive(i):
                    code = self._procs[i].returncode if i in self._procs else None
                    why = "exited" + (f" with code {code}" if code is not None else "")
                    raise self._not_ready(i, f"{why} before it was ready")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ports = [self.layout.node(i).port for i in wanted]
            if all(proc.port_accepts(p) for p in ports):
                brokers = proc.metadata_brokers(self.bootstrap, min(2.0, remaining), login)
                if brokers is not None and set(wanted) <= brokers:
                    return
            time.sleep(0.1)
        brokers = proc.metadata_brokers(self.bootstrap, 1.0, login) or set()
        late = next((i for i in wanted if i not in brokers), wanted[0])
        raise self._not_ready(
            late,
            f"did not answer a metadata request within {timeout:.0f}s",
            hint="a busy machine starts slower: retry with a longer --timeout; the log lines "
            "above show how far it got",
        )

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no shutdown hooks: a crash, as seen by the rest)."""
        self.layout.node(node_id)
        with _data_dir_lock(self.data_dir):
            pid = self._state.pids.get(node_id)
            if pid is None or not proc.kill_pid(
                pid, self._config(node_id), proc=self._procs.get(node_id)
            ):
                raise LocalKafkaError(f"node {node_id} is not running, nothing to kill")
            self._forget(node_id)

    def restart(
        self, node_id: int, *, wait: bool = True, timeout: float = DEFAULT_READY_TIMEOUT
    ) -> None:
        """Stop the node if it runs (SIGTERM), start it again, and wait until it answers."""
        self.layout.node(node_id)
        with _data_dir_lock(self.data_dir):
            pid = self._state.pids.get(node_id)
            if pid is not None:
                proc.stop_pid(
                    pid, self._config(node_id), grace=DEFAULT_GRACE, proc=self._procs.get(node_id)
                )
                self._forget(node_id)
            self._spawn(node_id)
            lay.save_state(self.data_dir, self._state)
        if wait:
            self.wait_ready(timeout, [node_id])

    def stop(self, grace: float = DEFAULT_GRACE) -> dict[int, str]:
        """Stop every node (SIGTERM, then SIGKILL after ``grace`` s). Returns node id -> outcome."""
        with _data_dir_lock(self.data_dir):
            return self._stop_locked(grace)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------
    def _config(self, node_id: int) -> Path:
        return lay.config_path(self.data_dir, node_id)

    def _alive(self, node_id: int) -> bool:
        child = self._procs.get(node_id)
        if child is not None:
            return child.poll() is None
        pid = self._state.pids.get(node_id)
        return pid is not None and proc.is_our_broker(pid, self._config(node_id))

    def _spawn(self, node_id: int) -> None:
        command = self._state.commands.get(node_id)
        if not command:
            raise LocalKafkaError(f"node {node_id} has no recorded command; start with `up`")
        out = lay.logs_dir(self.data_dir, node_id) / "stdout.log"
        with contextlib.suppress(OSError):
            self._log_start[node_id] = self.log_path(node_id).stat().st_size
        child = proc.spawn(command, stdout_log=out, tie_to_parent=self._tie)
        self._procs[node_id] = child
        self._state.pids[node_id] = child.pid
        log.info("started kafka node", extra={"node": node_id, "pid": child.pid})

    def _forget(self, node_id: int) -> None:
        self._state.pids.pop(node_id, None)
        self._procs.pop(node_id, None)
        lay.save_state(self.data_dir, self._state)

    def _stop_locked(self, grace: float) -> dict[int, str]:
        outcome: dict[int, str] = {}
        alive = {i: p for i, p in self._state.pids.items() if self._alive(i)}
        for i in set(self._state.pids) - set(alive):
            outcome[i] = "not running"
        # SIGTERM all first, so nodes shut down in parallel; then wait for each.
        for pid in alive.values():
            proc.signal_pid(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for i, pid in alive.items():
            child = self._procs.get(i)
            if proc.wait_gone(pid, self._config(i), deadline, child):
                outcome[i] = "stopped"
            else:
                proc.kill_pid(pid, self._config(i), proc=child)
                outcome[i] = "killed"
        self._state.pids.clear()
        self._procs.clear()
        lay.save_state(self.data_dir, self._state)
        return dict(sorted(outcome.items()))

    def _not_ready(self, node_id: int, reason: str, *, hint: str | None = None) -> LocalKafkaError:
        return proc.not_ready_error(
            self.layout.node(node_id),
            lay.logs_dir(self.data_dir, node_id),
            reason,
            log_start=self._log_start.get(node_id, 0),
            hint=hint,
        )

"""``kafka-storage format`` of every node of a new cluster (its SCRAM users too, if secured)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from peer.dev.localkafka import layout as lay
from peer.dev.localkafka import process as proc
from peer.dev.localkafka.process import NodeNotReadyError
from peer.dev.localkafka.runtime import Java, KafkaJars
from peer.dev.localkafka.secure import Security, argument_file, scram_arguments

FORMAT_TIMEOUT: Final = 120.0


def format_storage(
    java: Java,
    jars: KafkaJars,
    layout: lay.ClusterLayout,
    data_dir: Path,
    *,
    jvm_options: Sequence[str] = (),
    security: Security | None = None,
) -> None:
    """Format every node's storage, in parallel (each is a JVM start).

    With ``security``, each format also writes the SCRAM credentials of its users into the
    metadata log (``--add-scram``). Those arguments hold passwords, so they reach the JVM
    in a 0600 argument file (``java @file``), not on its command line.
    """
    running: list[tuple[lay.NodeSpec, subprocess.Popen[bytes], Path]] = []
    with contextlib.ExitStack() as files:
        for node in layout.nodes:
            out = lay.logs_dir(data_dir, node.id) / "format.log"
            quorum = (
                ["--standalone"]
                if len(layout.nodes) == 1
                else ["--initial-controllers", layout.initial_controllers()]
            )
            args = [
                proc.STORAGE_TOOL,
                "format",
                "--cluster-id",
                layout.cluster_id,
                "--config",
                str(lay.config_path(data_dir, node.id)),
                *quorum,
            ]
            if security is not None:
                # The tool prints the bootstrap records: salts and SCRAM keys, not passwords.
                out.parent.mkdir(parents=True, exist_ok=True)
                out.touch(mode=0o600)
                out.chmod(0o600)
                argfile = security.dir / f".format-node-{node.id}.args"
                args = [
                    files.enter_context(argument_file(argfile, [*args, *scram_arguments(security)]))
                ]
            cmd = [
                java.path,
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                *jvm_options,
                "-cp",
                jars.classpath,
                *args,
            ]
            running.append((node, proc.spawn(cmd, stdout_log=out), out))
        failed: list[tuple[lay.NodeSpec, str, Path]] = []
        for node, p, out in running:
            try:
                code = p.wait(timeout=FORMAT_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                code = None
            if code != 0:
                failed.append((node, "timed out" if code is None else f"exit {code}", out))
    if failed:
        node, why, out = failed[0]
        tail = proc.log_tail([out])
        raise NodeNotReadyError(node.id, f"storage could not be formatted ({why})", out, tail)

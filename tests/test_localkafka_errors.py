"""When the local Kafka cannot come up, the cause is named and nothing is left running."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from peer.dev.localkafka import (
    Cluster,
    LocalKafka,
    NodeNotReadyError,
    free_port_base,
    quiet_progress,
)
from peer.testing import mdpeer_argv


@pytest.mark.kafka
def test_a_node_that_dies_at_start_shows_its_log_and_leaves_nothing(tmp_path: Path) -> None:
    # Valid for `kafka-storage format`, fatal when the broker starts: the class is missing.
    kafka = LocalKafka(
        tmp_path / "kafka",
        port=free_port_base(1),
        overrides={"authorizer.class.name": "org.example.NoSuchAuthorizer"},
        ready_timeout=60,
        tie_to_parent=True,
        progress=quiet_progress,
    )
    with pytest.raises(NodeNotReadyError) as failed:
        kafka.start()
    error = failed.value
    first_line = str(error).splitlines()[0]
    assert first_line.startswith("Kafka node 1 exited"), first_line
    assert "NoSuchAuthorizer" in str(error)
    assert error.tail, "the last lines of the node's log are part of the message"
    assert error.log_path.is_file()
    cluster = Cluster.load(tmp_path / "kafka")
    assert cluster is not None
    assert cluster.running_pids() == {}


def test_a_maven_failure_shows_its_cause_and_output(tmp_path: Path) -> None:
    # A stand-in `mvn` that fails the way a resolution error does; no Kafka is involved.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mvn"
    fake.write_text(
        "#!/bin/sh\n"
        "echo '[INFO] Scanning for projects...'\n"
        "echo '[ERROR] Failed to execute goal on project kafka-runtime: Could not resolve "
        "dependencies: network is unreachable'\n"
        "exit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_HOME"}
    env.update(PATH=f"{bin_dir}:{env.get('PATH', '')}", MDPEER_CACHE_DIR=str(cache))
    done = subprocess.run(
        [*mdpeer_argv(), "kafka", "install"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 1
    first = next(ln for ln in done.stderr.splitlines() if ln.startswith("error: "))
    assert "Maven could not resolve org.apache.kafka:kafka_2.13" in first
    assert "network is unreachable" in first
    assert "[INFO] Scanning for projects..." in done.stderr  # the tail of Maven's output
    assert "Traceback" not in done.stderr
    # Nothing half-done is mistaken for a cache later.
    root = next(cache.glob("kafka-*"))
    assert not (root / "resolved.json").exists()
    assert not (root / "libs").exists()
    assert sorted(p.name for p in root.iterdir()) == [
        ".lock",
        "maven.log",
        "pom.xml",
    ]

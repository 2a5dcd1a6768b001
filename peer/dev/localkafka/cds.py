"""A class-data-sharing archive of the broker's classes, built once by ``mdpeer kafka install``.

A broker JVM spends most of its start-up loading and verifying ~5000 classes. The JVM can
dump the classes a run loaded into an archive when it exits (``-XX:ArchiveClassesAtExit``)
and map that archive on later starts (``-XX:SharedArchiveFile``): about a second less per
node start here. The archive is an optimisation only: if it is missing or stale, brokers
start the normal way.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from peer.dev.localkafka.runtime import (
    Progress,
    cds_archive,
    class_sharing_enabled,
    find_java,
    quiet_progress,
    resolve_jars,
    stderr_progress,
)
from peer.dev.localkafka.start import start_on_free_ports
from peer.errors import LocalKafkaError


def build_cds_archive(*, progress: Progress = stderr_progress) -> Path | None:
    """Build the archive for the current Java and jars unless it exists; return its path.

    Starts a throwaway 1-node broker on free ports, waits until it answers, stops it
    cleanly (the JVM writes the archive as it exits) and moves the file into the cache.
    Returns None when class sharing is disabled (``MDPEER_KAFKA_CDS=0``).
    """
    if not class_sharing_enabled():
        return None
    java = find_java()
    jars = resolve_jars(progress=progress)
    target = cds_archive(jars, java)
    if target.is_file():
        return target
    progress("localkafka: preparing a class-data-sharing archive for faster broker starts (once)")
    partial = target.with_name(f"{target.stem}.{os.getpid()}.tmp")
    try:
        with tempfile.TemporaryDirectory(prefix="mdpeer-cds-") as tmp:
            cluster = start_on_free_ports(
                Path(tmp) / "warmup",
                1,
                jvm_options=[f"-XX:ArchiveClassesAtExit={partial}"],
                progress=quiet_progress,
            )
            outcome = cluster.stop(grace=120.0)
        # Only a JVM that exited by itself wrote a whole archive.
        if outcome.get(1) != "stopped" or not partial.is_file():
            raise LocalKafkaError("the warm-up broker did not write a class-data-sharing archive")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    # Archives of earlier jars or Javas are never used again (about 50 MB each); a broker
    # still running on one keeps its mapping of the unlinked file.
    for stale in target.parent.glob("cds-*.jsa"):
        if stale != target:
            stale.unlink(missing_ok=True)
    progress(f"localkafka: class-data-sharing archive ready: {target}")
    return target

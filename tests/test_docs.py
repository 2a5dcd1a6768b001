"""The docs' shell commands run verbatim: README, the tools of LOCALKAFKA, the migration,
the secured walkthrough.

The rules (which blocks, the ``<!-- docs-test: ... -->`` markers, one terminal in reading
order) are in tests/docs_harness.py. The local Kafka and the reference server are the
README's own: its ``setup`` block starts them (``mdpeer kafka up`` on localhost:9092,
``mdpeer sim serve --port 8800``) once for the module, and its ``teardown`` block stops
them at the end. Kafka's storage goes to a temporary directory (``MDPEER_KAFKA_DATA_DIR``);
``mdpeer`` and ``uv run mdpeer`` are this checkout's CLI.

Blocks marked ``norun`` are listed as skipped, with the reason (``pytest -ra`` shows them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.testing import mdpeer_argv
from tests.docs_harness import (
    Block,
    DocFailedError,
    Terminal,
    extract_blocks,
    shim_dir,
    until_ready_helper,
)

ROOT = Path(__file__).resolve().parents[1]

#: (document, ``## section`` or None for all of it), in reading order
DOCS = [
    ("README.md", None),
    ("docs/LOCALKAFKA.md", "Kafka's own tools"),
    ("docs/OPERATIONS.md", "Migrating from the vendor connector"),
    ("docs/SECURITY.md", None),
]
#: what the docs' commands listen on: Kafka's client and controller ports, the server's
DOC_PORTS = (9092, 9192, 8800)
#: a block may start Kafka (jars cached), two peers and a few JVM tools on 2 cores
BLOCK_DEADLINE_S = 180.0
#: from the setup block's end until its servers accept connections
SERVICES_DEADLINE_S = 60.0

BLOCKS = {doc: extract_blocks(ROOT / doc, section=section, name=doc) for doc, section in DOCS}
NORUN = [b for blocks in BLOCKS.values() for b in blocks if b.role == "norun"]


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class DocsSession:
    """The module's terminal and which documents have run in it."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self.ran: set[str] = set()
        self.jobs_after_setup = 0

    def setup(self) -> None:
        for block in self._with_role("setup"):
            self.terminal.run(block, BLOCK_DEADLINE_S)
        deadline = time.monotonic() + SERVICES_DEADLINE_S
        for port in (9092, 8800):
            while not _port_open(port):
                if time.monotonic() > deadline:
                    raise DocFailedError(
                        f"nothing answers on port {port} after the setup blocks "
                        f"({', '.join(b.where for b in self._with_role('setup')) or 'none'})\n"
                        + self.terminal.tail()
                    )
                time.sleep(0.1)
        self.jobs_after_setup = self.terminal.running_jobs()

    def run_doc(self, doc: str) -> None:
        """Run ``doc``'s blocks, after the documents before it (reading order) if not yet."""
        for earlier, _ in DOCS:
            if earlier not in self.ran:
                self.ran.add(earlier)
                self._run_blocks(earlier)
            if earlier == doc:
                return

    def _run_blocks(self, doc: str) -> None:
        self.terminal.cd(doc.replace("/", "_"))
        for block in BLOCKS[doc]:
            if block.role is None:
                self.terminal.run(block, BLOCK_DEADLINE_S)
        left = self.terminal.running_jobs() - self.jobs_after_setup
        if left:
            raise DocFailedError(f"{doc} left {left} background job(s) running")

    def teardown(self) -> None:
        if self.terminal.dead is not None:
            return  # the failure that killed it is reported already
        for block in self._with_role("teardown"):
            self.terminal.run(block, BLOCK_DEADLINE_S)
        if self.terminal.running_jobs():
            raise DocFailedError("the teardown blocks left background jobs running")

    @staticmethod
    def _with_role(role: str) -> list[Block]:
        return [b for blocks in BLOCKS.values() for b in blocks if b.role == role]


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocsSession]:
    if os.environ.get("MDPEER_BOOTSTRAP"):
        pytest.skip("the docs start their own local Kafka; MDPEER_BOOTSTRAP names another")
    busy = [p for p in DOC_PORTS if _port_open(p)]
    if busy:
        pytest.fail(
            f"port(s) {', '.join(map(str, busy))} of 127.0.0.1 are in use, and the docs' "
            "commands need them: is a `mdpeer kafka up` or `mdpeer sim serve` still running?"
        )
    workdir = tmp_path_factory.mktemp("docs")
    data_dir = workdir / "kafka-data"
    # The reader's environment, less anything that would change what the docs' commands do.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MDPEER_") or k == "MDPEER_CACHE_DIR"
    }
    shims = shim_dir(workdir / ".bin", mdpeer_argv(), os.environ.get("UV") or shutil.which("uv"))
    env.update(
        PATH=f"{shims}{os.pathsep}{env.get('PATH', '')}",
        # `uv run mdpeer` from the document's directory runs this checkout, as from its root
        UV_PROJECT=str(ROOT),
        # ... and never rewrites uv.lock (scripts/test runs `uv run --locked` too)
        UV_LOCKED="1",
        MDPEER_KAFKA_DATA_DIR=str(data_dir),
    )
    terminal = Terminal(workdir, env, until_ready_helper())
    session = DocsSession(terminal)
    try:
        session.setup()
        yield session
        session.teardown()
    finally:
        terminal.stop()
        # Whatever happened above: no broker of this module outlives it.
        subprocess.run(
            [*mdpeer_argv(), "kafka", "down", "--data-dir", str(data_dir), "--grace", "5"],
            capture_output=True,
            timeout=60,
            check=False,
        )


@pytest.mark.kafka
@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("doc", [doc for doc, _ in DOCS])
def test_doc_commands_run_verbatim(docs: DocsSession, doc: str) -> None:
    docs.run_doc(doc)


@pytest.mark.parametrize("block", NORUN, ids=[b.where for b in NORUN])
def test_block_marked_norun(block: Block) -> None:
    pytest.skip(f"{block.where} not run here: {block.reason}")

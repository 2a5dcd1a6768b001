"""The docs test's own rules: which blocks it finds, how it marks and runs them (no Kafka)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs_harness import Block, DocFailedError, Terminal, extract_blocks, wrap_servers
from tests.fixtures.proc import run_captured

DOC = """\
# Title

```bash
echo one
```

<!-- docs-test: norun it names prod hosts -->
```sh
ssh prod1
```

## Part two

```toml
not = "shell"
```

<!-- docs-test: setup -->

```bash
echo setup
```

~~~shell
echo tilde
~~~
"""


def test_blocks_are_found_with_their_line_and_marker(tmp_path: Path) -> None:
    doc = tmp_path / "DOC.md"
    doc.write_text(DOC)
    blocks = extract_blocks(doc)
    assert [(b.line, b.role, b.text) for b in blocks] == [
        (4, None, "echo one\n"),
        (9, "norun", "ssh prod1\n"),
        (21, "setup", "echo setup\n"),
        (25, None, "echo tilde\n"),
    ]
    assert blocks[1].reason == "it names prod hosts"
    assert [b.line for b in extract_blocks(doc, section="Part two")] == [21, 25]


def test_a_bad_marker_or_section_is_an_error(tmp_path: Path) -> None:
    doc = tmp_path / "DOC.md"
    doc.write_text("<!-- docs-test: norun -->\n```bash\nx\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        extract_blocks(doc)
    doc.write_text("<!-- docs-test: skip it -->\n```bash\nx\n```\n")
    with pytest.raises(ValueError, match="unknown docs-test directive 'skip'"):
        extract_blocks(doc)
    with pytest.raises(ValueError, match="no section"):
        extract_blocks(doc, section="Nowhere")


def test_only_foreground_servers_are_wrapped() -> None:
    # each line of a block, and what it becomes (None: left as it is)
    lines = [
        (
            "mdpeer run --config c.json   # each peer",
            "HELPER /readyz mdpeer run --config c.json   # each peer",
        ),
        ("uv run mdpeer run --peer-id a &", None),
        (
            "X=1 uv run --locked mdpeer sim serve \\",
            "X=1 HELPER 'listening on' uv run --locked mdpeer sim serve \\",
        ),
        ("    --port 8800", None),
        ("cat > f <<'EOF'", None),
        ("mdpeer run inside a heredoc", None),
        ("EOF", None),
        ("mdpeer run --x | tee log", None),
        ("mdpeer status", None),
    ]
    wrapped = wrap_servers("\n".join(line for line, _ in lines), "HELPER").split("\n")
    assert wrapped == [new or line for line, new in lines]


def _terminal(tmp_path: Path) -> Terminal:
    helper = f"{sys.executable} {Path(__file__).with_name('docs_until_ready.py')}"
    return Terminal(tmp_path, {"PATH": "/usr/bin:/bin"}, helper)


def test_a_failing_command_is_named_with_its_document_line(tmp_path: Path) -> None:
    terminal = _terminal(tmp_path)
    try:
        terminal.run(Block("GUIDE.md", 10, "export A=1\nsleep 30 &\n"), 10)
        terminal.run(Block("GUIDE.md", 20, 'test "$A" = 1\nkill %1\nwait %1 || true\n'), 10)
        assert terminal.running_jobs() == 0
        with pytest.raises(DocFailedError) as failed:
            terminal.run(Block("GUIDE.md", 30, "true\nfalse  # the culprit\ntrue\n"), 10)
        assert "GUIDE.md:31: exit 1: false" in str(failed.value)
        with pytest.raises(DocFailedError, match="not run"):
            terminal.run(Block("GUIDE.md", 40, "true\n"), 10)
    finally:
        terminal.stop()


def until_ready(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """tests/docs_until_ready.py with ``args``: it runs a foreground command until it is up."""
    helper = Path(__file__).with_name("docs_until_ready.py")
    return run_captured([sys.executable, str(helper), *args], timeout)


def test_a_foreground_server_runs_until_it_is_up_then_stops(tmp_path: Path) -> None:
    server = tmp_path / "server.py"
    server.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "print('listening on here', flush=True)\n"
        "time.sleep(60)\n"
    )
    done = until_ready("listening on", sys.executable, str(server), timeout=30)
    assert done.returncode == 0, done.stderr
    assert "listening on here" in done.stdout
    assert "stopping it with SIGTERM" in done.stderr
    failing = until_ready("listening on", sys.executable, "-c", "raise SystemExit(3)", timeout=30)
    assert failing.returncode == 3


def test_a_peer_command_that_names_its_metrics_port_is_polled_there() -> None:
    from tests.docs_until_ready import metrics_port_of

    assert metrics_port_of(["mdpeer", "run", "--metrics-port", "9464"]) == 9464
    assert metrics_port_of(["mdpeer", "run", "--metrics-port=9465", "--peer-id", "a"]) == 9465
    assert metrics_port_of(["mdpeer", "run", "--config", "c.json"]) is None


#: a stand-in for ``mdpeer run``: /readyz on $MDPEER_METRICS_PORT, 503 while it rebuilds its
#: shard (the first answers), then 200; the log never says anything about its state
_FAKE_PEER = """\
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
asked = 0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global asked
        asked += 1
        ready = asked > 3
        body = {"ready": ready, "owned_shards": [0], "rebuilding": [] if ready else [0]}
        data = json.dumps(body).encode()
        self.send_response(200 if ready else 503)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


print("a peer starting", flush=True)
HTTPServer(("127.0.0.1", int(os.environ["MDPEER_METRICS_PORT"])), Handler).serve_forever()
"""


def test_a_foreground_peer_runs_until_its_readyz_says_it_works_then_stops(
    tmp_path: Path,
) -> None:
    peer = tmp_path / "peer.py"
    peer.write_text(_FAKE_PEER)
    done = until_ready("/readyz", sys.executable, str(peer), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "a peer starting" in done.stdout
    assert "/readyz); stopping it with SIGTERM" in done.stderr

"""Run the shell commands of the docs verbatim, as a reader would in one terminal.

Extraction: every fenced block whose info string starts with ``bash``, ``sh`` or ``shell``
(in the whole file, or in one ``## Section`` of it). A block can be marked by an HTML comment
on the last non-blank line before its fence (invisible on GitHub):

* ``<!-- docs-test: norun REASON -->``: it cannot run on this machine (production hosts,
  Docker, this very test suite); the test lists it with the reason.
* ``<!-- docs-test: setup -->``: it starts what the other blocks use (the local Kafka and
  the reference server): run once, first, before any document.
* ``<!-- docs-test: teardown -->``: it stops them: run once, last.

Running: one ``bash`` for all documents, in their reading order, so exported variables and
background jobs (``&``, ``kill %2``) behave as in a reader's terminal; each document runs in
its own new directory, where its heredocs create the files it uses. Every command must exit
0 (``set -e -o pipefail``); the first that does not is named with its document and line. A
foreground command that serves until stopped (``mdpeer run`` without ``&``) runs until it
is up (a peer: its ``/readyz``, on a metrics port the helper gives it; the reference server:
its "listening on" line), is then stopped with SIGTERM and must exit 0 (see
``docs_until_ready.py``). The command itself runs as written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SHELL_LANGS: Final = frozenset({"bash", "sh", "shell"})
_DIRECTIVE = re.compile(r"^<!--\s*docs-test:\s*(?P<what>\S+)\s*(?P<why>.*?)\s*-->$")
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_HEREDOC = re.compile(r"(?<!<)<<(?!<)(-?)\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")

#: a command that serves until stopped -> how docs_until_ready.py knows it is up: "/readyz"
#: (a peer's readiness: ready, working on a shard), or the text its output shows
SERVERS: Final = {
    ("mdpeer", "run"): "/readyz",
    ("mdpeer", "sim", "serve"): "listening on",
}


@dataclass(frozen=True)
class Block:
    doc: str
    #: 1-based line number of the block's first line (the one after the fence)
    line: int
    text: str
    #: None, "norun", "setup" or "teardown"
    role: str | None = None
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def extract_blocks(
    path: Path, *, section: str | None = None, name: str | None = None
) -> list[Block]:
    """The shell blocks of ``path`` (of its ``## section`` only, when given), in order."""
    doc = name or path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    in_section = section is None
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if section is not None and line.startswith("## "):
            in_section = line[3:].strip() == section
        fence = _FENCE.match(line)
        if fence is None:
            i += 1
            continue
        marker, start = fence.group("fence"), i + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(marker):
            end += 1
        info = fence.group("info").split()
        if in_section and info and info[0] in SHELL_LANGS:
            role, reason = _directive(lines, i, doc)
            text = "\n".join(lines[start:end]) + "\n"
            blocks.append(Block(doc, start + 1, text, role, reason))
        i = end + 1
    if section is not None and f"## {section}" not in (ln.rstrip() for ln in lines):
        raise ValueError(f"{path}: no section '## {section}'")
    return blocks


def _directive(lines: list[str], fence_index: int, doc: str) -> tuple[str | None, str]:
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j < 0:
        return None, ""
    m = _DIRECTIVE.match(lines[j].strip())
    if m is None:
        return None, ""
    what, why = m.group("what"), m.group("why")
    if what not in {"norun", "setup", "teardown"}:
        raise ValueError(f"{doc}:{j + 1}: unknown docs-test directive {what!r}")
    if what == "norun" and not why:
        raise ValueError(f"{doc}:{j + 1}: 'docs-test: norun' needs a reason")
    return what, why


def _server_ready_text(command: str) -> str | None:
    """docs_until_ready.py's READY when ``command`` starts a server in the foreground."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        return None
    if not words or words[-1].endswith("&") or {"|", "&&", "||", ";"} & set(words):
        return None
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    if words[:2] == ["uv", "run"]:
        words = [w for w in words[2:] if not w.startswith("--")]
    for prefix, ready in SERVERS.items():
        if tuple(words[: len(prefix)]) == prefix:
            return ready
    return None


def wrap_servers(text: str, helper: str) -> str:
    """``text`` with each foreground server command run through ``helper`` (same line count)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        first = i
        logical = lines[i]
        while logical.endswith("\\") and i + 1 < len(lines):
            i += 1
            logical = logical[:-1] + " " + lines[i]
        chunk = lines[first : i + 1]
        ready = _server_ready_text(logical)
        if ready is not None:
            body = chunk[0].lstrip()
            indent = chunk[0][: len(chunk[0]) - len(body)]
            assigns = re.match(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*", body)
            cut = assigns.end() if assigns else 0
            prefix = f"{helper} {shlex.quote(ready)} "
            chunk[0] = indent + body[:cut] + prefix + body[cut:]
        out.extend(chunk)
        i += 1
        heredoc = _HEREDOC.search(logical)
        if heredoc is not None:  # its body is data, not commands: copy it as is
            strip_tabs, delimiter = heredoc.group(1) == "-", heredoc.group(3)
            while i < len(lines):
                out.append(lines[i])
                ended = (lines[i].lstrip("\t") if strip_tabs else lines[i]) == delimiter
                i += 1
                if ended:
                    break
    return "\n".join(out)


class DocFailedError(AssertionError):
    pass


_PRELUDE: Final = r"""
exec 3>&"$DOCS_DONE_FD" {DOCS_DONE_FD}>&- 4>>"$DOCS_TRACE"
BASH_XTRACEFD=4
PS4='+ ${BASH_SOURCE[0]##*/}:${LINENO}: '
__docs_err() { echo "docs-test: ${BASH_SOURCE[1]##*/}:${BASH_LINENO[0]}: exit $1: $2" >&2; }
trap '__docs_err $? "$BASH_COMMAND"' ERR
set -E  # the ERR trap holds in functions and what they source only if on when called
__docs_run() {
  set -e -o pipefail -x
  source "$1" </dev/null 3>&-
  set +e +o pipefail +x
  echo "done $1" >&3
}
__docs_jobs() { echo "jobs $(jobs -rp | wc -l)" >&3; }
"""


class Terminal:
    """One ``bash`` that runs blocks one after the other, like a reader's terminal."""

    def __init__(self, workdir: Path, env: dict[str, str], helper: str) -> None:
        self.workdir = workdir
        self.helper = helper
        self.log = workdir / "terminal.log"
        self.trace = workdir / "trace.log"
        self.blocks_dir = workdir / ".blocks"
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        self._done_r, pipe_w = os.pipe()
        # fd 3 and 4 are the shell's (answers, trace): keep the pipe's write end clear of them
        done_w = fcntl.fcntl(pipe_w, fcntl.F_DUPFD, 10)
        os.close(pipe_w)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env={**env, "DOCS_TRACE": str(self.trace), "DOCS_DONE_FD": str(done_w)},
                pass_fds=(done_w,),
                # its own process group: background jobs a failed doc left are stopped with it
                start_new_session=True,
            )
        os.close(done_w)
        self._send(_PRELUDE)
        self.dead: str | None = None

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def _answer(self, timeout: float, what: str) -> str:
        ready, _, _ = select.select([self._done_r], [], [], timeout)
        if not ready:
            self.stop()
            self.dead = f"{what} did not finish within {timeout:.0f}s"
            raise DocFailedError(f"{self.dead}\n{self.tail()}")
        answer = os.read(self._done_r, 4096).decode()
        if not answer:
            self.proc.wait()
            self.dead = f"{what} failed: {self._culprit()}"
            raise DocFailedError(f"{self.dead}\n{self.tail()}")
        return answer.strip()

    def _culprit(self) -> str:
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        named = [ln.removeprefix("docs-test: ") for ln in lines if ln.startswith("docs-test: ")]
        return named[-1] if named else f"the shell exited {self.proc.returncode}"

    def cd(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(exist_ok=True)
        self._send(f"cd {shlex.quote(str(path))}\n")
        return path

    def run(self, block: Block, timeout: float) -> None:
        """Run ``block`` verbatim; raises :class:`DocFailedError` naming what failed."""
        if self.dead is not None:
            raise DocFailedError(f"{block.where}: not run: {self.dead}")
        # Padded so that ${LINENO} in a trace or error is the line in the document.
        script = self.blocks_dir / Path(block.doc).name
        body = wrap_servers(block.text, self.helper)
        script.write_text("\n" * (block.line - 1) + body, encoding="utf-8")
        self._send(f"__docs_run {shlex.quote(str(script))}\n")
        self._answer(timeout, f"the block at {block.where}")

    def running_jobs(self, timeout: float = 10.0) -> int:
        self._send("__docs_jobs\n")
        return int(self._answer(timeout, "listing jobs").split()[1])

    def tail(self, lines: int = 60) -> str:
        def last(path: Path) -> str:
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                return ""
            return "\n".join(text.splitlines()[-lines:])

        return (
            f"--- commands run (last {lines}):\n{last(self.trace)}\n"
            f"--- output (last {lines}):\n{last(self.log)}"
        )

    def stop(self, grace: float = 15.0) -> None:
        """End the shell and every job it left running (SIGTERM, SIGKILL after ``grace``)."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):  # a dead shell: the pipe is broken
                self.proc.stdin.close()
        group = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=0.1)  # reaps the shell; init reaps its orphans
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self._done_r)


def shim_dir(path: Path, mdpeer: list[str], uv: str | None) -> Path:
    """A directory for the front of PATH: ``mdpeer`` (this checkout) and ``uv``."""
    path.mkdir(parents=True, exist_ok=True)
    scripts = {"mdpeer": mdpeer}
    if uv is not None:
        scripts["uv"] = [uv]
    for name, argv in scripts.items():
        shim = path / name
        shim.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n', encoding="utf-8")
        shim.chmod(0o755)
    return path


def until_ready_helper() -> str:
    """The command prefix that runs a foreground server until it is up (shell words)."""
    return shlex.join([sys.executable, str(Path(__file__).with_name("docs_until_ready.py"))])

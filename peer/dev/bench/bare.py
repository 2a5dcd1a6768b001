"""The bare producer in a fresh process, one per round (issue 14, a fair benchmark).

Every peer round is a fresh peer process that grows into memory it never touched, and on
this kind of virtual machine fresh pages cost a fault each, dearer in later rounds
(docs/PERFORMANCE.md, 2026-12-03). The bare producer used to run inside the benchmark's
long-lived process, on heap and librdkafka buffers it had warmed in the rounds before: not
the same footing. So each round it is a fresh interpreter too, like the peer: it builds the
same records (untimed), waits for a quiet machine, then produces them (timed), and hands its
result back as JSON on its stdout. The parent only waits meanwhile.

    python -m peer.dev.bench.bare < job.json > result.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

from peer.dev.bench.producers import PARTITIONS, produce_records, same_records
from peer.dev.bench.quiet import settle
from peer.writer.records import Headers

#: a bare producer process that has not answered by then is a broken benchmark
TIMEOUT_S = 900.0


@dataclass(frozen=True)
class BareJob:
    """What one bare round produces: the records of ``total`` generator messages of
    ``size`` bytes over ``subjects``, with a peer record's headers (``sample``)."""

    bootstrap: str
    topic: str
    conf: dict[str, Any]
    total: int
    size: int
    subjects: list[str]
    sample: Headers
    warm_mb: int = 0
    #: at most this long for a quiet machine before the timed part (:func:`settle`)
    settle_max_s: float = 30.0

    def to_json(self) -> str:
        fields = asdict(self)
        # header values are bytes: latin-1 maps each byte to one code point and back
        fields["sample"] = [[name, value.decode("latin-1")] for name, value in self.sample]
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> BareJob:
        fields = json.loads(text)
        fields["sample"] = [(name, value.encode("latin-1")) for name, value in fields["sample"]]
        return cls(**fields)


def run(job: BareJob) -> dict[str, Any]:
    """This process's part: build, settle, produce (timed); the result, checked."""
    records = same_records(job.total, job.size, job.subjects, PARTITIONS, job.sample)
    settled = settle(job.settle_max_s, warm_mb=job.warm_mb)
    res = produce_records(job.bootstrap, job.topic, job.conf, records)
    res["before"] = settled
    res["process"] = "fresh, one per round"
    # the fairness claim, checked: the bare records carry the header names a peer record had
    res["same_header_names_as_peer"] = [h for h, _ in records[0][2]] == [h for h, _ in job.sample]
    return res


def bare_in_fresh_process(job: BareJob, timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """Run ``job`` in a fresh interpreter (its progress and errors on this stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "peer.dev.bench.bare"],
        input=job.to_json(),
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        code = done.returncode
        raise RuntimeError(f"the bare producer's process exited {code} (its stderr above)")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> int:
    job = BareJob.from_json(sys.stdin.read())
    json.dump(run(job), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

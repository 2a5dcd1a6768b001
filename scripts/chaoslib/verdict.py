"""The checker's verdict: what read_committed consumers saw, against what was published.

Pure: it takes the records read back (in partition order) and the publishers' ledger, and
returns, per subject, expected / delivered / duplicates / missing (each missing message
either covered by a gap a peer reported, DESIGN I6, or not) / order violations / corrupt.

A message is identified by its *counter* (the n-th publish on its subject, written into its
content, :mod:`chaoslib.content`); the publisher's ledger maps counters to the (epoch, seq)
the server gave them, so every record's headers are checked against its bytes too.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoslib.content import content, parse

Pos = tuple[int, int]  # (epoch, seq)


@dataclass(frozen=True, slots=True)
class Ledger:
    """What was published on one subject: ``count`` messages, counters 1..count.

    ``epochs``: (epoch, first counter of that epoch), ascending; a bump with nothing
    published after it leaves an entry whose first counter is ``count + 1``.
    """

    subject: str
    count: int
    epochs: tuple[tuple[int, int], ...] = ((1, 1),)

    def lost_to_bump(self, counter: int, missing: set[int]) -> bool:
        """Whether ``counter`` (missing) may have been lost to an epoch bump: its epoch was
        ended by a bump, and nothing of that epoch after it was delivered either."""
        firsts = [first for _, first in self.epochs]
        i = bisect.bisect_right(firsts, counter) - 1
        if i + 1 >= len(self.epochs):
            return False  # the current epoch: the server still holds all of it
        last = self.epochs[i + 1][1] - 1
        return all(c in missing for c in range(counter, last + 1))

    def position(self, counter: int) -> Pos:
        """The (epoch, seq) the server gave the ``counter``-th message."""
        firsts = [first for _, first in self.epochs]
        i = bisect.bisect_right(firsts, counter) - 1
        if i < 0 or not 1 <= counter <= self.count:
            raise ValueError(f"counter {counter} was not published on {self.subject}")
        epoch, first = self.epochs[i]
        return (epoch, counter - first + 1)


@dataclass(frozen=True, slots=True)
class Record:
    """One record read back from a target topic (headers already decoded)."""

    topic: str
    partition: int
    offset: int
    subject: str | None
    epoch: int | None
    seq: int | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Gap:
    """A gap a peer reported: messages between ``after`` (exclusive; None = the beginning)
    and ``resumed_at`` (exclusive) could not be obtained."""

    subject: str
    after: Pos | None
    resumed_at: Pos
    source: str  # "audit" or "log"
    kind: str = field(default="", compare=False)  # epoch_change, seq_jump, cache_expired

    def covers(self, pos: Pos) -> bool:
        return (self.after is None or self.after < pos) and pos < self.resumed_at


@dataclass(frozen=True, slots=True)
class SubjectVerdict:
    subject: str
    expected: int
    delivered: int
    duplicates: int
    missing: int
    missing_reported: int  # covered by a gap in the audit topic or a peer's log
    missing_unreported: int
    #: missing messages the server could still serve: not the unfetched tail of an epoch
    #: that a bump ended (the harness's server never expires its cache)
    missing_avoidable: int
    order_violations: int
    partitions: int
    corrupt: int  # bytes or headers that do not match the published message
    unexpected: int  # counters never published
    #: (first, last counter, reported by a gap, lost to an epoch bump)
    missing_ranges: tuple[tuple[int, int, bool, bool], ...] = ()

    @property
    def ok(self) -> bool:
        return (
            self.duplicates == 0
            and self.missing_unreported == 0
            and self.missing_avoidable == 0
            and self.order_violations == 0
            and self.partitions <= 1
            and self.corrupt == 0
            and self.unexpected == 0
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "expected": self.expected,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "missing_reported": self.missing_reported,
            "missing_unreported": self.missing_unreported,
            "missing_avoidable": self.missing_avoidable,
            "order_violations": self.order_violations,
            "partitions": self.partitions,
            "corrupt": self.corrupt,
            "unexpected": self.unexpected,
            "missing_ranges": [list(r) for r in self.missing_ranges],
            "ok": self.ok,
        }


@dataclass
class _Seen:
    counters: Counter[int] = field(default_factory=Counter)
    placements: set[tuple[str, int]] = field(default_factory=set)
    last: dict[tuple[str, int], Pos] = field(default_factory=dict)
    delivered: int = 0
    order_violations: int = 0
    corrupt: int = 0
    unexpected: int = 0


def _natural(text: str) -> list[Any]:
    """/chaos/s2 before /chaos/s10."""
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", text)]


def _ranges(numbers: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def judge(
    records: Iterable[Record],
    ledgers: Mapping[str, Ledger],
    gaps: Sequence[Gap],
    size: int,
) -> list[SubjectVerdict]:
    """Per-subject verdicts (by subject, numbers in order).

    ``records`` come in offset order within each partition.

    A record is attributed to the subject of its ``md.subject`` header (or, without one, to
    the subject its content names); a record with neither counts as unexpected under
    ``"<unknown>"``.
    """
    seen: dict[str, _Seen] = defaultdict(_Seen)
    for rec in records:
        claimed = parse(rec.value)
        subject = rec.subject or (claimed[0] if claimed else "<unknown>")
        state = seen[subject]
        state.delivered += 1
        place = (rec.topic, rec.partition)
        state.placements.add(place)
        ledger = ledgers.get(subject)
        if claimed is None or ledger is None or not 1 <= claimed[1] <= ledger.count:
            state.unexpected += 1
            continue
        counter = claimed[1]
        state.counters[counter] += 1
        expected_pos = ledger.position(counter)
        header_pos = (rec.epoch, rec.seq) if rec.epoch is not None and rec.seq is not None else None
        if (
            claimed[0] != subject
            or header_pos != expected_pos
            or rec.value != content(subject, counter, size)
        ):
            state.corrupt += 1
        # I5: in its partition, each record of a subject comes after the one before it
        last = state.last.get(place)
        if last is not None and expected_pos <= last:
            state.order_violations += 1
        state.last[place] = expected_pos

    by_subject: dict[str, list[Gap]] = defaultdict(list)
    for gap in gaps:
        by_subject[gap.subject].append(gap)

    out: list[SubjectVerdict] = []
    for subject in sorted(set(ledgers) | set(seen), key=_natural):
        ledger = ledgers.get(subject, Ledger(subject, 0))
        state = seen.get(subject, _Seen())
        missing = [c for c in range(1, ledger.count + 1) if c not in state.counters]
        reported = {
            c
            for c in missing
            if any(g.covers(ledger.position(c)) for g in by_subject.get(subject, ()))
        }
        lost = set(missing)
        avoidable = sum(1 for c in missing if not ledger.lost_to_bump(c, lost))
        ranges = tuple(
            (
                first,
                last,
                all(c in reported for c in range(first, last + 1)),
                all(ledger.lost_to_bump(c, lost) for c in range(first, last + 1)),
            )
            for first, last in _ranges(missing)
        )
        out.append(
            SubjectVerdict(
                subject=subject,
                expected=ledger.count,
                delivered=state.delivered,
                duplicates=sum(n - 1 for n in state.counters.values()),
                missing=len(missing),
                missing_reported=len(reported),
                missing_unreported=len(missing) - len(reported),
                missing_avoidable=avoidable,
                order_violations=state.order_violations,
                partitions=len(state.placements),
                corrupt=state.corrupt,
                unexpected=state.unexpected,
                missing_ranges=ranges,
            )
        )
    return out


def totals(verdicts: Sequence[SubjectVerdict]) -> dict[str, int]:
    keys = (
        "expected",
        "delivered",
        "duplicates",
        "missing",
        "missing_reported",
        "missing_unreported",
        "missing_avoidable",
        "order_violations",
        "corrupt",
        "unexpected",
    )
    out = {k: sum(int(getattr(v, k)) for v in verdicts) for k in keys}
    out["split_subjects"] = sum(1 for v in verdicts if v.partitions > 1)
    return out


def parse_pos(text: object) -> Pos | None:
    """``"E:S"`` (how peers write positions) -> (E, S); anything else -> None."""
    if not isinstance(text, str):
        return None
    epoch, sep, seq = text.partition(":")
    if not sep or not epoch.isdigit() or not seq.isdigit():
        return None
    return (int(epoch), int(seq))


def gap_from_fields(fields: Mapping[str, Any], source: str) -> Gap | None:
    """A gap from an audit record's JSON value or a peer's JSON log line (same fields)."""
    subject = fields.get("subject")
    resumed = parse_pos(fields.get("resumed_at"))
    if not isinstance(subject, str) or resumed is None:
        return None
    kind = fields.get("kind")
    return Gap(
        subject,
        parse_pos(fields.get("after")),
        resumed,
        source,
        kind if isinstance(kind, str) else "",
    )


GAP_LOG_MESSAGES = frozenset({"gap in subject", "gap in subject stream"})


def gaps_from_log_lines(lines: Iterable[str]) -> list[Gap]:
    """Gaps from a peer's JSON log (the runner's and the source's lines alike)."""
    import json

    out: list[Gap] = []
    for line in lines:
        if '"gap in subject' not in line:
            continue
        try:
            fields = json.loads(line)
        except ValueError:
            continue
        if isinstance(fields, dict) and fields.get("msg") in GAP_LOG_MESSAGES:
            gap = gap_from_fields(fields, "log")
            if gap is not None:
                out.append(gap)
    return out

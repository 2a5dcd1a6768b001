"""The chaos harness's verdict: the exactly-once verdict (:mod:`peer.testing.verdict`) over
what the publishers' ledgers say was published, plus what only this harness can tell.

A message is the n-th publish on its subject (its *counter*, written into its content,
:mod:`peer.dev.chaos.content`); the ledger maps counters to the (epoch, seq) the server gave
them, so every expected position and every expected byte is known. On top of the common
verdict the harness knows that its server never expires its cache: a missing message is
only excusable as the unfetched tail of an epoch that a bump ended (*lost to a bump*); any
other is *avoidable* and fails the run even when a gap reported it.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from peer.dev.chaos.content import content
from peer.testing.verdict import Delivered, Gap, Pos, SubjectVerdict, gap_from_fields, judge
from peer.testing.verdict import totals as common_totals


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
        """Whether ``counter`` (missing) may have been lost to an epoch bump or a server
        restart: its epoch was ended by one, and nothing of that epoch after it was delivered
        either."""
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

    def positions(self) -> list[Pos]:
        return [self.position(c) for c in range(1, self.count + 1)]

    def counter(self, pos: Pos) -> int:
        """The counter of the message the server numbered ``pos`` (ValueError if none)."""
        epoch, seq = pos
        for i, (e, first) in enumerate(self.epochs):
            end = self.epochs[i + 1][1] if i + 1 < len(self.epochs) else self.count + 1
            if e == epoch and 1 <= seq <= end - first:
                return first + seq - 1
        raise ValueError(f"{pos} was not published on {self.subject}")


@dataclass(frozen=True, slots=True)
class ChaosVerdict:
    """The common verdict of one subject, and how its missing messages were lost."""

    common: SubjectVerdict
    #: missing messages the server could still serve (not the unfetched tail of an ended
    #: epoch): the harness's server never expires its cache
    missing_avoidable: int
    #: (first, last counter, reported by a gap, lost to an epoch bump or restart)
    missing_ranges: tuple[tuple[int, int, bool, bool], ...] = ()

    @property
    def ok(self) -> bool:
        return self.common.ok and self.missing_avoidable == 0

    def as_json(self) -> dict[str, Any]:
        return {
            **self.common.as_json(),
            "missing_avoidable": self.missing_avoidable,
            "missing_ranges": [list(r) for r in self.missing_ranges],
            "ok": self.ok,
        }


def _ranges(numbers: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def judge_run(
    records: Iterable[Delivered],
    ledgers: Mapping[str, Ledger],
    gaps: Sequence[Gap],
    size: int,
) -> list[ChaosVerdict]:
    """Per-subject verdicts of a run (natural subject order). Every published byte is known:
    a record whose content differs from the message its headers name is corrupt."""

    def value_of(subject: str, pos: Pos) -> bytes:
        ledger = ledgers[subject]
        return content(subject, ledger.counter(pos), size)

    expected = {s: lg.positions() for s, lg in ledgers.items()}
    out: list[ChaosVerdict] = []
    for common in judge(expected, records, gaps, value_of=value_of):
        ledger = ledgers.get(common.subject, Ledger(common.subject, 0))
        missing = [ledger.counter(p) for p in common.missing_positions]
        unreported = {ledger.counter(p) for p in common.unreported_positions}
        lost = set(missing)
        avoidable = sum(1 for c in missing if not ledger.lost_to_bump(c, lost))
        ranges = tuple(
            (
                first,
                last,
                not any(c in unreported for c in range(first, last + 1)),
                all(ledger.lost_to_bump(c, lost) for c in range(first, last + 1)),
            )
            for first, last in _ranges(missing)
        )
        out.append(ChaosVerdict(common, avoidable, ranges))
    return out


def totals(verdicts: Sequence[ChaosVerdict]) -> dict[str, int]:
    common = common_totals(v.common for v in verdicts)
    avoidable = {"missing_avoidable": sum(v.missing_avoidable for v in verdicts)}
    # the report's order: the avoidable ones next to the other missing counts
    keys = list(common)
    at = keys.index("missing_unreported") + 1
    return {k: {**common, **avoidable}[k] for k in [*keys[:at], *avoidable, *keys[at:]]}


GAP_LOG_MESSAGES: Final = frozenset({"gap in subject", "gap in subject stream"})


def gaps_from_log_lines(lines: Iterable[str]) -> list[Gap]:
    """The gaps a peer reported in its JSON log (the runner's and the source's lines alike).

    A report, read as one: the log is where the peer says it skipped messages, besides the
    audit topic (which only holds gaps whose transaction committed).
    """
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


__all__ = ["ChaosVerdict", "Ledger", "gaps_from_log_lines", "judge_run", "totals"]

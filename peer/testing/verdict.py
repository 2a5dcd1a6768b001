"""The exactly-once verdict: what read_committed consumers saw, against what was published.

One verdict for the tests, the demo, the chaos harness and the benchmarks. It takes

* ``expected``: per subject, the (epoch, seq) of every message that was published;
* ``delivered``: the records read back (subject, epoch and seq from the ``md.*`` headers,
  topic, partition, offset, value);
* ``gaps``: the gaps the peers reported (DESIGN I6): messages they could not obtain;

and says, per subject, how many messages were expected and delivered, and which were
duplicated, out of order, corrupt or missing, each missing one either covered by a reported
gap or not. A record is the message its headers name.

**ok** means: no duplicate, no order violation, no corrupt record and no missing message that
no gap reported. Order is per partition (I5): a record behind the one before it in its
partition is an order violation, and so is every record of a subject outside the partition
holding most of its records (across partitions no consumer sees an order at all).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

Pos = tuple[int, int]  # (epoch, seq)

#: the subject of records without an ``md.subject`` header
UNKNOWN_SUBJECT: Final = "<unknown>"


@dataclass(frozen=True, slots=True)
class Delivered:
    """One record read back from a target topic."""

    subject: str | None
    epoch: int | None
    seq: int | None
    partition: int
    offset: int
    value: bytes | None = None
    topic: str = ""

    @property
    def position(self) -> Pos | None:
        return None if self.epoch is None or self.seq is None else (self.epoch, self.seq)

    @classmethod
    def from_kafka(
        cls,
        topic: str,
        partition: int,
        offset: int,
        headers: Iterable[tuple[str, Any]] | None,
        value: bytes | None,
        *,
        prefix: str = "md.",
    ) -> Delivered:
        """From a consumed message's parts; headers that are absent or not numbers are None."""
        found: dict[str, str] = {}
        for name, raw in headers or ():
            if isinstance(raw, bytes):
                found[str(name)] = raw.decode("utf-8", "replace")
        return cls(
            found.get(prefix + "subject"),
            _int(found.get(prefix + "epoch")),
            _int(found.get(prefix + "seq")),
            partition,
            offset,
            value,
            topic,
        )


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


@dataclass(frozen=True, slots=True)
class Gap:
    """A gap a peer reported: the messages of ``subject`` after ``after`` (exclusive; None =
    from the beginning) and before ``resumed_at`` could not be obtained."""

    subject: str
    after: Pos | None
    resumed_at: Pos
    source: str = ""  # where it was read: "audit" (the audit topic) or "log"
    kind: str = field(default="", compare=False)  # epoch_change, seq_jump, cache_expired

    def covers(self, pos: Pos) -> bool:
        return (self.after is None or self.after < pos) and pos < self.resumed_at


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


@dataclass(frozen=True, slots=True)
class SubjectVerdict:
    subject: str
    expected: int
    delivered: int
    #: records of a message delivered before (the first one is not counted)
    duplicates: int
    #: behind the previous record of the subject in its partition, or in another partition
    order_violations: int
    #: not a published message as published: no or bad ``md.*`` headers, bytes other than
    #: the published ones (when they are known), or (``exhaustive``) never published
    corrupt: int
    #: records of a position not in ``expected`` (corrupt too when ``expected`` is exhaustive)
    unexpected: int
    #: partitions (topic, partition) its records were found in; more than one breaks order
    partitions: int
    missing_reported: int
    missing_unreported: int
    #: the expected positions never delivered, in publish order
    missing_positions: tuple[Pos, ...] = field(default=(), repr=False, compare=False)
    #: of those, the ones no reported gap covers
    unreported_positions: tuple[Pos, ...] = field(default=(), repr=False, compare=False)

    @property
    def missing(self) -> int:
        return self.missing_reported + self.missing_unreported

    @property
    def ok(self) -> bool:
        return (
            self.duplicates == 0
            and self.order_violations == 0
            and self.corrupt == 0
            and self.missing_unreported == 0
        )

    def line(self) -> str:
        return (
            f"exactly-once {self.subject}: expected {self.expected}, delivered "
            f"{self.delivered}, duplicates {self.duplicates}, missing {self.missing} "
            f"({self.missing_reported} reported), order violations {self.order_violations}, "
            f"corrupt {self.corrupt}, unexpected {self.unexpected}, partitions "
            f"{self.partitions}: {'OK' if self.ok else 'FAILED'}"
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
            "order_violations": self.order_violations,
            "corrupt": self.corrupt,
            "unexpected": self.unexpected,
            "partitions": self.partitions,
            "ok": self.ok,
        }


@dataclass
class _Seen:
    positions: Counter[Pos] = field(default_factory=Counter)
    placements: Counter[tuple[str, int]] = field(default_factory=Counter)
    last: dict[tuple[str, int], Pos] = field(default_factory=dict)
    delivered: int = 0
    order_violations: int = 0
    corrupt: int = 0
    unexpected: int = 0


def natural(text: str) -> list[Any]:
    """A sort key: /chaos/s2 before /chaos/s10."""
    return [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", text)]


def judge(
    expected: Mapping[str, Sequence[Pos]],
    delivered: Iterable[Delivered],
    gaps: Iterable[Gap] = (),
    *,
    value_of: Callable[[str, Pos], bytes | None] | None = None,
    exhaustive: bool = True,
    one_partition: bool = True,
) -> list[SubjectVerdict]:
    """Per-subject verdicts, for every subject expected or delivered (natural order).

    ``value_of(subject, pos)``: the bytes a published message must have (None: not known).
    ``exhaustive``: ``expected`` is everything that was published, so a record of any other
    position is corrupt; with False (a test that expects only some of what it published)
    such a record is only counted as unexpected.
    ``one_partition``: a subject's records belong in one partition (I5); False for a writer
    that spreads one stream over partitions (a keyless Kafka producer, as Kafka Connect's
    file source), whose order is judged within each partition only.
    """
    want = {s: set(positions) for s, positions in expected.items()}
    seen: dict[str, _Seen] = defaultdict(_Seen)
    for rec in sorted(delivered, key=lambda r: (r.topic, r.partition, r.offset)):
        subject = rec.subject if rec.subject is not None else UNKNOWN_SUBJECT
        state = seen[subject]
        state.delivered += 1
        place = (rec.topic, rec.partition)
        state.placements[place] += 1
        pos = rec.position
        if rec.subject is None or pos is None:
            state.corrupt += 1
            continue
        state.positions[pos] += 1
        if pos not in want.get(subject, ()):
            state.unexpected += 1
            if exhaustive:
                state.corrupt += 1
        elif value_of is not None:
            published = value_of(subject, pos)
            if published is not None and rec.value != published:
                state.corrupt += 1
        # I5: in its partition, each record of a subject comes after the one before it
        last = state.last.get(place)
        if last is not None and pos <= last:
            state.order_violations += 1
        state.last[place] = pos

    by_subject: dict[str, list[Gap]] = defaultdict(list)
    for gap in gaps:
        by_subject[gap.subject].append(gap)

    out: list[SubjectVerdict] = []
    for subject in sorted(set(expected) | set(seen), key=natural):
        state = seen.get(subject, _Seen())
        positions = list(dict.fromkeys(expected.get(subject, ())))
        missing = tuple(p for p in positions if p not in state.positions)
        covering = by_subject.get(subject, [])
        unreported = tuple(p for p in missing if not any(g.covers(p) for g in covering))
        # records outside the partition that holds most of the subject's: no order across
        home = max(state.placements.values(), default=0)
        misplaced = sum(state.placements.values()) - home if one_partition else 0
        out.append(
            SubjectVerdict(
                subject=subject,
                expected=len(positions),
                delivered=state.delivered,
                duplicates=sum(n - 1 for n in state.positions.values()),
                order_violations=state.order_violations + misplaced,
                corrupt=state.corrupt,
                unexpected=state.unexpected,
                partitions=len(state.placements),
                missing_reported=len(missing) - len(unreported),
                missing_unreported=len(unreported),
                missing_positions=missing,
                unreported_positions=unreported,
            )
        )
    return out


TOTALS: Final = (
    "expected",
    "delivered",
    "duplicates",
    "missing",
    "missing_reported",
    "missing_unreported",
    "order_violations",
    "corrupt",
    "unexpected",
)


def totals(verdicts: Iterable[SubjectVerdict]) -> dict[str, int]:
    """Every count summed over subjects, and ``split_subjects`` (in more than one partition)."""
    listed = list(verdicts)
    out = {k: sum(int(getattr(v, k)) for v in listed) for k in TOTALS}
    out["split_subjects"] = sum(1 for v in listed if v.partitions > 1)
    return out


__all__ = [
    "UNKNOWN_SUBJECT",
    "Delivered",
    "Gap",
    "Pos",
    "SubjectVerdict",
    "gap_from_fields",
    "judge",
    "natural",
    "parse_pos",
    "totals",
]

"""What the REST source counts, and what it knows of the servers' heads (its stats).

Kept up to date as answers are accepted, so :meth:`Tally.stats` costs a copy, not a walk of
every subscription: the peer asks once a second, and at 100,000 subjects the walk took 8 ms
(issue #16). Used under the source's lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from peer.model import Position
from peer.source.base import SourceStats
from peer.source.resume import Outcome, SubjectTracker


class Tally:
    """Counters and heads of one source."""

    __slots__ = ("_ahead", "_heads", "duplicates", "gaps", "malformed", "messages")

    def __init__(self) -> None:
        self.messages = 0
        self.duplicates = 0
        self.gaps = 0
        self.malformed = 0
        #: subject -> newest position the server is known to have
        self._heads: dict[str, Position] = {}
        #: subjects whose head is beyond what was delivered of them
        self._ahead: set[str] = set()

    def accepted(self, subject: str, tracker: SubjectTracker, outcome: Outcome) -> None:
        """``tracker`` (the subject's current one) turned an answer into ``outcome``."""
        self.messages += outcome.messages
        self.duplicates += outcome.duplicates
        self.gaps += len(outcome.gaps)
        head = tracker.head
        if head is None:
            return
        self._heads[subject] = head
        if head != tracker.last:
            self._ahead.add(subject)
        else:
            self._ahead.discard(subject)

    def forget(self, subject: str) -> None:
        """The subject's subscription ended or was replaced (a new tracker knows no head)."""
        self._heads.pop(subject, None)
        self._ahead.discard(subject)

    def stats(self, buffered: Iterable[str]) -> SourceStats:
        """The counters, every known head, and the heads of the subjects that may lag: ahead
        of what was delivered, or with events still ``buffered``."""
        heads = self._heads
        lagging = {s: heads[s] for s in self._ahead}
        for subject in buffered:
            head = heads.get(subject)
            if head is not None:
                lagging[subject] = head
        return SourceStats(
            messages=self.messages,
            duplicates_dropped=self.duplicates,
            gaps=self.gaps,
            malformed=self.malformed,
            server_head=dict(heads),
            lagging=lagging,
        )


__all__ = ["Tally"]

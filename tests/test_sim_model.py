"""The reference server's store against a plain reference model (no HTTP)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.dev.sim.model import FIRST_EPOCH, Store, subject_problem

pytestmark = pytest.mark.sim


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class RefSubject:
    """The obvious implementation: every message ever published, filtered on read."""

    epoch: int = FIRST_EPOCH
    head: int = 0
    log: list[tuple[int, float, str, bool]] = field(default_factory=list)  # seq, t, text, ret
    snapshot: tuple[int, int, str] | None = None

    def cached(self, now: float, size: int, expire: float) -> list[tuple[int, str]]:
        live = [(s, text) for s, t, text, _ in self.log if t >= now - expire]
        return live[-size:] if size else []


def decode(body: bytes, kind: str) -> list[tuple[int, int, str]]:
    data = json.loads(body)
    assert {m["message_type"] for m in data["messages"]} <= {kind}
    return [(m["epoch"], m["seq"], m["content"]) for m in data["messages"]]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("tick"), st.floats(0.0, 4.0), st.booleans()),
        st.tuples(st.just("bump"), st.integers(0, 2), st.booleans()),
    ),
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(
    ops=ops,
    cache_size=st.integers(0, 7),
    inclusive=st.booleans(),
    limit=st.integers(0, 4),
    probe_seq=st.integers(0, 60),
    probe_history=st.integers(0, 12),
)
def test_store_matches_the_reference_model(
    ops: list[tuple[str, Any, bool]],
    cache_size: int,
    inclusive: bool,
    limit: int,
    probe_seq: int,
    probe_history: int,
) -> None:
    clock = Clock()
    store = Store(
        cache_size=cache_size,
        cache_expire_s=10.0,
        seq_inclusive=inclusive,
        max_per_response=limit,
        clock=clock,
    )
    subjects = ["/s/0", "/s/1", "/s/2"]
    ref = {s: RefSubject() for s in subjects}
    n = 0
    for op, arg, flag in ops:
        if op == "pub":
            subject = subjects[arg]
            n += 1
            r = ref[subject]
            r.head += 1
            r.log.append((r.head, clock.now, f"m{n}", flag))
            if flag:
                r.snapshot = (r.epoch, r.head, f"m{n}")
            if n % 3:
                assert store.publish(subject, f"m{n}", closure=None, retained=flag) == (
                    r.epoch,
                    r.head,
                )
            else:  # the generator's batch path must behave the same
                store.publish_many([(subject, f"m{n}")], closure=None, retained=flag)
        elif op == "tick":
            clock.now += arg
        elif flag:  # bump all
            store.bump_epoch()
            for s, r in ref.items():
                if store.describe(s):
                    r.epoch, r.head, r.log = r.epoch + 1, 0, []
        else:
            store.bump_epoch(subjects[arg])
            r = ref[subjects[arg]]
            r.epoch, r.head, r.log = r.epoch + 1, 0, []

    for subject, r in ref.items():
        cached = r.cached(clock.now, cache_size, store.cache_expire_s)
        capped = cached[:limit] if limit else cached
        expected_cache = [(r.epoch, s, text) for s, text in cached]
        # history: the last N, then capped from its start
        window = expected_cache[len(expected_cache) - min(probe_history, len(cached)) :]
        got = decode(store.history(subject, probe_history), "HISTORICAL")
        assert got == (window[:limit] if limit else window)
        # recover in the current epoch
        first = probe_seq if inclusive else probe_seq + 1
        after = [m for m in expected_cache if m[1] >= first]
        got = decode(store.recover(subject, r.epoch, probe_seq), "RECOVERED")
        assert got == (after[:limit] if limit else after)
        # recover from an epoch the subject does not have: its whole cache
        got = decode(store.recover(subject, r.epoch + 5, probe_seq), "RECOVERED")
        assert got == [(r.epoch, s, text) for s, text in capped]
        # snapshot: the latest retained message, whatever the cache did
        snap = decode(store.snapshot(subject), "SNAPSHOT")
        assert snap == ([] if r.snapshot is None else [r.snapshot])


def test_consume_of_an_unknown_subject_creates_nothing() -> None:
    store = Store()
    assert json.loads(store.snapshot("/none")) == {"subject": "/none", "messages": []}
    assert json.loads(store.history("/none", 5))["messages"] == []
    assert json.loads(store.recover("/none", 1, 1))["messages"] == []
    assert store.subject_count() == 0


@pytest.mark.parametrize(
    "subject", ["/a", "/server/status1", "/a-b/c_d/e.f", "/é/中", "/a:b/@x", "/" + "x" * 500]
)
def test_valid_subjects(subject: str) -> None:
    assert subject_problem(subject) is None


@pytest.mark.parametrize(
    ("subject", "fragment"),
    [
        ("", "empty"),
        ("a", "start with '/'"),
        ("/", "at least one segment"),
        ("//a", "empty segment"),
        ("/a/", "trailing"),
        ("/a*", "wildcards"),
        ("/a\nb", "U+000A at index 2"),
        ("/a\u00a0b", "whitespace"),
        ("/a\x7fb", "control"),
    ],
)
def test_invalid_subjects_name_the_problem(subject: str, fragment: str) -> None:
    problem = subject_problem(subject)
    assert problem is not None
    assert fragment in problem


def test_the_publish_hook_hears_every_publish_after_it_is_stored() -> None:
    store = Store(first_epoch=4)
    heard: list[list[str]] = []

    def hook(subjects: Any) -> None:
        # called once the messages can be read: the hook's listeners may fetch at once
        assert all(json.loads(store.snapshot(s))["messages"] for s in subjects)
        heard.append(list(subjects))

    assert store.publish("/a/1", "x", closure=None) == (4, 1)  # nobody listens yet
    store.on_publish = hook
    store.publish("/a/1", "y", closure=None)
    store.publish_many([("/a/2", "z"), ("/a/1", "w")], closure=None)
    assert heard == [["/a/1"], ["/a/2", "/a/1"]]
    assert json.loads(store.snapshot("/a/2"))["messages"][0]["epoch"] == 4

"""The peer's bookkeeping: what commit and abort do to per-subject positions (no broker)."""

from __future__ import annotations

from peer.control import ShardState
from peer.control.shards import shard_of
from peer.model import Position, StartPolicy
from peer.routes.model import Route
from peer.runner.shardset import OwnedShard, ShardSet, SubjectTrack


def owned_with(subject: str, shards: int = 4) -> ShardSet:
    p = shard_of(subject, shards)
    state = ShardState(p, shards)
    state.routes[subject] = Route(subject, "topic1")
    owned = ShardSet()
    owned.shards[p] = OwnedShard(state, 0)
    owned.subjects[subject] = SubjectTrack(p, Position(1, 5), StartPolicy())
    return owned


def test_commit_moves_pending_to_committed_and_abort_drops_it() -> None:
    owned = owned_with("/a")
    track = owned.subjects["/a"]
    assert owned.dirty() == {}
    track.pending = Position(1, 9)
    assert track.last() == Position(1, 9)
    assert list(owned.dirty()) == ["/a"]
    owned.aborted_all()
    after_abort = owned.subjects["/a"]
    assert (after_abort.pending, after_abort.committed) == (None, Position(1, 5))  # redo point
    track.pending = Position(1, 7)
    owned.committed_all()
    done = owned.subjects["/a"]
    assert (done.committed, done.pending) == (Position(1, 7), None)
    assert owned.dirty() == {}


def test_an_unacknowledged_reset_stays_dirty_until_committed() -> None:
    owned = owned_with("/a")
    track = owned.subjects["/a"]
    track.needs_ack = True
    owned.aborted_all()
    assert list(owned.dirty()) == ["/a"]
    owned.committed_all()
    assert owned.dirty() == {}


def test_routes_are_looked_up_only_for_owned_tracked_subjects() -> None:
    owned = owned_with("/a")
    assert owned.route("/a") == Route("/a", "topic1")
    assert owned.route("/b") is None
    assert owned.subjects_of(shard_of("/a", 4)) == ["/a"]
    owned.shards.clear()
    assert owned.route("/a") is None


def test_commits_are_remembered_per_shard_until_the_shard_goes() -> None:
    owned = owned_with("/a")
    p = shard_of("/a", 4)
    track = owned.subjects["/a"]
    track.cmd = "c1"
    track.pending = Position(2, 3)
    owned.committed_all()
    assert owned.remembered["/a"] == (p, Position(2, 3), "c1")
    owned.forget(p)
    assert owned.remembered == {}
    assert owned.subjects == {}
    assert owned.shards == {}


def test_lag_counts_same_epoch_distance_per_shard() -> None:
    owned = owned_with("/a")
    p = shard_of("/a", 4)
    assert owned.lag({"/a": Position(1, 12)}) == {p: 7}
    assert owned.lag({"/a": Position(2, 1)}) == {p: 0}  # epoch changed: unknown, not guessed
    assert owned.lag({}) == {p: 0}


def test_lag_per_route_topic_sums_its_subjects() -> None:
    owned = owned_with("/a")
    for subject, topic in (("/b", "topic1"), ("/c", "topic2")):
        p = shard_of(subject, 4)
        owned.shards.setdefault(p, OwnedShard(ShardState(p, 4), 0))
        owned.shards[p].state.routes[subject] = Route(subject, topic)
        owned.subjects[subject] = SubjectTrack(p, Position(1, 5), StartPolicy())
    heads = {"/a": Position(1, 12), "/b": Position(1, 8), "/c": Position(2, 1)}
    by_shard, by_topic = owned.lags(heads)
    assert by_topic == {"topic1": 10, "topic2": 0}  # a route with no known distance shows 0
    assert sum(by_shard.values()) == 10
    assert by_shard == owned.lag(heads)


def test_only_marked_subjects_are_dirty_and_a_replaced_track_is_bound() -> None:
    owned = owned_with("/a")
    p = shard_of("/a", 4)
    owned.subjects["/b"] = SubjectTrack(p, None, StartPolicy(), needs_ack=True)
    assert sorted(owned.dirty()) == ["/b"]  # marked when put in
    owned.committed_all()
    assert owned.dirty() == {}
    del owned.subjects["/a"]
    fresh = SubjectTrack(p, Position(1, 5), StartPolicy())
    owned.subjects["/a"] = fresh
    assert owned.dirty() == {}
    fresh.pending = Position(1, 6)
    assert list(owned.dirty()) == ["/a"]
    del owned.subjects["/a"]
    assert owned.dirty() == {}  # a marked subject no longer tracked is not dirty
    assert owned.subjects.marked == set()


def test_lags_of_the_lagging_subjects_only_still_name_every_route_topic() -> None:
    owned = owned_with("/a")
    p = shard_of("/b", 4)
    owned.shards.setdefault(p, OwnedShard(ShardState(p, 4), 0))
    owned.shards[p].state.routes["/b"] = Route("/b", "topic2")
    owned.subjects["/b"] = SubjectTrack(p, Position(1, 5), StartPolicy())
    by_shard, by_topic = owned.lags({"/a": Position(1, 9), "/gone": Position(1, 99)})
    assert by_topic == {"topic1": 4, "topic2": 0}
    assert sum(by_shard.values()) == 4

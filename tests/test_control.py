"""peer.control: the control-record codec and the shard state rebuilt from records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.control import (
    VERSION,
    Change,
    CheckpointCleared,
    CheckpointRecord,
    Command,
    CommandCleared,
    CommandRecord,
    ControlRecord,
    ControlRecordError,
    MisplacedRecordError,
    Resume,
    RouteRecord,
    RouteRemoved,
    ShardState,
    UnsupportedVersionError,
    decode,
    encode_checkpoint,
    encode_command,
    encode_route,
    encode_route_removal,
)
from peer.control.shards import shard_of
from peer.errors import ConfigError, MdpeerError
from peer.model import Position, StartKind, StartPolicy
from peer.routes.model import Oversize, Route

# --- encoding ---------------------------------------------------------------------------------


def test_route_record_bytes() -> None:
    key, value = encode_route(Route("/server/status2", "topic2", "mykey"))
    assert key == b"route:/server/status2"
    assert json.loads(value) == {
        "v": 1,
        "topic": "topic2",
        "key": "mykey",
        "on_oversize": "fail",
        "dead_letter_topic": None,
        "start": "snapshot",
    }
    # Deterministic bytes: compaction and diffing compare equal values equal.
    assert value == encode_route(Route("/server/status2", "topic2", "mykey"))[1]


def test_route_round_trip_and_tombstone() -> None:
    route = Route(
        "/a/b",
        "t",
        on_oversize=Oversize.DEAD_LETTER,
        dead_letter_topic="dlq",
        start=StartPolicy(StartKind.HISTORY, 10),
    )
    assert decode(*encode_route(route)) == RouteRecord(route)
    key, value = encode_route_removal("/a/b")
    assert value is None
    assert decode(key, value) == RouteRemoved("/a/b")


def test_checkpoint_round_trip_with_meta() -> None:
    key, value = encode_checkpoint("/a", 3, 1200, cmd="c1", peer="p1", ts=1.5)
    assert key == b"ckpt:/a"
    assert json.loads(value) == {
        "v": 1,
        "epoch": 3,
        "seq": 1200,
        "cmd": "c1",
        "peer": "p1",
        "ts": 1.5,
    }
    rec = decode(key, value)
    assert isinstance(rec, CheckpointRecord)
    assert rec.position == Position(3, 1200)
    assert rec.cmd == "c1"
    assert rec.start is None
    assert rec.meta == {"peer": "p1", "ts": 1.5}


def test_reset_checkpoint_without_position() -> None:
    key, value = encode_checkpoint("/a", None, None, cmd="c1", start=StartPolicy(StartKind.LATEST))
    rec = decode(key, value)
    assert rec == CheckpointRecord("/a", None, cmd="c1", start=StartPolicy(StartKind.LATEST))
    assert decode(b"ckpt:/a", None) == CheckpointCleared("/a")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("/a", 1, None), {}, "both given or both None"),
        (("/a", None, None), {}, "needs the start policy"),
        (("/a", -1, 0), {}, "non-negative 64-bit"),
        (("/a", 0, 2**63), {}, "non-negative 64-bit"),
        (("/a", 1, 2), {"v": 9}, "reserved"),
        (("/a", 1, 2), {"start_at": 1, "cmd": None, "seq2": 1, "v": 1}, "reserved"),
    ],
)
def test_encode_checkpoint_refuses_nonsense(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_checkpoint(*args, **kwargs)


def test_encode_refuses_invalid_subjects() -> None:
    with pytest.raises(ConfigError, match="starts with '/'"):
        encode_checkpoint("a", 1, 1)


@pytest.mark.parametrize(
    ("text", "to"),
    [
        ("snapshot", StartPolicy()),
        ("latest", StartPolicy(StartKind.LATEST)),
        ("history:50", StartPolicy(StartKind.HISTORY, 50)),
        ("3:1200", Position(3, 1200)),
        (" 0:0 ", Position(0, 0)),
    ],
)
def test_command_round_trip(text: str, to: Position | StartPolicy) -> None:
    cmd = Command.reset(text)
    assert cmd.to == to
    key, value = encode_command("/a/b", cmd, by="admin")
    assert key == b"cmd:/a/b"
    assert json.loads(value) == {"v": 1, "op": "reset", "to": str(to), "id": cmd.id, "by": "admin"}
    rec = decode(key, value)
    assert isinstance(rec, CommandRecord)
    assert rec.command == cmd
    assert rec.meta == {"by": "admin"}
    assert decode(b"cmd:/a/b", None) == CommandCleared("/a/b")


def test_command_ids_are_unique() -> None:
    assert len({Command.reset("latest").id for _ in range(100)}) == 100


@pytest.mark.parametrize("bad", ["", "earliest", "3:", "3:x", "-1:5", "history:0"])
def test_command_targets_are_checked(bad: str) -> None:
    with pytest.raises(ConfigError) as err:
        Command.reset(bad)
    assert err.value.field == "to"
    assert err.value.value == bad.strip()


# --- decoding errors --------------------------------------------------------------------------


def value(**payload: Any) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("key", "raw", "reason"),
    [
        (b"offset:/a", value(v=1), "unknown kind 'offset'"),
        (b"/a", value(v=1), "unknown kind"),
        (b"route:a", value(v=1, topic="t"), "bad subject"),
        (b"route:/a", b"{not json", "not UTF-8 JSON"),
        (b"route:/a", b"\xff", "not UTF-8 JSON"),
        (b"route:/a", b"[1]", "not a JSON object"),
        (b"route:/a", value(topic="t"), "format version 'v'"),
        (b"route:/a", value(v="1", topic="t"), "format version 'v'"),
        (b"route:/a", value(v=1), "a route needs a topic"),
        (b"route:/a", value(v=1, topic="bad topic"), "topic='bad topic'"),
        (b"route:/a", value(v=1, topic="t", start="soon"), "start='soon'"),
        (b"ckpt:/a", value(v=1, epoch=-1, seq=0), "epoch must be a non-negative integer"),
        (b"ckpt:/a", value(v=1, epoch=1, seq=True), "seq must be a non-negative integer"),
        (b"ckpt:/a", value(v=1, epoch=1, seq=None), "both be set or both be null"),
        (b"ckpt:/a", value(v=1, epoch=None, seq=None), "needs 'start'"),
        (b"ckpt:/a", value(v=1, epoch=1, seq=1, cmd=5), "cmd must be a string"),
        (b"cmd:/a", value(v=1, op="purge", to="latest", id="x"), "unknown command op 'purge'"),
        (b"cmd:/a", value(v=1, op="reset", to="latest"), "'id' must be a non-empty string"),
        (b"cmd:/a", value(v=1, op="reset", id="x"), "'to' must be a string"),
        (b"cmd:/a", value(v=1, op="reset", to="soon", id="x"), "to='soon'"),
        (b"\xffroute:/a", value(v=1), "not UTF-8"),
    ],
)
def test_decode_errors_name_the_key(key: bytes, raw: bytes, reason: str) -> None:
    with pytest.raises(ControlRecordError) as err:
        decode(key, raw)
    assert reason in str(err.value)
    assert str(err.value).startswith(f"control record {key.decode('utf-8', 'replace')!r}: ")
    assert isinstance(err.value, MdpeerError)


def test_newer_versions_are_refused_not_ignored() -> None:
    with pytest.raises(UnsupportedVersionError) as err:
        decode(b"route:/a", value(v=VERSION + 1, topic="t"))
    assert err.value.key == "route:/a"
    assert f"format version {VERSION + 1}" in str(err.value)
    assert err.value.hint is not None
    assert "upgrade" in err.value.hint


def test_unknown_fields_of_the_current_version_are_ignored() -> None:
    # Adding an optional field is allowed without a version bump.
    rec = decode(b"route:/a", value(v=1, topic="t", priority="high"))
    assert rec == RouteRecord(Route("/a", "t"))
    cmd = decode(b"cmd:/a", value(v=1, op="reset", to="latest", id="x", reason="ops"))
    assert isinstance(cmd, CommandRecord)
    assert cmd.meta == {"reason": "ops"}


# --- shard state ------------------------------------------------------------------------------


def state_for(*subjects: str, shards: int = 8) -> ShardState:
    parts = {shard_of(s, shards) for s in subjects}
    assert len(parts) == 1, "test subjects must share a shard"
    return ShardState(parts.pop(), shards)


def apply_all(state: ShardState, *records: tuple[bytes, bytes | None]) -> list[Change]:
    start = 0 if state.offset is None else state.offset + 1
    return [state.apply(decode(k, v), start + i) for i, (k, v) in enumerate(records)]


def test_routes_are_added_changed_and_removed() -> None:
    st8 = ShardState(0, 1)
    changes = apply_all(
        st8,
        encode_route(Route("/a", "t1")),
        encode_route(Route("/a", "t1")),
        encode_route(Route("/a", "t2")),
        encode_route(Route("/b", "t1")),
        encode_route_removal("/a"),
        encode_route_removal("/a"),
    )
    assert changes == [
        Change.ROUTE_ADDED,
        Change.NONE,
        Change.ROUTE_CHANGED,
        Change.ROUTE_ADDED,
        Change.ROUTE_REMOVED,
        Change.NONE,
    ]
    assert st8.subjects() == frozenset({"/b"})
    assert st8.offset == 5


def test_resume_points() -> None:
    s = ShardState(0, 1)
    apply_all(s, encode_route(Route("/a", "t", start=StartPolicy(StartKind.LATEST))))
    assert s.resume("/a") == Resume(None, StartPolicy(StartKind.LATEST))
    apply_all(s, encode_checkpoint("/a", 2, 40))
    assert s.resume("/a") == Resume(Position(2, 40), StartPolicy(StartKind.LATEST))
    # Removing the route keeps the checkpoint: re-adding resumes where it stopped.
    apply_all(s, encode_route_removal("/a"), encode_route(Route("/a", "t")))
    assert s.resume("/a").after == Position(2, 40)
    apply_all(s, (b"ckpt:/a", None))
    assert s.resume("/a") == Resume(None, StartPolicy())


def test_a_command_is_pending_until_a_checkpoint_acknowledges_it() -> None:
    s = ShardState(0, 1)
    cmd = Command.reset("7:0")
    changes = apply_all(
        s, encode_route(Route("/a", "t")), encode_checkpoint("/a", 2, 40), encode_command("/a", cmd)
    )
    assert changes[-1] is Change.COMMAND
    assert s.pending("/a") is not None
    assert set(s.pending_commands()) == {"/a"}
    assert s.resume("/a") == Resume(Position(7, 0), StartPolicy(), cmd.id)
    # A checkpoint written before the owner saw the command does not acknowledge it.
    apply_all(s, encode_checkpoint("/a", 2, 41))
    assert s.resume("/a").cmd == cmd.id
    # The owner acknowledges it in the next checkpoint: resume from the data again.
    apply_all(s, encode_checkpoint("/a", 7, 3, cmd=cmd.id))
    assert s.pending("/a") is None
    assert s.pending_commands() == {}
    assert s.resume("/a") == Resume(Position(7, 3), StartPolicy())
    # A later checkpoint keeps carrying the id, so compaction cannot revive the command.
    apply_all(s, encode_checkpoint("/a", 7, 9, cmd=cmd.id))
    assert s.pending("/a") is None


def test_reset_to_a_policy_and_its_acknowledgement() -> None:
    s = ShardState(0, 1)
    cmd = Command.reset("latest")
    apply_all(
        s, encode_route(Route("/a", "t")), encode_checkpoint("/a", 1, 5), encode_command("/a", cmd)
    )
    assert s.resume("/a") == Resume(None, StartPolicy(StartKind.LATEST), cmd.id)
    apply_all(
        s, encode_checkpoint("/a", None, None, cmd=cmd.id, start=StartPolicy(StartKind.LATEST))
    )
    assert s.resume("/a") == Resume(None, StartPolicy(StartKind.LATEST))


def test_command_tombstone_clears_it() -> None:
    s = ShardState(0, 1)
    apply_all(s, encode_command("/a", Command.reset("latest")), (b"cmd:/a", None))
    assert s.pending("/a") is None


def test_records_of_another_shard_are_reported_not_applied() -> None:
    shards = 16
    subject = "/server/status1"
    wrong = (shard_of(subject, shards) + 1) % shards
    s = ShardState(wrong, shards)
    with pytest.raises(MisplacedRecordError) as err:
        s.apply(decode(*encode_route(Route(subject, "t"))), 10)
    assert err.value.key == f"route:{subject}"
    assert f"found on partition {wrong} at offset 10" in str(err.value)
    assert f"shard is {shard_of(subject, shards)} of {shards}" in str(err.value)
    assert s.subjects() == frozenset()
    assert s.misplaced == 1
    assert s.offset == 10


def test_a_misplaced_record_is_reported_while_the_shard_holds_other_subjects() -> None:
    shards = 16
    here = next(f"/s/{i}" for i in range(100) if shard_of(f"/s/{i}", shards) == 3)
    there = next(f"/s/{i}" for i in range(100) if shard_of(f"/s/{i}", shards) != 3)
    s = ShardState(3, shards)
    s.apply(decode(*encode_route(Route(here, "t"))), 0)
    s.apply(decode(*encode_checkpoint(here, 1, 2)), 1)  # a subject held here: known shard
    with pytest.raises(MisplacedRecordError):
        s.apply(decode(*encode_checkpoint(there, 1, 2)), 2)
    assert s.subjects() == {here}
    assert there not in s.checkpoints


def test_routes_sharing_a_value_decode_to_their_own_subjects() -> None:
    first = Route("/same/1", "orders", key="k", on_oversize=Oversize.SKIP)
    _, value = encode_route(first)
    for subject in ("/same/1", "/same/2", "/same/1"):
        record = decode(f"route:{subject}".encode(), value)
        assert isinstance(record, RouteRecord)
        assert record.route == Route(subject, "orders", key="k", on_oversize=Oversize.SKIP)
    # a bad value is refused for every subject that carries it, never remembered as good
    bad = json.dumps({"v": 1, "topic": "__internal"}).encode()
    for subject in ("/bad/1", "/bad/2"):
        with pytest.raises(ControlRecordError, match=f"route:{subject}"):
            decode(f"route:{subject}".encode(), bad)
    # the subject is still checked when the value is known
    with pytest.raises(ControlRecordError, match="bad subject"):
        decode(b"route:/same//3", value)


def test_already_applied_offsets_are_skipped() -> None:
    s = ShardState(0, 1)
    s.apply(decode(*encode_route(Route("/a", "t1"))), 5)
    s.apply(decode(*encode_route_removal("/a")), 6)
    # A consumer that seeked back re-delivers offset 5: applying it again would undo 6.
    assert s.apply(decode(*encode_route(Route("/a", "t1"))), 5) is Change.NONE
    assert s.subjects() == frozenset()


def test_shard_state_checks_its_partition() -> None:
    with pytest.raises(ValueError, match=r"partition 3 is not in \[0, 3\)"):
        ShardState(3, 3)


def test_subjects_spread_over_shards_match_their_partition() -> None:
    shards = 12
    states = [ShardState(p, shards) for p in range(shards)]
    subjects = [f"/sensor/{i}" for i in range(200)]
    for offset, subject in enumerate(subjects):
        states[shard_of(subject, shards)].apply(decode(*encode_route(Route(subject, "t"))), offset)
    assert sum(len(s.subjects()) for s in states) == 200
    assert all(s.subjects() for s in states)  # 200 subjects reach all 12 shards


# --- properties -------------------------------------------------------------------------------

SUBJECTS = st.sampled_from(["/a", "/b/c", "/météo/zü", "/x:y/z"])
TOPICS = st.text(st.sampled_from("abcxyz019._-"), min_size=1, max_size=20).filter(
    lambda t: t not in (".", "..") and not t.startswith("__")
)
POLICIES = st.one_of(
    st.just(StartPolicy()),
    st.just(StartPolicy(StartKind.LATEST)),
    st.integers(1, 10_000).map(lambda n: StartPolicy(StartKind.HISTORY, n)),
)
INT64 = st.integers(0, 2**63 - 1)
POSITIONS = st.builds(Position, INT64, INT64)
JSONISH = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.text(max_size=10))


@st.composite
def routes(draw: st.DrawFn) -> Route:
    subject, topic = draw(SUBJECTS), draw(TOPICS)
    oversize = draw(st.sampled_from(Oversize))
    dlt = None
    if oversize is Oversize.DEAD_LETTER:
        dlt = draw(TOPICS.filter(lambda t: t != topic))
    key = draw(st.one_of(st.none(), st.text(st.characters(codec="utf-8"), min_size=1)))
    return Route(subject, topic, key, oversize, dlt, draw(POLICIES))


@given(routes())
def test_route_codec_round_trip(route: Route) -> None:
    assert decode(*encode_route(route)) == RouteRecord(route)


@given(
    SUBJECTS,
    POSITIONS,
    st.one_of(st.none(), st.text(min_size=1, max_size=8)),
    st.dictionaries(
        st.text(max_size=6).filter(lambda k: k not in {"v", "epoch", "seq", "cmd", "start"}),
        JSONISH,
        max_size=4,
    ),
)
def test_checkpoint_codec_round_trip(
    subject: str, pos: Position, cmd: str | None, meta: dict[str, Any]
) -> None:
    rec = decode(*encode_checkpoint(subject, pos.epoch, pos.seq, cmd=cmd, **meta))
    assert rec == CheckpointRecord(subject, pos, cmd=cmd)
    assert isinstance(rec, CheckpointRecord)
    assert rec.meta == meta


@given(SUBJECTS, st.one_of(POSITIONS, POLICIES))
def test_command_codec_round_trip(subject: str, to: Position | StartPolicy) -> None:
    cmd = Command(to=to)
    assert decode(*encode_command(subject, cmd)) == CommandRecord(subject, cmd)


def _record(draw: st.DrawFn, subject: str, cmd_ids: list[str]) -> tuple[bytes, bytes | None]:
    kind = draw(st.sampled_from(["route", "unroute", "ckpt", "ackckpt", "cmd", "uncmd", "unckpt"]))
    if kind == "route":
        return encode_route(Route(subject, draw(st.sampled_from(["t1", "t2"]))))
    if kind == "unroute":
        return encode_route_removal(subject)
    if kind in ("ckpt", "ackckpt"):
        ack = cmd_ids[-1] if kind == "ackckpt" and cmd_ids else None
        pos = draw(POSITIONS)
        return encode_checkpoint(subject, pos.epoch, pos.seq, cmd=ack)
    if kind == "cmd":
        cmd = Command(to=draw(st.one_of(POSITIONS, POLICIES)))
        cmd_ids.append(cmd.id)
        return encode_command(subject, cmd)
    return (f"{'cmd' if kind == 'uncmd' else 'ckpt'}:{subject}".encode(), None)


@st.composite
def control_logs(draw: st.DrawFn) -> list[tuple[bytes, bytes | None]]:
    cmd_ids: list[str] = []
    return [_record(draw, draw(SUBJECTS), cmd_ids) for _ in range(draw(st.integers(0, 30)))]


def snapshot(s: ShardState) -> tuple[Any, ...]:
    return (
        dict(s.routes),
        {k: (c.position, c.cmd, c.start) for k, c in s.checkpoints.items()},
        {k: r.command for k, r in s.pending_commands().items()},
        {subject: s.resume(subject) for subject in ["/a", "/b/c", "/météo/zü", "/x:y/z"]},
    )


@settings(deadline=None)  # up to 30 records decoded three times
@given(control_logs())
def test_state_survives_compaction(log: list[tuple[bytes, bytes | None]]) -> None:
    """Rebuilding from a compacted partition gives the same state as from the full log."""
    full = ShardState(0, 1)
    for offset, (k, v) in enumerate(log):
        full.apply(decode(k, v), offset)
    last = {k: offset for offset, (k, _v) in enumerate(log)}
    compacted = ShardState(0, 1)
    for offset, (k, v) in enumerate(log):
        if last[k] == offset:  # what log compaction keeps: the newest record of each key
            compacted.apply(decode(k, v), offset)
    assert snapshot(compacted) == snapshot(full)
    # Compaction eventually deletes tombstones too (delete.retention.ms): same state again.
    cleaned = ShardState(0, 1)
    for offset, (k, v) in enumerate(log):
        if last[k] == offset and v is not None:
            cleaned.apply(decode(k, v), offset)
    assert snapshot(cleaned) == snapshot(full)


def test_decode_result_type_is_the_union() -> None:
    rec: ControlRecord = decode(*encode_route(Route("/a", "t")))
    assert rec.subject == "/a"

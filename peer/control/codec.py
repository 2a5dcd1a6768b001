"""Encoding and decoding control records (see :mod:`peer.control` for the format)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from peer.control.records import (
    _CKPT_RESERVED,
    _KINDS,
    _MAX_INT64,
    BLOCK,
    CHECKPOINT,
    COMMAND,
    PEER,
    ROUTE,
    VERSION,
    BlockCleared,
    BlockRecord,
    CheckpointCleared,
    CheckpointRecord,
    Command,
    CommandCleared,
    CommandOp,
    CommandRecord,
    ControlRecord,
    ControlRecordError,
    PeerCleared,
    PeerRecord,
    RouteRecord,
    RouteRemoved,
    UnsupportedVersionError,
    parse_reset_target,
)
from peer.errors import ConfigError
from peer.model import Position, StartPolicy
from peer.routes.model import Route, validate_subject

_JSON: Final = msgspec.json.Decoder()

# --- encoding ---------------------------------------------------------------------------------


def _key(kind: str, subject: str) -> bytes:
    return f"{kind}:{validate_subject(subject)}".encode()


def _value(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(
        {"v": VERSION, **payload}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def encode_route(route: Route) -> tuple[bytes, bytes]:
    return _key(ROUTE, route.subject), _value(route.options())


def encode_route_removal(subject: str) -> tuple[bytes, None]:
    """The tombstone that removes a route."""
    return _key(ROUTE, subject), None


def encode_checkpoint(
    subject: str,
    epoch: int | None,
    seq: int | None,
    *,
    cmd: str | None = None,
    start: StartPolicy | None = None,
    **meta: Any,
) -> tuple[bytes, bytes]:
    """A checkpoint at (epoch, seq); or, with both None, "reset to ``start``, nothing since"."""
    if (epoch is None) != (seq is None):
        raise ValueError("epoch and seq are both given or both None")
    if epoch is None and start is None:
        raise ValueError("a checkpoint without a position needs the start policy of its reset")
    if epoch is not None and seq is not None:
        for n in (epoch, seq):
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= _MAX_INT64:
                raise ValueError(
                    f"epoch and seq must be non-negative 64-bit integers: {epoch}:{seq}"
                )
    clash = _CKPT_RESERVED & meta.keys()
    if clash:
        raise ValueError(f"checkpoint meta must not use reserved names: {sorted(clash)}")
    payload: dict[str, Any] = {"epoch": epoch, "seq": seq, "cmd": cmd, **meta}
    if start is not None:
        payload["start"] = str(start)
    return _key(CHECKPOINT, subject), _value(payload)


def encode_command(subject: str, cmd: Command, **meta: Any) -> tuple[bytes, bytes]:
    clash = {"v", "op", "to", "id"} & meta.keys()
    if clash:
        raise ValueError(f"command meta must not use reserved names: {sorted(clash)}")
    payload = {"op": cmd.op.value, "to": cmd.target_text(), "id": cmd.id, **meta}
    return _key(COMMAND, subject), _value(payload)


# --- decoding ---------------------------------------------------------------------------------


def encode_block(
    subject: str,
    reason: str,
    since: str,
    *,
    detail: str = "",
    topic: str | None = None,
    peer: str | None = None,
) -> tuple[bytes, bytes]:
    payload = {"reason": reason, "since": since, "detail": detail, "topic": topic, "peer": peer}
    return _key(BLOCK, subject), _value(payload)


def encode_block_removal(subject: str) -> tuple[bytes, None]:
    return _key(BLOCK, subject), None


def peer_key(peer_id: str) -> bytes:
    return f"{PEER}:{peer_id}".encode()


def encode_peer(peer_id: str, *, source: str, since: str, error: str = "") -> tuple[bytes, bytes]:
    return peer_key(peer_id), _value({"source": source, "since": since, "error": error})


def decode(key: bytes, value: bytes | None) -> ControlRecord:
    """Decode one control record; any problem is a :class:`ControlRecordError` naming the key."""
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise ControlRecordError(key, "the key is not UTF-8") from None
    kind, sep, subject = text.partition(":")
    if not sep or kind not in _KINDS:
        raise ControlRecordError(
            key,
            f"unknown kind {kind!r} (known: {', '.join(_KINDS)})",
            hint="a newer mdpeer or another program wrote to this topic",
        )
    if kind == PEER:
        return _decode_peer(key, subject, value)
    try:
        validate_subject(subject)
    except ConfigError as exc:
        raise ControlRecordError(key, f"bad subject: {exc.reason}") from None
    if value is None:
        cleared: dict[str, ControlRecord] = {
            ROUTE: RouteRemoved(subject),
            CHECKPOINT: CheckpointCleared(subject),
            COMMAND: CommandCleared(subject),
            BLOCK: BlockCleared(subject),
        }
        return cleared[kind]
    if kind == ROUTE:
        # A table of 100k routes holds a handful of distinct values: parse each once.
        proto = _ROUTE_VALUES.get(value)
        if proto is None:
            proto = _route_options(key, subject, value)
            if len(_ROUTE_VALUES) >= _ROUTE_VALUES_MAX:
                _ROUTE_VALUES.clear()
            _ROUTE_VALUES[value] = proto
        return RouteRecord(proto.for_subject(subject))
    data = _payload(key, value)
    if kind == BLOCK:
        return _decode_block(key, subject, data)
    try:
        if kind == CHECKPOINT:
            return _decode_checkpoint(key, subject, data)
        return _decode_command(key, subject, data)
    except ConfigError as exc:
        raise ControlRecordError(key, f"{exc.field}={exc.value!r}: {exc.reason}") from None


_ROUTE_KEYS: Final = frozenset({"topic", "key", "on_oversize", "dead_letter_topic", "start"})
#: route value bytes -> the validated route they decode to (for the first subject seen)
_ROUTE_VALUES: dict[bytes, Route] = {}
_ROUTE_VALUES_MAX: Final = 4096


def _route_options(key: bytes, subject: str, value: bytes) -> Route:
    data = _payload(key, value)
    try:
        return Route.from_dict(_known_only(data, _ROUTE_KEYS), subject=subject)
    except ConfigError as exc:
        raise ControlRecordError(key, f"{exc.field}={exc.value!r}: {exc.reason}") from None


def _known_only(data: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    # Fields a future writer added without a version bump are optional by contract: skip them.
    return {k: v for k, v in data.items() if k in names}


def _payload(key: bytes, value: bytes) -> dict[str, Any]:
    try:
        data = _JSON.decode(value)
    except msgspec.MsgspecError as exc:
        raise ControlRecordError(key, f"the value is not UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ControlRecordError(key, "the value is not a JSON object")
    v = data.pop("v", None)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ControlRecordError(key, f"missing or bad format version 'v': {v!r}")
    if v > VERSION:
        raise UnsupportedVersionError(
            key,
            f"format version {v}; this mdpeer understands up to {VERSION}",
            hint="a newer mdpeer wrote this record: upgrade this peer",
        )
    return data


def _int_or_none(key: bytes, data: Mapping[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT64:
        raise ControlRecordError(key, f"{name} must be a non-negative integer, got {value!r}")
    return value


def _decode_checkpoint(key: bytes, subject: str, data: dict[str, Any]) -> CheckpointRecord:
    epoch = _int_or_none(key, data, "epoch")
    seq = _int_or_none(key, data, "seq")
    if (epoch is None) != (seq is None):
        raise ControlRecordError(key, "epoch and seq must both be set or both be null")
    cmd = data.get("cmd")
    if cmd is not None and not isinstance(cmd, str):
        raise ControlRecordError(key, f"cmd must be a string, got {cmd!r}")
    start_text = data.get("start")
    start = None
    if start_text is not None:
        if not isinstance(start_text, str):
            raise ControlRecordError(key, f"start must be a string, got {start_text!r}")
        start = StartPolicy.parse(start_text)
    if epoch is None and start is None:
        raise ControlRecordError(key, "a checkpoint without epoch/seq needs 'start'")
    meta = {k: v for k, v in data.items() if k not in _CKPT_RESERVED}
    position = None if epoch is None or seq is None else Position(epoch, seq)
    return CheckpointRecord(subject, position, cmd=cmd, start=start, meta=meta)


def _text(key: bytes, data: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ControlRecordError(key, f"{name} must be a string, got {value!r}")
    return value


def _decode_block(key: bytes, subject: str, data: dict[str, Any]) -> BlockRecord:
    return BlockRecord(
        subject,
        reason=_text(key, data, "reason", required=True),
        since=_text(key, data, "since", required=True),
        detail=_text(key, data, "detail"),
        topic=_text(key, data, "topic") or None,
        peer=_text(key, data, "peer") or None,
    )


def _decode_peer(key: bytes, peer_id: str, value: bytes | None) -> PeerRecord | PeerCleared:
    if not peer_id:
        raise ControlRecordError(key, "a peer record needs a peer id")
    if value is None:
        return PeerCleared(peer_id)
    data = _payload(key, value)
    return PeerRecord(
        peer_id,
        source=_text(key, data, "source", required=True),
        since=_text(key, data, "since", required=True),
        error=_text(key, data, "error"),
    )


def _decode_command(key: bytes, subject: str, data: dict[str, Any]) -> CommandRecord:
    op = data.get("op")
    try:
        cop = CommandOp(op)
    except ValueError:
        raise ControlRecordError(
            key,
            f"unknown command op {op!r}",
            hint="a newer mdpeer wrote this command: upgrade this peer",
        ) from None
    to, cid = data.get("to"), data.get("id")
    if not isinstance(to, str):
        raise ControlRecordError(key, f"'to' must be a string, got {to!r}")
    if not isinstance(cid, str) or not cid:
        raise ControlRecordError(key, f"'id' must be a non-empty string, got {cid!r}")
    meta = {k: v for k, v in data.items() if k not in ("op", "to", "id")}
    return CommandRecord(subject, Command(to=parse_reset_target(to), id=cid, op=cop), meta=meta)

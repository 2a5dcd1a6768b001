"""The control topic's records, and the state of one shard rebuilt from them.

Every record is keyed ``<kind>:<subject>`` and written to partition ``shard_of(subject, P)``;
the topic is compacted, so only the newest record of each key is guaranteed to survive.
Values are JSON objects carrying a format version ``"v"``:

* ``route:<subject>`` → ``{"v": 1, "topic": T, "key": K|null, "on_oversize": ...,
  "dead_letter_topic": ...|null, "start": "snapshot"|"latest"|"history:N"}``. A tombstone
  (null value) removes the route. Written by the admin CLI.
* ``ckpt:<subject>`` → ``{"v": 1, "epoch": E, "seq": S, "cmd": ID|null, ...meta}``: the last
  message committed to Kafka, written only by the owner inside the transaction that carries
  that message. After a reset to ``snapshot``/``latest`` and before any message, the owner
  writes ``{"v": 1, "epoch": null, "seq": null, "start": "latest", "cmd": ID}`` instead.
* ``cmd:<subject>`` → ``{"v": 1, "op": "reset", "to": "snapshot"|"latest"|"history:N"|"E:S",
  "id": ID, ...}``: an operator command, applied by the owner in order.
* ``block:<subject>`` → ``{"v": 1, "reason": R, "since": ISO-8601, "detail": ..., "topic": T,
  "peer": ID}``: the subject is stopped at its checkpoint by a fault of its own (quarantine,
  see ``peer.runner.quarantine``); a tombstone when it flows again. Written by the owner in
  its transactions, read by ``mdpeer status``; a new owner does not trust it (it tries the
  subject again) but keeps its ``since``.
* ``peer:<peer id>`` → ``{"v": 1, "source": "unreachable", "since": ..., "error": ...}``: a
  peer that cannot reach any MigratoryData server says so for ``mdpeer status``; a tombstone
  when it can again or leaves. Not a subject's record: any partition may hold it.

Commands are acknowledged through checkpoints: the owner copies the id of the last command it
applied into every checkpoint it writes for that subject (``"cmd"``). A command is pending while
the newest checkpoint does not carry its id. This survives compaction (only the newest ``cmd``
and ``ckpt`` of a subject matter) and replays to the same state on every new owner, so a reset
is applied exactly once even if the owner dies right after reading it.

Versions. A reader accepts ``v`` from 1 up to :data:`VERSION` and ignores fields it does not
know (a writer may add optional fields without a new version). A record with a newer ``v``
means a newer mdpeer wrote something this one cannot understand (a changed meaning, not an
extra field). Guessing could lose or duplicate data, so decoding raises
:class:`UnsupportedVersionError`: the peer refuses the shard and says to upgrade.
"""

from peer.control import records
from peer.control.codec import (
    decode,
    encode_block,
    encode_block_removal,
    encode_checkpoint,
    encode_command,
    encode_peer,
    encode_route,
    encode_route_removal,
    peer_key,
)
from peer.control.records import *  # noqa: F403  (the record types: listed in records.__all__)
from peer.control.state import Change, Resume, ShardState

__all__ = [
    "Change",
    "Resume",
    "ShardState",
    "decode",
    "encode_block",
    "encode_block_removal",
    "encode_checkpoint",
    "encode_command",
    "encode_peer",
    "encode_route",
    "encode_route_removal",
    "peer_key",
]
__all__ += records.__all__

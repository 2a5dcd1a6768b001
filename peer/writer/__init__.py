"""The transactional writer: data records and the checkpoints covering them, in one transaction.

A thin typed wrapper around a transactional ``confluent_kafka.Producer`` (built from
:func:`peer.config.producer_config`) that the peer's main loop drives::

    writer.init(timeout)                       # fences any older instance (same transactional.id)
    writer.begin()
    writer.write_batch(messages, route)        # a subject's messages, in seq order
    writer.write(message, route)               # or one at a time
    writer.checkpoint(subject, position)       # per subject that advanced (coalesced)
    writer.commit(control_offsets, group_md)   # checkpoints + offsets + commit, atomically
    # or writer.abort() on AbortRequiredError, then re-fetch from the checkpoints

What it guarantees:

* **I2**: checkpoints are produced only by :meth:`commit`, inside the transaction that holds
  the data they cover; only the last checkpoint per subject is produced (coalescing).
* **I3**: the control offsets go with the caller's group metadata, so a peer whose group
  generation is stale cannot commit (:class:`GroupFencedError`), and a zombie fenced by a
  newer instance gets :class:`FencedError`.
* **I5**: every record's partition is chosen here, explicitly, with Kafka's Java default
  partitioner function: ``toPositive(murmur2(bytes)) % partitions`` of the key, or of the
  subject for a keyless route. So a subject's records share one partition whatever
  ``partitioner`` the producer is configured with, and keyed records land where a Java
  producer would put them.
* **I7**: :meth:`in_flight` is the producer's queue length for the caller's backpressure;
  :meth:`write` itself waits (bounded) while ``max_in_flight`` records are queued or the local
  queue is full, and never drops one (:class:`QueueFullError` when the wait runs out).

Oversized messages follow the route's ``on_oversize``. The size is checked before producing,
against the record limit of the route's topic: ``message_max_bytes`` (which must equal the
producer's ``message.max.bytes``), or the topic's own ``max.message.bytes`` once that topic
refused a batch as too large (learned then, :mod:`peer.writer.topics`, and the failed
transaction is redone with the route's policy applied per record). A topic that still refuses
records within its known limit stops its routes (:class:`TopicLimitError`, DESIGN.md I8).
Missing, refused or still-being-created topics raise a
:class:`~peer.kafka.errors.RouteFaultError` before anything is produced, so the caller stops
only the subjects concerned.

Messages' contents are never logged.
"""

from peer.writer.records import (
    DEFAULT_MESSAGE_MAX_BYTES,
    BatchResult,
    CommitStats,
    WriteOutcome,
    WriterStats,
    dead_letter_record,
    java_partition,
    message_headers,
    record_size,
)
from peer.writer.transactional import TransactionalWriter

__all__ = [
    "DEFAULT_MESSAGE_MAX_BYTES",
    "BatchResult",
    "CommitStats",
    "TransactionalWriter",
    "WriteOutcome",
    "WriterStats",
    "dead_letter_record",
    "java_partition",
    "message_headers",
    "record_size",
]

"""The exception hierarchy: one root, specific subclasses that carry the data a message needs.

Every error an operator can cause or fix derives from :class:`MdpeerError`, so the CLI can
turn it into a one-line cause and a non-zero exit without a traceback.
"""

from __future__ import annotations

import enum


class MdpeerError(Exception):
    """Root of every error mdpeer raises on purpose."""

    #: a short hint of what to do about it, shown by the CLI under the cause
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class FaultReason(enum.Enum):
    """Why a subject is stopped at its checkpoint (quarantined) while the rest flows.

    Each is a fault of one route or subject, never of the process: the peer keeps running,
    reports it (logs, metrics, ``/readyz``, ``mdpeer status``) and retries with backoff.
    """

    #: the target, dead-letter or audit topic does not exist and is not created
    TOPIC_MISSING = "topic_missing"
    #: the topic is being created (by the cluster on first use, or by mdpeer): soon retried
    TOPIC_CREATING = "topic_creating"
    #: the cluster refuses this peer the topic (no Describe/Write ACL)
    TOPIC_UNAUTHORIZED = "topic_unauthorized"
    #: the topic refuses the records as too large (its max.message.bytes)
    RECORD_TOO_LARGE = "record_too_large"
    #: a message over the size limit on a route with ``on_oversize = "fail"``
    OVERSIZE = "oversize"
    #: the cluster refused a record for another reason that is not the transaction's
    RECORD_REFUSED = "record_refused"
    #: MigratoryData denies the entitlement token this subject
    ENTITLEMENT_DENIED = "entitlement_denied"
    #: MigratoryData refuses requests for this subject (HTTP 4xx other than 403)
    SOURCE_REFUSED = "source_refused"
    #: no MigratoryData server answered for this subject within ``retry_give_up``
    SOURCE_UNAVAILABLE = "source_unavailable"


class ConfigError(MdpeerError):
    """A setting, route or file is invalid. Names the field and the offending value."""

    def __init__(self, field: str, value: object, reason: str, *, hint: str | None = None) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}", hint=hint)


class PeerFatalError(MdpeerError):
    """The peer must stop with a non-zero exit: what went wrong concerns the whole process
    (fenced, the control topic unreadable, a producer that keeps failing). Cause attached."""


class LocalKafkaError(MdpeerError):
    """The local Apache Kafka (peer.dev.localkafka) could not be resolved, started or stopped."""


class SourceError(MdpeerError):
    """The MigratoryData source failed in a way retrying will not fix."""

    #: the quarantine reason when the error concerns one subject
    fault: FaultReason = FaultReason.SOURCE_REFUSED


class EntitlementDeniedError(SourceError):
    """The entitlement token does not allow consuming a subject (DENY / HTTP 403)."""

    fault = FaultReason.ENTITLEMENT_DENIED

    def __init__(self, subject: str, detail: str = "") -> None:
        self.subject = subject
        self.detail = detail
        super().__init__(
            f"subject {subject!r}: the entitlement token is denied"
            + (f" ({detail})" if detail else ""),
            hint="check the entitlement token (value or file) and its subscribe permissions",
        )


class SourceUnavailableError(SourceError):
    """No MigratoryData server answered within the retry budget."""

    fault = FaultReason.SOURCE_UNAVAILABLE

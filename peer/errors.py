"""The exception hierarchy: one root, specific subclasses that carry the data a message needs.

Every error an operator can cause or fix derives from :class:`MdpeerError`, so the CLI can
turn it into a one-line cause and a non-zero exit without a traceback.
"""

from __future__ import annotations


class MdpeerError(Exception):
    """Root of every error mdpeer raises on purpose."""

    #: a short hint of what to do about it, shown by the CLI under the cause
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(MdpeerError):
    """A setting, route or file is invalid. Names the field and the offending value."""

    def __init__(self, field: str, value: object, reason: str, *, hint: str | None = None) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}", hint=hint)


class LocalKafkaError(MdpeerError):
    """The local Apache Kafka (peer.localkafka) could not be resolved, started or stopped."""


class SourceError(MdpeerError):
    """The MigratoryData source failed in a way retrying will not fix."""


class EntitlementDeniedError(SourceError):
    """The entitlement token does not allow consuming a subject (DENY / HTTP 403)."""

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

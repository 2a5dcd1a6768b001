"""HTTPS to MigratoryData: the CA file its servers are verified with."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(ca: Path | None) -> ssl.SSLContext:
    """A verifying client context: ``ca`` if given, else the system's CAs."""
    return ssl.create_default_context(cafile=str(ca) if ca is not None else None)


def client_tls(ca: Path | None) -> ssl.SSLContext | bool:
    """The ``ssl`` argument of an aiohttp connector: ``ca`` if given, else the system's CAs."""
    return client_context(ca) if ca is not None else True


__all__ = ["client_context", "client_tls"]

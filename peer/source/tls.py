"""HTTPS to MigratoryData: the CA file its servers are verified with."""

from __future__ import annotations

import ssl
from pathlib import Path

from peer.errors import ConfigError


def check_ca_file(path: object, field: str = "tls_ca_file") -> Path:
    """``path`` as a readable PEM file of CA certificates, or a ConfigError naming ``field``.

    Checked when the settings are built, so a wrong file stops ``mdpeer run`` before it
    joins the group rather than failing every request later.
    """
    if not isinstance(path, str | Path) or not str(path):
        raise ConfigError(field, path, "expected a file path")
    ca = Path(path)
    if not ca.is_file():
        raise ConfigError(field, str(ca), "no such file")
    try:
        ssl.create_default_context(cafile=str(ca))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            field, str(ca), f"not a PEM file of CA certificates ({exc.__class__.__name__}: {exc})"
        ) from None
    return ca


def client_tls(ca: Path | None) -> ssl.SSLContext | bool:
    """The ``ssl`` argument of an aiohttp connector: ``ca`` if given, else the system's CAs."""
    return ssl.create_default_context(cafile=str(ca)) if ca is not None else True


__all__ = ["check_ca_file", "client_tls"]

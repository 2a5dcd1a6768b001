"""Loopback ports and plain HTTP for the things tests and harnesses talk to."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any


def free_port() -> int:
    """A loopback port nothing listens on right now (bound, then released: another process
    may still take it before the caller does, so callers that can retry do)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET; an error status's body too (``/readyz`` explains a 503 in
    it); (0, b"") while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body: bytes = resp.read()
            return int(resp.status), body
    except urllib.error.HTTPError as exc:
        error_body: bytes = exc.read()
        exc.close()
        return int(exc.code), error_body
    except (OSError, urllib.error.URLError):
        return 0, b""


def http_json(
    method: str,
    url: str,
    params: Mapping[str, object] | None = None,
    body: bytes | dict[str, Any] | None = None,
    *,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """One plain HTTP request (no keep-alive, no retries) -> (status, decoded JSON body).

    ``url`` is the full endpoint, e.g. ``server.url + "/rest/consume"``; a dict body is sent
    as JSON. HTTP error statuses are returned, not raised; a transport error is raised.
    """
    if params:
        url += "?" + urllib.parse.urlencode({k: str(v) for k, v in params.items()})
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url, data=data, method=method)
    if isinstance(body, dict):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
        exc.close()
    return int(status), json.loads(raw) if raw else None


__all__ = ["free_port", "http_get", "http_json"]

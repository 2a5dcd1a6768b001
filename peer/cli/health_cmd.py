"""`mdpeer health`: probe a peer's ``/healthz`` (or ``/readyz``); the image's HEALTHCHECK.

Container health checks run a command inside the container, and the slim image has no curl:
this probe uses only the standard library. It exits 0 or 1 and nothing else, because Docker
reserves exit code 2 of a health check, so even a bad flag is reported as unhealthy (1).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Annotated, Final

import typer

#: the body of a failed check is shown up to this many characters (Docker keeps ~4 KB)
_MAX_BODY: Final = 200
_OK: Final = 200


def register(app: typer.Typer) -> None:
    """Add the ``health`` command to the root app."""
    app.command("health")(health)


def _fail(cause: str) -> typer.Exit:
    typer.echo(f"unhealthy: {cause}", err=True)
    return typer.Exit(1)


def _port(value: str | None) -> int:
    text = (value or "").strip()
    if not text:
        raise _fail("no port: give --port or set MDPEER_METRICS_PORT (the peer's metrics_port)")
    try:
        port = int(text)
    except ValueError:
        raise _fail(f"port={text!r}: expected an integer 1-65535") from None
    if port == 0:
        raise _fail("metrics port is 0 (off): the peer serves no /healthz to probe")
    if not 1 <= port <= 65535:
        raise _fail(f"port={port}: expected 1-65535")
    return port


def _reason(body: bytes) -> str:
    """The peer's own reason from its JSON body, else the start of the body."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_MAX_BODY]
    if isinstance(data, dict) and isinstance(data.get("reason"), str):
        return str(data["reason"])
    return text[:_MAX_BODY]


def health(
    *,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Full URL to GET (overrides --host, --port and --path).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Host of the peer's metrics server.")
    ] = "127.0.0.1",
    port: Annotated[
        str | None,
        typer.Option(
            "--port",
            help="The peer's metrics port. [env var: MDPEER_METRICS_PORT]",
            show_default=False,
        ),
    ] = None,
    path: Annotated[
        str, typer.Option("--path", help="/healthz (alive) or /readyz (owns its shards).")
    ] = "/healthz",
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the answer (0.1-60).")
    ] = 3.0,
) -> None:
    """Check a running peer: exit 0 if its /healthz answers 200, else 1 with the cause.

    The image's HEALTHCHECK runs it; the port comes from MDPEER_METRICS_PORT, the variable
    `mdpeer run` reads too, so the probe follows the peer when the port is changed.

    Examples:
      mdpeer health                       # 127.0.0.1:$MDPEER_METRICS_PORT/healthz
      mdpeer health --port 9464 --path /readyz
    """
    if not 0.1 <= timeout <= 60:
        raise _fail(f"timeout={timeout}: expected 0.1-60 seconds")
    if url is None:
        # typer's envvar= would turn a bad value into a usage error (exit 2): parse it here
        number = _port(port if port is not None else os.environ.get("MDPEER_METRICS_PORT"))
        if not path.startswith("/"):
            raise _fail(f"path={path!r}: expected a path starting with '/'")
        url = f"http://{host}:{number}{path}"
    elif not url.startswith(("http://", "https://")):
        raise _fail(f"url={url!r}: expected an http:// or https:// URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = int(response.status), response.read(4096)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(4096)
        exc.close()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _fail(f"{url}: {reason}") from None
    if status != _OK:
        raise _fail(f"{url}: HTTP {status}: {_reason(body)}")
    typer.echo(f"healthy: {url}: HTTP {status}")

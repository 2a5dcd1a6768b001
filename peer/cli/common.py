"""Helpers shared by the command groups: turning errors into one-line causes and exit codes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from peer.errors import MdpeerError


@contextlib.contextmanager
def expected_errors() -> Iterator[None]:
    """Turn an :class:`MdpeerError` into ``error: <cause>`` (+ hint) on stderr and exit 1."""
    try:
        yield
    except MdpeerError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        if exc.hint:
            typer.echo(f"  hint: {exc.hint}", err=True)
        raise typer.Exit(1) from None

"""`mdpeer run`: one peer of the fleet (placeholder, filled by the peer issue)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to the root app."""

"""Admin commands: init, validate, status, routes ..., checkpoints ... (placeholder)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the admin commands and sub-apps to the root app."""

"""The ``mdpeer`` command line (typer). Nothing else in the package imports it."""

from peer.cli.main import app

__all__ = ["app"]

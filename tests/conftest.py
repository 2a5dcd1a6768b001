"""Shared fixtures: each area keeps its own in tests/fixtures/, imported here by name."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.fixtures.config_files import *  # noqa: F403
from tests.fixtures.deploy import *  # noqa: F403
from tests.fixtures.kafka import *  # noqa: F403
from tests.fixtures.outcome import pytest_runtest_makereport  # noqa: F401 - a hook
from tests.fixtures.sim import *  # noqa: F403


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """An in-process ``mdpeer run`` reconfigures the root logger; later tests must not inherit it.

    Without this a command run with ``--log-level error`` silenced the warnings that a later
    test captures with ``caplog`` (an order-dependent failure seen in CI).
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)

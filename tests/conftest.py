"""Shared fixtures: each area keeps its own in tests/fixtures/, imported here by name."""

from tests.fixtures.kafka import *  # noqa: F403
from tests.fixtures.sim import *  # noqa: F403

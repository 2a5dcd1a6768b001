"""SIGTERM/SIGHUP stop the demo and the chaos harness like Ctrl-C, wherever they land."""

from __future__ import annotations

import signal

import pytest

from peer.dev.procsignals import StopSignal, signals_ignored, signals_raise
from peer.errors import MdpeerError


def _a_step_that_handles_its_own_failures() -> str:
    # The shape of the demo's group lookup: its failure is an answer ("unknown"), not an end.
    try:
        signal.raise_signal(signal.SIGTERM)  # arrives while the step runs
    except MdpeerError:
        return "step failed, carried on"
    except Exception:
        return "step failed, carried on"
    return "step done"


def test_a_stop_request_passes_the_error_handling_of_the_call_it_interrupts() -> None:
    with signals_raise(), pytest.raises(StopSignal, match="stopped by signal SIGTERM"):
        _a_step_that_handles_its_own_failures()


def test_the_handlers_are_restored_and_a_second_signal_is_ignored_while_cleaning_up() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with signals_raise(), signals_ignored():
        signal.raise_signal(signal.SIGTERM)  # ignored: no StopSignal
    assert signal.getsignal(signal.SIGTERM) is before

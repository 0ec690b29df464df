"""``flows.stop``: stop signals are marked, a signal the process inherited as ignored stays ignored
(a command started in the background by a shell without job control keeps ignoring Ctrl-C, SIGHUP under
nohup stays ignored), and a stop asked for is raised by ``check_stop`` and after ``deferred_interrupts``."""

from __future__ import annotations

import signal

import pytest

import flows.stop
from flows.stop import check_stop, deferred_interrupts, handle_stop_signals, interrupt


@pytest.fixture(autouse=True)
def _no_stop_left() -> None:
    flows.stop.STOP_REQUESTED.clear()
    yield
    flows.stop.STOP_REQUESTED.clear()


def test_an_inherited_ignored_signal_stays_ignored() -> None:
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert handle_stop_signals((signal.SIGHUP,)) == {}
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        assert handle_stop_signals((signal.SIGHUP,)) == {signal.SIGHUP: signal.SIG_DFL}
        assert signal.getsignal(signal.SIGHUP) is interrupt
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_signal_while_a_child_starts_is_raised_after_the_start() -> None:
    before = signal.signal(signal.SIGHUP, interrupt)
    reached_the_end_of_the_block = False
    try:
        with pytest.raises(KeyboardInterrupt), deferred_interrupts():
            signal.raise_signal(signal.SIGHUP)  # not raised here: at-fork hooks would drop it
            reached_the_end_of_the_block = True
        assert reached_the_end_of_the_block
        with pytest.raises(KeyboardInterrupt):  # the mark stays: every later step stops too
            check_stop()
    finally:
        signal.signal(signal.SIGHUP, before)

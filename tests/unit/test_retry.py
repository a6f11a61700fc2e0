"""Logging that outlives its store going away: held back in order and sent when the store
answers again within the bound; past it, what was not logged is accounted for in one line.
Time is faked: the backoff's waits are instant, the bound is reached by advancing the clock."""

from __future__ import annotations

import logging

import pytest
from requests import ConnectionError

from tennis_exp.tracking import retry
from tennis_exp.tracking.retry import HeldBack


class Store:
    """A store that is away while `down`, recording what reached it, in order."""

    def __init__(self) -> None:
        self.down, self.got = False, []

    def send(self, item):
        def sending():
            if self.down:
                raise ConnectionError("Connection refused")
            self.got.append(item)

        return sending


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds

    monkeypatch.setattr(retry.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(retry.time, "sleep", sleep)
    return now


def test_a_store_back_within_the_bound_gets_everything_in_order(clock, caplog):
    store, calls = Store(), HeldBack(bound_s=60, store="http://lab:5000")
    caplog.set_level(logging.WARNING)
    calls.call("metrics at step 1", store.send(1), values=3)
    store.down = True
    for step in (2, 3, 4):  # an epoch every 5 s while the store is away
        clock[0] += 5
        calls.call(f"metrics at step {step}", store.send(step), values=3)
    assert store.got == [1]  # held back, training not waiting
    store.down = False
    clock[0] += 5
    calls.call("artifact checkpoints/best.pth", store.send("best"))
    assert calls.drain() is None
    assert store.got == [1, 2, 3, 4, "best"]
    assert not calls.given_up
    assert caplog.text.count("does not answer") == 1
    assert caplog.text.count("answers again") == 1


def test_past_the_bound_what_was_not_logged_is_said_in_one_line(clock):
    store, calls = Store(), HeldBack(bound_s=3, store="http://lab:5000")
    calls.call("metrics at step 1", store.send(1), values=3)
    store.down = True
    calls.call("metrics at step 2", store.send(2), values=3)
    clock[0] += 4  # past the bound: the next failure gives up
    calls.call("metrics at step 3", store.send(3), values=3)
    assert calls.given_up
    calls.call("metrics at step 4", store.send(4), values=3)
    calls.call("artifact confusion_matrix.png", store.send("cm"))
    store.down = False  # too late: nothing more is sent
    assert calls.drain() == "metrics at step(s) 2-4 (9 values), artifact confusion_matrix.png"
    assert store.got == [1]


def test_a_wrong_call_is_raised_at_once_not_retried(clock):
    calls = HeldBack(bound_s=60, store="sqlite:///mlflow.db")

    def wrong():
        raise ValueError("bad metric name")

    with pytest.raises(ValueError, match="bad metric name"):
        calls.call("metrics at step 1", wrong)
    assert calls.drain() is None  # nothing left held

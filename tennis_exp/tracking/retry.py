"""Logging that outlives its store going away for a while: while an MLflow server does not
answer (or other writers hold a SQLite file's lock), a run's logging calls are held back in
order and retried with a backoff, for up to a bound; training does not wait for them."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from tennis_exp.errors import first_line

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# MLflow's own words for a request that got no answer: refused, reset, timed out.
_NO_ANSWER = re.compile(r"^API request to \S+ failed with (timeout )?exception")
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}
_TRANSIENT_HTTP = {429, 502, 503, 504}


def transient(err: BaseException) -> bool:
    """Whether `err` says the store is away for now (no answer, a 502/503/504 or 429, a
    database that is locked or restarting) rather than that the call itself is wrong."""
    from mlflow.exceptions import MlflowException
    from requests import ConnectionError, HTTPError, Timeout

    if isinstance(err, ConnectionError | Timeout):
        return True
    if isinstance(err, HTTPError):
        return err.response is not None and err.response.status_code in _TRANSIENT_HTTP
    if isinstance(err, MlflowException):
        return err.error_code in _TRANSIENT_CODES or bool(_NO_ANSWER.match(str(err)))
    return False


@dataclass
class _Call:
    what: str  # what it logs, in the account of what was not logged
    send: Callable[[], object]
    values: int = 0  # metric values it carries


class HeldBack:
    """Calls sent in order; while the store is away they wait, retried at each new call once
    the backoff (1 s, 2 s, 4 s ... 30 s) has passed. `bound_s` after the first failure the next
    failure gives up: what is held and everything after it is lost, and accounted for."""

    def __init__(self, bound_s: float, store: str) -> None:
        self.bound_s, self.store = bound_s, store
        self._held: list[_Call] = []
        self._lost: list[_Call] = []
        self._down_since: float | None = None
        self._failures = 0
        self._next_try = 0.0

    @property
    def given_up(self) -> bool:
        return bool(self._lost)

    def call(self, what: str, send: Callable[[], object], values: int = 0) -> None:
        if self.given_up:
            self._lost.append(_Call(what, send, values))
            return
        self._held.append(_Call(what, send, values))
        if time.monotonic() >= self._next_try:
            self._send_held()

    def drain(self) -> str | None:
        """Send what is held, waiting out the backoff up to the bound; then an account of
        what was not logged, or None when everything was."""
        while self._held and not self.given_up:
            until = self._next_try
            if self._down_since is not None:  # the last try comes at the bound
                until = min(until, self._down_since + self.bound_s)
            time.sleep(max(0.0, until - time.monotonic()))
            self._send_held()
        return self.account() if self.given_up else None

    def account(self) -> str:
        """What was not logged, in one line: `metrics at steps 2-4 (57 values), artifact x`."""
        steps = [c for c in self._lost if c.what.startswith("metrics at step ")]
        parts = []
        if steps:
            numbers = sorted({int(c.what.removeprefix("metrics at step ")) for c in steps})
            values = sum(c.values for c in steps)
            parts.append(f"metrics at step(s) {_ranges(numbers)} ({values} values)")
        parts += [c.what for c in self._lost if c not in steps]
        return ", ".join(parts)

    def _send_held(self) -> None:
        while self._held:
            try:
                self._held[0].send()
            except Exception as err:
                if not transient(err):  # the call itself is wrong: sending it again would be too
                    self._held.pop(0)
                    raise
                self._failed(err)
                return
            self._held.pop(0)
        if self._down_since is not None:
            log.warning(
                "MLflow at %s answers again after %.0f s: the held-back logging is sent",
                self.store,
                time.monotonic() - self._down_since,
            )
            self._down_since, self._failures, self._next_try = None, 0, 0.0

    def _failed(self, err: Exception) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "MLflow at %s does not answer (%s): training goes on; its logging is held back "
                "and retried for up to %g s (tracking.retry_s)",
                self.store,
                first_line(err)[:300],
                self.bound_s,
            )
        elif now >= self._down_since + self.bound_s:
            self._lost, self._held = self._held, []
            log.warning(
                "MLflow at %s did not answer for %g s: this run logs nothing more; training goes "
                "on, and its end says what was not logged",
                self.store,
                self.bound_s,
            )
            return
        self._failures += 1
        backoff = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (self._failures - 1))
        self._next_try = now + backoff


def _ranges(numbers: list[int]) -> str:
    """[2, 3, 4, 7] -> '2-4, 7'"""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)

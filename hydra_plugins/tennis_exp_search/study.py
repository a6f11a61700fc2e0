"""The study a search keeps in its storage, and how many trials it still needs.

Which trials count toward `n_trials`: finished ones (COMPLETE, PRUNED) and trials whose job
failed (FAIL with an `error` attribute, set when the search tells the failure), as a sweep
counts a failed job; and RUNNING trials of a live search process (this one, another node's).
A trial that did not end on its own does not count and is run again: one left RUNNING by a
process that was killed (on this host: its process is gone; elsewhere: no heartbeat for
STALE_S) or interrupted by Ctrl-C is told FAIL without an `error`, and so is a trial asked
past `n_trials` when two nodes asked at once. So a continued or joined study ends with
exactly `n_trials` counted trials, however often it was interrupted.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tennis_exp.errors import UserError, first_line

log = logging.getLogger(__name__)

HEARTBEAT_S = 30  # how often a search process marks its running trials alive
STALE_S = 300  # a running trial of another host unmarked this long: its process is gone
ERROR_ATTR = "error"  # a failed job's one-line error, on its FAIL trial
HOST_ATTR, PID_ATTR, ALIVE_ATTR = "host", "pid", "alive_at"


def storage_url(storage: str | None, sweep_dir: str) -> str:
    """The study's storage: the one given, or a SQLite file in the sweep's folder (made)."""
    if storage:
        return storage
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(Path(sweep_dir) / 'optuna.db').resolve()}"


def shown(url: str) -> str:
    """A storage URL as logs and messages show it: without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: nothing to hide
        return url


def open_study(url: str, study_name: str, direction: str, sampler: Any):
    """The study `study_name` in the storage at `url`, created if it is not there yet."""
    import optuna

    try:
        storage = optuna.storages.RDBStorage(url)
    except Exception as err:  # a bad URL, a missing driver, a server that does not answer
        raise UserError(
            f"cannot open the search's study storage hydra.sweeper.storage={shown(url)}: "
            f"{first_line(err)}; "
            "give a reachable SQLAlchemy URL (sqlite:///<file>, postgresql://user@host/db) "
            "or leave it null for a SQLite file in the sweep's folder"
        ) from err
    study = optuna.create_study(
        storage=storage, study_name=study_name, sampler=sampler, direction=direction,
        load_if_exists=True,
    )  # fmt: skip
    stored = study.direction.name.lower()
    if stored != direction:
        raise UserError(
            f"study '{study_name}' in {shown(url)} is {stored}d, not {direction}d: "
            "name another study (hydra.sweeper.study_name=...)"
        )
    return study


def counts(trial) -> bool:
    """Whether a trial counts toward n_trials (a RUNNING one: once judged alive)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
        return True
    return trial.state == TrialState.FAIL and ERROR_ATTR in trial.user_attrs


def trials_to_ask(n_trials: int, trials: Iterable) -> int:
    """How many more trials the study needs to hold n_trials counted ones."""
    return max(0, n_trials - sum(1 for t in trials if counts(t)))


def past_limit(n_trials: int, trials: Iterable) -> set[int]:
    """The numbers of the counted trials beyond the first n_trials (by number: every node
    agrees which), asked when several nodes asked at once."""
    counted = sorted(t.number for t in trials if counts(t))
    return set(counted[n_trials:])


def mark_alive(trial) -> None:
    """Tag a running trial with this process and the time: what `abandoned` judges."""
    trial.set_user_attr(HOST_ATTR, socket.gethostname())
    trial.set_user_attr(PID_ATTR, os.getpid())
    trial.set_user_attr(ALIVE_ATTR, time.time())


def abandoned(trial, host: str, now: float) -> bool:
    """A RUNNING trial whose search process is gone: on this host its process no longer runs;
    elsewhere it has not been marked alive for STALE_S."""
    from optuna.trial import TrialState

    if trial.state != TrialState.RUNNING:
        return False
    attrs = trial.user_attrs
    if attrs.get(HOST_ATTR) == host and PID_ATTR in attrs:
        return not _process_runs(int(attrs[PID_ATTR]))
    return now - float(attrs.get(ALIVE_ATTR, now)) > STALE_S


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def fail_abandoned(study) -> None:
    """Tell FAIL (without an error, so it does not count) every trial whose process is gone."""
    from optuna.trial import TrialState

    host, now = socket.gethostname(), time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if abandoned(trial, host, now):
            log.info("Trial %d was left running by a stopped search: it is run again", trial.number)
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


class Heartbeat:
    """Marks the trials being run alive every HEARTBEAT_S, from a thread, while a batch runs."""

    def __init__(self, trials: list) -> None:
        self._trials = trials
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                for trial in self._trials:
                    trial.set_user_attr(ALIVE_ATTR, time.time())
            except Exception as err:  # the storage away for a while: the jobs go on
                log.warning("Could not mark the running trials alive: %s", err)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

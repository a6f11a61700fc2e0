"""hparams_search's sweeper, in-process: Hydra's sweep syntax as Optuna distributions, which
trials count toward n_trials, the search loop continuing a study a killed process left, the
plots, and its bad inputs in one line each."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.tennis_exp_search.plots import plot_study
from hydra_plugins.tennis_exp_search.space import search_space, trial_overrides
from hydra_plugins.tennis_exp_search.study import (
    ALIVE_ATTR,
    ERROR_ATTR,
    HOST_ATTR,
    PID_ATTR,
    STALE_S,
    abandoned,
    open_study,
    past_limit,
    trials_to_ask,
)
from hydra_plugins.tennis_exp_search.sweeper import OptunaSearch
from tennis_exp.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("k=choice(8, 16, 32)", CategoricalDistribution([8, 16, 32])),
        ("k=choice(none, balanced)", CategoricalDistribution(["none", "balanced"])),
        ("k=1,2", CategoricalDistribution([1, 2])),
        ("k=choice([1,2],[3])", CategoricalDistribution(["[1,2]", "[3]"])),
        ("k=range(1, 5)", IntDistribution(1, 4)),  # stop excluded, as Hydra sweeps it
        ("k=range(0, 10, 3)", IntDistribution(0, 9, step=3)),
        ("k=range(0.0, 1.0, 0.25)", FloatDistribution(0.0, 0.75, step=0.25)),
        ("k=interval(1, 4)", FloatDistribution(1.0, 4.0)),  # Hydra's interval is of floats
        ("k=interval(0.0, 0.5)", FloatDistribution(0.0, 0.5)),
        ("k=tag(log, interval(1e-5, 1e-3))", FloatDistribution(1e-5, 1e-3, log=True)),
        ("k=tag(log, interval(1, 64))", FloatDistribution(1.0, 64.0, log=True)),
    ],
)
def test_sweep_syntax_maps_to_optunas_distribution(line, expected):
    space, fixed = search_space([line])
    assert space == {"k": expected} and fixed == {}


def test_shuffled_range_is_categorical():
    (dist,) = search_space(["k=shuffle(range(1, 4))"])[0].values()
    assert isinstance(dist, CategoricalDistribution) and sorted(dist.choices) == [1, 2, 3]


def test_plain_values_are_fixed_and_a_later_key_replaces_an_earlier_one_in_place():
    preset = ["a=choice(1, 2)", "b=interval(0.0, 1.0)", "c=3"]
    space, fixed = search_space([*preset, "a=choice(4, 5)", "b=0.5", "d=x"])
    assert list(space) == ["a"] and space["a"] == CategoricalDistribution([4, 5])
    assert fixed == {"c": "3", "b": "0.5", "d": "x"}


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("k=tag(normal, interval(0.0, 1.0))", "unknown tag normal (only log is known)"),
        ("k=tag(log, interval(0.0, 1.0))", "k=tag(log, interval(0.0, 1.0))"),  # log from 0
        ("k=interval(2.0, 1.0)", "k=interval(2.0, 1.0)"),
        ("k=range(5, 1)", "the range is empty"),
        ("k=glob(*)", "is not a distribution Optuna can sample: use choice("),
        ("k=normal(0, 1)", "is not Hydra sweep syntax (choice(a, b, ...)"),
    ],
)
def test_a_bad_search_key_is_one_line(line, says):
    with pytest.raises(UserError) as err:
        search_space([line])
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_trials_overrides_give_back_its_values():
    params = {"lr": 0.0001, "wd": 1e30, "cw": "none", "flag": True, "n": 64}
    overrides = trial_overrides(params, {"data.root": "d"})
    assert overrides == ["lr=0.0001", "wd=1e+30", "cw=none", "flag=True", "n=64", "data.root=d"]
    parsed = OverridesParser.create().parse_overrides(overrides[:-1])
    assert {o.key_or_group: o.value() for o in parsed} == params


def _trial(number, state, **attrs):
    return SimpleNamespace(number=number, state=state, user_attrs=attrs)


DONE = _trial(0, TrialState.COMPLETE)
JOB_FAILED = _trial(1, TrialState.FAIL, **{ERROR_ATTR: "training loss became nan"})
INTERRUPTED = _trial(2, TrialState.FAIL)  # told FAIL without an error: killed or Ctrl-C
RUNNING = _trial(3, TrialState.RUNNING)
PRUNED = _trial(4, TrialState.PRUNED)
WAITING = _trial(5, TrialState.WAITING)  # enqueued (the dashboard): asked next


@pytest.mark.parametrize(
    ("trials", "left"),
    [
        ([], 4),
        ([DONE, DONE], 2),
        ([DONE, JOB_FAILED], 2),  # a failed job is one of the n_trials, as in any sweep
        ([DONE, INTERRUPTED], 3),  # an interrupted trial is run again
        ([DONE, RUNNING], 2),  # running on a live process (this one, another node)
        ([PRUNED, WAITING], 3),
        ([DONE] * 5, 0),
    ],
)
def test_the_trials_a_study_still_needs(trials, left):
    assert trials_to_ask(4, trials) == left


def test_trials_asked_past_n_trials_at_once_are_the_highest_numbers():
    trials = [_trial(0, TrialState.COMPLETE), _trial(1, TrialState.FAIL)]
    trials += [_trial(n, TrialState.RUNNING) for n in (2, 3, 4)]
    assert past_limit(3, trials) == {4}
    assert past_limit(4, trials) == set()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    ("host", "pid", "age", "gone"),
    [
        ("here", "dead", 0, True),  # this host: its process is gone
        ("here", "self", STALE_S * 10, False),  # this host: its process runs, however quiet
        ("elsewhere", 1, 10, False),  # another node, marked alive lately
        ("elsewhere", 1, STALE_S + 10, True),  # another node, silent too long
    ],
)
def test_a_running_trial_is_abandoned_when_its_process_is_gone(host, pid, age, gone):
    pids = {"dead": _dead_pid(), "self": os.getpid()}
    hosts = {"here": socket.gethostname(), "elsewhere": "other-node"}
    now = time.time()
    attrs = {HOST_ATTR: hosts[host], PID_ATTR: pids.get(pid, pid), ALIVE_ATTR: now - age}
    assert abandoned(_trial(0, TrialState.RUNNING, **attrs), socket.gethostname(), now) is gone
    assert not abandoned(_trial(0, TrialState.COMPLETE, **attrs), socket.gethostname(), now)


class _Launcher:
    """Runs every trial at once, scoring it by its learning rate (a job's return value)."""

    def __init__(self):
        self.launched = []

    def launch(self, overrides, initial_job_idx):
        self.launched.append((initial_job_idx, len(overrides)))
        scores = [float(dict(o.split("=") for o in job)["lr"]) for job in overrides]
        return [SimpleNamespace(return_value=s) for s in scores]


def _search(n_trials=4, n_jobs=1, **settings):
    sweeper = OptunaSearch(
        sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 1}),
        direction=settings.pop("direction", "maximize"),
        storage=None,
        study_name="s",
        n_trials=n_trials,
        n_jobs=n_jobs,
        max_failure_rate=1.0,
        params=OmegaConf.create({"lr": "interval(0.0, 1.0)"}),
    )
    sweeper.launcher = _Launcher()
    return sweeper


def test_a_search_continues_a_study_a_killed_process_left(tmp_path):
    # The first process finished two trials and was killed running the third.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study(url, "s", "maximize", sampler=None)
    for value in (0.1, 0.2):
        study.tell(study.ask(), value)
    left = study.ask()
    for key, value in {HOST_ATTR: socket.gethostname(), PID_ATTR: _dead_pid()}.items():
        left.set_user_attr(key, value)

    sweeper = _search(n_trials=5, n_jobs=2)
    space, fixed = sweeper._check([])
    sweeper._run(open_study(url, "s", "maximize", sampler=None), space, fixed)

    states = [t.state for t in optuna.load_study(study_name="s", storage=url).trials]
    assert states.count(TrialState.COMPLETE) == 5  # exactly n_trials, the earlier two included
    assert states[2] == TrialState.FAIL  # the killed trial is told failed and run again
    assert sweeper.launcher.launched == [(3, 2), (5, 1)]  # job numbers are trial numbers


def test_two_nodes_share_one_study_up_to_n_trials(tmp_path):
    # Node B starts while node A's first trial runs: B counts it, and neither asks past 5.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    node_a, node_b = _search(n_trials=5), _search(n_trials=5, n_jobs=2)
    space, fixed = node_a._check([])
    launch_a = node_a.launcher.launch

    def a_runs_while_b_joins(overrides, initial_job_idx):
        if len(node_a.launcher.launched) == 0:
            node_b._run(open_study(url, "s", "maximize", sampler=None), space, fixed)
        return launch_a(overrides, initial_job_idx)

    node_a.launcher.launch = a_runs_while_b_joins
    node_a._run(open_study(url, "s", "maximize", sampler=None), space, fixed)
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert node_a.launcher.launched == [(0, 1)]  # A ran trial 0, B the other four
    assert node_b.launcher.launched == [(1, 2), (3, 2)]


def test_a_continued_search_draws_new_points(tmp_path):
    # The sampler's seed moves on by the trials held: the same seed would redraw them.
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    for n_trials in (2, 4):
        sweeper = _search(n_trials=n_trials)
        study = open_study(url, "s", "maximize", sampler=None)
        study.sampler = sweeper._sampler(len(study.trials))
        sweeper._run(study, *sweeper._check([]))
    values = [t.params["lr"] for t in optuna.load_study(study_name="s", storage=url).trials]
    assert len(values) == 4 and len(set(values)) == 4


def test_a_search_whose_study_is_full_runs_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study(url, "s", "maximize", sampler=None)
    for value in (0.1, 0.2):
        study.tell(study.ask(), value)
    sweeper = _search(n_trials=2)
    sweeper._run(study, *sweeper._check([]))
    assert sweeper.launcher.launched == [] and len(study.trials) == 2


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials=0: a search needs 1 or more"),
        ({"n_jobs": 0}, "hydra.sweeper.n_jobs=0: 1 or more trials at once"),
        ({"direction": "up"}, "hydra.sweeper.direction=up: one of maximize, minimize"),
    ],
)
def test_a_bad_search_setting_is_one_line(settings, says):
    with pytest.raises(UserError, match=f"^{re.escape(says)}$"):
        _search(**settings)._check([])


@pytest.mark.parametrize(
    "url", ["postgresql://search@127.0.0.1:1/optuna", "not-a-url", "sqlite:////proc/no/db"]
)
def test_an_unreachable_storage_is_one_line(url):
    with pytest.raises(UserError) as err:
        open_study(url, "s", "maximize", sampler=None)
    message = str(err.value)
    assert message.startswith(f"cannot open the search's study storage hydra.sweeper.storage={url}")
    assert "\n" not in message


def test_a_storage_password_is_not_shown():
    with pytest.raises(UserError) as err:
        open_study("postgresql://search:secret@127.0.0.1:1/optuna", "s", "maximize", None)
    assert "secret" not in str(err.value) and "search:***@127.0.0.1:1" in str(err.value)


def test_a_study_of_the_other_direction_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    open_study(url, "s", "minimize", sampler=None)
    with pytest.raises(UserError, match="study 's' in .* is minimized, not maximized"):
        open_study(url, "s", "maximize", sampler=None)


def test_the_plots_skip_what_too_few_trials_cannot_show(tmp_path, caplog):
    study = optuna.create_study(direction="maximize")
    space = {"training.learning_rate": FloatDistribution(1e-5, 1e-3, log=True)}
    study.tell(study.ask(space), 0.5)
    with caplog.at_level(logging.INFO):
        written = plot_study(study, tmp_path, "best val macro-F1")
    assert sorted(p.name for p in written) == [
        "optimization_history.png", "parallel_coordinate.png", "slice.png",
    ]  # fmt: skip
    assert "No param_importances plot: it needs 2 finished trial(s), the study has 1" in caplog.text
    space["training.batch_size"] = CategoricalDistribution([8, 16])
    for value in (0.2, 0.7):
        study.tell(study.ask(space), value)
    written = plot_study(study, tmp_path, "best val macro-F1")
    assert (tmp_path / "optuna" / "param_importances.png") in written
    assert all(p.stat().st_size > 0 for p in written)

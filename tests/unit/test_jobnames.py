"""A sweep's job folders and run names: its swept values and the hardware that really ran."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tennis_exp.config.jobnames import SWEPT_ENV, job_label, job_values, run_name, swept_keys
from tennis_exp.tracking.sweep import hand_swept_keys_to_jobs

from ..helpers.configs import compose_config

STUDY = {"experiment": "badminton_scratch", "data.train_fraction": "0.1"}
SETUP = "dp-bs16-lr1e-4"


@pytest.mark.parametrize(
    ("values", "groups", "ran", "name"),
    [
        # The study on a CPU: the swept values, and the CPU that ran them.
        (STUDY, {"experiment"}, "cpu", "badminton_scratch-train_fraction_0.1@cpu"),
        (STUDY, {"experiment"}, "gpu1", "badminton_scratch-train_fraction_0.1@gpu1"),
        # A hardware sweep: the profile that ran says it all; a fallen-back one says so.
        ({"hardware": "gpu2"}, {"hardware"}, "gpu2", "gpu2"),
        ({"hardware": "gpu1"}, {"hardware"}, "cpu", "gpu1@cpu"),
        ({"hardware.strategy": "ddp"}, set(), "gpu2", "strategy_ddp@gpu2"),
        # A run outside a sweep: the hardware that ran, then its setup.
        ({}, set(), "cpu", "cpu-dp-bs16-lr1e-4"),
        ({}, set(), "gpu2", "gpu2-dp-bs16-lr1e-4"),
        # A sampled LR is short; a top-level setting keeps its name.
        ({"training.learning_rate": "0.000123456789"}, set(), "cpu", "learning_rate_0.0001235@cpu"),
        ({"seed": "123456789"}, set(), "cpu", "seed_123456789@cpu"),
    ],
)
def test_a_run_name_is_its_swept_values_and_the_hardware_that_ran(values, groups, ran, name):
    assert run_name(values, groups, ran, SETUP) == name


LONG = "/data/lab/runs/2026-12-01/tennis/checkpoints/best.pth"


@pytest.mark.parametrize(
    "values",
    [
        {"transfer_from": LONG},
        {"transfer_from": LONG.replace("2026-12-01", "2026-12-02")},  # differs past the cut
        {"model.x": "[1, 2]"},
        {"model.x": "[1,2]"},  # made safe alike: still distinct
        {"experiment": "a" * 300},
    ],
)
def test_labels_are_short_safe_and_distinct(values):
    label = job_label(values, groups=set())
    assert len(label) <= 60
    # A job folder can be typed unquoted after resume= or transfer_from=.
    [override] = OverridesParser.create().parse_overrides([f"resume=out/0-{label}/best.pth"])
    assert override.value() == f"out/0-{label}/best.pth"
    assert label not in {
        job_label(other, set())
        for other in [{"transfer_from": LONG}, {"model.x": "[1, 2]"}, {"model.x": "[1,2]"}]
        if other != values
    }


@pytest.mark.parametrize(
    ("task", "params", "keys"),
    [
        (["experiment=a,b", "data.train_fraction=0.1,1.0", "model=small_cnn"], None,
         ["experiment", "data.train_fraction"]),
        (["hardware=gpu1,gpu2,gpu4", "hardware.strategy=ddp"], None, ["hardware"]),
        (["+x=1,2", "y=[1,2]", "z=range(1,3)"], None, ["x", "z"]),
        # A search: its space, then the command line's own sweeps, each key once.
        (["model.lstm_hidden=choice(128,256)", "seed=1"],
         {"training.learning_rate": "tag(log, interval(1e-5, 1e-3))",
          "model.lstm_hidden": "choice(64)"},
         ["training.learning_rate", "model.lstm_hidden"]),
        (["data.train_fraction=0.1"], None, []),
    ],
)  # fmt: skip
def test_the_swept_keys_are_the_sweeps_of_the_command_and_the_search(task, params, keys):
    assert swept_keys(task, params) == keys


def test_a_job_folder_names_its_swept_values(tmp_path):
    """The sweep hands its keys to its jobs; each job's folder, composed as its launcher
    composes it, names its own values after its number."""
    master = OmegaConf.create(
        {"hydra": {"overrides": {"hydra": [f"hydra.sweep.dir={tmp_path}"],
                                 "task": ["experiment=badminton_scratch,badminton_staged",
                                          "data.train_fraction=0.1,1.0", "model=small_cnn"]},
                   "sweeper": {"params": None}}}
    )  # fmt: skip
    hand_swept_keys_to_jobs(master)
    job = ["experiment=badminton_staged", "data.train_fraction=0.1", "model=small_cnn"]
    cfg = compose_config([*master.hydra.overrides.hydra, *job, "hydra.job.num=1"], hydra=True)
    assert cfg.hydra.job.env_set[SWEPT_ENV] == "experiment,data.train_fraction"
    assert cfg.hydra.sweep.subdir == "1-badminton_staged-train_fraction_0.1"
    assert job_values(job, cfg.hydra.job.env_set[SWEPT_ENV]) == {
        "experiment": "badminton_staged",
        "data.train_fraction": "0.1",
    }
    # A sweep that varies nothing (one job): the hardware profile, as before.
    plain = compose_config(["hardware=gpu2", "hydra.job.num=0"], hydra=True)
    assert plain.hydra.sweep.subdir == "0-gpu2"

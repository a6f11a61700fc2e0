"""A sweep's jobs side by side on one machine (hydra/launcher=parallel): GPUs per job from the
sweep's pool (the device layer faked: no GPU here); runs started at once on one new store."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tennis_exp.config import usable_cpus
from tennis_exp.engine import devicepool
from tennis_exp.engine.devicepool import claimed, job_devices
from tennis_exp.engine.hardware import select_devices
from tennis_exp.errors import UserError

from ..helpers.configs import compose_config

JOBLIB = devicepool.SIDE_BY_SIDE[0]


def _launcher(n_jobs: int):
    return OmegaConf.create({"_target_": JOBLIB, "n_jobs": n_jobs})


@pytest.fixture
def four_gpus(monkeypatch):
    """The device layer of a 4-GPU machine, as far as device selection sees it."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


def test_device_ids_pick_the_gpus_a_job_was_given():
    hw = compose_config(["hardware=gpu2", "hardware.device_ids=[2,3]"]).hardware
    setup = select_devices(hw, visible_cuda=4)
    assert setup.device == torch.device("cuda", 2) and setup.device_ids == [2, 3]
    assert setup.for_rank(1).device == torch.device("cuda", 3)  # a DDP rank's own GPU


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ("[1]", "hardware.device_ids=[1] names 1 device(s) but hardware.devices=2"),
        ("[1,1]", "hardware.device_ids=[1, 1] must be distinct ids >= 0"),
        ("[3,4]", "hardware.device_ids=[3, 4] but 4 CUDA device(s) are visible"),
    ],
)
def test_device_ids_that_do_not_fit_are_one_line(ids, message):
    hw = compose_config(["hardware=gpu2", f"hardware.device_ids={ids}"]).hardware
    with pytest.raises(UserError) as err:
        select_devices(hw, visible_cuda=4)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_one_gpu_jobs_each_get_their_own_and_a_freed_one_is_reused(tmp_path):
    with claimed(tmp_path, 1, 4) as a, claimed(tmp_path, 1, 4) as b:
        with claimed(tmp_path, 1, 4) as c, claimed(tmp_path, 1, 4) as d:
            assert sorted(a + b + c + d) == [0, 1, 2, 3]
            with pytest.raises(UserError, match="no 1 free GPU"), claimed(tmp_path, 1, 4):
                pass
        # c and d finished: the next job takes one of theirs, not a GPU still in use.
        with claimed(tmp_path, 1, 4) as e:
            assert e[0] in c + d


def test_two_gpu_jobs_on_four_gpus(tmp_path):
    with claimed(tmp_path, 2, 4) as a, claimed(tmp_path, 2, 4) as b:
        assert sorted(a + b) == [0, 1, 2, 3]
        with pytest.raises(UserError) as err, claimed(tmp_path, 2, 4, "; hint"):
            pass
    assert str(err.value) == (
        "no 2 free GPU(s) for this job: 4 of the 4 visible are held by other jobs of the "
        "sweep; hint"
    )
    with claimed(tmp_path, 1, 4) as one, claimed(tmp_path, 2, 4) as two:
        assert (one, two) == ([0], [1, 2])  # sizes can mix: the locks are per GPU


def _claim_and_hold(pool: str, wanted: int, barrier, results) -> None:
    try:
        with claimed(Path(pool), wanted, 4) as ids:
            results.put(ids)
            barrier.wait(timeout=30)  # every job holds its GPUs at the same time
    except UserError as err:
        results.put(str(err))
        barrier.wait(timeout=30)


def test_jobs_starting_at_once_never_share_a_gpu(tmp_path):
    # Four processes race for the pool: two get two GPUs each, two are told no.
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_and_hold, args=(str(tmp_path), 2, barrier, results))
        for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    got = [results.get(timeout=5) for _ in procs]
    placed = sorted(gpu for ids in got if isinstance(ids, list) for gpu in ids)
    assert placed == [0, 1, 2, 3]
    assert sum(isinstance(ids, str) and ids.startswith("no 2 free GPU") for ids in got) == 2


def test_a_parallel_sweeps_jobs_are_given_free_gpus(tmp_path, four_gpus):
    cfgs = [compose_config(["hardware=gpu2"]) for _ in range(3)]
    with (
        job_devices(cfgs[0], str(tmp_path), _launcher(2)) as a,
        job_devices(cfgs[1], str(tmp_path), _launcher(2)) as b,
    ):
        assert (a.hardware.device_ids, b.hardware.device_ids) == ([0, 1], [2, 3])
        assert select_devices(b.hardware, torch.cuda.device_count()).device.index == 2
        with (
            pytest.raises(UserError, match=r"hydra.launcher.n_jobs=2 jobs of hardware"),
            job_devices(cfgs[2], str(tmp_path), _launcher(2)),
        ):
            pass
    assert (tmp_path / devicepool.POOL_DIR / "gpu3.lock").is_file()


def test_a_parallel_job_starts_processes_the_platforms_way(tmp_path, monkeypatch):
    # joblib's workers default to their own 'loky' start method, which DDP ranks and loader
    # workers started from a job cannot set up ("cannot find context for 'loky'").
    monkeypatch.setattr(multiprocessing.context._default_context, "_actual_context", None)
    multiprocessing.set_start_method("spawn", force=True)  # stands in for 'loky'
    with job_devices(compose_config(["hardware=cpu"]), str(tmp_path), _launcher(2)):
        assert multiprocessing.get_start_method(allow_none=True) is None


@pytest.mark.parametrize(
    ("overrides", "sweep_dir", "launcher"),
    [
        (["hardware=gpu1"], None, _launcher(4)),  # a single run
        (["hardware=gpu1"], "sweep", OmegaConf.create({"_target_": "basic"})),  # one by one
        (["hardware=cpu"], "sweep", _launcher(4)),  # no GPUs to share
        (["hardware=gpu1", "hardware.device_ids=[3]"], "sweep", _launcher(4)),  # chosen ids
    ],
)
def test_jobs_that_do_not_share_gpus_keep_their_config(
    tmp_path, four_gpus, overrides, sweep_dir, launcher
):
    cfg = compose_config(overrides)
    before = OmegaConf.to_container(cfg)
    with job_devices(cfg, sweep_dir and str(tmp_path / sweep_dir), launcher) as same:
        assert OmegaConf.to_container(same) == before
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize(
    ("hardware", "visible", "n_jobs"),
    [("gpu1", 4, 4), ("gpu2", 4, 2), ("gpu4", 4, 1), ("gpu4", 2, 1), ("gpu1", 0, None)],
)
def test_parallel_launcher_runs_as_many_jobs_as_the_gpus_hold(
    monkeypatch, hardware, visible, n_jobs
):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    cfg = compose_config(["hydra/launcher=parallel", f"hardware={hardware}"], hydra=True)
    assert cfg.hydra.launcher._target_ == JOBLIB
    # No GPU: a job per core this process may run on (its affinity, not the machine's count).
    assert cfg.hydra.launcher.n_jobs == (n_jobs or usable_cpus())


def _create_store(uri: str, barrier, results) -> None:
    from tennis_exp.tracking.runs import ensure_experiment

    barrier.wait(timeout=30)
    try:
        results.put(ensure_experiment(uri, "tennis_4event"))
    except Exception as err:  # the assertion below shows it
        results.put(f"{type(err).__name__}: {err}")


def test_runs_started_at_once_on_a_new_sqlite_store_both_start(tmp_path):
    # Two plain runs (not one sweep) on a store that does not exist yet: both migrate its
    # schema unless one waits for the other.
    import mlflow.tracking  # noqa: F401  (imported once, before the fork)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_create_store, args=(uri, barrier, results)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    got = [results.get(timeout=5) for _ in procs]
    assert len(set(got)) == 1 and got[0].isdigit(), got

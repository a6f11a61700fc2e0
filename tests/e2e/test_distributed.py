"""Real DistributedDataParallel on the CPU: two gloo processes through the command line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch.distributed as torch_dist

from tennis_exp.data.frames import build_datasets
from tennis_exp.engine import distributed
from tennis_exp.engine.checkpoint import load_weights
from tennis_exp.engine.distributed import Dist
from tennis_exp.errors import UserError
from tennis_exp.models.cnn_lstm import build_model

from ..helpers.commands import run_cli, run_sweep, smoke_args
from ..helpers.configs import compose_config
from ..helpers.ports import free_port
from ..helpers.scoring import scores_on_test_split
from ..helpers.store import copy_store, history, jobs_of, only_run, sqlite_uri


def _args(data, tmp_path, *extra):
    # the whole splits: the test metric is compared exactly
    return smoke_args(data, tmp_path, "training.max_batches=null", *extra)


@pytest.fixture(scope="module")
def ddp_run(tiny_twin, empty_store, tmp_path_factory):
    """Two gloo ranks through the command line, three epochs over the whole splits."""
    root = tmp_path_factory.mktemp("ddp")
    copy_store(empty_store, root)
    out = run_cli(
        _args(tiny_twin, root, "hardware=cpu_ddp2", "training.epochs=3",
              f"hydra.run.dir={root / 'run'}"),
        cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root, out


def test_two_gloo_processes_train_one_run(tiny_twin, ddp_run):
    tmp_path, out = ddp_run
    assert "Strategy: ddp (backend gloo, world size 2)" in out.stdout
    assert "Effective batch size: 16" in out.stdout

    run = only_run(sqlite_uri(tmp_path))
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "cpu_ddp2-ddp-bs16-lr2e-4"
    params = run.data.params
    assert params["scaling.world_size"] == "2"
    assert params["scaling.per_device_batch_size"] == "8"
    assert params["scaling.effective_batch_size"] == "16"
    assert run.data.tags["strategy"] == "ddp"

    # The DDP checkpoint loads into a plain model, and one process evaluating it over the
    # whole test split gets exactly what the two ranks reported together.
    cfg = compose_config(_args(tiny_twin, tmp_path, "hardware=cpu"))
    metrics = scores_on_test_split(cfg, tmp_path / "run" / "checkpoints" / "best.pth")
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["acc"], abs=1e-9)
    assert run.data.metrics["test/macro_f1"] == pytest.approx(metrics["macro_f1"], abs=1e-9)
    assert run.data.metrics["test/loss"] == pytest.approx(metrics["loss"], rel=1e-5)


def test_the_scaled_lr_is_the_lr_that_trains(ddp_run):
    # The guide's rule under DDP: 2 ranks of batch 8, effective 16, LR 1e-4 x 2. The warmup
    # reaches it within epoch 1, and every epoch's last step trains at exactly that LR.
    tmp_path, out = ddp_run
    assert "Learning rate: 0.0002 (linear: 0.0001 x (16/8)^1)" in out.stdout
    run = only_run(sqlite_uri(tmp_path))
    planned = float(run.data.params["scaling.learning_rate"])
    assert planned == 2e-4
    lrs = history(sqlite_uri(tmp_path), run, ["lr"])["lr"]
    assert sorted(lrs) == [(1, planned), (2, planned), (3, planned)]


def _break_a_frame_of_rank_1(tiny_twin, tmp_path, root):
    """Copy the tiny twin to `root`, then break one val frame that only rank 1 of 2 reads (an
    odd window); with data.frame_cache=false the break surfaces in that rank alone, mid-run."""
    shutil.copytree(tiny_twin, root)
    cfg = compose_config(_args(root, tmp_path, "data.frame_cache=false"))
    index = build_datasets(cfg.data, cfg.seed)["val"].index
    video, start = index.windows[1]
    broken = index.videos[video][start + 3]
    broken.write_bytes(b"not a jpeg")
    return broken


def test_a_failing_rank_stops_the_job_and_fails_the_run(tiny_twin, store, tmp_path):
    broken = _break_a_frame_of_rank_1(tiny_twin, tmp_path, tmp_path / "data")
    out = run_cli(
        _args(
            tmp_path / "data",
            tmp_path,
            "hardware=cpu_ddp2",
            "data.frame_cache=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ),
        cwd=tmp_path,
        timeout=240,
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: rank 1 of 2 failed: ") and broken.name in last
    run = only_run(sqlite_uri(tmp_path))
    assert run.info.status == "FAILED"
    assert "rank 1 of 2 failed" in run.data.tags["error"]


# Slow: the fast twins are test_cli's two-job sweep and the real gloo DDP run above.
@pytest.mark.slow
def test_multirun_single_process_then_ddp(tiny_twin, store, tmp_path):
    sweep = tmp_path / "sweep"
    out = run_sweep(["hardware=cpu,cpu_ddp2", *_args(tiny_twin, tmp_path)], sweep, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    jobs = jobs_of(sqlite_uri(tmp_path))
    assert sorted((r.data.tags["hardware"], r.info.status) for r in jobs) == [
        ("cpu", "FINISHED"),
        ("cpu_ddp2", "FINISHED"),
    ]
    assert (sweep / "1-cpu_ddp2" / "checkpoints" / "best.pth").is_file()


@pytest.fixture(scope="module")
def submitit_local(tiny_twin, empty_store, tmp_path_factory):
    """The SLURM launcher's local mode: each job runs in a process submitit starts and watches;
    a CPU job, and a two-GPU job that cannot run here."""
    root = tmp_path_factory.mktemp("submitit")
    copy_store(empty_store, root)
    out = run_sweep(
        ["hydra/launcher=submitit_local", "hardware=cpu,gpu2", *_args(tiny_twin, root)],
        root / "sweep", root, env={"CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    return root, out


# Slow, with the next test: submitit's launcher runs fast in the one-task-per-device sweep.
@pytest.mark.slow
def test_submitit_local_launcher_runs_a_job(submitit_local):
    tmp_path, out = submitit_local
    assert "Submitit 'local' sweep output dir" in out.stdout + out.stderr
    [job] = [r for r in jobs_of(sqlite_uri(tmp_path)) if r.data.tags["hardware"] == "cpu"]
    assert job.info.status == "FINISHED"
    assert list((tmp_path / "sweep" / ".submitit").iterdir())  # submitit's own job records


@pytest.mark.slow
def test_a_user_error_in_a_submitit_job_fails_the_sweep(submitit_local):
    # The job runs in a process submitit starts: its failure reaches the command by its run.
    tmp_path, out = submitit_local
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: hardware=gpu2 needs 2 CUDA device(s) but 0 visible")
    [job] = [r for r in jobs_of(sqlite_uri(tmp_path)) if r.data.tags["hardware"] == "gpu2"]
    assert job.info.status == "FAILED"


@pytest.fixture(scope="module")
def submitit_ddp(tiny_twin, empty_store, tmp_path_factory):
    """hydra/launcher=local_ddp is slurm_ddp on this machine: submitit starts one task per
    device and every task is one rank. Two jobs, each with its own process group: the first on
    a copy of the twin with a frame that rank 1 alone reads broken, the second on the twin."""
    root = tmp_path_factory.mktemp("submitit-ddp")
    copy_store(empty_store, root)
    bad = root / "bad"
    broken = _break_a_frame_of_rank_1(tiny_twin, root, bad)
    out = run_sweep(
        ["hydra/launcher=local_ddp", "hardware=cpu_ddp2", "data.frame_cache=false",
         *_args(f"{bad},{tiny_twin}", root)],
        root / "sweep", root,
        timeout=240,  # a rank left waiting on its lost peer would hang the sweep
    )  # fmt: skip
    jobs = {r.data.params["data.root"]: r for r in jobs_of(sqlite_uri(root))}
    return SimpleNamespace(
        out=out,
        sweep=root / "sweep",
        broken=broken,
        bad=jobs[str(bad)],
        good=jobs[str(tiny_twin)],
        cfg=_args(tiny_twin, root, "hardware=cpu"),
    )


def test_submitit_one_task_per_device_sweep(submitit_ddp):
    run, sweep = submitit_ddp.good, submitit_ddp.sweep
    # The sweep varies data.root: a job is named by its (shortened) root, and what ran it.
    assert run.info.run_name.startswith("root_") and run.info.run_name.endswith("@cpu_ddp2")
    assert run.info.status == "FINISHED"  # the sweep went on past the first job's failure
    assert run.data.params["scaling.world_size"] == "2"
    assert run.data.params["scaling.per_device_batch_size"] == "8"
    assert run.data.params["scaling.effective_batch_size"] == "16"
    cfg = compose_config(submitit_ddp.cfg)
    jobs = sorted(p for p in sweep.iterdir() if p.name[0].isdigit())
    assert [p.name[:7] for p in jobs] == ["0-root_", "1-root_"]
    assert jobs[1].name == f"1-{run.info.run_name.removesuffix('@cpu_ddp2')}"
    for job in jobs:
        assert not (job / "ranks").exists()  # the tasks were the ranks: no launch
    load_weights(build_model(cfg.model, 4), jobs[1] / "checkpoints" / "best.pth")
    submitted = list((sweep / ".submitit").glob("[0-9]*"))  # one folder per job
    assert len(submitted) == 2
    [tasks] = [t for t in submitted if "][ERROR]" not in (t / f"{t.name}_1_log.out").read_text()]
    logs = [(tasks / f"{tasks.name}_{k}_log.out").read_text() for k in (0, 1)]
    assert "Strategy: ddp (backend gloo, world size 2)" in logs[0]
    assert "Strategy" not in logs[1]  # rank 1 stays quiet


def test_a_failing_submitit_rank_fails_its_job_and_the_sweep_goes_on(submitit_ddp):
    # slurm_ddp's local twin: each task is one rank and nothing supervises them, so rank 1's
    # error must reach rank 0 (which keeps the run) and both must stop, soon.
    out, sweep = submitit_ddp.out, submitit_ddp.sweep
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: rank 1 of 2 failed: frame ")
    assert submitit_ddp.broken.name in last
    assert "not a readable JPEG" in last and "Traceback" not in out.stderr
    assert (out.stdout + out.stderr).count("not a readable JPEG") == 1  # rank 1 kept quiet

    assert submitit_ddp.bad.info.status == "FAILED"
    assert submitit_ddp.bad.data.tags["error"] == last.removeprefix("Error: ")
    assert submitit_ddp.good.info.status == "FINISHED"  # the sweep went on

    # Rank 0 stopped within seconds of rank 1's failure (it used to wait for its lost peer).
    [logs] = [
        job
        for job in (sweep / ".submitit").glob("[0-9]*")
        if "][ERROR]" in (job / f"{job.name}_1_log.out").read_text()
    ]
    failed_at = [_logged_error_time(logs / f"{logs.name}_{rank}_log.out") for rank in (0, 1)]
    assert 0 <= failed_at[0] - failed_at[1] < 15


def _logged_error_time(log: Path) -> float:
    """When a task logged its job's failure (its first ERROR line)."""
    line = next(line for line in log.read_text().splitlines() if "][ERROR]" in line)
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()


@pytest.mark.parametrize(("failed_rank", "aborts"), [(1, True), (0, False)])
def test_on_nccl_another_ranks_failure_aborts_the_group(monkeypatch, failed_rank, aborts):
    # No GPUs here: the watch NCCL needs runs on a one-process gloo group, its abort recorded.
    store = torch_dist.TCPStore("127.0.0.1", 0, 1, is_master=True)
    torch_dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    aborted = threading.Event()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(torch_dist.ProcessGroup, "abort", lambda group: aborted.set())
            patch.setattr(distributed._PeerWatch, "POLL_S", 0.05)
            distributed._PeerWatch.start(Dist(rank=0, world_size=2))
            watch = distributed._PeerWatch._current
            assert not aborted.wait(0.3)  # nobody failed
            shared = torch_dist.distributed_c10d._get_default_store()
            shared.set(distributed.FAILURE_KEY, f"{failed_rank}\tboom")
            watch.thread.join(5)  # a failure ends the watch, whoever failed
            assert not watch.thread.is_alive() and aborted.is_set() is aborts
    finally:
        distributed.destroy_process_group()  # also stops the watch


def test_slurm_ddp_asks_for_a_task_and_a_gpu_per_device():
    cfg = compose_config(
        ["hydra/launcher=slurm_ddp", "hardware=gpu4", "hardware.strategy=ddp"], hydra=True
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (1, 4, 4)


def _submitit_task(monkeypatch, ntasks: int) -> None:
    """The environment submitit's local executor gives task 0 of `ntasks`."""
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)  # also restores what the export sets
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29999")
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", str(ntasks))
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_NUM_NODES", "1")
    monkeypatch.setenv("SUBMITIT_LOCAL_NODEID", "0")
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "0")
    monkeypatch.setenv("SUBMITIT_LOCAL_LOCALID", "0")


def test_a_single_submitit_task_launches_its_ranks_itself(monkeypatch):
    _submitit_task(monkeypatch, ntasks=1)
    assert not distributed.launched_by_torchrun()


def test_submitit_tasks_are_described_in_torchruns_variables(monkeypatch):
    _submitit_task(monkeypatch, ntasks=2)
    assert distributed.launched_by_torchrun()
    distributed._export_submitit_env(
        compose_config(["hardware=cpu_ddp2"]), distributed._submitit_tasks()
    )
    assert {k: os.environ[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")} == {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
    }
    assert os.environ["MASTER_PORT"] == "29999"  # a port the user chose is kept


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hardware=cpu"], "add hardware.strategy=ddp"),
        (["hardware=cpu", "hardware.strategy=ddp"], "hardware.devices=1 but the submitit job"),
    ],
)
def test_submitit_tasks_that_do_not_match_the_config_are_a_user_error(
    monkeypatch, overrides, message
):
    _submitit_task(monkeypatch, ntasks=2)
    with pytest.raises(UserError, match=message):
        distributed.init_process_group(compose_config(overrides))


def test_sigterm_stops_every_rank_and_marks_the_run_killed(tiny_twin, store, tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tennis_exp",
            "hardware=cpu_ddp2",
            *_args(tiny_twin, tmp_path, "training.epochs=50"),
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            "PYTHONUNBUFFERED": "1",
        },
    )
    for line in proc.stdout:
        if "epoch 1/50" in line:
            ranks = _worker_pids(proc.pid)
            proc.send_signal(signal.SIGTERM)
            break
    proc.stdout.read()
    assert proc.wait(timeout=120) != 0
    assert len(ranks) == 2
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in ranks):  # no rank left behind
        assert time.monotonic() < deadline, "a rank outlived the job"
        time.sleep(0.5)
    assert only_run(sqlite_uri(tmp_path)).info.status == "KILLED"


def _worker_pids(parent: int) -> list[int]:
    """The spawned ranks: children of the job's process running the elastic worker."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
            cmdline = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields.get("PPid", "0")) == parent and b"multiprocessing.spawn" in cmdline:
            pids.append(int(status.parent.name))
    return pids


def _torchrun(cwd: Path, nnodes: int, nproc: int, port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
         f"--nproc_per_node={nproc}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
         "--rdzv_id=tennis-exp-test", "-m", "tennis_exp", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )  # fmt: skip


def _test_metrics(node: Path) -> dict[str, float]:
    run = only_run(sqlite_uri(node))
    assert run.info.status == "FINISHED"
    return {k: v for k, v in run.data.metrics.items() if k.startswith("test/")}


@pytest.mark.slow  # two torchrun agents, ~30 s; one node's real gloo DDP run is fast above
def test_two_nodes_without_a_shared_disk(tmp_path):
    # Two torchrun agents, each in its own empty directory with relative paths, meet through a
    # c10d rendezvous on localhost: two "nodes" with a disk each. Each node prepares its data
    # and frozen-backbone features; rank 0 alone logs and writes checkpoints; the best weights
    # reach the other node through the process group.
    common = ["hardware.strategy=ddp", "debug=smoke", "training.max_batches=null",
              "model.freeze_backbone=true", "data.augment.kind=none",
              "tracking.uri=sqlite:///mlflow.db"]  # fmt: skip
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    port = free_port()
    for node in nodes:
        node.mkdir()
    agents = [_torchrun(node, 2, 1, port, "hardware=cpu", *common) for node in nodes]
    outputs = [agent.communicate(timeout=300)[0] for agent in agents]
    assert [a.returncode for a in agents] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    for node in nodes:  # each node made its own data and features
        assert list((node / ".cache" / "features").glob("test-*.npy"))
    [main] = [node for node in nodes if (node / "mlflow.db").exists()]
    assert len(list(main.glob("outputs/*/*/checkpoints/best.pth"))) == 1

    # One node, two processes: the same world, the same numbers. torchrun started the ranks:
    # its workers run them and launch none of their own.
    single = tmp_path / "single"
    single.mkdir()
    agent = _torchrun(single, 1, 2, free_port(), "hardware=cpu_ddp2", *common)
    output = agent.communicate(timeout=300)[0]
    assert agent.returncode == 0, output[-3000:]
    assert output.count("Strategy: ddp (backend gloo, world size 2)") == 1  # rank 0 only
    assert only_run(sqlite_uri(single)).data.params["scaling.world_size"] == "2"
    assert len(list(single.glob("outputs/*/*/checkpoints/best.pth"))) == 1
    assert _test_metrics(main) == _test_metrics(single)

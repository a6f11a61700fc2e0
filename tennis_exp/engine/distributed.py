"""DistributedDataParallel: one process per device, started by PyTorch's elastic launcher.

`python -m tennis_exp hardware.strategy=ddp` launches the workers itself (the job's process is
the elastic agent and keeps the MLflow run); under `torchrun`, or as one task of a submitit
(SLURM) job with one task per device, every process is already a worker and the launch is
skipped. How processes join, talk and fail together lives here; what they run is handed in.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as torch_dist
from omegaconf import DictConfig

from tennis_exp.config import Accelerator, Strategy
from tennis_exp.engine.hardware import device_ids
from tennis_exp.errors import UserError, first_line, one_line_report

if TYPE_CHECKING:
    from submitit import JobEnvironment

log = logging.getLogger(__name__)

# The first rank to fail leaves "<rank>\t<its one-line error>" under this key of the c10d store
# the process group already uses. That store is served by rank 0's process (or torchrun's agent):
# rank 0 can read it for as long as it lives, on any node, with no shared file system, and from
# the moment the group exists (before rank 0 broadcasts the output directory). A failing rank
# writes it before its process ends, so before any peer can see it gone.
FAILURE_KEY = "tennis_exp/first_failure"
# How long rank 0, having lost a peer, waits for that peer's error (a killed rank leaves none).
PEER_ERROR_WAIT_S = 2.0


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; rank 0 of 1 when not distributed."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return torch_dist.is_available() and torch_dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_node_main(self) -> bool:
        """The first rank of its machine: it prepares what lives on that machine's disk (data,
        caches), for nodes need not share one."""
        return self.local_rank == 0

    def all_reduce(self, values: list[float], device: torch.device) -> list[float]:
        """Sum numbers over all ranks; identity when not distributed."""
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(tensor)
        return tensor.tolist()

    def all_reduce_tensor(self, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
        if not self.active:
            return tensor
        on_device = tensor.to(device)
        torch_dist.all_reduce(on_device)
        return on_device.to(tensor.device)

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order."""
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(out, value)
        return out

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers into every rank's copy of `module`, in place."""
        if not self.active:
            return
        with torch.no_grad():
            for tensor in module.state_dict().values():
                torch_dist.broadcast(tensor, src=0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank."""
        if not self.active:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]


def launched_by_torchrun() -> bool:
    """Whether a launcher already started this process as one rank: torchrun, or submitit
    running several tasks (`hydra.launcher.tasks_per_node`), which `init_process_group` then
    describes in torchrun's variables."""
    return _torchrun() or _submitit_tasks() is not None


def _torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def _submitit_tasks() -> JobEnvironment | None:
    """submitit's JobEnvironment when this process is one of several tasks of its job.

    A job of one task is not a worker: it launches its ranks itself, as on a workstation.
    """
    if "SUBMITIT_EXECUTOR" not in os.environ or _torchrun():
        return None
    import submitit  # installed: it started this process

    job = submitit.JobEnvironment()
    return job if job.num_tasks > 1 else None


def _backend(cfg: DictConfig) -> str:
    cuda = cfg.hardware.accelerator is Accelerator.cuda and torch.cuda.is_available()
    return "nccl" if cuda else "gloo"


@contextmanager
def joined(cfg: DictConfig) -> Iterator[Dist]:
    """This process's place in the job: a rank of the process group a launcher started it in
    (ours, torchrun or submitit), joined here and left at the end; else the only process."""
    if not launched_by_torchrun():
        yield Dist()
        return
    try:
        yield init_process_group(cfg)
    finally:
        destroy_process_group()


def init_process_group(cfg: DictConfig) -> Dist:
    """Join the job the launcher (ours, torchrun or submitit) set up through the environment."""
    job = _submitit_tasks()
    if job is not None:
        _export_submitit_env(cfg, job)
    else:
        _check_torchrun(cfg)
    dist = Dist(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
    )
    backend = _backend(cfg)
    if backend == "nccl":
        torch.cuda.set_device(device_ids(cfg.hardware)[dist.local_rank])
    if backend == "gloo" and "OMP_NUM_THREADS" not in os.environ:  # torchrun sets it
        # Ranks share the CPU: without this each one starts a thread per core.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend)
    if backend == "nccl":
        _PeerWatch.start(dist)
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for the job
    return dist


def process_rank() -> int:
    """This process's rank as its launcher numbered it, also before it joins the group."""
    job = _submitit_tasks()
    if job is not None:
        return job.global_rank
    return int(os.environ["RANK"]) if _torchrun() else 0


def _check_torchrun(cfg: DictConfig) -> None:
    hw, per_node = cfg.hardware, int(os.environ["LOCAL_WORLD_SIZE"])
    if hw.strategy is not Strategy.ddp:
        raise UserError("torchrun starts DDP workers: add hardware.strategy=ddp")
    if hw.devices != per_node:
        raise UserError(
            f"hardware.devices={hw.devices} but torchrun started {per_node} process(es) per "
            "node: make them equal"
        )


def _export_submitit_env(cfg: DictConfig, job: JobEnvironment) -> None:
    """Check the job's tasks match the config, then set RANK, WORLD_SIZE, MASTER_ADDR... from
    them: rank = the task's global rank, its GPU = the task's local rank on its node."""
    from submitit.helpers import TorchDistributedEnvironment

    per_node = job.num_tasks // job.num_nodes
    if cfg.hardware.strategy is not Strategy.ddp:
        raise UserError(
            f"the submitit job runs {per_node} tasks per node, one DDP rank each: "
            "add hardware.strategy=ddp, or use hydra.launcher.tasks_per_node=1"
        )
    if cfg.hardware.devices != per_node:
        raise UserError(
            f"hardware.devices={cfg.hardware.devices} but the submitit job runs {per_node} "
            "tasks per node: make them equal (hydra/launcher=slurm_ddp does)"
        )
    # Every task keeps all of the node's GPUs visible and picks its own by LOCAL_RANK.
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def destroy_process_group() -> None:
    _PeerWatch.stop()
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


@contextmanager
def failures_shared(dist: Dist) -> Iterator[None]:
    """Tell the other ranks why this one failed; on rank 0, report a lost peer as its error.

    Once a failed rank's process is gone, the others' collectives fail with no more than
    "Connection closed by peer". Rank 0, which keeps the MLflow run and returns the job's
    result, raises the failing rank's own error instead, as a DistributedFailure.
    """
    try:
        yield
    except Exception as err:
        if not dist.active:
            raise
        if not _lost_peer(err):
            _publish_failure(dist, err)
        elif dist.is_main:
            failure = _peer_failure(dist)
            if failure is not None:
                raise failure from None
        raise


def _lost_peer(err: Exception) -> bool:
    """Whether a collective failed because another rank went away: gloo says so in a plain
    RuntimeError from its transport, NCCL and an aborted group in a DistError."""
    return isinstance(err, torch_dist.DistError) or (
        isinstance(err, RuntimeError) and "gloo" in str(err)
    )


def _publish_failure(dist: Dist, err: Exception) -> None:
    message = one_line_report(err)
    job = _submitit_tasks()
    if job is not None:
        message += f" (its log is {job.paths.stdout})"
        if not dist.is_main and not isinstance(err, UserError):
            # submitit returns rank 0's result alone: this traceback would be shown nowhere.
            log.error("rank %d failed", dist.rank, exc_info=err)
    try:
        store = torch_dist.distributed_c10d._get_default_store()
        store.set_timeout(timedelta(seconds=10))  # a store gone with rank 0 must not hold us
        store.compare_set(FAILURE_KEY, "", f"{dist.rank}\t{message}")
    except Exception as store_err:  # this rank's own error is the one to raise
        log.warning("could not tell the other ranks why rank %d failed: %s", dist.rank, store_err)


def _peer_failure(dist: Dist) -> DistributedFailure | None:
    """The error of the rank that failed first, if another rank failed."""
    deadline = time.monotonic() + PEER_ERROR_WAIT_S
    try:
        store = torch_dist.distributed_c10d._get_default_store()
        while not store.check([FAILURE_KEY]):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        rank, message = store.get(FAILURE_KEY).decode().split("\t", 1)
    except Exception:  # no store to ask: the lost peer stays the error
        return None
    if int(rank) == dist.rank:
        return None
    return DistributedFailure(f"rank {rank} of {dist.world_size} failed: {message}")


class _PeerWatch:
    """On NCCL, abort this rank's process group as soon as another rank has failed.

    A gloo collective fails as soon as a failed rank's process has ended and closed its
    sockets, which every failure path here comes to quickly. An NCCL collective notices no such
    thing: it would wait for the group's timeout (10 minutes). So on NCCL a thread polls the
    failure key and aborts the communicators, which fails the pending collective at once; it
    then goes the way of gloo's (`failures_shared`). Not run here: no GPUs in the tests.
    """

    POLL_S = 1.0
    _current: _PeerWatch | None = None

    def __init__(self, dist: Dist) -> None:
        self.rank = dist.rank
        self.stopped = threading.Event()
        self.thread = threading.Thread(
            target=self._watch, name="tennis-exp-peer-watch", daemon=True
        )

    @classmethod
    def start(cls, dist: Dist) -> None:
        cls.stop()
        cls._current = cls(dist)
        cls._current.thread.start()

    @classmethod
    def stop(cls) -> None:
        if cls._current is not None:
            cls._current.stopped.set()
            # Not for ever: a store whose host vanished may hold the thread in a store call.
            cls._current.thread.join(timeout=5)
            cls._current = None

    def _watch(self) -> None:
        store = torch_dist.distributed_c10d._get_default_store()
        group = torch_dist.distributed_c10d._get_default_group()
        while not self.stopped.wait(self.POLL_S):
            try:
                if not store.check([FAILURE_KEY]):
                    continue
                failed = int(store.get(FAILURE_KEY).decode().split("\t", 1)[0])
            except Exception:  # the store ended with rank 0's process: nothing left to watch
                return
            if failed != self.rank and not self.stopped.is_set():
                log.warning("rank %d failed: aborting this rank's process group", failed)
                group.abort()
            return


def launch(entry: Callable[..., float], args: tuple, nprocs: int, log_dir: Path) -> float:
    """Start `nprocs` workers on this machine running `entry(*args)` and wait; return rank 0's
    result. `entry` is a module-level function (spawned processes import it by name).

    If any worker fails, the agent stops the others and this raises, naming the failing rank
    and its error, so the job ends in bounded time.
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nprocs,
        run_id=f"tennis-exp-{uuid.uuid4().hex[:8]}",
        # Port 0: the store picks a free port, so concurrent jobs never collide.
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
        # Every rank's output goes to a file; rank 0's is also shown on the console.
        logs_specs=DefaultLogsSpecs(log_dir=str(log_dir), redirects=Std.ALL, tee={0: Std.ALL}),
    )
    try:
        results = elastic_launch(config, entry)(*args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        message = failure.message
        if isinstance(message, dict):
            message = message.get("message", "")
        message = first_line(message) if str(message).strip() else f"exit code {failure.exitcode}"
        raise DistributedFailure(
            f"rank {rank} of {nprocs} failed: {message} (its log is under {log_dir})"
        ) from None
    return results[0]


class DistributedFailure(UserError):
    """A worker failed; its own traceback is in its log file, not repeated here."""


def setup_rank_logging(dist: Dist, output_dir: Path) -> None:
    """Rank 0 logs as the job does; the other ranks only warnings and errors."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        logging.Formatter(f"[%(asctime)s][rank {dist.rank}][%(levelname)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if dist.is_main else logging.WARNING)
    if dist.is_main:
        file_handler = logging.FileHandler(output_dir / "train.log")
        file_handler.setFormatter(handler.formatter)
        root.addHandler(file_handler)

"""Issue 6's benchmarks, measured side by side in one run on one machine: `python -m bench.run`.

Prints a markdown table (machine, date, load) and writes it to bench/results/<timestamp>.md.
Every number is a median over epochs and repeats; every ratio divides numbers of this run.

1. Framework overhead: steady-state samples/s of the real run (`python -m tennis_exp`, progress
   bar, MLflow, checkpoints; read back from its `perf/samples_per_sec`) against a bare PyTorch
   loop on the same model, data, batch and workers, timed the same way.
2. Command to first training step, from outside, against the same imports alone; and where it
   goes, phase by phase (bench/startup.py).
3. Data pipeline: the train loader alone against training, and the frame cache against decoding
   JPEGs every epoch.
4. MLflow logging: one epoch's batched `log_metrics` on a SQLite store against the epoch time.
5. The frozen-backbone feature cache: training steps with and without it, its build time, and
   the users' 50-epoch schedule with and without it.

8. (issue 11) What a DDP stop agreement costs: one all-reduce of a flag and its host sync,
   between two gloo ranks on the CPU, against a training step; the loop agrees every
   STOP_CHECK_STEPS steps.
9. (issue 13) Training with augmentation on the device against without.

`--gpu` measures the GPU rows instead, on the users' ResNet-50 baseline at 224 px:
6. samples/s and peak GPU memory in fp32, bf16, fp16 and from the feature cache, the bare loop
   beside the fp32 run, and the loader alone;
7. (issue 4) DDP on one GPU against the DataParallel profile on the same GPU;
10. (issue 17) fine-tuning (the backbone trains) fed by the loader, by frames held on the GPU
   (`data.device_cache`) and by one batch already there; the feature cache held on the GPU; the
   largest batch that fits in GPU memory, per way of training. The users' whole baseline, end
   to end, is bench/baseline.py.

A throughput row is a `Case` (a runner and config overrides) in CASES, a ratio of two of them is
a `Ratio` in RATIOS: adding a comparison (say `hardware.precision=bf16` against `fp32`) is
adding entries there. Data and frame caches live in --data-dir (default .cache/bench, kept
between runs); the MLflow store and run outputs in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig
from torch.utils.data import DataLoader, RandomSampler

from bench.results import add_dirs, load, machine, publish
from tennis_exp.config import Precision, register_configs, uses_feature_cache
from tennis_exp.data.frames import build_datasets
from tennis_exp.data.loaders import make_loader
from tennis_exp.engine import distributed
from tennis_exp.engine.distributed import Dist
from tennis_exp.engine.features import cached_features
from tennis_exp.engine.hardware import autocast, plan_run
from tennis_exp.engine.loop import STOP_CHECK_STEPS, TIMING_WARMUP_STEPS
from tennis_exp.models.cnn_lstm import build_model
from tennis_exp.tracking.runs import Run, ensure_experiment

NAN = math.nan
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONF = ROOT / "conf"
EXPERIMENT = "bench"


@dataclass(frozen=True)
class Size:
    name: str
    preset: str  # synthetic data preset
    image_size: int
    batch_size: int
    epochs: int
    max_batches: int  # training batches per epoch (and evaluation batches)
    repeats: int  # of every case, interleaved so that a change of machine load hits all alike
    log_calls: int  # log_metrics calls timed for item 4
    model: str = "small_cnn"  # for the table's header: `extra` selects any other
    extra: tuple[str, ...] = ()

    def overrides(self) -> list[str]:
        return [
            f"data.synthetic.preset={self.preset}",
            f"data.image_size={self.image_size}",
            f"training.batch_size={self.batch_size}",
            f"training.epochs={self.epochs}",
            f"training.max_batches={self.max_batches}",
            *self.extra,
        ]

    def describe(self) -> str:
        return (
            f"{self.name}: synthetic `{self.preset}` preset at {self.image_size} px, {self.model}, "
            f"batch {self.batch_size}, {self.epochs} epochs x {self.max_batches} batches, "
            f"{self.repeats} repeat(s)" + (f", {' '.join(self.extra)}" if self.extra else "")
        )


SIZES = {
    "default": Size("default", "small", 64, 32, epochs=3, max_batches=8, repeats=3, log_calls=20),
    # The users' frozen baseline on a GPU. Untrained weights: the machine may be offline, and
    # speed does not depend on the weights.
    "gpu": Size(
        "gpu",
        "small",
        224,
        32,
        epochs=3,
        max_batches=15,
        repeats=1,
        log_calls=0,  # item 4 is a CPU row
        model="resnet50, frozen",
        # The loader feeds every case but the device-cache ones, which say so.
        extra=(
            "model=resnet50",
            "model.pretrained=false",
            "training.num_workers=8",
            "data.device_cache=false",
        ),
    ),
    # The smoke settings: seconds per case, for development and tests/test_bench.py.
    "quick": Size(
        "quick",
        "tiny",
        32,
        8,
        epochs=2,
        max_batches=4,
        repeats=1,
        log_calls=5,
        extra=("model.lstm_hidden=32", "model.lstm_layers=1"),
    ),
}


@dataclass(frozen=True)
class Case:
    """One throughput measurement: samples/s per epoch from a runner under config overrides.

    runner: "run" = the real command line (probe.py), "bare" = a plain PyTorch loop,
    "loader" = the framework's train DataLoader iterated without a model, "resident" = a plain
    loop on one batch already on the device (what no data path can beat).
    """

    item: int
    label: str
    runner: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ratio:
    item: int
    label: str
    num: Case
    den: Case
    at_least: float | None = None


FULL = Case(1, "full run (`python -m tennis_exp`: progress bar, MLflow, checkpoints)", "run")
BARE = Case(1, "bare PyTorch loop (DataLoader, same model, Adam, cross-entropy)", "bare")
LOADER = Case(3, "train loader alone, frame cache", "loader")
LOADER_DECODE = Case(
    3,
    "train loader alone, JPEG decode each epoch (`data.frame_cache=false`)",
    "loader",
    ("data.frame_cache=false",),
)
# The users' frozen baseline (3-layer BiLSTM 512 over frozen ResNet features) with the small
# ResNet, which a CPU can run: the backbone every epoch against the feature cache.
FROZEN = ("model=resnet18", "model.pretrained=false")
FROZEN_PLAIN = Case(
    5,
    "frozen ResNet-18 baseline, backbone every epoch (`model.feature_cache=false`)",
    "run",
    (*FROZEN, "model.feature_cache=false"),
)
FROZEN_CACHED = Case(
    5,
    "frozen ResNet-18 baseline, from the feature cache",
    "run",
    (*FROZEN, "model.feature_cache=true"),
)
AUGMENTED = Case(
    9,
    "full run, flip + colour jitter per window on the device (`data.augment.kind=flip_jitter`)",
    "run",
    ("data.augment.kind=flip_jitter",),
)
# Issue 17 on the CPU: frames in host memory gathered by index, no loader workers.
DEVICE = Case(
    10, "full run, frames in memory without the loader (`data.device_cache=true`)", "run",
    ("data.device_cache=true",),
)  # fmt: skip
RESIDENT = Case(10, "the same model on one batch already in memory", "resident")
CASES = [
    FULL,
    BARE,
    LOADER,
    LOADER_DECODE,
    FROZEN_PLAIN,
    FROZEN_CACHED,
    AUGMENTED,
    DEVICE,
    RESIDENT,
]
RATIOS = [
    Ratio(10, "frames in memory / the loader (full run)", DEVICE, FULL),
    Ratio(10, "full run / one batch already in memory", FULL, RESIDENT),
    Ratio(9, "augmented / plain full run, samples/s", AUGMENTED, FULL),
    Ratio(1, "full run / bare loop", FULL, BARE, at_least=0.97),
    Ratio(3, "loader alone / training (full run)", LOADER, FULL, at_least=5.0),
    Ratio(3, "frame cache speed-up: cached / JPEG decode (loader alone)", LOADER, LOADER_DECODE),
    Ratio(5, "feature cache speed-up per training step", FROZEN_CACHED, FROZEN_PLAIN),
]
# GPU rows (--gpu): every case runs the gpu size's ResNet-50 baseline.
GPU_FP32 = Case(6, "baseline, fp32", "run", ("model.feature_cache=false",))
GPU_BARE = Case(6, "bare PyTorch loop on the baseline, fp32", "bare")
GPU_BF16 = Case(
    6, "baseline, bf16 autocast", "run", ("hardware.precision=bf16", "model.feature_cache=false")
)
GPU_FP16 = Case(
    6,
    "baseline, fp16 autocast + gradient scaler (the colab profile's precision)",
    "run",
    ("hardware.precision=fp16", "model.feature_cache=false"),
)
GPU_CACHED = Case(
    6,
    "baseline, bf16, from the feature cache",
    "run",
    ("hardware.precision=bf16", "model.feature_cache=true"),
)
GPU_DDP = Case(
    7,
    "baseline, bf16, `hardware.strategy=ddp` on 1 GPU (one worker process, NCCL)",
    "run",
    ("hardware.precision=bf16", "model.feature_cache=false", "hardware.strategy=ddp"),
)
GPU_LOADER = Case(3, "train loader alone at 224 px, frame cache", "loader")
# Issue 17: fine-tuning (the backbone trains, no feature cache) fed by the loader, by frames
# held on the GPU, and by a batch already there.
FINE_TUNE = ("model.freeze_backbone=false", "hardware.precision=bf16")
GPU_FT_LOADER = Case(10, "fine-tuning, bf16, the data loader", "run", FINE_TUNE)
GPU_FT_DEVICE = Case(
    10, "fine-tuning, bf16, frames on the GPU (`data.device_cache=true`)", "run",
    (*FINE_TUNE, "data.device_cache=true"),
)  # fmt: skip
GPU_FT_RESIDENT = Case(10, "fine-tuning, bf16, one batch already on the GPU", "resident", FINE_TUNE)
GPU_CACHED_DEVICE = Case(
    10, "baseline, bf16, from the feature cache held on the GPU", "run",
    ("hardware.precision=bf16", "model.feature_cache=true", "data.device_cache=true"),
)  # fmt: skip
GPU_CASES = [
    GPU_FP32, GPU_BARE, GPU_BF16, GPU_FP16, GPU_CACHED, GPU_DDP, GPU_LOADER,
    GPU_FT_LOADER, GPU_FT_DEVICE, GPU_FT_RESIDENT, GPU_CACHED_DEVICE,
]  # fmt: skip
GPU_RATIOS = [
    Ratio(1, "full run / bare loop, fp32 on the GPU", GPU_FP32, GPU_BARE, at_least=0.97),
    Ratio(6, "bf16 / fp32", GPU_BF16, GPU_FP32),
    Ratio(6, "feature cache (bf16) / backbone every step (bf16)", GPU_CACHED, GPU_BF16),
    Ratio(3, "loader alone / training (bf16)", GPU_LOADER, GPU_BF16, at_least=5.0),
    # One GPU: the DataParallel profile leaves the model unwrapped, as the users' script did.
    Ratio(7, "DDP / DataParallel profile, 1 GPU, bf16", GPU_DDP, GPU_BF16),
    Ratio(10, "fine-tuning: frames on the GPU / batch already there", GPU_FT_DEVICE,
          GPU_FT_RESIDENT, at_least=0.9),
    Ratio(10, "fine-tuning: the data loader / batch already there", GPU_FT_LOADER,
          GPU_FT_RESIDENT),
    Ratio(10, "feature cache on the GPU / read by the loader", GPU_CACHED_DEVICE, GPU_CACHED),
]  # fmt: skip
EPOCHS = 50  # the users' baseline schedule
# The largest-batch search stops here: 2048 windows at 224 px are 4.9 GB of uint8 frames, far
# past any batch these recipes use, and each try at that size takes seconds.
BATCH_CAP = 2048


@dataclass(frozen=True)
class Row:
    item: int
    label: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None


@dataclass
class RunResult:
    """What one command-line run left in MLflow, and its first-step time."""

    run_id: str
    samples_per_sec: list[float]
    epoch_time_s: list[float]
    log_times_s: list[float]  # when each epoch's metrics were logged (MLflow timestamps)
    peak_mem_mb: float  # GPU 0's peak allocated memory over the epochs; NaN on the CPU
    first_step_s: float  # from the command's start to the start of the first training step
    first_step_end_s: float  # ... to the end of its optimizer step


def python(script: str, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    """Run a script of bench/ in a fresh interpreter; its stderr becomes the error if it fails."""
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        raise RuntimeError(f"bench/{script} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def largest_batch(fits: Callable[[int], bool], start: int, cap: int) -> int:
    """The largest n <= cap with fits(n), to within 1/16: doubling from `start` up to the first
    n that does not fit, then bisecting below it (0 when not even 1 fits)."""
    fit, fail, n = 0, None, min(start, cap)
    while fail is None:
        if not fits(n):
            fail = n
        elif n == cap:
            return cap
        else:
            fit, n = n, min(2 * n, cap)
    while fail - fit > max(1, fit // 16):
        middle = (fit + fail) // 2
        fit, fail = (middle, fail) if fits(middle) else (fit, middle)
    return fit


def repeat_batch(batch):
    while True:
        yield batch


def steady_rate(loader, steps: int, step: Callable, sync: Callable) -> float:
    """samples/s of one epoch, timed as train() times `perf/samples_per_sec`: from the end of
    its warm-up steps to the end of the epoch."""
    first = min(TIMING_WARMUP_STEPS, steps // 2)
    timed, since = 0, None
    for i, (frames, labels) in enumerate(islice(loader, steps)):
        if i == first:
            sync()
            since = time.perf_counter()
        step(frames, labels)
        if since is not None:
            timed += len(labels)
    sync()
    return timed / (time.perf_counter() - since)


class Bench:
    def __init__(self, size: Size, cases: list[Case], data_dir: Path, work: Path) -> None:
        self.size = size
        self.cases = cases
        self.work = work
        self.uri = f"sqlite:///{work / 'mlflow.db'}"
        self.cuda = torch.cuda.is_available()
        self.base = [
            f"hardware={'gpu1' if self.cuda else 'cpu'}",
            f"data.root={data_dir / f'synthetic-{size.preset}-{size.image_size}px'}",
            f"data.cache_dir={data_dir / 'frames'}",
            f"tracking.uri={self.uri}",
            f"experiment_name={EXPERIMENT}",
            "progress_bar=true",
            # The bare loop neither clips gradients, autocasts nor augments: both sides do the
            # same arithmetic. A case's own overrides come later and win.
            "training.grad_clip=null",
            "hardware.precision=fp32",
            "data.augment.kind=none",
            *size.overrides(),
        ]
        self.samples: dict[Case, list[float]] = defaultdict(list)
        self.runs: dict[Case, list[RunResult]] = defaultdict(list)
        self.phases: list[dict] = []
        self.runners = {
            "run": self.run_cli,
            "bare": self.bare_loop,
            "loader": self.loader_alone,
            "resident": self.resident_loop,
        }

    def overrides(self, case: Case) -> list[str]:
        return [*self.base, *case.overrides]

    def compose(self, case: Case) -> DictConfig:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose("config", overrides=self.overrides(case))

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def prepare(self) -> None:
        """Generate the data, build the frame caches and create the MLflow store, so that no
        measurement pays for a first use."""
        cfg = self.compose(self.cases[0])
        build_datasets(cfg.data, cfg.seed)
        ensure_experiment(self.uri, EXPERIMENT)

    def measure(self, case: Case, repeat: int) -> None:
        self.samples[case] += self.runners[case.runner](case, repeat)

    def run_cli(self, case: Case, repeat: int) -> list[float]:
        out_dir = self.work / "outputs" / f"{self.cases.index(case)}-{repeat}"
        stamp = self.work / f"first-step-{self.cases.index(case)}-{repeat}"
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["BENCH_FIRST_STEP_FILE"] = str(stamp)
        started = time.time()
        python("probe.py", [*self.overrides(case), f"hydra.run.dir={out_dir}"], self.work, env)
        client = MlflowClient(self.uri)
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        (run,) = client.search_runs([experiment], f"tags.output_dir = '{out_dir.resolve()}'")

        def history(key: str) -> list:
            return sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)

        speed = history("perf/samples_per_sec")
        # DDP trains in worker processes, which the probe does not reach: no stopwatch there.
        first_step = json.loads(stamp.read_text()) if stamp.exists() else {}
        result = RunResult(
            run_id=run.info.run_id,
            samples_per_sec=[m.value for m in speed],
            epoch_time_s=[m.value for m in history("perf/epoch_time_s")],
            log_times_s=[m.timestamp / 1000 for m in speed],
            peak_mem_mb=max((m.value for m in history("perf/peak_mem_mb/gpu0")), default=NAN),
            first_step_s=first_step.get("start", NAN) - started,
            first_step_end_s=first_step.get("end", NAN) - started,
        )
        self.runs[case].append(result)
        return result.samples_per_sec

    def bare_loop(self, case: Case, repeat: int) -> list[float]:
        cfg = self.compose(case)
        tcfg = cfg.training
        dataset = build_datasets(cfg.data, cfg.seed)["train"]
        device = torch.device("cuda" if self.cuda else "cpu")
        torch.manual_seed(cfg.seed + repeat)
        model = build_model(cfg.model, len(cfg.data.events)).to(device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=tcfg.learning_rate)
        loader = DataLoader(
            dataset, batch_size=tcfg.batch_size, shuffle=True, num_workers=tcfg.num_workers
        )

        def step(frames, labels):
            loss = F.cross_entropy(model(frames.to(device)), labels.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        model.train()
        steps = min(len(loader), tcfg.max_batches or len(loader))
        return [steady_rate(loader, steps, step, self.sync) for _ in range(tcfg.epochs)]

    def resident_loop(self, case: Case, repeat: int) -> list[float]:
        """The case's model, precision and batch, trained on one batch already on the device:
        the throughput no data path can exceed."""
        tcfg = self.compose(case).training
        step, batch_of = self.trainer(case, repeat)
        batch = batch_of(tcfg.batch_size)
        return [
            steady_rate(repeat_batch(batch), tcfg.max_batches, step, self.sync)
            for _ in range(tcfg.epochs)
        ]

    def trainer(self, case: Case, seed: int) -> tuple[Callable, Callable[[int], tuple]]:
        """(step(inputs, labels), batch_of(n)) for the case's model at its precision: one Adam
        step, and n random windows on the device (their features where the case trains from
        the feature cache)."""
        cfg = self.compose(case)
        data = cfg.data
        device = torch.device("cuda" if self.cuda else "cpu")
        torch.manual_seed(cfg.seed + seed)
        model = build_model(cfg.model, len(data.events)).to(device).train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=cfg.training.learning_rate)
        precision = Precision(cfg.hardware.precision)
        cached = uses_feature_cache(cfg)

        def step(inputs, labels):
            with autocast(precision, device.type):
                loss = F.cross_entropy(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def batch_of(n: int) -> tuple:
            labels = torch.randint(0, len(data.events), (n,), device=device)
            if cached:
                return torch.randn(n, data.window, model.lstm.input_size, device=device), labels
            shape = (n, data.window, 3, data.image_size, data.image_size)
            return torch.randint(0, 256, shape, dtype=torch.uint8, device=device), labels

        return step, batch_of

    def fits(self, case: Case) -> Callable[[int], bool]:
        """fits(n): whether two training steps of the case's model on n windows already on the
        device run without running out of its memory."""
        step, batch_of = self.trainer(case, 0)

        def fits(n: int) -> bool:
            try:
                for _ in range(2):
                    step(*batch_of(n))
                self.sync()
                return True
            except torch.OutOfMemoryError:
                return False
            finally:
                if self.cuda:
                    torch.cuda.empty_cache()

        return fits

    def loader_alone(self, case: Case, repeat: int) -> list[float]:
        """The whole train split per epoch (more batches than training takes: a steadier
        figure), through the framework's own make_loader."""
        cfg = self.compose(case)
        dataset = build_datasets(cfg.data, cfg.seed)["train"]
        device = plan_run(cfg).device
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed))
        loader = make_loader(
            dataset, cfg.training.batch_size, cfg.training, device, cfg.seed, sampler
        )
        return [
            steady_rate(loader, len(loader), lambda *_: None, self.sync)
            for _ in range(cfg.training.epochs)
        ]

    def startup_phases(self, repeat: int) -> None:
        work = self.work / f"startup-{repeat}"
        work.mkdir()
        new_store = f"sqlite:///{work / 'new.db'}"
        started = time.time()
        python("startup.py", [str(work), str(CONF), new_store, *self.overrides(FULL)], work)
        result = json.loads((work / "phases.json").read_text())
        marks = [("start", started), *result["marks"]]
        self.phases.append(
            {
                "phases": {
                    ("interpreter start" if label == "start" else label): t - t_prev
                    for (_, t_prev), (label, t) in zip(marks, marks[1:], strict=False)
                },
                "imports_alone": result["imports_done"] - started,
                "ready": result["ready"] - started,
                "new_store": result["new_store_s"],
            }
        )

    # Rows, per item.

    def throughput_rows(self, ratios: list[Ratio]) -> list[Row]:
        rows = [
            Row(c.item, f"{c.label}, samples/s", median(self.samples[c]), "samples/s")
            for c in self.cases
        ]
        for r in ratios:
            value = median(self.samples[r.num]) / median(self.samples[r.den])
            if r.at_least is None:
                rows.append(Row(r.item, r.label, value, "x"))
            else:
                rows.append(
                    Row(r.item, r.label, value, "x", f">= {r.at_least:g}", value >= r.at_least)
                )
        return rows

    def epoch_end_rows(self) -> list[Row]:
        """Checkpoints and logging happen after an epoch's clock stops. Between two epochs'
        log timestamps lie the next epoch's epoch_time_s and that work; the rest is its cost."""
        shares = [
            (t1 - t0 - epoch) / (t1 - t0)
            for run in self.runs[FULL]
            for t0, t1, epoch in zip(
                run.log_times_s, run.log_times_s[1:], run.epoch_time_s[1:], strict=False
            )
        ]
        return [
            Row(
                1,
                "end-of-epoch work of the full run (2 checkpoints, metric log), "
                "% of the epoch cycle",
                100 * median(shares),
                "%",
            )
        ]

    def startup_rows(self) -> list[Row]:
        total = median(r.first_step_s for r in self.runs[FULL])
        step = median(r.first_step_end_s - r.first_step_s for r in self.runs[FULL])
        imports = median(p["imports_alone"] for p in self.phases)
        over = total - imports
        rows = [
            Row(
                2,
                "command → first training step starts (`python -m tennis_exp`, warm data "
                "and store)",
                total,
                "s",
            ),
            Row(2, "the first training step itself (forward, backward, Adam)", step, "s"),
            Row(
                2,
                "the same imports alone (command → torch, torchvision, hydra, mlflow and its "
                "SQLAlchemy store, tennis_exp imported)",
                imports,
                "s",
            ),
            Row(2, "first step starts − imports alone", over, "s", "<= 1", over <= 1),
        ]
        for label in self.phases[0]["phases"]:
            rows.append(
                Row(2, f"phase: {label}", median(p["phases"][label] for p in self.phases), "s")
            )
        after_imports = median(p["ready"] - p["imports_alone"] for p in self.phases)
        new_store = median(p["new_store"] for p in self.phases)
        rows += [
            Row(
                2,
                "phases after the imports up to the first step, in one process (compose API, "
                "not `@hydra.main`)",
                after_imports,
                "s",
                "<= 1",
                after_imports <= 1,
            ),
            Row(
                2,
                "new MLflow store: schema creation, paid by the first run into a store only "
                "(in no sum above)",
                new_store,
                "s",
            ),
        ]
        return rows

    def feature_cache_rows(self, plain_case: Case, cached_case: Case) -> list[Row]:
        """The cache's one-time build, and what it saves over the users' 50-epoch schedule on
        this preset's training windows (evaluation left out)."""
        cfg = self.compose(cached_case)
        datasets = build_datasets(cfg.data, cfg.seed)
        device = torch.device("cuda" if self.cuda else "cpu")
        model = build_model(cfg.model, len(cfg.data.events)).to(device)
        precision = Precision(cfg.hardware.precision)
        started = time.perf_counter()
        cached_features(model, datasets, self.work / "features", precision, device, Dist())
        self.sync()
        build = time.perf_counter() - started
        windows = len(datasets["train"])
        plain = EPOCHS * windows / median(self.samples[plain_case])
        cached = build + EPOCHS * windows / median(self.samples[cached_case])
        return [
            Row(
                5,
                f"feature cache build ({precision.value}): every frame of the 3 splits through "
                "the backbone",
                build,
                "s",
            ),
            Row(
                5, f"{EPOCHS} epochs of {windows} windows, backbone every epoch", plain / 60, "min"
            ),
            Row(
                5, f"{EPOCHS} epochs from the feature cache, its build included", cached / 60, "min"
            ),
            Row(5, f"feature cache speed-up over {EPOCHS} epochs", plain / cached, "x"),
        ]

    def largest_batch_rows(self, cap: int = BATCH_CAP) -> list[Row]:
        """The largest batch whose training steps fit in the GPU's memory, per way of training;
        the search stops at `cap`."""
        rows = []
        for case, label in [
            (GPU_BF16, "the frozen baseline, backbone every step"),
            (GPU_CACHED, "the frozen baseline, from the feature cache"),
            (GPU_FT_RESIDENT, "fine-tuning (the backbone trains)"),
        ]:
            found = largest_batch(self.fits(case), min(self.size.batch_size, cap), cap)
            capped = f" (the search stops at {cap})" if found == cap else ""
            label = f"largest batch that fits, bf16: {label}{capped}"
            rows.append(Row(10, label, found, "windows"))
        return rows

    def memory_rows(self) -> list[Row]:
        return [
            Row(c.item, f"{c.label}, peak GPU memory", median(r.peak_mem_mb for r in runs), "MiB")
            for c, runs in self.runs.items()
        ]

    def logging_rows(self) -> list[Row]:
        """One epoch's `log_metrics` call, with the metric names the full run logs per epoch,
        into the same SQLite store, against the full run's epoch time."""
        client = MlflowClient(self.uri)
        logged = client.get_run(self.runs[FULL][0].run_id).data.metrics
        names = [name for name in logged if not name.startswith("test/")]
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        run = Run(client, client.create_run(experiment, run_name="log-cost").info.run_id)
        times = []
        for step in range(1, self.size.log_calls + 1):
            metrics = {name: 1.0 / (step + i) for i, name in enumerate(names)}
            started = time.perf_counter()
            run.log_metrics(metrics, step=step)
            times.append(time.perf_counter() - started)
        client.set_terminated(run.run_id)
        seconds = median(times)
        epoch = median(t for run in self.runs[FULL] for t in run.epoch_time_s)
        share = 100 * seconds / epoch
        return [
            Row(
                4,
                f"one epoch's `log_metrics` ({len(names)} metrics, one batched call, SQLite)",
                1000 * seconds,
                "ms",
            ),
            Row(4, "full run epoch (train + val, `perf/epoch_time_s`)", epoch, "s"),
            Row(4, "`log_metrics` / epoch", share, "%", "< 1", share < 1),
        ]


def agreement_seconds(calls: int) -> float:
    """One gloo rank (of 2): the median time of the loop's stop agreement, `calls` times."""
    import torch.distributed as torch_dist

    torch_dist.init_process_group("gloo")
    try:
        dist = Dist(torch_dist.get_rank(), torch_dist.get_rank(), torch_dist.get_world_size())
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            dist.all_reduce([0.0], torch.device("cpu"))
            times.append(time.perf_counter() - started)
        return median(times)
    finally:
        torch_dist.destroy_process_group()


def stop_agreement_rows(work: Path, step_s: float, calls: int) -> list[Row]:
    seconds = distributed.launch(agreement_seconds, (calls,), 2, work / "agreement")
    every = STOP_CHECK_STEPS
    return [
        Row(
            8,
            "one DDP stop agreement (all-reduce + host sync, gloo, 2 CPU ranks)",
            1e3 * seconds,
            "ms",
        ),
        Row(
            8,
            "its cost if agreed every step, % of a full-run training step",
            100 * seconds / step_s,
            "%",
        ),
        Row(
            8,
            f"its cost agreed every {every} steps (the loop), % of a step",
            100 * seconds / every / step_s,
            "%",
        ),
    ]


def fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def table(rows: list[Row]) -> list[str]:
    lines = ["| item | measurement | value | unit | target | met |", "|---:|---|---:|---|---|---|"]
    for r in sorted(rows, key=lambda r: r.item):  # stable: rows keep their order in an item
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.item} | {r.label} | {fmt(r.value)} | {r.unit} | {r.target} | {met} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: well under a minute")
    parser.add_argument(
        "--gpu", action="store_true", help="the GPU rows (items 6, 7) instead of the CPU ones"
    )
    add_dirs(parser, "bench", "synthetic data and frame caches")
    args = parser.parse_args(argv)
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA GPU, and torch sees none")
    size = SIZES["gpu" if args.gpu else "quick" if args.quick else "default"]
    cases = GPU_CASES if args.gpu else CASES
    register_configs()
    started_at, load_before, clock = datetime.now().astimezone(), load(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tennis-bench-") as tmp:
        bench = Bench(size, cases, args.data_dir.resolve(), Path(tmp))
        print("[bench] data, frame caches, MLflow store", end="", flush=True)
        bench.prepare()
        print(f" ({time.perf_counter() - clock:.1f} s)", flush=True)
        for repeat in range(size.repeats):
            steps = [(c.label, partial(bench.measure, c, repeat)) for c in cases]
            if not args.gpu:
                steps.append(("startup phases", partial(bench.startup_phases, repeat)))
            for label, step in steps:
                print(f"[bench] repeat {repeat + 1}/{size.repeats}: {label}", end="", flush=True)
                started = time.perf_counter()
                step()
                print(f" ({time.perf_counter() - started:.1f} s)", flush=True)
        if args.gpu:
            rows = [
                *bench.throughput_rows(GPU_RATIOS),
                *bench.memory_rows(),
                *bench.largest_batch_rows(),
                *bench.feature_cache_rows(GPU_BF16, GPU_CACHED),
            ]
        else:
            rows = [
                *bench.throughput_rows(RATIOS),
                *bench.feature_cache_rows(FROZEN_PLAIN, FROZEN_CACHED),
                *bench.epoch_end_rows(),
                *bench.startup_rows(),
                *bench.logging_rows(),
                *stop_agreement_rows(
                    Path(tmp), size.batch_size / median(bench.samples[FULL]), size.log_calls * 10
                ),
            ]
    lines = [
        f"## Benchmarks, {started_at:%Y-%m-%d %H:%M %Z}",
        "",
        *machine(),
        f"- size: {size.describe()}",
        f"- load average (1 min): {load_before} at start, {load()} at end; "
        f"took {time.perf_counter() - clock:.0f} s",
        "",
        *table(rows),
    ]
    publish("\n".join(lines) + "\n", args.results_dir, f"{started_at:%Y%m%d-%H%M%S}-{size.name}.md")


if __name__ == "__main__":
    main()

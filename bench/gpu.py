"""Issue 24: every GPU figure of the users' main path in one run, `python -m bench.gpu`
(make bench-gpu), sized for a lent machine: at most 8 minutes of wall time, data included.

Steps, in order of importance; each starts only if the time left of the budget (--budget-s)
covers its estimate, else the table lists it as skipped with the seconds it had and needed:
1. generating the synthetic `full` preset at 224 px: the users' 7775 training windows;
2. the users' whole frozen ResNet-50 baseline on it, 50 epochs, frame and feature caches built
   in the run (bench/baseline.py's command; goal: under 5 minutes on one H100/H200);
3. fine-tuning (the backbone trains, bf16) fed by frames held on the GPU, against one batch
   already there (goal: at least 0.9 of it), and fed by the loader; peak GPU memory of each;
4. predict's real-time factor with the ResNet-50 baseline on a 640x480 synthetic match (goal:
   at least 20x real time), against a bare decode loop;
5. the largest batch that fits in GPU memory, per way of training.
Every figure is measured in this run; a step the budget cannot hold leaves no figure, never a
guessed one. `--quick` runs the same steps smoke-sized on the CPU (tiny data, small model).

Prints a markdown table (machine, GPU, date, command) and writes it to
bench/results/<timestamp>-gpu.md; `--results-page docs/results.md` also puts it in that page's
GPU section, between its `bench-gpu` markers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from bench import predict as predict_bench
from bench.baseline import FULL as BASELINE_FULL
from bench.baseline import QUICK as BASELINE_QUICK
from bench.baseline import run_baseline
from bench.results import add_dirs, load, machine, publish
from bench.run import (
    GPU_FT_DEVICE,
    GPU_FT_LOADER,
    GPU_FT_RESIDENT,
    SIZES,
    Bench,
    Row,
    fmt,
    median,
)
from tennis_exp.config import register_configs
from tennis_exp.data.synthetic import ensure_synthetic

BUDGET_S = 480.0
MARK_START, MARK_END = "<!-- bench-gpu:start -->", "<!-- bench-gpu:end -->"
FINE_TUNING = [GPU_FT_LOADER, GPU_FT_DEVICE, GPU_FT_RESIDENT]
QUICK_NOTE = "smoke-sized on the CPU: no figure here is a GPU figure, and no goal applies"


@dataclass(frozen=True)
class Size:
    """What each step measures on: the full figures on a GPU, or their smoke-sized twins."""

    baseline: tuple[str, int, int, str]  # (preset, image size, epochs, hardware profile)
    bench: str  # bench/run.py's size for the fine-tuning and largest-batch steps
    predict: str  # bench/predict.py's model: "gpu" (ResNet-50, 224 px) or "cpu"
    video_s: float
    repeats: int  # of the rates: their median is the figure
    batch_cap: int  # the largest-batch search stops here
    estimates_s: tuple[float, ...]  # per step, to decide whether it can start


FULL = Size(BASELINE_FULL, "gpu", "gpu", 60.0, 3, 2048, (60, 240, 90, 60, 60))
QUICK = Size(BASELINE_QUICK, "quick", "cpu", 10.0, 1, 16, (10, 40, 40, 20, 10))


@dataclass(frozen=True)
class Step:
    name: str
    estimate_s: float
    measure: Callable[[], list[Row]]


@dataclass(frozen=True)
class Done:
    name: str
    rows: list[Row]
    seconds: float | None  # None: skipped
    note: str = ""


def run_steps(steps: list[Step], budget_s: float, clock: Callable[[], float]) -> list[Done]:
    """Each step in order if the budget's time left covers its estimate; a skipped step says
    how much time was left and how much it needed. Later, shorter steps may still run."""
    started, done = clock(), []
    for step in steps:
        left = budget_s - (clock() - started)
        if left < step.estimate_s:
            note = (
                f"skipped: {left:.0f} s of the budget left, "
                f"the step needs about {step.estimate_s:.0f} s"
            )
            print(f"[bench] {step.name}: {note}", flush=True)
            done.append(Done(step.name, [], None, note))
            continue
        print(f"[bench] {step.name} (about {step.estimate_s:.0f} s)", flush=True)
        begun = clock()
        rows = step.measure()
        done.append(Done(step.name, rows, clock() - begun))
    return done


def plan_lines(steps: list[Step], budget_s: float) -> list[str]:
    lines = [f"[bench] plan: {len(steps)} steps within {budget_s:.0f} s"]
    lines += [
        f"[bench]   {i}. {s.name}: about {s.estimate_s:.0f} s" for i, s in enumerate(steps, 1)
    ]
    return lines


class GpuBench:
    """The steps' measurements. The baseline's data is generated once and kept in data_dir."""

    def __init__(self, size: Size, data_dir: Path, work: Path) -> None:
        self.size, self.data_dir, self.work = size, data_dir, work
        preset, image_size, _, _ = size.baseline
        self.root = data_dir / f"synthetic-{preset}-{image_size}px"
        (work / "bench").mkdir(parents=True)
        self.bench = Bench(SIZES[size.bench], FINE_TUNING, data_dir, work / "bench")

    def steps(self) -> list[Step]:
        names = [
            "generate the baseline's synthetic frames",
            "the users' baseline, end to end",
            "fine-tuning: frames on the GPU, the loader, a batch already there",
            "predict's real-time factor",
            "the largest batch per way of training",
        ]
        measures = [self.generate, self.baseline, self.fine_tuning, self.predict, self.largest]
        return [
            Step(n, e, m) for n, e, m in zip(names, self.size.estimates_s, measures, strict=True)
        ]

    def generate(self) -> list[Row]:
        preset, image_size, _, _ = self.size.baseline
        started = time.perf_counter()
        made = ensure_synthetic(self.root, preset, seed=0, image_size=image_size)
        seconds = time.perf_counter() - started
        label = f"generate the synthetic `{preset}` preset at {image_size} px"
        return [Row(1, label + ("" if made else " (kept from an earlier run)"), seconds, "s")]

    def baseline(self) -> list[Row]:
        preset, image_size, epochs, hardware = self.size.baseline
        self.work.mkdir(parents=True, exist_ok=True)
        wall, metrics, epochs_s = run_baseline(
            self.root, preset, image_size, epochs, hardware, Path(tempfile.mkdtemp(dir=self.work))
        )
        minutes = wall / 60
        return [
            Row(2, f"the users' baseline ({epochs} epochs), cache builds included", minutes,
                "min", "< 5", minutes < 5),
            Row(2, "its median epoch", statistics.median(epochs_s), "s"),
            Row(2, "its peak GPU memory", metrics.get("perf/peak_mem_mb/gpu0", float("nan")),
                "MiB"),
        ]  # fmt: skip

    def fine_tuning(self) -> list[Row]:
        bench = self.bench
        bench.prepare()
        for repeat in range(self.size.repeats):
            for case in FINE_TUNING:
                bench.measure(case, repeat)
        rate = {case: median(bench.samples[case]) for case in FINE_TUNING}
        ratio = rate[GPU_FT_DEVICE] / rate[GPU_FT_RESIDENT]
        loader = rate[GPU_FT_LOADER] / rate[GPU_FT_RESIDENT]
        rows = [Row(3, f"{c.label}, samples/s", rate[c], "samples/s") for c in FINE_TUNING]
        rows += [
            Row(3, "frames on the GPU / batch already there", ratio, "x", ">= 0.9", ratio >= 0.9),
            Row(3, "the loader / batch already there", loader, "x"),
        ]
        return rows + [Row(3, r.label, r.value, r.unit) for r in bench.memory_rows()]

    def predict(self) -> list[Row]:
        overrides, hardware = predict_bench.MODELS[self.size.predict]
        image_size = 224 if self.size.predict == "gpu" else 64
        seconds = self.size.video_s
        video = predict_bench.ensure_video(self.data_dir / f"match-{seconds:g}s.avi", seconds)
        work = self.work / "predict"
        work.mkdir(parents=True, exist_ok=True)
        ckpt = predict_bench.untrained_checkpoint(work / "model.pth", overrides)
        decode, realtime = [], []
        threads = torch.get_num_threads()
        for _ in range(self.size.repeats):
            decode.append(predict_bench.bare_decode(video, image_size))
            realtime.append(predict_bench.predicted(video, ckpt, hardware, work, threads)[0])
        fps = predict_bench.FPS
        rtf = statistics.median(realtime)
        label = f"{predict_bench.WIDTH}x{predict_bench.HEIGHT} match, {seconds:g} s"
        return [
            Row(4, f"predict's real-time factor ({label})", rtf, "x", ">= 20", rtf >= 20),
            Row(4, f"bare decode loop to {image_size} px", statistics.median(decode) / fps, "x"),
        ]

    def largest(self) -> list[Row]:
        return [
            Row(5, r.label, r.value, r.unit)
            for r in self.bench.largest_batch_rows(self.size.batch_cap)
        ]


def table(done: list[Done], goals: bool = True) -> list[str]:
    """One row per figure, one per skipped step; `goals` false leaves the goal columns empty."""
    lines = [
        "| step | measurement | value | unit | goal | met | step time |",
        "|---:|---|---:|---|---|---|---:|",
    ]
    for i, d in enumerate(done, 1):
        if d.seconds is None:
            lines.append(f"| {i} | {d.name} | | | | | {d.note} |")
        for r in d.rows:
            met = "" if r.met is None or not goals else ("yes" if r.met else "**no**")
            target = r.target if goals else ""
            lines.append(
                f"| {i} | {r.label} | {fmt(r.value)} | {r.unit} | {target} | {met} | "
                f"{d.seconds:.0f} s |"
            )
    return lines


def into_page(page: Path, report: str) -> None:
    """Replace the text between the page's bench-gpu markers with the report."""
    text = page.read_text()
    head, found, rest = text.partition(MARK_START)
    _, end, tail = rest.partition(MARK_END)
    if not (found and end):
        raise SystemExit(f"{page} has no {MARK_START} ... {MARK_END} section to write into")
    page.write_text(f"{head}{MARK_START}\n{report}{MARK_END}{tail}")
    print(f"[bench] written into {page}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="the same steps, smoke-sized, on the CPU"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=BUDGET_S,
        help=f"wall-time budget for the steps (default {BUDGET_S:.0f} s)",
    )
    parser.add_argument(
        "--results-page", type=Path, help="also write the table into this page's bench-gpu section"
    )
    add_dirs(parser, "bench-gpu", "the synthetic frames and the match video")
    args = parser.parse_args(argv)  # fmt: skip
    if not args.quick and not torch.cuda.is_available():
        parser.error("the GPU figures need a CUDA GPU, and torch sees none; --quick runs the "
                     "same steps smoke-sized on the CPU")  # fmt: skip
    if args.results_page and not args.results_page.is_file():
        parser.error(f"--results-page {args.results_page}: no such file")
    size = QUICK if args.quick else FULL
    register_configs()
    started_at, load_before, clock = datetime.now().astimezone(), load(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tennis-bench-gpu-") as tmp:
        gpu_bench = GpuBench(size, args.data_dir.resolve(), Path(tmp))
        steps = gpu_bench.steps()
        print("\n".join(plan_lines(steps, args.budget_s)), flush=True)
        done = run_steps(steps, args.budget_s, time.perf_counter)
    skipped = [d.name for d in done if d.seconds is None]
    command = "python -m bench.gpu" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    lines = [
        f"### Every GPU figure in one run, {started_at:%Y-%m-%d %H:%M %Z}",
        "",
        *machine(),
        f"- command: `{command}`; budget {args.budget_s:.0f} s, took "
        f"{time.perf_counter() - clock:.0f} s; load average (1 min): {load_before} at start, "
        f"{load()} at end",
        "- rates are medians of "
        f"{size.repeats} interleaved repeat(s); untrained weights (speed does not depend on them)",
        f"- skipped for the budget: {', '.join(skipped) if skipped else 'none'}",
        *([f"- `--quick`: {QUICK_NOTE}"] if args.quick else []),
        "",
        *table(done, goals=not args.quick),
    ]
    report = "\n".join(lines) + "\n"
    name = f"{started_at:%Y%m%d-%H%M%S}-gpu{'-quick' if args.quick else ''}.md"
    publish(report, args.results_dir, name)
    if args.results_page:
        into_page(args.results_page, report)


if __name__ == "__main__":
    main()

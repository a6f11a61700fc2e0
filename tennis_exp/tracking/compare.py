"""Comparing runs: a sweep's table from its MLflow runs, as a terminal table, markdown, CSV
and plots. The keys the sweep varied come first, then the scores, then how each job ran.

Where the sweep varies the hardware (the profile, the device count, DP against DDP), the
table is the guide's speed table: samples/s, speed-up and scaling efficiency, which compare a
job with the job of the fewest devices *of the same type* (a GPU job against a CPU job would be
a hardware ratio, not scaling). Between experiments or learning rates on the same hardware a
speed ratio says nothing about the study: those columns are left out.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tennis_exp.config import BACKGROUND, metric_name
from tennis_exp.tracking.plots import CONFUSION_FILE, confusions_figure, save
from tennis_exp.tracking.runs import OVERRIDES_TAG

# Row fields and their headers, in the table's order; each class's test recall follows SCORES.
SCORES = {"best_val_macro_f1": "best val F1", "test_macro_f1": "test F1"}
# A study with the background class: every run's events scored on the event clips alone, the
# column that compares runs with and without the class.
EVENT_SCORE = {"test_event_macro_f1": "test F1, events"}
RUN = {
    "run": "run",
    "status": "status",
    "devices": "devices",
    "strategy": "strategy",
    "per_device_batch": "per-device batch",
    "effective_batch": "effective batch",
    "device": "device",
    "learning_rate": "LR",
}
SPEED = {"samples_per_sec": "samples/s", "speedup": "speed-up", "efficiency": "efficiency"}
COST = {
    "epoch_time_s": "epoch s",
    "peak_mem_gpu0_mb": "GPU0 MiB",
    "peak_mem_others_mb": "other GPUs MiB",
}
COLUMNS = {**SCORES, **EVENT_SCORE, **RUN, **SPEED, **COST}


RECALL = "test/recall_"
NO_EVENT = metric_name(BACKGROUND)  # a run with the background class has its recall


@dataclass
class Row:
    run: str
    status: str
    devices: int | None
    strategy: str
    per_device_batch: int | None
    effective_batch: int | None
    device: str | None  # the device type it ran on: cuda or cpu
    learning_rate: float | None
    samples_per_sec: float | None  # median over epochs of the steady-state figure
    speedup: float | None = None  # against the job with the fewest devices of its type
    efficiency: float | None = None  # speed-up / devices (1.0 is linear scaling)
    epoch_time_s: float | None = None
    peak_mem_gpu0_mb: float | None = None
    peak_mem_others_mb: float | None = None
    best_val_macro_f1: float | None = None
    test_macro_f1: float | None = None
    test_event_macro_f1: float | None = None  # with the background class, else test_macro_f1
    # Per class (metric name: net_play, ...), the test recall: a collapsed class shows as ~0.
    test_recall: dict[str, float] = field(default_factory=dict)
    # The keys the sweep varied (its jobs' overrides that differ), this job's values of them.
    swept: dict[str, str | None] = field(default_factory=dict)
    run_id: str = ""


def _median(client, run_id: str, key: str) -> float | None:
    values = [m.value for m in client.get_metric_history(run_id, key)]
    return statistics.median(values) if values else None


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _device_type(params: dict[str, str]) -> str | None:
    # Runs from before `run.device` was logged record only the accelerator that was asked for.
    return params.get("run.device") or params.get("hardware.accelerator")


def swept_values(runs) -> dict[str, dict[str, str | None]]:
    """Per run id, the keys that the runs' overrides give different values (or give in some
    runs only), in the order the runs name them, with this run's value of each."""
    overrides = {r.info.run_id: _overrides(r.data.tags.get(OVERRIDES_TAG)) for r in runs}
    keys = list(dict.fromkeys(k for values in overrides.values() for k in values))
    varied = [k for k in keys if len({values.get(k) for values in overrides.values()}) > 1]
    return {run_id: {k: values.get(k) for k in varied} for run_id, values in overrides.items()}


def _overrides(tag: str | None) -> dict[str, str]:
    """A job's overrides (the tag's JSON list of key=value) as a dict."""
    items = json.loads(tag) if tag else []
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in items)


def rows_for(client, runs) -> list[Row]:
    """One row per run (failed ones included), with speed-ups against the smallest job of the
    same device type."""
    swept = swept_values(runs)
    rows = []
    for run in sorted(
        runs, key=lambda r: (_int(r.data.params.get("scaling.devices")) or 0, r.info.start_time)
    ):
        params, metrics, run_id = run.data.params, run.data.metrics, run.info.run_id
        val_f1 = [m.value for m in client.get_metric_history(run_id, "val/macro_f1")]
        gpus = sorted(k for k in metrics if k.startswith("perf/peak_mem_mb/gpu"))
        rows.append(
            Row(
                run=run.info.run_name,
                status=run.info.status,
                devices=_int(params.get("scaling.devices")),
                strategy=params.get("hardware.strategy", "?"),
                per_device_batch=_int(params.get("scaling.per_device_batch_size")),
                effective_batch=_int(params.get("scaling.effective_batch_size")),
                device=_device_type(params),
                learning_rate=float(params["scaling.learning_rate"])
                if "scaling.learning_rate" in params
                else None,
                samples_per_sec=_median(client, run_id, "perf/samples_per_sec"),
                epoch_time_s=_median(client, run_id, "perf/epoch_time_s"),
                peak_mem_gpu0_mb=metrics.get("perf/peak_mem_mb/gpu0"),
                peak_mem_others_mb=max((metrics[k] for k in gpus[1:]), default=None),
                best_val_macro_f1=max(val_f1) if val_f1 else None,
                test_macro_f1=metrics.get("test/macro_f1"),
                test_event_macro_f1=_event_f1(metrics),
                test_recall={
                    k.removeprefix(RECALL): v
                    for k, v in sorted(metrics.items())
                    if k.startswith(RECALL)
                },
                swept=swept[run_id],
                run_id=run_id,
            )
        )
    if varies_hardware(rows):
        add_speedups(rows)
    return rows


def _event_f1(metrics: dict[str, float]) -> float | None:
    """The four events' macro-F1 on their own clips. Without the background class no clip is
    idle and none is called so: it is the test macro-F1. A background run logged before the
    metric existed has none."""
    if RECALL + NO_EVENT in metrics:
        return metrics.get("test/event_macro_f1")
    return metrics.get("test/macro_f1")


def is_hardware_key(key: str) -> bool:
    """The profile (`hardware=gpu2`) or one of its keys (`hardware.strategy=ddp`)."""
    return key == "hardware" or key.startswith("hardware.")


def varies_hardware(rows: list[Row]) -> bool:
    """Whether the jobs differ in what ran them: a swept hardware key, or jobs that ran on
    different devices, device counts or strategies (compare --all has no sweep)."""
    ran = {(r.device, r.devices, r.strategy) for r in rows if r.device}
    return any(is_hardware_key(k) for k in _swept_keys(rows)) or len(ran) > 1


def add_speedups(rows: list[Row]) -> None:
    """Speed-up and efficiency of every measured row against the row with the fewest devices
    of its device type."""
    measured = [r for r in rows if r.samples_per_sec and r.devices and r.device]
    for device in {r.device for r in measured}:
        same = [r for r in measured if r.device == device]
        base = min(same, key=lambda r: r.devices)
        for row in same:
            row.speedup = row.samples_per_sec / base.samples_per_sec
            row.efficiency = row.speedup / (row.devices / base.devices)


_FORMATS = {
    "learning_rate": "{:.3g}",
    "samples_per_sec": "{:.1f}",
    "speedup": "{:.2f}x",
    "efficiency": "{:.2f}",
    "epoch_time_s": "{:.1f}",
    "peak_mem_gpu0_mb": "{:.0f}",
    "peak_mem_others_mb": "{:.0f}",
    "best_val_macro_f1": "{:.3f}",
    "test_macro_f1": "{:.3f}",
    "test_event_macro_f1": "{:.3f}",
}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    return _FORMATS.get(key, "{}").format(value)


def _swept_cell(value: str | None) -> str:
    """A swept value as typed, but a searched float (5.6115164153345e-05) to 4 digits: the CSV
    keeps it whole."""
    if value is None:
        return "-"
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and not value.lstrip("-").isdigit() else value


_NOTE = "speed-up and efficiency: against the job with the fewest devices of the same type"


def _swept_keys(rows: list[Row]) -> list[str]:
    return list(rows[0].swept) if rows else []


def _classes(rows: list[Row]) -> list[str]:
    return sorted({c for r in rows for c in r.test_recall})


def _fields(rows: list[Row]) -> tuple[list[str], list[str]]:
    """The row fields before and after the recalls: the scores; then how each job ran, its
    speed only where the jobs' hardware differs."""
    ran = {**RUN, **SPEED, **COST} if varies_hardware(rows) else {**RUN, **COST}
    background = any(NO_EVENT in r.test_recall for r in rows)
    return [*SCORES, *(EVENT_SCORE if background else {})], list(ran)


def _table(rows: list[Row]) -> list[list[str]]:
    """The header, then a row of cells per job: the swept keys, the scores and each class's
    test recall, then how the job ran."""
    keys, classes = _swept_keys(rows), _classes(rows)
    scores, ran = _fields(rows)
    header = [*keys, *(COLUMNS[k] for k in scores), *(f"recall {c}" for c in classes)]
    header += [COLUMNS[k] for k in ran]
    body = [
        [_swept_cell(r.swept[k]) for k in keys]
        + [_cell(k, getattr(r, k)) for k in scores]
        + [_cell("test_macro_f1", r.test_recall.get(c)) for c in classes]
        + [_cell(k, getattr(r, k)) for k in ran]
        for r in rows
    ]
    return [header, *body]


def _note(rows: list[Row]) -> list[str]:
    return [_NOTE] if varies_hardware(rows) else []


def to_markdown(rows: list[Row]) -> str:
    header, *body = _table(rows)
    lines = ["| " + " | ".join(cells) + " |" for cells in [header, *body]]
    lines.insert(1, "|" + "---|" * len(header))
    return "\n".join([*lines, "", *_note(rows)]) + "\n"


def to_text(rows: list[Row]) -> str:
    cells = _table(rows)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join([*lines, *_note(rows)]) + "\n"


def to_csv(rows: list[Row]) -> str:
    """The table's columns, in its order, with raw values."""
    out = io.StringIO()
    scores, ran = _fields(rows)
    recalls = [f"recall_{c}" for c in _classes(rows)]
    writer = csv.DictWriter(out, fieldnames=[*_swept_keys(rows), *scores, *recalls, *ran])
    writer.writeheader()
    for r in rows:
        recall = {f"recall_{c}": v for c, v in r.test_recall.items()}
        fields = {k: v for k, v in asdict(r).items() if k in scores or k in ran}
        writer.writerow({**r.swept, **fields, **recall})
    return out.getvalue()


def best_row(rows: list[Row]) -> Row | None:
    """The finished job with the best val macro-F1 (what every job returns to the sweeper)."""
    scored = [r for r in rows if r.status == "FINISHED" and r.best_val_macro_f1 is not None]
    return max(scored, key=lambda r: r.best_val_macro_f1, default=None)


def plot(client, runs, rows: list[Row], out_dir: Path) -> list[Path]:
    """speedup.png (measured against linear), val_macro_f1.png (per epoch, per job), and
    confusions.png (each job's test confusion matrix side by side), study.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    measured = sorted((r for r in rows if r.speedup is not None), key=lambda r: r.devices)
    if measured:
        fig, ax = plt.subplots(figsize=(5, 4))
        devices = sorted({r.devices for r in measured})
        base = devices[0]
        ax.plot(devices, [d / base for d in devices], "--", color="grey", label="linear (ideal)")
        for device in sorted({r.device for r in measured}):
            same = [r for r in measured if r.device == device]
            ax.plot([r.devices for r in same], [r.speedup for r in same], "o-", label=device)
        for r in measured:
            ax.annotate(
                f"{r.strategy} {r.speedup:.2f}x",
                (r.devices, r.speedup),
                textcoords="offset points",
                xytext=(4, -12),
                fontsize=8,
            )
        ax.set(
            xlabel="devices",
            ylabel="speed-up over the fewest devices of a type",
            title="throughput scaling (samples/s)",
        )
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "speedup.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 4))
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val/macro_f1")
        if history:
            ax.plot(
                [m.step for m in history],
                [m.value for m in history],
                marker=".",
                label=run.info.run_name,
            )
    ax.set(xlabel="epoch", ylabel="val macro-F1", title="validation macro-F1 per job")
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "val_macro_f1.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    confusions = test_confusions(client, rows)
    if confusions:
        title = "test confusion matrices (row-normalised: recall on the diagonal)"
        paths.append(save(confusions_figure(confusions, title), out_dir / "confusions.png"))
    study = plot_study(rows, out_dir / "study.png")
    return [*paths, study] if study else paths


def test_confusions(client, rows: list[Row]) -> list[tuple[str, list[list[int]], list[str]]]:
    """(job, test confusion counts, class names) of each row whose run logged its counts (a
    job that failed before its test step did not), named by its swept values."""
    # A download would draw a progress bar on stderr, per job, under the sweep's table.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            if CONFUSION_FILE not in {a.path for a in client.list_artifacts(row.run_id)}:
                continue
            saved = json.loads(
                Path(client.download_artifacts(row.run_id, CONFUSION_FILE, tmp)).read_text()
            )
            name = "\n".join(f"{k}={v}" for k, v in row.swept.items()) or row.run
            found.append((name, saved["counts"], saved["events"]))
    return found


def _number(value: str | None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_study(rows: list[Row], path: Path) -> Path | None:
    """Test macro-F1 and the lowest class recall against the sweep's first numeric key (the
    share of the data, say), a line per value of the other swept keys (the strategy, say).
    None when no swept key is numeric."""
    scored = [r for r in rows if r.test_macro_f1 is not None]
    keys = _swept_keys(scored)
    x_key = next((k for k in keys if all(_number(r.swept[k]) is not None for r in scored)), None)
    if x_key is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def label(row: Row) -> str:
        return " ".join(f"{k}={row.swept[k]}" for k in keys if k != x_key) or "runs"

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for name in dict.fromkeys(label(r) for r in scored):
        line = sorted(
            (r for r in scored if label(r) == name), key=lambda r: _number(r.swept[x_key])
        )
        xs = [_number(r.swept[x_key]) for r in line]
        axes[0].plot(xs, [r.test_macro_f1 for r in line], "o-", label=name)
        lowest = [min(r.test_recall.values(), default=float("nan")) for r in line]
        axes[1].plot(xs, lowest, "o-", label=name)
    axes[0].set(xlabel=x_key, ylabel="test macro-F1", title="test macro-F1")
    axes[1].set(xlabel=x_key, ylabel="lowest class recall", title="the worst class's recall")
    axes[1].axhline(0.0, color="grey", lw=0.5)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(client, runs, out_dir: Path) -> tuple[list[Row], list[Path]]:
    """Write comparison.md, comparison.csv and the plots into out_dir."""
    rows = rows_for(client, runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.md").write_text(to_markdown(rows))
    (out_dir / "comparison.csv").write_text(to_csv(rows))
    return rows, [
        out_dir / "comparison.md",
        out_dir / "comparison.csv",
        *plot(client, runs, rows, out_dir),
    ]

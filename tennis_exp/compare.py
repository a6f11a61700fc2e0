"""Comparing runs: the guide's speed table (GPUs, relative speed, effective batch) from
measured MLflow runs, as a terminal table, markdown, CSV and plots.

    python -m tennis_exp.compare                      # the newest sweep of experiment tennis_4event
    python -m tennis_exp.compare --sweep-dir multirun_outputs/2026-11-27/10-00-00-123456
    python -m tennis_exp.compare --experiment tennis_4event --all   # every run, any machine
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

COLUMNS = {
    "run": "run",
    "status": "status",
    "devices": "devices",
    "strategy": "strategy",
    "per_device_batch": "per-device batch",
    "effective_batch": "effective batch",
    "learning_rate": "LR",
    "samples_per_sec": "samples/s",
    "speedup": "speed-up",
    "efficiency": "efficiency",
    "epoch_time_s": "epoch s",
    "peak_mem_gpu0_mb": "GPU0 MiB",
    "peak_mem_others_mb": "other GPUs MiB",
    "best_val_macro_f1": "best val F1",
    "test_macro_f1": "test F1",
}


@dataclass
class Row:
    run: str
    status: str
    devices: int | None
    strategy: str
    per_device_batch: int | None
    effective_batch: int | None
    learning_rate: float | None
    samples_per_sec: float | None  # median over epochs of the steady-state figure
    speedup: float | None = None  # against the sweep's job with the fewest devices
    efficiency: float | None = None  # speed-up / devices (1.0 is linear scaling)
    epoch_time_s: float | None = None
    peak_mem_gpu0_mb: float | None = None
    peak_mem_others_mb: float | None = None
    best_val_macro_f1: float | None = None
    test_macro_f1: float | None = None


def _median(client, run_id: str, key: str) -> float | None:
    values = [m.value for m in client.get_metric_history(run_id, key)]
    return statistics.median(values) if values else None


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def rows_for(client, runs) -> list[Row]:
    """One row per run (failed ones included), with speed-ups against the smallest job."""
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
                learning_rate=float(params["scaling.learning_rate"])
                if "scaling.learning_rate" in params
                else None,
                samples_per_sec=_median(client, run_id, "perf/samples_per_sec"),
                epoch_time_s=_median(client, run_id, "perf/epoch_time_s"),
                peak_mem_gpu0_mb=metrics.get("perf/peak_mem_mb/gpu0"),
                peak_mem_others_mb=max((metrics[k] for k in gpus[1:]), default=None),
                best_val_macro_f1=max(val_f1) if val_f1 else None,
                test_macro_f1=metrics.get("test/macro_f1"),
            )
        )
    measured = [r for r in rows if r.samples_per_sec and r.devices]
    if measured:
        base = min(measured, key=lambda r: r.devices)
        for row in measured:
            row.speedup = row.samples_per_sec / base.samples_per_sec
            row.efficiency = row.speedup / (row.devices / base.devices)
    return rows


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
}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    return _FORMATS.get(key, "{}").format(value)


def to_markdown(rows: list[Row]) -> str:
    header = "| " + " | ".join(COLUMNS.values()) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    body = ["| " + " | ".join(_cell(k, getattr(r, k)) for k in COLUMNS) + " |" for r in rows]
    return "\n".join([header, rule, *body]) + "\n"


def to_text(rows: list[Row]) -> str:
    cells = [list(COLUMNS.values())] + [[_cell(k, getattr(r, k)) for k in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS))
    writer.writeheader()
    writer.writerows(asdict(r) for r in rows)
    return out.getvalue()


def plot(client, runs, rows: list[Row], out_dir: Path) -> list[Path]:
    """speedup.png (measured against linear) and val_macro_f1.png (per epoch, per job)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    measured = [r for r in rows if r.speedup is not None]
    if measured:
        fig, ax = plt.subplots(figsize=(5, 4))
        devices = [r.devices for r in measured]
        base = min(devices)
        ax.plot(devices, [d / base for d in devices], "--", color="grey", label="linear (ideal)")
        ax.plot(devices, [r.speedup for r in measured], "o-", label="measured")
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
            ylabel=f"speed-up over {base} device(s)",
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
    return paths


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


def main(argv: list[str] | None = None) -> int:
    from mlflow.tracking import MlflowClient

    from tennis_exp.tracking import SWEEP_ROLE_TAG, child_runs, default_tracking_uri

    parser = argparse.ArgumentParser(
        prog="python -m tennis_exp.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--experiment", default="tennis_4event")
    parser.add_argument("--sweep-dir", help="a sweep's directory (its hydra.sweep.dir)")
    parser.add_argument("--all", action="store_true", help="every run of the experiment")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db"
    )
    parser.add_argument("--out", type=Path, default=Path("comparison"))
    args = parser.parse_args(argv)

    client = MlflowClient(args.tracking_uri or default_tracking_uri())
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        print(f"Error: no experiment named {args.experiment!r} in the store", file=sys.stderr)
        return 1
    exp_id = experiment.experiment_id
    if args.all:
        runs = [
            r
            for r in client.search_runs([exp_id], max_results=5000)
            if SWEEP_ROLE_TAG not in r.data.tags
        ]
    else:
        filter_ = f"tags.{SWEEP_ROLE_TAG} = 'sweep'"
        if args.sweep_dir:
            filter_ += f" and tags.sweep_dir = '{Path(args.sweep_dir).resolve()}'"
        parents = client.search_runs([exp_id], filter_, order_by=["start_time DESC"], max_results=1)
        if not parents:
            print(
                f"Error: no sweep found in experiment {args.experiment!r}"
                + (f" with sweep_dir {args.sweep_dir}" if args.sweep_dir else "")
                + "; pass --all to compare every run",
                file=sys.stderr,
            )
            return 1
        runs = child_runs(client, parents[0])
    rows, paths = report(client, runs, args.out)
    print(to_text(rows), end="")
    print(f"written: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

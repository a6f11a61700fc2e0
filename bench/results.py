"""What every benchmark shares: its folders, the machine it ran on, the load, writing the table."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from tennis_exp.config import usable_cpus

HERE = Path(__file__).resolve().parent


def add_dirs(parser: argparse.ArgumentParser, cache: str | None, holds: str = "") -> None:
    """--data-dir (what the bench makes once and keeps, in .cache/<cache>) and --results-dir."""
    if cache:
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=HERE.parent / ".cache" / cache,
            help=f"{holds}, kept between runs (default: .cache/{cache})",
        )
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")


def machine() -> list[str]:
    """Where a table was measured: the CPU, its cores (all, and those this process may use)
    and the CUDA device; the software that decodes, trains and predicts."""
    import av
    import torch
    from PIL import Image

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    ffmpeg = ".".join(map(str, av.library_versions["libavcodec"]))
    return [
        f"- machine: {_cpu_name()}, {os.cpu_count()} cores ({usable_cpus()} usable), "
        f"CUDA device: {gpu}",
        f"- software: torch {torch.__version__}, PyAV {av.__version__} (libavcodec {ffmpeg}), "
        f"Pillow {Image.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}",
    ]


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


def publish(text: str, results_dir: Path, name: str) -> Path:
    """Print the report and write it to results_dir/name."""
    print(text)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / name
    path.write_text(text)
    print(f"[bench] written to {path}")
    return path

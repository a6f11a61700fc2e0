"""What every benchmark's report shares: the CPU's name, the load, and writing the table."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_name() -> str:
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

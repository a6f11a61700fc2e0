"""Every `python -m tennis_exp` command in the guides (README.md and every docs/*.md page, the
zh-TW guide included) runs as written.

Commands run as dry runs (the plan for any profile, without its GPUs or data) unless they are
smoke-sized (`debug=smoke`), which run for real; outputs and the MLflow store go to tmp_path.
Every dry run is composed and planned in-process, job by job; as a command in a subprocess,
the first of each kind (a run or a sweep, its launcher, smoke-sized or not) runs in the fast
suite and the others in `make test-all`.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

import pytest
import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import open_dict

from tennis_exp.engine.devicepool import job_devices
from tennis_exp.engine.train import train

from ..helpers.commands import run_cli
from ..helpers.configs import ROOT, compose_config

GUIDES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_STOP = {">", ">>", "2>&1", "&", "|", "&&", ";"}


def commands(path: Path) -> list[list[str]]:
    """The tennis_exp arguments of every command in the file's ```bash blocks."""
    found = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line.split("#", 1)[0]) if "tennis_exp" in line else []
            if "torchrun" in tokens or "tennis_exp" not in tokens:
                continue  # torchrun needs its own launcher; `-m tennis_exp.compare` is another tool
            args = []
            for token in tokens[tokens.index("tennis_exp") + 1 :]:
                if token in _STOP or token.startswith(">"):
                    break
                args.append(token)
            found.append(args)
    return found


FOUND = [(path.name, args) for path in GUIDES for args in commands(path)]
# A command that several guides give runs once.
CASES = list({tuple(args): (guide, args) for guide, args in reversed(FOUND)}.values())[::-1]


def test_the_guides_have_commands():
    """The front door, the users' own guide and the topic pages that teach training all give
    commands, so the collection above cannot silently find none."""
    teaching = {"README.md", "multi_gpu_guide.zh-TW.md", "hardware.md", "recipe.md", "transfer.md"}
    assert teaching <= {name for name, _ in FOUND}


def _skip_reason(args: list[str], in_process: bool) -> str | None:
    if any(a.startswith("resume=") for a in args):
        return "resume needs an interrupted run: test_resume.py runs it"
    if not in_process and any(a.startswith("hydra/launcher=") and "slurm" in a for a in args):
        return "needs a SLURM cluster: test_distributed.py runs its local form"
    return None


def _kind(args: list[str]) -> tuple[bool, str, bool]:
    """What a command exercises beyond its config: a sweep or not, its launcher, real work."""
    launcher = next((a.split("=", 1)[1] for a in args if a.startswith("hydra/launcher=")), "")
    return "--multirun" in args, launcher, "debug=smoke" in args


def _runs_in_the_fast_suite(cases) -> list:
    """Every case as a subprocess: of each kind, the one with the fewest jobs in the fast suite
    and the others behind `slow` (test_guide_command_plans composes and plans them all)."""
    fewest = {}
    for _, args in cases:
        if _skip_reason(args, in_process=False) is None:
            best = fewest.get(_kind(args))
            if best is None or len(_jobs(args)) < len(_jobs(best)):
                fewest[_kind(args)] = args
    return [
        pytest.param(guide, args, id=_case_id(guide, args),
                     marks=() if fewest.get(_kind(args)) is args else (pytest.mark.slow,))
        for guide, args in cases
    ]  # fmt: skip


def _jobs(args: list[str]) -> list[list[str]]:
    """The overrides of each job of the command: one, or one per point of its sweep."""
    parsed = OverridesParser.create().parse_overrides([a for a in args if a != "--multirun"])
    [jobs] = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return jobs


def _case_id(guide: str, args: list[str]) -> str:
    return f"{guide}: {' '.join(args) or '(defaults)'}"


def _extra(tmp_path: Path, smoke: bool) -> list[str]:
    extra = [
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    if smoke:
        return [*extra, f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}"]
    return [*extra, "dry_run=true"]


@pytest.mark.parametrize(("guide", "args"), _runs_in_the_fast_suite(CASES))
def test_guide_command_runs(tiny_twin, store, tmp_path, guide, args):
    reason = _skip_reason(args, in_process=False)
    if reason:
        pytest.skip(reason)
    smoke = "debug=smoke" in args
    extra = _extra(tmp_path, smoke)
    if smoke:  # trained on the session's tiny twin: what debug=smoke generates
        extra.append(f"data.root={tiny_twin}")
    out = run_cli([*args, *extra], cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, f"{guide}: {' '.join(args)}\n{out.stderr[-2000:]}"
    assert ("test (best val weights)" if smoke else "Dry run: nothing trained") in out.stdout


DRY_RUNS = [(guide, args) for guide, args in CASES if "debug=smoke" not in args]


@pytest.mark.parametrize(
    ("guide", "args"), DRY_RUNS, ids=[_case_id(guide, args) for guide, args in DRY_RUNS]
)
def test_guide_command_plans(tmp_path, monkeypatch, caplog, guide, args):
    """Each job of the command (a sweep's, one by one) composed with the command's overrides
    and run as its process runs it, a dry run: no GPU, data or store needed."""
    reason = _skip_reason(args, in_process=True)
    if reason:
        pytest.skip(reason)
    monkeypatch.chdir(tmp_path)  # relative paths as the command in its own folder sees them
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # CUDA_VISIBLE_DEVICES=""
    caplog.set_level(logging.INFO)
    jobs = _jobs([*args, *_extra(tmp_path, smoke=False)])
    sweep_dir = str(tmp_path / "sweep") if "--multirun" in args else None
    for number, overrides in enumerate(jobs):
        cfg = compose_config(overrides, hydra=True)
        launcher = cfg.hydra.launcher
        with open_dict(cfg):
            del cfg["hydra"]
        caplog.clear()
        with job_devices(cfg, sweep_dir, launcher) as job_cfg:
            assert train(job_cfg, tmp_path / f"job{number}", overrides, sweep_dir) is None
        assert "Dry run: nothing trained" in caplog.text, f"{guide}: {' '.join(overrides)}"

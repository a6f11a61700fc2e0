"""Every `python -m tennis_exp` command in the guides (README.md and every docs/*.md page, the
zh-TW guide included) runs as written.

Commands run as dry runs (the plan for any profile, without its GPUs or data) unless they are
smoke-sized (`debug=smoke`), which run for real; outputs and the MLflow store go to tmp_path.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ..helpers.commands import run_cli
from ..helpers.configs import ROOT

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


@pytest.mark.parametrize(
    ("guide", "args"), CASES, ids=[f"{g}: {' '.join(a) or '(defaults)'}" for g, a in CASES]
)
def test_guide_command_runs(tmp_path, guide, args):
    if any(a.startswith("resume=") for a in args):
        pytest.skip("resume needs an interrupted run: test_resume.py runs it")
    if any(a.startswith("hydra/launcher=") and "slurm" in a for a in args):
        pytest.skip("needs a SLURM cluster: test_distributed.py runs its local form")
    smoke = "debug=smoke" in args
    extra = [
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    if smoke:
        extra += [f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}"]
    else:
        extra.append("dry_run=true")
    out = run_cli([*args, *extra], cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, f"{guide}: {' '.join(args)}\n{out.stderr[-2000:]}"
    assert ("test (best val weights)" if smoke else "Dry run: nothing trained") in out.stdout

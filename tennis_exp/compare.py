"""`python -m tennis_exp.compare`: the speed table of a sweep, or of every run, from MLflow.

python -m tennis_exp.compare                      # the newest sweep of experiment tennis_4event
python -m tennis_exp.compare --sweep-dir multirun_outputs/2026-11-27/10-00-00-123456
python -m tennis_exp.compare --experiment tennis_4event --all   # every run, any machine
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tennis_exp.config import Config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tennis_exp.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--experiment", default=Config.experiment_name, help="default: %(default)s")
    parser.add_argument("--sweep-dir", help="a sweep's directory (its hydra.sweep.dir)")
    parser.add_argument("--all", action="store_true", help="every run of the experiment")
    parser.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db"
    )
    parser.add_argument("--out", type=Path, default=Path("comparison"))
    args = parser.parse_args(argv)

    from mlflow.tracking import MlflowClient

    from tennis_exp.tracking.compare import report, to_text
    from tennis_exp.tracking.runs import default_tracking_uri, runs_tagged
    from tennis_exp.tracking.sweep import SWEEP_ROLE_TAG, child_runs

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
        tags = {SWEEP_ROLE_TAG: "sweep"}
        if args.sweep_dir:
            tags["sweep_dir"] = str(Path(args.sweep_dir).resolve())
        parents = sorted(
            runs_tagged(client, exp_id, tags), key=lambda r: r.info.start_time, reverse=True
        )
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

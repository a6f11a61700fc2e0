"""`python -m tennis_exp.server`: an MLflow server for a lab (`make server`), or the UI on the
local store (`make ui`); both print the address of the experiment's runs.

python -m tennis_exp.server                       # mlflow-server/mlflow.db, on 127.0.0.1:5000
python -m tennis_exp.server --host 0.0.0.0 --store postgresql+psycopg2://mlflow@db/mlflow
python -m tennis_exp.server --ui                  # the UI on ./mlflow.db ($MLFLOW_TRACKING_URI)
python -m tennis_exp.server -- --allowed-hosts node01:5000   # after --: more mlflow options
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tennis_exp.config import Config

SERVER_DIR = Path("mlflow-server")  # a lab server's database and artifacts, by default


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 1, as every command of the project
        sys.exit(f"Error: {message} (see python -m tennis_exp.server --help)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    ours, extra = argv[:cut], argv[cut + 1 :]
    parser = _Parser(
        prog="python -m tennis_exp.server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ui", action="store_true", help="the UI on the local store")
    parser.add_argument(
        "--store",
        help=f"database URI (default: sqlite:///{SERVER_DIR}/mlflow.db; with --ui, "
        "$MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    parser.add_argument(
        "--artifacts",
        default=str(SERVER_DIR / "artifacts"),
        help="where the server keeps artifacts: a folder or a URI such as s3://bucket/path",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--workers", type=int, help="server processes (MLflow's default: 4)")
    parser.add_argument("--experiment", default=Config.experiment_name, help="default: %(default)s")
    args = parser.parse_args(ours)

    from tennis_exp.errors import UserError
    from tennis_exp.tracking.runs import default_tracking_uri
    from tennis_exp.tracking.server import ServerSpec, serve, show_remote

    if args.ui:
        store, artifacts = args.store or default_tracking_uri(), None
    else:
        store = args.store or f"sqlite:///{(SERVER_DIR / 'mlflow.db').resolve()}"
        artifacts = (
            args.artifacts if "://" in args.artifacts else str(Path(args.artifacts).resolve())
        )
    try:
        if store.startswith(("http://", "https://")):  # a server already: nothing to start
            return show_remote(store, args.experiment)
        spec = ServerSpec(store, artifacts, args.host, args.port, args.workers, tuple(extra))
        return serve(spec, args.experiment)
    except UserError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""vnnlab-compare: a sweep's runs as a table (printed, and written as comparison.md and
comparison.csv) and a figure of a metric against a swept parameter, all logged to the sweep's
parent run."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vnnlab.errors import BadInputError
from vnnlab.sweep.compare import CSV, MARKDOWN, find_sweep, log_comparison, to_csv, to_markdown
from vnnlab.tracking.store import open_existing_store, resolve_tracking_uri


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like every other bad input
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vnnlab-compare", description=__doc__)
    parser.add_argument("sweep", nargs="?", metavar="SWEEP_RUN_ID",
                        help="the sweep's parent run id (default: the latest sweep)")  # fmt: skip
    parser.add_argument("--experiment", metavar="NAME",
                        help="look for the latest sweep in this experiment only")  # fmt: skip
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                        "sqlite:///mlflow.db in this folder)")  # fmt: skip
    parser.add_argument("--sort", metavar="KEY", help="sort by this metric or param")
    parser.add_argument("--descending", action="store_true", help="largest first")
    parser.add_argument("--metric", help="the figure's y (default: --sort, or the first test/)")
    parser.add_argument("--x", metavar="PARAM", help="the figure's x (default: first swept)")
    parser.add_argument("--group", metavar="PARAM", help="one line per value of this param")
    parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                        help="where comparison.csv and comparison.md go (default: .)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.out.exists() and not args.out.is_dir():
            raise BadInputError(f"--out {args.out} is a file: expected a folder")
        uri = resolve_tracking_uri(args.tracking_uri, Path.cwd())
        client = open_existing_store(uri, key="--tracking-uri")
        parent = find_sweep(client, args.sweep, args.experiment)
        rows, logged = log_comparison(
            client, parent, args.sort, args.descending, args.metric, args.x, args.group
        )
    except BadInputError as error:
        print(f"vnnlab-compare: {error}", file=sys.stderr)
        sys.exit(2)
    print(to_markdown(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / MARKDOWN).write_text(to_markdown(rows) + "\n", encoding="utf-8")
    to_csv(rows, args.out / CSV)
    # where things went on stderr, so that stdout is the table alone (`> table.md`)
    info = parent.info
    print(f"sweep {info.run_name!r} ({info.run_id}): {len(rows)} runs", file=sys.stderr)
    print(f"wrote {args.out / CSV} and {args.out / MARKDOWN}", file=sys.stderr)
    print(f"logged {', '.join(logged)} to {info.artifact_uri}", file=sys.stderr)

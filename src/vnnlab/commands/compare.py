"""vnnlab-compare: a sweep's runs as a table (printed, and written as comparison.md and
comparison.csv) and a figure of a metric against a swept parameter, all logged to the sweep's
parent run."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vnnlab.errors import BadInputError
from vnnlab.sweep.aggregate import SUMMARY_CSV, SUMMARY_MD, flat, log_summary, summarize
from vnnlab.sweep.compare import (
    CSV,
    MARKDOWN,
    child_runs,
    find_sweep,
    log_comparison,
    swept_parameters,
    table_of,
    to_csv,
    to_markdown,
)
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
    study = parser.add_argument_group(
        "a study over repeated splits or seeds (summary.md, summary.csv, summary.png)"
    )
    study.add_argument("--over", metavar="KEY",
                       help="report test metrics as mean ± s.e. over this swept key "
                       "(data.split_column, seed)")  # fmt: skip
    study.add_argument("--select", metavar="METRIC",
                       help="with --over: per value of KEY, the run with the smallest METRIC "
                       "(a validation metric) is the one reported")  # fmt: skip
    study.add_argument("--select-largest", action="store_true",
                       help="select the largest METRIC instead (val/acc, val/elbo)")  # fmt: skip
    study.add_argument("--per", metavar="PARAM",
                       help="with --select: one row per value of PARAM (e.g. inference), each "
                       "selecting among its own runs")  # fmt: skip
    study.add_argument("--refit", metavar="PARAM",
                       help="with --select: select among the runs with PARAM false and report "
                       "each chosen run's twin with PARAM true (data.train_on_val: the chosen "
                       "setting refitted on train + val)")  # fmt: skip
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
            client, parent, args.sort, args.descending, args.metric, args.x, args.group,
            also=(args.select,),  # the table shows the metric a study selects by
        )  # fmt: skip
        if args.over is not None:
            summary, x = _summary(client, parent, args)
            logged += log_summary(client, parent.info.run_id, summary, x)
    except BadInputError as error:
        print(f"vnnlab-compare: {error}", file=sys.stderr)
        sys.exit(2)
    if args.over is not None:
        print(to_markdown(summary))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / SUMMARY_MD).write_text(to_markdown(summary) + "\n", encoding="utf-8")
        to_csv(flat(summary), args.out / SUMMARY_CSV)
        print(f"wrote {args.out / SUMMARY_CSV} and {args.out / SUMMARY_MD}", file=sys.stderr)
    else:
        print(to_markdown(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / MARKDOWN).write_text(to_markdown(rows) + "\n", encoding="utf-8")
    to_csv(rows, args.out / CSV)
    # where things went on stderr, so that stdout is the table alone (`> table.md`)
    info = parent.info
    print(f"sweep {info.run_name!r} ({info.run_id}): {len(rows)} runs", file=sys.stderr)
    print(f"wrote {args.out / CSV} and {args.out / MARKDOWN}", file=sys.stderr)
    print(f"logged {', '.join(logged)} to {info.artifact_uri}", file=sys.stderr)


def _summary(client, parent, args: argparse.Namespace) -> tuple[list[dict], str | None]:
    """The study's summary rows, and the key its figure puts on x (None: a single row)."""
    for flag, value in [("--select-largest", args.select_largest), ("--per", args.per),
                        ("--refit", args.refit)]:  # fmt: skip
        if value and args.select is None:
            raise BadInputError(f"{flag} needs --select METRIC")
    children = child_runs(client, parent)
    swept = swept_parameters(parent, children)
    for flag, key in [("--per", args.per), ("--refit", args.refit)]:
        if key is not None and key not in swept:
            raise BadInputError(f"{flag} {key}: not a swept key of this sweep ({', '.join(swept)})")
    rows = table_of(children, swept, also=(args.over, args.select))
    tests = [key for key in rows[0] if key.startswith("test/")] if rows else []
    metrics = [args.metric] if args.metric else tests
    if args.select:
        by = [args.per] if args.per else []
    else:
        by = [key for key in swept if key != args.over]
    summary = summarize(rows, args.over, metrics, by, args.select, args.select_largest, args.refit)
    return summary, (by[0] if by else None)


if __name__ == "__main__":
    main()

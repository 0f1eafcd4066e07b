"""vnnlab-predict: a run trained on a table (data=tabular), applied to new rows.

    vnnlab-predict run_id=<id> data.path=new.csv [output=predictions.csv] [tracking.uri=...]
                   [data.delimiter=...]

The output keeps every input column and adds, per row: for a regressor `<target>_mean` and,
with a predictive density, `<target>_sd`, `<target>_lower95`, `<target>_upper95`; for a
classifier `p_<class>` per class and `predicted`; for PCA, the autoencoders and the VAE
`z1` … `zm` and `recon_mse`.
"""

import sys
from collections.abc import Sequence
from pathlib import Path

from vnnlab.errors import BadInputError
from vnnlab.run import console
from vnnlab.run.predict import predict

KEYS = ("run_id", "data.path", "output", "tracking.uri", "data.delimiter")


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if args in (["--help"], ["-h"]):
        print(__doc__)
        return
    try:
        arguments = _arguments(args)
        options = {"tracking_uri": arguments.get("tracking.uri"),
                   "delimiter": arguments.get("data.delimiter")}  # fmt: skip
        with console.quiet_dependencies():
            table = predict(arguments["run_id"], arguments["data.path"], **options)
    except BadInputError as error:
        print(f"vnnlab-predict: {error}", file=sys.stderr)
        sys.exit(2)
    output = Path(arguments.get("output", "predictions.csv"))
    table.to_csv(output, index=False)
    print(f"vnnlab-predict: {len(table)} rows with predictions of run {arguments['run_id']} "
          f"→ {output}")  # fmt: skip


def _arguments(argv: Sequence[str]) -> dict[str, str]:
    """key=value pairs, as on vnnlab-train's command line."""
    arguments = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in KEYS:
            raise BadInputError(f"{item!r} is not allowed: expected key=value with key one of "
                                f"{', '.join(KEYS)}")  # fmt: skip
        arguments[key] = value
    for key in ("run_id", "data.path"):
        if key not in arguments:
            raise BadInputError(f"{key}= is missing: vnnlab-predict run_id=<id> data.path=new.csv")
    return arguments


if __name__ == "__main__":
    main()

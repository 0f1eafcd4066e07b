"""Standardise the target column of a table made by `python -m vnnlab.data.uci`, and convert a
summary back to the target's units.

    python standardise.py table boston.csv boston_s.csv      # y := (y − mean) / sd, prints sd
    python standardise.py units summary.csv --sd 9.1971...   # test/nll + log sd, test/rmse × sd

Why: data=tabular standardises the inputs but keeps a regression target in its units, and the
BNN's prior N(0, s²) then applies to an output bias of about the target's mean (22 to 36 here)
and output weights of its scale: hundreds of nats of KL that the ELBO pays by under-fitting.
The papers standardise the target. mean and sd are of the whole column (all 506 … 1030 rows:
two constants shared by the 20 splits, so that one column serves every split), an affine map:
RMSE scales by sd, the NLL per point shifts by log sd, exactly; ± s.e. scale the same way.
"""

import argparse
import math

import pandas as pd


def table(src: str, dst: str) -> None:
    t = pd.read_csv(src)
    mean, sd = float(t["y"].mean()), float(t["y"].std())
    t["y"] = (t["y"] - mean) / sd
    t.to_csv(dst, index=False)
    print(f"{dst}: y standardised with mean {mean!r}, sd {sd!r} (log sd {math.log(sd):.6f})")


def units(summary: str, sd: float) -> None:
    """summary.csv of `vnnlab-compare --over data.split_column` (columns "<metric> mean",
    "<metric> se") with test/nll, test/rmse and test/mse in the target's units."""
    s = pd.read_csv(summary)
    for col in s.columns:
        metric, _, stat = col.rpartition(" ")
        if metric.endswith("/nll") and stat == "mean":
            s[col] = s[col] + math.log(sd)  # −log p(y) = −log p(y') + log sd
        elif metric.endswith("/rmse"):
            s[col] = s[col] * sd
        elif metric.endswith("/mse"):
            s[col] = s[col] * sd**2
    shown = ("n", "test/nll", "test/rmse", "test/coverage95")
    keep = [c for c in s.columns if c.split(" ")[0] in shown]
    print(s[keep].to_string(index=False))
    nll, se = s["test/nll mean"].iloc[0], s["test/nll se"].iloc[0]
    rmse, rmse_se = s["test/rmse mean"].iloc[0], s["test/rmse se"].iloc[0]
    print(f"test log-likelihood {-nll:.2f} ± {se:.2f}, RMSE {rmse:.2f} ± {rmse_se:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("src")
    t.add_argument("dst")
    u = sub.add_parser("units")
    u.add_argument("summary")
    u.add_argument("--sd", type=float, required=True)
    args = parser.parse_args()
    if args.cmd == "table":
        table(args.src, args.dst)
    else:
        units(args.summary, args.sd)


if __name__ == "__main__":
    main()

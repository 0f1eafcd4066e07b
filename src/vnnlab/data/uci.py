"""The UCI regression benchmark's format (Hernández-Lobato & Adams 2015; Gal & Ghahramani
2016) as one table of repeated splits for data=tabular:

    python -m vnnlab.data.uci ../shared/data/uci/bostonHousing boston.csv

A benchmark folder holds data.txt (whitespace-separated, no header), index_features.txt,
index_target.txt and, per split K, index_train_K.txt and index_test_K.txt (0-based rows). The
table has the inputs x1 … xd, the target y and one column split_K per split whose values are
train, val and test: `val_fraction` (the protocol's 20%) of split K's training rows, drawn by a
shuffle seeded with K, choose its hyper-parameters. A sweep over data.split_column is then the
whole protocol (experiments/uci_regression).
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def _indices(folder: Path, name: str) -> np.ndarray:
    return np.loadtxt(folder / name, dtype=int, ndmin=1)


def split_count(folder: Path) -> int:
    return len(list(folder.glob("index_train_*.txt")))


def uci_table(folder: Path, val_fraction: float = 0.2) -> pd.DataFrame:
    """The benchmark in `folder` as a table with one split column per split."""
    data = np.loadtxt(folder / "data.txt", ndmin=2)
    features, [target] = (
        _indices(folder, "index_features.txt"),
        _indices(folder, "index_target.txt"),
    )
    table = pd.DataFrame(data[:, features], columns=[f"x{j + 1}" for j in range(len(features))])
    table["y"] = data[:, target]
    for split in range(split_count(folder)):
        train = _indices(folder, f"index_train_{split}.txt")
        shuffled = np.random.default_rng(split).permutation(train)
        n_val = round(val_fraction * len(train))
        names = np.full(len(table), "", dtype=object)  # rows in neither list: in no split
        names[train] = "train"
        names[shuffled[:n_val]] = "val"
        names[_indices(folder, f"index_test_{split}.txt")] = "test"
        table[f"split_{split}"] = names
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a benchmark folder (data.txt, index_*.txt)")
    parser.add_argument("out", type=Path, help="the CSV to write")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    args = parser.parse_args()
    table = uci_table(args.folder, args.val_fraction)
    table.to_csv(args.out, index=False)
    splits = split_count(args.folder)
    print(f"{args.out}: {len(table)} rows, {table.shape[1] - 1 - splits} inputs, {splits} splits "
          f"(data.split_column=split_0 … split_{splits - 1})")  # fmt: skip


if __name__ == "__main__":
    main()

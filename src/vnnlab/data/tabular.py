"""Your own table: CSV, Parquet or NumPy (.npy, .npz) from `data.path`, as a data module.

The task follows from `data.target`: no target → inputs only (PCA, autoencoders, VAE); a real
target → regression; labels → classification (`data.task` says so when it is not obvious: text
or boolean labels, or integers with at most 20 distinct values, are classes). A model of the
other kind on such a target is refused with the `data.task=...` that reads it its way. Inputs are
standardised with the training split's mean and standard deviation (the data module's state, so
a checkpoint carries them for vnnlab-predict); a regression target stays on its own scale, so
every regression metric is in the target's units (`model.standardize_target=true` has the
network predict it standardised on the training rows, its metrics still in those units). Rows
are split train/val/test by seeded fractions, or by a column whose values are train, val and
test; a table of repeated splits carries one such column per split, `data.split_column` picks
one and the others are no inputs (a sweep over `data.split_column` is then one study:
vnnlab-compare --over data.split_column; `vnnlab-train -m data.split_column=all` sweeps every
such column of the table, split_columns). `data.train_on_val=true` trains on the val rows too:
the refit, on all of a split's training rows, of a setting chosen on validation.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from vnnlab.data.base import DataInfo, VNNDataModule
from vnnlab.errors import BadInputError, bad_value
from vnnlab.schema import NonNegativeInt, PositiveInt, Range

SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".npy", ".npz")
MAX_CLASSES_INFERRED = 20  # integer targets with at most this many values are taken as classes
SPLITS = ("train", "val", "test")
Fraction = Annotated[float, Range(low=0, high=1, high_open=True)]  # a share of the rows


def read_table(path: str | Path, delimiter: str | None = None) -> pd.DataFrame:
    """The file as a DataFrame with text column names; BadInputError when it cannot be read.
    .npy: a 2-D array, columns "0", "1", ...; .npz: one 1-D array per column, named by key."""
    file = Path(path).expanduser()
    if not file.is_file() or file.suffix.lower() not in SUFFIXES:
        raise bad_value("data.path", str(path), "an existing " + ", ".join(SUFFIXES) + " file")
    try:
        table = _read(file, delimiter)
    except (ValueError, OSError, pd.errors.ParserError) as error:
        reason = " ".join(str(error).split())[:200]
        raise BadInputError(f"data.path={path}: cannot read it as a table ({reason})") from None
    table.columns = [str(column) for column in table.columns]
    return table


def _read(file: Path, delimiter: str | None) -> pd.DataFrame:
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(file)
    if suffix == ".npy":
        array = np.load(file, allow_pickle=False)
        if array.ndim != 2:
            raise ValueError(f"expected a 2-D array, got shape {array.shape}")
        return pd.DataFrame(array)
    if suffix == ".npz":
        with np.load(file, allow_pickle=False) as arrays:
            return pd.DataFrame({key: arrays[key] for key in arrays.files})
    # sep=None: the python engine sniffs the delimiter from the first lines
    return pd.read_csv(file, sep=delimiter, engine="python" if delimiter is None else "c")


class TabularDataModule(VNNDataModule):
    """A table from `path`; see the module docstring for the task, scaling and split."""

    def __init__(
        self,
        path: str | None = None,
        target: str | Sequence[str] | None = None,
        task: Literal["auto", "regression", "classification"] = "auto",
        features: Sequence[str] | None = None,
        drop: Sequence[str] = (),
        delimiter: str | None = None,
        missing: Literal["error", "drop"] = "error",
        val_fraction: Fraction = 0.15,
        test_fraction: Fraction = 0.15,
        split_column: str | None = None,
        train_on_val: bool = False,
        batch_size: PositiveInt = 64,
        seed: NonNegativeInt = 0,
    ):
        super().__init__()
        self.path = path
        self.targets = [target] if isinstance(target, str) else list(target or [])
        self.task = task
        self.features = list(features) if features is not None else None
        self.drop = list(drop)
        self.delimiter = delimiter
        self.missing = missing
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_column = split_column
        self.train_on_val = train_on_val
        self.batch_size = batch_size
        self.seed = seed
        self.splits: dict[str, tuple[Tensor, ...]] = {}
        self.scaling: dict[str, Any] = {}  # input columns, their loc and scale, class labels

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        if args.get("path") is None:
            raise bad_value("data.path", None, "a file: data.path=/path/to/table.csv")
        total = args.get("val_fraction", 0.15) + args.get("test_fraction", 0.15)
        if args.get("split_column") is None and total >= 1:
            raise bad_value("data.test_fraction", args.get("test_fraction", 0.15),
                            "a number with data.val_fraction + data.test_fraction < 1")  # fmt: skip

    # --- loading --------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        table = self._clean(read_table(self.path, self.delimiter))
        inputs = self._input_columns(table)
        assignment = self._assignment(table)
        labels = self._labels(table) if self._task(table) == "classification" else None
        x = numeric_columns(table, inputs)
        fitted = self._fitted_rows(assignment)
        loc, scale = _standardisation(x[fitted])
        self.scaling = {"inputs": inputs, "loc": loc.tolist(), "scale": scale.tolist(),
                        "targets": self.targets, "task": self._task(table),
                        "classes": labels[1] if labels is not None else None,
                        "other_task": self._other_task(table)}  # fmt: skip
        x = (x - loc) / scale
        y = self._target_tensor(table, labels)
        for name in SPLITS:
            chosen = fitted if name == "train" else assignment == name
            rows = torch.from_numpy(np.flatnonzero(chosen))
            part = torch.from_numpy(x).float()[rows]
            self.splits[name] = (part,) if y is None else (part, y[rows])

    def _clean(self, table: pd.DataFrame) -> pd.DataFrame:
        known = list(table.columns)
        named = {
            "data.target": self.targets,
            "data.drop": self.drop,
            "data.features": self.features or [],
            "data.split_column": [self.split_column] if self.split_column else [],
        }
        for key, names in named.items():
            for name in names:
                if name not in known:
                    raise bad_value(key, name, f"a column of {self.path}: {', '.join(known)}")
        used = [*self._input_columns(table), *self.targets]
        used += [self.split_column] if self.split_column else []
        holes = table[used].isna()
        if holes.any().any():
            if self.missing == "error":
                column = holes.any().idxmax()
                row = int(np.flatnonzero(holes[column].to_numpy())[0])
                raise BadInputError(
                    f"data.path={self.path}: column {column!r} has a missing value in row "
                    f"{row + 1} (of the data, after the header); data.missing=drop drops such rows"
                )
            table = table[~holes.any(axis=1)].reset_index(drop=True)
        return table

    def _input_columns(self, table: pd.DataFrame) -> list[str]:
        if self.features is not None:
            return list(self.features)
        excluded = {*self.targets, *self.drop, self.split_column}
        if self.split_column is not None:  # a table of repeated splits: the others are no inputs
            excluded |= {column for column in table.columns if _names_splits(table[column])}
        return [column for column in table.columns if column not in excluded]

    def _task(self, table: pd.DataFrame) -> str | None:
        if not self.targets:
            return None
        if self.task != "auto":
            return self.task
        column = table[self.targets[0]]
        if len(self.targets) == 1 and _looks_like_classes(column):
            return "classification"
        return "regression"

    def _other_task(self, table: pd.DataFrame) -> str | None:
        """The task this target also reads as: numbers read as classes are real values too,
        and integers read as real values are labels too (one column)."""
        if len(self.targets) != 1:
            return None
        column = table[self.targets[0]]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if self._task(table) == "classification":
            return "regression" if numeric else None
        return "classification" if numeric and np.all(np.mod(column.to_numpy(), 1) == 0) else None

    def _labels(self, table: pd.DataFrame) -> tuple[np.ndarray, list]:
        if len(self.targets) != 1:
            raise bad_value("data.target", self.targets, "one column for classification")
        codes, classes = pd.factorize(table[self.targets[0]], sort=True)
        if len(classes) < 2:
            raise bad_value("data.target", self.targets[0], "a column with at least 2 classes")
        return codes, [c.item() if hasattr(c, "item") else c for c in classes]

    def _target_tensor(
        self, table: pd.DataFrame, labels: tuple[np.ndarray, list] | None
    ) -> Tensor | None:
        """(N, q) real targets, or (N,) class indices into the sorted labels."""
        if not self.targets:
            return None
        if labels is not None:
            return torch.from_numpy(labels[0]).long()
        return torch.from_numpy(numeric_columns(table, self.targets)).float()

    def _fitted_rows(self, assignment: np.ndarray) -> np.ndarray:
        """The rows the model trains on (and its scaling comes from): train, and val too with
        `train_on_val` (the refit of a chosen setting on all of a split's training rows, as
        the UCI papers report it; its val/* metrics are then scored on rows it trained on)."""
        fitted = assignment == "train"
        return fitted | (assignment == "val") if self.train_on_val else fitted

    def _assignment(self, table: pd.DataFrame) -> np.ndarray:
        """ "train", "val" or "test" per row: from the split column, else a seeded shuffle."""
        n = len(table)
        if self.split_column is not None:
            assignment = table[self.split_column].astype(str).str.strip().str.lower().to_numpy()
            unknown = sorted(set(assignment) - set(SPLITS))
            if unknown:
                allowed = f"a column whose values are train, val, test (found {unknown[0]!r})"
                raise bad_value("data.split_column", self.split_column, allowed)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed)).numpy()
            n_val, n_test = (round(self.fractions[name] * n) for name in ("val", "test"))
            assignment = np.full(n, "train", dtype=object)
            assignment[order[:n_val]] = "val"
            assignment[order[n_val : n_val + n_test]] = "test"
        counts = {name: int((assignment == name).sum()) for name in SPLITS}
        if counts["train"] < 2 or counts["val"] < 1 or counts["test"] < 1:
            raise BadInputError(
                f"data.path={self.path}: too few rows for the split ({n} rows: {counts}); "
                "need at least 2 train, 1 val and 1 test row"
            )
        return assignment

    # --- what the data module offers -------------------------------------------------------

    def info(self) -> DataInfo:
        self.setup()
        x = self.splits["train"][0]
        task = self.scaling["task"]
        if task == "classification":
            target, out = "class", len(self.scaling["classes"])
        elif task == "regression":
            target, out = "real", len(self.targets)
        else:
            target, out = None, 0
        other = self.scaling.get("other_task")
        other_target = None
        if other is not None:  # what a model of the other kind is told to add
            other_target = ("real" if other == "regression" else "class", f"data.task={other}")
        return DataInfo(in_features=x.shape[1], n_train=len(x), target=target, out_features=out,
                        other_target=other_target)  # fmt: skip

    def split(self, name: str) -> tuple[Tensor, ...]:
        self.setup()
        return self.splits[name]

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: what vnnlab-predict needs to treat new rows alike."""
        return dict(self.scaling)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scaling = dict(state_dict)


def split_columns(path: str | Path, delimiter: str | None = None) -> list[str]:
    """The table's columns of split names (train, val, test), in its order."""
    table = read_table(path, delimiter)
    return [name for name in table.columns if _names_splits(table[name])]


def _names_splits(column: pd.Series) -> bool:
    """A column of split names (train, val, test), as a table of repeated splits has one per
    split."""
    if pd.api.types.is_numeric_dtype(column):
        return False
    return set(column.astype(str).str.strip().str.lower()) <= set(SPLITS)


def _looks_like_classes(column: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return True
    values = column.to_numpy()
    integral = np.all(np.mod(values, 1) == 0)
    return bool(integral and column.nunique() <= MAX_CLASSES_INFERRED)


def numeric_columns(table: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The columns as float64 (rows, columns); BadInputError naming the first value that is not
    a number."""
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() & table[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise BadInputError(
                f"data.path: column {column!r} holds {table[column].iloc[row]!r} in row "
                f"{row + 1} (of the data, after the header), not a number; list it in "
                "data.drop, or pick data.features"
            )
    return table[list(columns)].apply(pd.to_numeric).to_numpy(dtype=np.float64, copy=True)


def _standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (1 for a constant column)."""
    loc = x.mean(axis=0)
    scale = x.std(axis=0)
    return loc, np.where(scale > 0, scale, 1.0)

"""The UCI benchmark's split format read as one table of repeated splits (vnnlab.data.uci), on
a small folder of that format written here."""

import numpy as np
import pytest

from helpers import QUICK
from vnnlab import tags
from vnnlab.data.tabular import TabularDataModule
from vnnlab.data.uci import uci_table


def write_benchmark(folder, n=50, splits=3, scores=False):
    """data.txt and its indices; `scores`: the target a quality score, integers 3 … 8."""
    rng = np.random.default_rng(1)
    data = rng.normal(size=(n, 4))  # columns: x, x, target, x
    if scores:
        data[:, 2] = rng.integers(3, 9, size=n)
    np.savetxt(folder / "data.txt", data)
    np.savetxt(folder / "index_features.txt", [0, 1, 3], fmt="%d")
    np.savetxt(folder / "index_target.txt", [2], fmt="%d")
    for split in range(splits):
        order = rng.permutation(n)
        np.savetxt(folder / f"index_train_{split}.txt", order[:40], fmt="%d")
        np.savetxt(folder / f"index_test_{split}.txt", order[40:], fmt="%d")
    return data


def test_each_split_keeps_its_test_rows_and_a_fifth_of_its_training_rows_for_validation(tmp_path):
    data = write_benchmark(tmp_path)
    table = uci_table(tmp_path)
    assert list(table.columns) == ["x1", "x2", "x3", "y", "split_0", "split_1", "split_2"]
    np.testing.assert_allclose(table[["x1", "x2", "x3"]], data[:, [0, 1, 3]])
    np.testing.assert_allclose(table["y"], data[:, 2])
    for split in range(3):
        test = np.loadtxt(tmp_path / f"index_test_{split}.txt", dtype=int)
        names = table[f"split_{split}"]
        assert sorted(np.flatnonzero(names == "test")) == sorted(test)
        assert (names == "val").sum() == 8 and (names == "train").sum() == 32  # 20% of 40
    assert not table["split_0"].equals(table["split_1"])  # each split its own validation rows

    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    data_module = TabularDataModule(path=str(path), target="y", split_column="split_1")
    assert data_module.info().n_train == 32 and data_module.info().in_features == 3


def test_train_on_val_fits_and_scales_on_the_val_rows_too(tmp_path):
    write_benchmark(tmp_path)
    path = tmp_path / "table.csv"
    table = uci_table(tmp_path)
    table.to_csv(path, index=False)
    refit = TabularDataModule(path=str(path), target="y", split_column="split_0", train_on_val=True)
    assert refit.info().n_train == 40  # the 32 training rows and the 8 val rows
    fitted = table["split_0"].isin(["train", "val"]).to_numpy()
    x = table[["x1", "x2", "x3"]].to_numpy()
    np.testing.assert_allclose(refit.state_dict()["loc"], x[fitted].mean(axis=0))
    (x_test, _) = refit.split("test")
    assert len(x_test) == 10  # the test rows stay out
    assert len(refit.split("val")[0]) == 8


def test_split_column_all_sweeps_every_split_of_any_table_and_target(command, tmp_path):
    """Five splits (as protein has) and a target of integer scores: the study sets
    data.task=regression itself, and data.split_column=all finds the five columns."""
    write_benchmark(tmp_path, splits=5, scores=True)
    uci_table(tmp_path).to_csv(tmp_path / "scores.csv", index=False)
    result = command.run("-m", "+experiment=uci_regression", "data.path=scores.csv",
                         "data.split_column=all", *QUICK, "trainer.max_epochs=1")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = command.runs()
    [parent] = [r for r in runs if r.data.tags.get(tags.SWEEP_ROLE) == tags.PARENT]
    children = {r.data.params["data.split_column"] for r in runs if r is not parent}
    assert children == {f"split_{k}" for k in range(5)}
    assert parent.info.run_name == "uci_regression: 5 splits"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["data=tabular"], "data.split_column=all needs the table on the command line"),
        (["data=tabular", "data.path=plain.csv"], "no column of split names"),
    ],
)
def test_split_column_all_without_split_columns_is_one_line(command, tmp_path, arguments, message):
    (tmp_path / "plain.csv").write_text("x,y\n1,2\n3,4\n")
    result = command.run("-m", *arguments, "data.split_column=all")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert message in line
    assert command.runs() == []

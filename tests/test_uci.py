"""The UCI benchmark's split format read as one table of repeated splits (vnnlab.data.uci), on
a small folder of that format written here."""

import numpy as np

from vnnlab.data.tabular import TabularDataModule
from vnnlab.data.uci import uci_table


def write_benchmark(folder, n=50, splits=3):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(n, 4))  # columns: x, x, target, x
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

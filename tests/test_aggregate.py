"""A study over repeated splits: a sweep over a table's split columns, each split's setting
chosen by its validation metric, the test metrics as mean ± s.e. (vnnlab-compare --over)."""

import csv
import math

import pytest

from helpers import split_table
from vnnlab import tags
from vnnlab.commands import compare
from vnnlab.errors import BadInputError
from vnnlab.run.load import load_run
from vnnlab.sweep.aggregate import Estimate, chosen_per_group, flat, summarize

ROWS = [  # two splits × two learning rates; split "b" has no val/loss for lr 0.1 (a failed run)
    {"split": "a", "lr": 0.01, "val/loss": 2.0, "test/mse": 1.0},
    {"split": "a", "lr": 0.1, "val/loss": 1.0, "test/mse": 3.0},
    {"split": "b", "lr": 0.01, "val/loss": 5.0, "test/mse": 6.0},
    {"split": "b", "lr": 0.1, "val/loss": None, "test/mse": 0.5},
    {"split": "c", "lr": 0.01, "val/loss": 4.0, "test/mse": 10.0},
    {"split": "c", "lr": 0.1, "val/loss": 4.5, "test/mse": 2.0},
]


def test_each_split_reports_the_run_its_validation_metric_chose():
    chosen = chosen_per_group(ROWS, "split", "val/loss")
    assert [(row["split"], row["lr"]) for row in chosen] == [("a", 0.1), ("b", 0.01), ("c", 0.01)]
    largest = chosen_per_group(ROWS, "split", "val/loss", largest=True)
    assert [(row["split"], row["lr"]) for row in largest] == [("a", 0.01), ("b", 0.01), ("c", 0.1)]


def test_mean_and_standard_error_against_a_hand_computation():
    [summary] = summarize(ROWS, "split", ["test/mse"], select="val/loss")
    values = [3.0, 6.0, 10.0]  # the chosen runs' test/mse
    mean = sum(values) / 3
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert summary["n"] == 3 and summary["selected by"] == "min val/loss"
    assert summary["test/mse"].mean == pytest.approx(mean)
    assert summary["test/mse"].se == pytest.approx(sd / math.sqrt(3))
    assert str(Estimate(6.333, 2.03, 3)) == "6.333 ± 2"


def test_a_metric_one_method_lacks_is_two_empty_cells_of_the_same_columns():
    """One row per method, the ELBO only BBB's: the CSV keeps one header for both rows."""
    rows = [{"split": split, "inference": method, "test/nll": nll} | elbo
            for split, nll in [("a", 1.0), ("b", 3.0)]
            for method, elbo in [("map", {}), ("bbb", {"test/elbo": -nll})]]  # fmt: skip
    summary = summarize(rows, "split", ["test/nll", "test/elbo"], by=["inference"])
    map_row, bbb_row = sorted(flat(summary), key=lambda row: row["inference"] == "bbb")
    assert list(map_row) == list(bbb_row)
    assert "test/elbo" not in map_row
    assert map_row["test/elbo mean"] is None and bbb_row["test/elbo mean"] == pytest.approx(-2.0)
    assert bbb_row["test/nll se"] == pytest.approx(1.0)  # sd √2 over √2 splits


def test_without_selection_each_setting_is_summarized_over_the_splits():
    by_lr = summarize(ROWS, "split", ["test/mse"], by=["lr"])
    assert [(row["lr"], row["n"]) for row in by_lr] == [(0.01, 3), (0.1, 3)]
    assert by_lr[1]["test/mse"].mean == pytest.approx((3.0 + 0.5 + 2.0) / 3)
    assert math.isnan(Estimate.of([4.0]).se)  # one value has no standard error
    with pytest.raises(BadInputError, match="'seed' to aggregate over"):
        summarize(ROWS, "seed", ["test/mse"])


def test_a_refit_reports_the_twin_of_the_run_chosen_on_validation_per_method():
    """Per method and split, the setting with the smallest val/loss among the runs without
    refit is chosen; the run reported is the same setting refitted (train_on_val true)."""
    rows = []
    for method, split, lr, val, test in [
        ("map", "a", 0.01, 1.0, 9.0), ("map", "a", 0.1, 2.0, 8.0),
        ("map", "b", 0.01, 3.0, 7.0), ("map", "b", 0.1, 0.5, 6.0),
        ("bbb", "a", 0.01, 1.0, 5.0), ("bbb", "b", 0.01, 1.0, 4.0),
    ]:  # fmt: skip
        base = {"inference": method, "split": split, "lr": lr, "status": "FINISHED"}
        rows.append(base | {"refit": "False", "val/loss": val, "test/mse": test})
        rows.append(base | {"refit": "True", "val/loss": 0.0, "test/mse": test / 10})
    summary = summarize(rows, "split", ["test/mse"], ["inference"], "val/loss", refit="refit")
    by_method = {row["inference"]: row for row in summary}
    # map: split a chooses lr 0.01 (val 1.0), split b lr 0.1 (0.5); their refits: 0.9 and 0.6
    assert by_method["map"]["test/mse"].mean == pytest.approx((0.9 + 0.6) / 2)
    assert by_method["bbb"]["test/mse"].mean == pytest.approx((0.5 + 0.4) / 2)
    assert by_method["map"]["reported"] == "its refit, refit=true" and by_method["map"]["n"] == 2
    without_refit = summarize(rows, "split", ["test/mse"], ["inference"], "val/loss")
    # the refits' val/loss (0.0, scored on rows they trained on) would win if not set apart
    assert without_refit[0]["test/mse"].mean == pytest.approx((0.9 + 0.7) / 2)  # ties: first


def test_a_sweep_over_split_columns_is_one_study(command, tmp_path, capfd):
    split_table(tmp_path / "table.csv")
    result = command.run(
        "-m", "model=mlp_regressor", "data=tabular", "data.path=table.csv", "data.target=y",
        "data.split_column=split_0,split_1,split_2", "model.lr=0.001,0.03",
        "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = command.runs()
    [parent] = [r for r in runs if r.data.tags[tags.SWEEP_ROLE] == tags.PARENT]
    children = [r for r in runs if r.data.tags.get(tags.PARENT_RUN) == parent.info.run_id]
    assert len(children) == 6
    assert {r.data.params["data.split_column"] for r in children} == {"split_0", "split_1",
                                                                       "split_2"}  # fmt: skip
    _, checkpoint = load_run(children[0].info.run_id)
    assert checkpoint["TabularDataModule"]["inputs"] == ["x1", "x2"]  # no other split column

    capfd.readouterr()
    argv = [parent.info.run_id, "--over", "data.split_column", "--select", "val/loss",
            "--out", str(tmp_path / "out")]  # fmt: skip
    compare.main(argv)
    printed = capfd.readouterr().out
    assert "min val/loss" in printed and " ± " in printed

    chosen = {}
    for child in children:  # by hand: per split, the child with the smallest val/loss
        split, score = child.data.params["data.split_column"], child.data.metrics["val/loss"]
        if split not in chosen or score < chosen[split].data.metrics["val/loss"]:
            chosen[split] = child
    values = [child.data.metrics["test/mse"] for child in chosen.values()]
    mean = sum(values) / 3
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / 2 / 3)
    with open(tmp_path / "out" / "summary.csv") as file:
        [row] = list(csv.DictReader(file))
    assert float(row["test/mse mean"]) == pytest.approx(mean)
    assert float(row["test/mse se"]) == pytest.approx(se)
    logged = command.client().get_run(parent.info.run_id).data.metrics
    assert logged["test/mse"] == pytest.approx(mean)  # the headline: the study's mean
    assert logged["test/mse_se"] == pytest.approx(se)
    artifacts = {a.path for a in command.client().list_artifacts(parent.info.run_id)}
    assert {"summary.md", "summary.csv", "summary.png"} <= artifacts


def test_one_row_per_method_each_its_chosen_setting_refitted(command, tmp_path):
    split_table(tmp_path / "table.csv", n_splits=2)
    result = command.run(
        "-m", "model=regressor", "data=tabular", "data.path=table.csv", "data.target=y",
        "data.split_column=all", "inference=map,mc_dropout", "model.lr=0.001,0.03",
        "data.train_on_val=false,true", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [parent] = [r for r in command.runs() if r.data.tags[tags.SWEEP_ROLE] == tags.PARENT]
    children = [r for r in command.runs() if r.data.tags.get(tags.PARENT_RUN) == parent.info.run_id]
    assert len(children) == 16
    study = ["--over", "data.split_column", "--select", "val/nll", "--per", "inference"]
    compare.main([parent.info.run_id, *study, "--refit", "data.train_on_val",
                  "--out", str(tmp_path / "out")])  # fmt: skip
    with open(tmp_path / "out" / "summary.csv") as file:
        rows = {row["inference"]: row for row in csv.DictReader(file)}
    metrics = {}  # (method, split, lr, refit) → the run's metrics
    for child in children:
        p = child.data.params
        key = (child.data.tags["vnnlab.inference"], p["data.split_column"], p["model.lr"],
               p["data.train_on_val"])  # fmt: skip
        metrics[key] = child.data.metrics
    for method in ("map", "mc_dropout"):  # by hand: choose without refit, report the refit
        reported = []
        for split in ("split_0", "split_1"):
            lrs = ("0.001", "0.03")
            chosen = min(lrs, key=lambda lr: metrics[method, split, lr, "False"]["val/nll"])
            reported.append(metrics[method, split, chosen, "True"]["test/nll"])
        assert float(rows[method]["test/nll mean"]) == pytest.approx(sum(reported) / 2)


def test_the_comparison_table_shows_the_metric_a_study_selects_by(command, tmp_path):
    split_table(tmp_path / "table.csv", n_splits=2)
    result = command.run(
        "-m", "model=mlp_regressor", "data=tabular", "data.path=table.csv", "data.target=y",
        "data.split_column=split_0,split_1", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [parent] = [r for r in command.runs() if r.data.tags[tags.SWEEP_ROLE] == tags.PARENT]
    argv = [parent.info.run_id, "--over", "data.split_column", "--select", "val/mse",
            "--out", str(tmp_path / "out")]  # fmt: skip
    compare.main(argv)
    with open(tmp_path / "out" / "comparison.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 2 and all(float(row["val/mse"]) > 0 for row in rows)


def test_a_study_refuses_what_it_cannot_aggregate_in_one_line(command, capfd):
    command.run("-m", "model=mlp_regressor", "model.lr=0.001,0.01", "trainer.max_epochs=1",
                "data.n_train=64", "trainer.enable_progress_bar=false")  # fmt: skip
    capfd.readouterr()
    for argv, message in [
        (["--over", "data.split_column"], "no run of this sweep has 'data.split_column'"),
        (["--over", "model.lr", "--select-largest"], "--select-largest needs --select METRIC"),
    ]:
        with pytest.raises(SystemExit) as stop:
            compare.main(argv)
        assert stop.value.code == 2
        [line] = capfd.readouterr().err.strip().splitlines()
        assert message in line

"""data=tabular and vnnlab-predict on tables the tests write: every format reads the same,
statistics come from the training split only, bad files are one line, and a trained run
predicts new rows from its own checkpoint."""

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import QUICK, CommandResult, InProcessCommand, regression_table
from vnnlab import api
from vnnlab.commands import predict as predict_command
from vnnlab.data.tabular import TabularDataModule, read_table
from vnnlab.errors import BadInputError


def test_csv_parquet_npy_and_npz_read_as_the_same_table(tmp_path, csv):
    table = regression_table().drop(columns="kind")
    table.to_parquet(tmp_path / "t.parquet")
    np.save(tmp_path / "t.npy", table.to_numpy())
    np.savez(tmp_path / "t.npz", **{column: table[column].to_numpy() for column in table})
    from_csv = read_table(csv).drop(columns="kind")
    assert list(from_csv.columns) == ["a", "b", "c", "y"]
    np.testing.assert_allclose(from_csv.to_numpy(), table.to_numpy())
    for name in ("t.parquet", "t.npz"):
        pd.testing.assert_frame_equal(read_table(tmp_path / name), table)
    npy = read_table(tmp_path / "t.npy")
    assert list(npy.columns) == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(npy.to_numpy(), table.to_numpy())


def test_inputs_are_standardised_with_the_training_split_only(csv):
    data = TabularDataModule(path=str(csv), target="y", drop=["kind"], seed=3)
    info = data.info()
    assert (info.target, info.in_features, info.out_features) == ("real", 3, 1)
    raw = regression_table()
    x_train, y_train = data.split("train")
    # find the training rows by their (unscaled) targets, then standardise them by hand
    targets = raw["y"].to_numpy(dtype=np.float32)
    rows = [int(np.flatnonzero(targets == value)[0]) for value in y_train[:, 0].numpy()]
    assert len(set(rows)) == len(rows)
    by_hand = raw[["a", "b", "c"]].to_numpy()[rows]
    by_hand = (by_hand - by_hand.mean(0)) / by_hand.std(0)
    np.testing.assert_allclose(x_train.numpy(), by_hand, atol=1e-5)
    sizes = [len(data.split(name)[0]) for name in ("train", "val", "test")]
    assert sizes == [280, 60, 60]  # 15 % each for val and test
    x_test = data.split("test")[0]
    assert abs(float(x_test.mean())) > 1e-4  # test rows are scaled by train statistics
    assert data.state_dict()["inputs"] == ["a", "b", "c"]


def test_the_task_follows_the_target_and_a_column_can_name_the_split(tmp_path):
    table = regression_table()
    table["part"] = ["train"] * 300 + ["val"] * 50 + ["test"] * 50
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    labels = TabularDataModule(path=str(path), target="kind", drop=["y"], split_column="part")
    assert (labels.info().target, labels.info().out_features) == ("class", 2)
    assert labels.state_dict()["classes"] == ["high", "low"]
    assert [len(labels.split(s)[0]) for s in ("train", "val", "test")] == [300, 50, 50]
    inputs = TabularDataModule(path=str(path), drop=["y", "kind"], split_column="part")
    assert inputs.info().target is None and len(inputs.split("train")) == 1


@pytest.mark.parametrize(
    ("change", "arguments", "expected"),
    [
        (None, {"path": "nowhere.csv"}, "data.path='nowhere.csv' is not allowed: expected an"),
        (None, {"target": "z"}, "data.target='z' is not allowed: expected a column of"),
        ("text", {"target": "y"}, "column 'b' holds 'n/a?' in row 6"),
        ("hole", {"target": "y"}, "column 'a' has a missing value in row 4"),
        ("few", {"target": "y"}, "too few rows for the split"),
        ("one class", {"target": "kind"}, "data.target='kind' is not allowed: expected a column"),
    ],
)
def test_a_bad_file_is_one_clear_line(tmp_path, change, arguments, expected):
    table = regression_table()
    if change == "text":
        table["b"] = table["b"].astype(object)
        table.loc[5, "b"] = "n/a?"
    elif change == "hole":
        table.loc[3, "a"] = np.nan
    elif change == "few":
        table = table.head(3)
    elif change == "one class":
        table["kind"] = "same"
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    drop = [c for c in ("kind", "y") if c != arguments.get("target")]
    data = TabularDataModule(**{"path": str(path), "drop": drop, **arguments})
    with pytest.raises(BadInputError, match=None) as error:
        data.info()
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_missing_values_can_be_dropped(tmp_path):
    table = regression_table()
    table.loc[[3, 7], "a"] = np.nan
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    data = TabularDataModule(path=str(path), target="y", drop=["kind"], missing="drop")
    assert data.info().n_train + sum(len(data.split(s)[0]) for s in ("val", "test")) == 398


def predict(command, *arguments) -> CommandResult:
    """vnnlab-predict (its main, in this process) in the folder of `command`."""
    command.capfd.readouterr()
    try:
        predict_command.main(list(arguments))
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = command.capfd.readouterr()
    return CommandResult(code, out, err)


@pytest.mark.parametrize(
    ("model", "target", "added"),
    [
        ("bnn_regressor", "y", ["y_mean", "y_sd", "y_lower95", "y_upper95"]),
        ("mlp_classifier", "kind", ["p_high", "p_low", "predicted"]),
        ("pca", None, ["z1", "z2", "recon_mse"]),
    ],
)
def test_a_trained_run_predicts_new_rows_with_the_inputs_kept(command, csv, model, target, added):
    drop = [c for c in ("y", "kind") if c != target]
    overrides = [
        f"model={model}",
        "data=tabular",
        f"data.path={csv}",
        f"data.drop=[{','.join(drop)}]",
    ]
    if target:
        overrides.append(f"data.target={target}")
    else:
        overrides.append("model.latent_dim=2")
    trained = command.run(*QUICK, *overrides)
    assert trained.returncode == 0, trained.stderr[-3000:]
    [run] = command.runs()
    new_rows = regression_table(n=50, seed=9)
    new_rows.to_csv(command.workdir / "new.csv", index=False)
    result = predict(command, f"run_id={run.info.run_id}", "data.path=new.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    output = pd.read_csv(command.workdir / "predictions.csv")  # the default output
    assert list(output.columns) == [*new_rows.columns, *added]
    np.testing.assert_allclose(output[["a", "b", "c"]], new_rows[["a", "b", "c"]])
    if target == "kind":
        np.testing.assert_allclose(output["p_high"] + output["p_low"], 1.0, rtol=1e-5)
        assert set(output["predicted"]) <= {"high", "low"}
    if target == "y":
        assert (output["y_lower95"] < output["y_mean"]).all()
        assert (output["y_mean"] < output["y_upper95"]).all()


def test_predict_refuses_a_run_it_cannot_use_in_one_line(tmp_path, capfd, monkeypatch, csv):
    command = InProcessCommand(tmp_path / "no store", capfd, monkeypatch)
    result = predict(command, "run_id=0123", f"data.path={csv}")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"vnnlab-predict: run_id='0123' is not allowed: expected the id of a run in an "
        f"existing MLflow store (there is none at {command.store})"
    )
    missing = predict(command, "data.path=x.csv")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "vnnlab-predict: run_id= is missing: vnnlab-predict run_id=<id> data.path=new.csv"
    )


def test_the_model_sees_standardised_inputs_and_the_target_in_its_units(csv):
    data = TabularDataModule(path=str(csv), target="y", drop=["kind"])
    x, y = data.split("train")
    assert torch.allclose(x.mean(0), torch.zeros(3), atol=1e-5)
    raw = set(regression_table()["y"].to_numpy(dtype=np.float32).tolist())
    assert set(y[:, 0].tolist()) <= raw  # as in the file: metrics are in the target's units


@pytest.mark.parametrize(
    ("model", "target"),
    [
        ("mlp_regressor", "y"),
        ("bnn_regressor", "y"),
        ("mlp_classifier", "kind"),
        ("bnn_classifier", "kind"),
        ("pca", None),
        ("linear_autoencoder", None),
        ("autoencoder", None),
        ("vae", None),
    ],
)
def test_every_model_that_makes_sense_on_a_table_trains_on_one(tmp_path, csv, model, target):
    drop = [c for c in ("y", "kind") if c != target]
    overrides = [f"model={model}", "data=tabular", f"data.path={csv}",
                 f"data.drop=[{','.join(drop)}]", *QUICK, "trainer.max_epochs=1",
                 f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    overrides += [f"data.target={target}"] if target else ["model.latent_dim=2"]
    if model == "vae":
        overrides.append("model.likelihood=gaussian")
    result = api.run(overrides)
    metric = {"y": "test/mse", "kind": "test/acc", None: "test/recon_mse"}[target]
    assert np.isfinite(result.metrics[metric])


def scores_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """An integer-valued measurement with few values (a 0-10 score) and a count with many."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    score = np.clip(np.round(5 + 2 * x[:, 0] + rng.normal(0, 0.5, n)), 0, 10).astype(int)
    count = np.round(100 + 30 * x[:, 1]).astype(int)  # > 20 distinct values: read as real
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "score": score, "count": count})


@pytest.mark.parametrize(
    ("model", "target", "override"),
    [
        ("bnn_regressor", "score", "data.task=regression"),
        ("mlp_regressor", "score", "data.task=regression"),
        ("mlp_classifier", "count", "data.task=classification"),
    ],
)
def test_a_model_of_the_other_kind_is_told_the_override_that_reads_the_target_its_way(
    tmp_path, model, target, override
):
    """An integer target reads as classes (≤ 20 values) or as real values (more); a model of
    the other kind is refused in one line naming the override, and trains with it."""
    path = tmp_path / "scores.csv"
    scores_table().to_csv(path, index=False)
    other = "count" if target == "score" else "score"
    overrides = [f"model={model}", "data=tabular", f"data.path={path}", f"data.target={target}",
                 f"data.drop=[{other}]", *QUICK, "trainer.max_epochs=1",
                 f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    with pytest.raises(BadInputError) as caught:
        api.run(overrides)
    message = str(caught.value)
    assert f"add {override} to read its target as" in message and "\n" not in message
    result = api.run([*overrides, override])
    info = result.datamodule.info()
    if override == "data.task=regression":  # the scores as real numbers, in their units
        assert (info.target, info.out_features) == ("real", 1)
        assert set(result.datamodule.split("train")[1][:, 0].tolist()) <= set(range(11))
        assert np.isfinite(result.metrics["test/mse"])
    else:
        assert info.target == "class" and info.out_features == scores_table()["count"].nunique()


def test_real_valued_targets_offer_no_classes_and_labels_no_regression(tmp_path, csv):
    """Only a numeric target is offered as real values, only integers as labels."""
    assert TabularDataModule(path=str(csv), target="y", drop=["kind"]).info().other_target is None
    assert TabularDataModule(path=str(csv), target="kind", drop=["y"]).info().other_target is None

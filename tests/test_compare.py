"""vnnlab-compare (vnnlab.sweep.compare, and the command's main in this process) on a real SQLite
store holding sweeps laid out as vnnlab.sweep.hydra_callback lays them out: a parent run tagged with
its swept keys, children with the flattened config and their metrics."""

import csv
import shutil
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from vnnlab.commands import compare as compare_command
from vnnlab.errors import BadInputError
from vnnlab.sweep import compare
from vnnlab.tracking.store import experiment_id

T0 = 1_700_000_000_000  # ms; every run starts at a known time so that order and durations are known
CONFIG = {"model._target_": "vnnlab.models.bnn.BNNRegressor", "inference.mc_samples": "8",
          "model.hidden": "[50, 50]", "data.batch_size": "64", "seed": "0"}  # fmt: skip
FAILURE = "RuntimeError: loss is nan | epoch 1"
# the 2×2 sweep over (lr, σ²): its third job fails after one epoch, so it has no test metrics
JOBS = [
    ({"model.lr": "0.001", "model.sigma2": "0.01"},
     {"test/mse": 0.30, "test/nll": 1.25, "val/loss": 0.5}, "FINISHED"),
    ({"model.lr": "0.001", "model.sigma2": "0.1"},
     {"test/mse": 0.20, "test/nll": 0.90, "val/loss": 0.4}, "FINISHED"),
    ({"model.lr": "0.01", "model.sigma2": "0.01"}, {"val/loss": 2.0}, "FAILED"),
    ({"model.lr": "0.01", "model.sigma2": "0.1"},
     {"test/mse": 0.10, "test/nll": 0.80, "val/loss": 0.3}, "FINISHED"),
]  # fmt: skip
# `-m model=mlp_regressor,bnn_regressor`: the swept key is a config group, not a param
GROUP_JOBS = [
    ({"model._target_": "vnnlab.models.mlp.MLPRegressor"}, {"test/mse": 0.5}, "FINISHED"),
    ({"model.sigma2": "0.1"}, {"test/mse": 0.4}, "FINISHED"),
]
# the same, as train() records it: each child tagged with its choice (vnnlab.model); the second
# was stopped by SIGTERM
KILLED_BY = "KeyboardInterrupt('signal 15')"
CHOICE_JOBS = [
    ({"model._target_": "vnnlab.models.mlp.MLPRegressor", "model.lr": "0.01"},
     {"test/mse": 0.5}, "FINISHED", {"vnnlab.model": "mlp_regressor"}),
    ({"model.lr": "0.001", "model.sigma2": "0.1"}, {"test/mse": 0.4}, "KILLED",
     {"vnnlab.model": "bnn_regressor", "vnnlab.stopped_by": KILLED_BY}),
]  # fmt: skip


def make_sweep(client, experiment_id, start, params_tag, jobs):
    """A parent and its children; `jobs`: (params, metrics, status[, tags]) each, started 10 s
    apart."""
    tags = {"vnnlab.sweep.role": "parent", "vnnlab.sweep.params": params_tag,
            "vnnlab.sweep.overrides": "", "vnnlab.sweep.launcher": "BasicLauncher",
            "vnnlab.sweep.sweeper": "BasicSweeper"}  # fmt: skip
    parent = client.create_run(experiment_id, start_time=start, tags=tags, run_name="sweep x")
    parent_id = parent.info.run_id
    for number, (params, metrics, status, *more_tags) in enumerate(jobs):
        began = start + 10_000 * (number + 1)
        child_tags = {"mlflow.parentRunId": parent_id, "vnnlab.sweep.role": "child"}
        child_tags |= more_tags[0] if more_tags else {}
        if status == "FAILED":
            child_tags["vnnlab.failure"] = FAILURE
        child = client.create_run(
            experiment_id, start_time=began, tags=child_tags, run_name=f"job {number}"
        )
        client.log_batch(
            child.info.run_id,
            params=[Param(key, value) for key, value in {**CONFIG, **params}.items()],
            metrics=[Metric(key, value, began, 0) for key, value in
                     {"train/loss": 9.0, **metrics}.items()],
        )  # fmt: skip
        client.set_terminated(child.info.run_id, status, end_time=began + 1000 * (number + 1))
    client.set_terminated(parent_id, "FINISHED", end_time=start + 100_000)
    return parent_id


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, empty_store):
    """A store of this module's own: experiment "vnnlab": an old sweep that names no keys (only
    mc_samples differs), then the 2×2 lr × σ² sweep; "groups": an older sweep over a config
    group; "other": the newest run, outside any sweep."""
    folder = tmp_path_factory.mktemp("sweeps")
    shutil.copyfile(empty_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    vnnlab = experiment_id(client, "vnnlab")
    other = experiment_id(client, "other")
    old_jobs = [({"inference.mc_samples": m}, {"test/mse": 1.0}, "FINISHED") for m in ("1", "16")]
    old = make_sweep(client, vnnlab, T0, "", old_jobs)
    latest = make_sweep(client, vnnlab, T0 + 1_000_000, "model.lr,model.sigma2", JOBS)
    groups = make_sweep(client, experiment_id(client, "groups"), T0 - 1, "model", GROUP_JOBS)
    choices = make_sweep(client, experiment_id(client, "groups"), T0 - 2, "model", CHOICE_JOBS)
    lone = client.create_run(other, start_time=T0 + 2_000_000).info.run_id
    return {
        "uri": uri,
        "folder": folder,
        "old": old,
        "latest": latest,
        "lone": lone,
        "groups": groups,
        "choices": choices,
    }


@pytest.fixture(scope="module")
def client(sweeps):
    return MlflowClient(sweeps["uri"])


@pytest.fixture(scope="module")
def parent(client, sweeps):
    return client.get_run(sweeps["latest"])


def test_rows_hold_the_swept_params_as_numbers_the_metrics_status_and_failure(client, parent):
    rows = compare.sweep_table(client, parent)
    assert [row["name"] for row in rows] == ["job 0", "job 1", "job 2", "job 3"]  # start order
    assert list(rows[0]) == ["run_id", "name", "model.lr", "model.sigma2", "test/mse",
                             "test/nll", "val/loss", "status", "duration_s", "failure"]  # fmt: skip
    assert [(row["model.lr"], row["model.sigma2"]) for row in rows] == [
        (0.001, 0.01), (0.001, 0.1), (0.01, 0.01), (0.01, 0.1)
    ]  # fmt: skip
    assert [row["test/mse"] for row in rows] == [0.30, 0.20, None, 0.10]
    assert [row["val/loss"] for row in rows] == [0.5, 0.4, 2.0, 0.3]
    assert [row["status"] for row in rows] == ["FINISHED", "FINISHED", "FAILED", "FINISHED"]
    assert [row["failure"] for row in rows] == ["", "", FAILURE, ""]
    assert [row["duration_s"] for row in rows] == [1.0, 2.0, 3.0, 4.0]


def test_chosen_metrics_and_a_sort_key_outside_the_table_become_columns(client, parent):
    rows = compare.sweep_table(client, parent, metrics=["val/loss"], sort_by="data.batch_size")
    assert list(rows[0])[2:6] == ["model.lr", "model.sigma2", "data.batch_size", "val/loss"]
    assert {row["data.batch_size"] for row in rows} == {64}  # an int stays an int


def test_sorting_puts_runs_without_the_key_last_in_either_direction(client, parent):
    ascending = compare.sweep_table(client, parent, sort_by="test/mse")
    descending = compare.sweep_table(client, parent, sort_by="test/mse", descending=True)
    assert [row["test/mse"] for row in ascending] == [0.10, 0.20, 0.30, None]
    assert [row["test/mse"] for row in descending] == [0.30, 0.20, 0.10, None]
    by_sigma2 = compare.sweep_table(client, parent, sort_by="model.sigma2", descending=True)
    assert [row["name"] for row in by_sigma2] == ["job 1", "job 3", "job 0", "job 2"]  # ties stable
    with pytest.raises(BadInputError, match="test/nope"):
        compare.sweep_table(client, parent, sort_by="test/nope")


def test_the_latest_sweep_is_the_default_and_an_id_picks_another(client, sweeps):
    latest = sweeps["latest"]
    assert compare.find_sweep(client, None, None).info.run_id == latest
    assert compare.find_sweep(client, None, "vnnlab").info.run_id == latest
    old = compare.find_sweep(client, sweeps["old"], None)
    rows = compare.sweep_table(client, old)  # no keys named: the params that differ
    assert [row["inference.mc_samples"] for row in rows] == [1, 16]
    assert "model.lr" not in rows[0] and "data.batch_size" not in rows[0]


def test_a_swept_config_group_is_shown_by_its_params_that_differ(client, sweeps):
    rows = compare.sweep_table(client, client.get_run(sweeps["groups"]))
    assert [(row["model._target_"], row["model.sigma2"]) for row in rows] == [
        ("vnnlab.models.mlp.MLPRegressor", None), (CONFIG["model._target_"], 0.1)
    ]  # fmt: skip
    assert "inference.mc_samples" not in rows[0]  # the same in both


def test_a_swept_config_group_is_shown_by_its_choice_with_why_a_killed_run_stopped(client, sweeps):
    rows = compare.sweep_table(client, client.get_run(sweeps["choices"]))
    assert [(row["model"], row["status"], row["failure"]) for row in rows] == [
        ("mlp_regressor", "FINISHED", ""), ("bnn_regressor", "KILLED", KILLED_BY)
    ]  # fmt: skip
    assert "model.lr" not in rows[0]  # the choice stands for the group's params
    assert compare.figure_axes(rows, ["model"], None, None, None) == ("test/mse", "model", None)
    [ax] = compare.comparison_figure(rows, "test/mse", "model", None).axes
    assert [label.get_text() for label in ax.get_xticklabels()] == ["bnn_regressor",
                                                                    "mlp_regressor"]  # fmt: skip
    assert ax.lines[0].get_ydata().tolist() == [0.4, 0.5]


def test_groups_of_numbers_are_drawn_in_numeric_order():
    rows = [{"lr": lr, "loss": lr * m, "m": m} for m in (16, 2, 8) for lr in (0.1, 0.01)]
    [ax] = compare.comparison_figure(rows, "loss", "lr", "m").axes
    assert [line.get_label() for line in ax.lines] == ["m=2", "m=8", "m=16"]  # not "16" < "2"
    assert ax.lines[0].get_xdata().tolist() == [0.01, 0.1]


@pytest.mark.parametrize(
    ("sweep", "experiment", "message"),
    [
        (None, "other", "no sweep in experiment 'other': run a multirun first"),
        (None, "missing", "no experiment 'missing'"),
        ("0" * 32, None, "no run '0000"),
        ("lone", None, "is not a sweep"),
    ],
)
def test_no_matching_sweep_is_bad_input_in_one_line(client, sweeps, sweep, experiment, message):
    with pytest.raises(BadInputError, match=message) as caught:
        compare.find_sweep(client, sweeps.get(sweep, sweep), experiment)
    assert "\n" not in str(caught.value)


def test_a_child_run_id_is_refused_with_its_sweep_named(client, parent):
    child = compare.sweep_table(client, parent)[0]["run_id"]
    with pytest.raises(BadInputError, match=f"its sweep is {parent.info.run_id}"):
        compare.find_sweep(client, child, None)


def test_markdown_is_a_github_table_with_four_significant_digits():
    rows = [{"name": "a|b", "lr": 0.001234567, "n": 16, "loss": None, "note": "x" * 200}]
    header, rule, line = compare.to_markdown(rows).splitlines()
    assert header == "| name | lr | n | loss | note |"
    assert rule == "| --- | ---: | ---: | --- | --- |"
    cells = [cell.strip() for cell in line.strip("|").split(" | ")]
    assert cells[0] == "a\\|b" and cells[1:4] == ["0.001235", "16", ""]
    assert len(cells[4]) == compare.MAX_CELL and cells[4].endswith("…")
    assert compare.to_markdown(rows, columns=["lr"]).splitlines()[2] == "| 0.001235 |"


def test_csv_reads_back_with_every_row_and_full_precision(client, parent, tmp_path):
    rows = compare.sweep_table(client, parent)
    compare.to_csv(rows, tmp_path / "table.csv")
    back = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert [row["run_id"] for row in back] == [row["run_id"] for row in rows]
    assert [row["test/nll"] for row in back] == ["1.25", "0.9", "", "0.8"]
    assert back[2]["failure"] == FAILURE and back[2]["status"] == "FAILED"
    assert float(back[0]["model.lr"]) == 0.001


def test_the_figure_draws_one_line_per_group_value(client, parent):
    rows = compare.sweep_table(client, parent)
    figure = compare.comparison_figure(rows, "test/nll", "model.sigma2", "model.lr")
    [ax] = figure.axes
    lines = {line.get_label(): line.get_xydata().tolist() for line in ax.lines}
    assert lines == {
        "model.lr=0.001": [[0.01, 1.25], [0.1, 0.9]],
        "model.lr=0.01": [[0.1, 0.8]],  # the failed job has no test/nll
    }
    assert ax.get_xlabel() == "model.sigma2" and ax.get_ylabel() == "test/nll"


def test_report_logs_table_csv_and_figure_to_the_parent(client, sweeps):
    markdown = compare.report_sweep(sweeps["uri"], sweeps["latest"], sort_by="test/nll")
    names = [line.split(" | ")[1] for line in markdown.splitlines()[2:]]
    assert names == ["job 3", "job 1", "job 0", "job 2"]
    artifacts = {a.path for a in client.list_artifacts(sweeps["latest"])}
    assert {"comparison.md", "comparison.csv", "comparison.png"} <= artifacts
    latest, folder = sweeps["latest"], str(sweeps["folder"])
    logged = Path(client.download_artifacts(latest, "comparison.md", folder))
    assert logged.read_text() == markdown


def test_default_figure_axes_follow_the_sweep(client, parent):
    rows = compare.sweep_table(client, parent)
    swept = ["model.lr", "model.sigma2"]
    assert compare.figure_axes(rows, swept, None, None, None) == ("test/mse", "model.lr",
                                                                  "model.sigma2")  # fmt: skip
    assert compare.figure_axes(rows, swept, None, "model.sigma2", None, "test/nll") == (
        "test/nll", "model.sigma2", "model.lr")  # fmt: skip
    assert compare.figure_axes(rows, [], None, None, None) is None  # nothing swept to plot
    with pytest.raises(BadInputError, match="model.nope"):
        compare.figure_axes(rows, swept, None, "model.nope", None)


def run_compare(capfd, *argv: str) -> tuple[int, str, str]:
    """`vnnlab-compare <argv>` in this process: its exit code, stdout and stderr."""
    capfd.readouterr()  # what came before is not this command's
    try:
        compare_command.main(list(argv))
        code = 0
    except SystemExit as stop:
        code = stop.code
    out, err = capfd.readouterr()
    return code, out, err


@pytest.fixture
def in_sweeps_folder(sweeps, monkeypatch):
    """Started beside the sweeps' store: vnnlab-compare's default store is ./mlflow.db."""
    monkeypatch.chdir(sweeps["folder"])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return sweeps["folder"]


def test_the_console_script_prints_writes_and_logs(sweeps, in_sweeps_folder, capfd):
    code, out, err = run_compare(capfd, "--sort", "test/mse", "--descending", "--metric",
                                 "test/nll", "--out", "out")  # fmt: skip
    assert code == 0, err
    table = out.splitlines()
    assert [line.split(" | ")[1] for line in table[2:]] == ["job 0", "job 1", "job 3", "job 2"]
    out_dir = in_sweeps_folder / "out"
    written = list(csv.DictReader((out_dir / "comparison.csv").open()))
    assert [row["test/mse"] for row in written] == ["0.3", "0.2", "0.1", ""]
    assert (out_dir / "comparison.md").read_text() == out
    assert sweeps["latest"] in err and "comparison.png" in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--sort", "test/nope"], "test/nope"),  # refused by the table
        (["--nope"], "--nope"),  # refused by the argument parser
        (["--tracking-uri", "sqlite:///missing.db"], "--tracking-uri"),  # no store to compare
        (["--out", "mlflow.db"], "--out"),  # a file, not a folder
    ],
)
def test_bad_input_exits_2_with_one_line_naming_it(in_sweeps_folder, capfd, argv, named):
    code, out, err = run_compare(capfd, *argv)
    assert (code, out) == (2, "")
    assert err.startswith("vnnlab-compare: ") and len(err.splitlines()) == 1, err
    assert named in err
    assert not (in_sweeps_folder / "missing.db").exists()  # refused, not created empty

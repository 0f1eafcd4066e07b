"""A sweep's parent run as a team sees it first (vnnlab.sweep.headline): its description is the
comparison table, best first, and it carries the best child's headline metrics and run id, as
the MLflow UI's run list shows them (read back through MlflowClient). Sweeps run in this
process with Hydra's basic launcher."""

import math
import statistics

import pytest

from helpers import FAST, split_table
from vnnlab.sweep.headline import Objective, best_row, description, headline_row, study_summary

SMALL = [*FAST, "data.n_train=100"]


def parent_and_children(command):
    runs = command.runs()
    [parent] = [r for r in runs if r.data.tags.get("vnnlab.sweep.role") == "parent"]
    return parent, [r for r in runs if r.info.run_id != parent.info.run_id]


def test_the_parent_shows_the_table_and_the_best_child_by_val_loss(command):
    result = command.run("-m", *SMALL, "model.lr=0.0001,0.01")
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = parent_and_children(command)
    best = min(children, key=lambda child: child.data.metrics["val/loss"])
    tags = parent.data.tags
    assert tags["vnnlab.sweep.objective"] == "val/loss (minimize)"
    assert tags["vnnlab.sweep.best_run"] == best.info.run_id
    assert tags["vnnlab.sweep.best"] == best.info.run_name
    headline = {k: v for k, v in best.data.metrics.items() if k.startswith("test/")}
    headline["val/loss"] = best.data.metrics["val/loss"]
    assert parent.data.metrics == pytest.approx(headline)  # as the run list's columns show it
    note = tags["mlflow.note.content"]
    assert note.startswith(
        f"**Best of 2 runs** (2 finished) by val/loss (minimize): `{best.info.run_name}`"
    )
    table = note.split("\n\n", 1)[1].splitlines()
    assert table[0].startswith("| run_id | name | model.lr |") and len(table) == 4
    assert best.info.run_id in table[2]  # best first
    assert f"best by val/loss (minimize): [{best.info.run_name}]" in result.stdout


def test_the_optuna_sweepers_objective_and_direction_pick_the_best(command):
    sweeper = ["hydra/sweeper=vnnlab_optuna", "hydra.sweeper.n_trials=3",
               "hydra.sweeper.objective=val/mse", "hydra.sweeper.direction=maximize",
               "hydra.sweeper.pruner=none"]  # fmt: skip
    result = command.run("-m", *SMALL, *sweeper, "model.lr=choice(0.0001,0.001,0.01)")
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = parent_and_children(command)
    assert len(children) == 3
    worst = max(children, key=lambda child: child.data.metrics["val/mse"])  # maximised
    assert parent.data.tags["vnnlab.sweep.objective"] == "val/mse (maximize)"
    assert parent.data.tags["vnnlab.sweep.best_run"] == worst.info.run_id
    assert parent.data.metrics["val/mse"] == pytest.approx(worst.data.metrics["val/mse"])
    assert parent.data.metrics["test/mse"] == pytest.approx(worst.data.metrics["test/mse"])


ROW = {"run_id": "0" * 32, "name": "model.lr=0.1", "val/loss": 1.0, "status": "FINISHED"}


def test_failed_runs_are_never_best_and_a_long_table_is_cut_to_fit_a_tag():
    rows = [ROW | {"run_id": f"{i:032d}", "val/loss": float(i)} for i in range(400)]
    rows[0] = rows[0] | {"status": "FAILED"}  # the lowest loss, but it failed
    best = best_row(rows, Objective())
    assert best["run_id"] == f"{1:032d}"
    text = description(rows, best, Objective())
    assert len(text) <= 8000 and text.endswith("more rows in the artifact comparison.md.")
    assert description([rows[0]], None, Objective()).startswith("**No finished run has val/loss**")


def test_a_sweep_over_inference_methods_picks_its_best_by_the_predictive_nll(command):
    """The children's losses are different quantities (the ensemble's sums its members'):
    the parent chooses by val/nll, which every method reports alike."""
    result = command.run("-m", *SMALL, "inference=map,mc_dropout")
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = parent_and_children(command)
    best = min(children, key=lambda child: child.data.metrics["val/nll"])
    assert parent.data.tags["vnnlab.sweep.objective"] == "val/nll (minimize)"
    assert parent.data.tags["vnnlab.sweep.best_run"] == best.info.run_id
    assert "best by val/nll (minimize)" in result.stdout


def test_a_sweep_over_splits_is_a_study_whose_parent_shows_its_means(command, tmp_path):
    """Over repeated splits the best split is no result: the parent is named after what was
    swept, its description is the summary (mean ± s.e. per method) and its metrics are the
    best method's means, with their standard errors beside them."""
    split_table(tmp_path / "table.csv")
    result = command.run(
        "-m", *FAST[:2], "model=regressor", "data=tabular", "data.path=table.csv",
        "data.target=y", "data.split_column=split_0,split_1,split_2", "inference=map,mc_dropout",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = parent_and_children(command)
    assert parent.info.run_name == "tabular: inference × 3 splits"
    by_method: dict[str, list] = {}
    for child in children:
        by_method.setdefault(child.data.tags["vnnlab.inference"], []).append(child)
    assert sorted(len(runs) for runs in by_method.values()) == [3, 3]
    mean_val = {m: statistics.fmean(c.data.metrics["val/nll"] for c in runs)
                for m, runs in by_method.items()}  # fmt: skip
    best = min(mean_val, key=mean_val.get)
    values = [child.data.metrics["test/nll"] for child in by_method[best]]
    assert parent.data.metrics["test/nll"] == pytest.approx(statistics.fmean(values))
    se = statistics.stdev(values) / math.sqrt(3)
    assert parent.data.metrics["test/nll_se"] == pytest.approx(se)
    assert parent.data.metrics["val/nll"] == pytest.approx(mean_val[best])
    assert parent.data.tags["vnnlab.sweep.best"] == f"inference={best}"
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**Mean ± s.e. over 3 splits** (6 of 6 runs finished)")
    table = note.split("\n\n", 1)[1].splitlines()
    assert table[0].startswith("| inference | n | val/nll |") and len(table) == 4
    assert table[2].startswith(f"| {best} | 3 |")  # best mean first
    assert "best mean val/nll (minimize): [inference=" in result.stdout


def test_a_study_that_refits_reports_the_refit_of_the_setting_validation_chose():
    """A refit's val/nll is scored on rows it trained on: it never wins the choice, and the
    headline is the refit of the setting chosen among the runs fitted on train alone."""
    rows = []
    for method, val_nll, refit_val_nll in [("map", 1.0, 0.01), ("bbb", 0.5, 0.2)]:
        for split in ("a", "b"):
            for refit, val, test in [("False", val_nll, 2.0), ("True", refit_val_nll, 1.0)]:
                rows.append({"run_id": "", "name": "", "status": "FINISHED", "inference": method,
                             "data.split_column": split, "data.train_on_val": refit,
                             "val/nll": val, "test/nll": test + (method == "bbb")})  # fmt: skip
    swept = ["inference", "data.split_column", "data.train_on_val"]
    summary = study_summary(rows, swept, "data.split_column", Objective("val/nll"))
    assert (summary[0]["inference"], summary[0]["data.train_on_val"]) == ("map", "True")
    best = headline_row(summary, swept)
    assert (best["inference"], best["data.train_on_val"]) == ("bbb", "True")  # chosen w/o refit
    assert best["test/nll"].mean == pytest.approx(2.0)  # bbb's refit: 1.0 + 1

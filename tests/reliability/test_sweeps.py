"""Multiruns for real: `vnnlab-train -m` processes with Hydra's launchers that start processes
(joblib, submitit), into a fresh SQLite store or a real `mlflow server` on 127.0.0.1, checked
through MLflow's client and REST; and a sweep stopped by SIGTERM. (Sweeps with the basic
launcher run in-process in tests/test_cli.py.)"""

import json
import signal
import urllib.request
from pathlib import Path

import pytest

from helpers import FAST

pytestmark = pytest.mark.slow

TINY = [*FAST, "trainer.max_epochs=1", "data.n_train=100"]


def parent_and_children(runs):
    [parent] = [r for r in runs if r.data.tags.get("vnnlab.sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, sorted(children, key=lambda r: r.info.run_name)


def test_a_parallel_sweep_on_a_fresh_store_is_one_parent_with_its_children(cli):
    result = cli.run("-m", *TINY, "model.lr=0.001,0.01", "model.sigma2=0.01,0.1",
                     "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = cli.runs()
    parent, children = parent_and_children(runs)
    assert len(runs) == 5 and len(children) == 4  # nothing outside the sweep, none lost
    assert {r.info.experiment_id for r in runs} == {parent.info.experiment_id}
    assert cli.client().get_experiment(parent.info.experiment_id).name == "vnnlab"  # not Default
    assert parent.info.status == "FINISHED" and all(c.info.status == "FINISHED" for c in children)
    assert [c.info.run_name for c in children] == [
        "model.lr=0.001 model.sigma2=0.01", "model.lr=0.001 model.sigma2=0.1",
        "model.lr=0.01 model.sigma2=0.01", "model.lr=0.01 model.sigma2=0.1",
    ]  # fmt: skip
    tags = parent.data.tags
    assert tags["vnnlab.sweep.params"] == "model.lr,model.sigma2"
    assert tags["vnnlab.sweep.launcher"].endswith("JoblibLauncher")
    assert "model.lr=0.001,0.01" in tags["vnnlab.sweep.overrides"]
    assert parent.info.run_name == "sweep model.lr=0.001,0.01 model.sigma2=0.01,0.1"
    sweep_file = Path(tags["vnnlab.sweep.dir"]) / "vnnlab-sweep.json"
    assert json.loads(sweep_file.read_text())["parent_run_id"] == parent.info.run_id


def test_the_submitit_local_launcher_nests_its_jobs_too(cli):
    result = cli.run("-m", *TINY, "model.lr=0.001,0.01", "hydra/launcher=submitit_local")
    assert result.returncode == 0, result.stderr[-3000:]
    parent, children = parent_and_children(cli.runs())
    assert parent.data.tags["vnnlab.sweep.launcher"].endswith("LocalLauncher")
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]


def test_sigterm_between_jobs_ends_the_parent_and_the_open_child_killed(cli):
    cli.client().search_experiments()  # create the store first: a concurrent migration races
    process = cli.popen("-m", *TINY, "trainer.max_epochs=10000", "model.lr=0.001,0.01")
    cli.wait_for_an_epoch(process)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    statuses = {r.data.tags["vnnlab.sweep.role"]: r.info.status for r in cli.runs()}
    assert statuses == {"parent": "KILLED", "child": "KILLED"}


def rest(url: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_a_parallel_sweep_through_a_tracking_server(cli, mlflow_server):
    result = cli.run("-m", *TINY, "trainer.max_epochs=2", "model.lr=0.001,0.01",
                     f"tracking.uri={mlflow_server}", "tracking.experiment=served",
                     "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert not cli.store.exists()  # nothing went to a local SQLite file
    experiment = rest(mlflow_server, "experiments/get-by-name?experiment_name=served")
    experiment_id = experiment["experiment"]["experiment_id"]
    runs = rest(mlflow_server, "runs/search", {"experiment_ids": [experiment_id]})["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    [parent] = [r for r, t in zip(runs, tags, strict=True) if t["vnnlab.sweep.role"] == "parent"]
    parent_id = parent["info"]["run_id"]
    children = [
        r for r, t in zip(runs, tags, strict=True) if t.get("mlflow.parentRunId") == parent_id
    ]
    assert len(runs) == 3 and len(children) == 2
    assert all(r["info"]["status"] == "FINISHED" for r in runs)
    for child in children:
        run_id = child["info"]["run_id"]
        params = {p["key"]: p["value"] for p in child["data"]["params"]}
        assert params["model.lr"] in ("0.001", "0.01") and params["trainer.max_epochs"] == "2"
        history = rest(mlflow_server, f"metrics/get-history?run_id={run_id}&metric_key=val/loss")
        assert len(history["metrics"]) == 2  # one value per epoch, none lost
        listed = rest(mlflow_server, f"artifacts/list?run_id={run_id}")
        assert {"config.yaml", "checkpoints", "figures"} <= {f["path"] for f in listed["files"]}

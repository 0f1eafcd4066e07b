"""The Optuna sweeper (hydra_plugins/vnnlab_optuna_sweeper) and the pruning callback
(vnnlab.sweep.pruning): search-space parsing, a real Hydra multirun of a toy task in this process
(failed trials, resuming the study from its SQLite storage, each job reporting to its own
trial), and a real Lightning fit pruned by the median of a study's other trials."""

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import hydra
import optuna
import pytest
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.vnnlab_optuna_sweeper.optuna_sweeper import (
    judge,
    parse_search_space,
    trial_override,
)
from vnnlab.sweep.pruning import TrialPruning

# --- (a) the search space -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("choice(0.01,0.1,1.0)", CategoricalDistribution([0.01, 0.1, 1.0])),
        ("relu,tanh", CategoricalDistribution(["relu", "tanh"])),
        ("interval(0.1,0.5)", FloatDistribution(0.1, 0.5)),
        ("int(interval(1,8))", IntDistribution(1, 8)),
        ("tag(log,interval(1e-4,1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("tag(log,int(interval(2,64)))", IntDistribution(2, 64, log=True)),
        ("range(1,10,2)", IntDistribution(1, 9, step=2)),  # Hydra's stop is exclusive
    ],
)
def test_search_space_becomes_optuna_distributions(space, expected):
    parsed, _ = parse_search_space({"model.lr": space})
    assert parsed["model.lr"].distribution == expected


def test_a_sample_becomes_an_override_hydra_parses_back():
    parsed, _ = parse_search_space(
        {"model.hidden": "choice([64],[64,64])", "model.lr": "tag(log,interval(1e-5,1e-1))"}
    )
    hidden, lr = parsed["model.hidden"], parsed["model.lr"]
    assert hidden.distribution == CategoricalDistribution(["[64]", "[64,64]"])
    overrides = [hidden.override("[64,64]"), lr.override(1.5e-05)]
    values = [o.value() for o in OverridesParser.create().parse_overrides(overrides)]
    assert values == [[64, 64], 1.5e-05]


def test_nested_params_and_command_line_sweeps_join_the_space_fixed_overrides_pass():
    params = {"model": {"lr": "interval(0.1,0.2)"}}  # as `+hydra.sweeper.params.model.lr=…` nests
    arguments = ["model.sigma2=0.1,1.0", "trainer.max_epochs=3", "+extra=choice(1,2)"]
    space, fixed = parse_search_space(params, arguments)
    assert list(space) == ["model.lr", "model.sigma2", "extra"]
    assert space["extra"].override(2) == "+extra=2"
    assert fixed == ["trainer.max_epochs=3"]


@pytest.mark.parametrize(
    "space", ["0.1", "tag(lg,interval(0.1,1))", "tag(log,interval(0,1))", "interval(2,1)"]
)
def test_what_is_not_a_search_space_is_refused_naming_the_key(space):
    with pytest.raises(OverrideParseException, match="model.lr"):
        parse_search_space({"model.lr": space})


def test_the_trial_override_survives_hydra_quoting():
    storage = "sqlite:////tmp/a launch dir/it's/optuna.db"  # a space and a quote
    fields = {
        "storage": storage,
        "study_name": "vnnlab:model.lr,model.sigma2",
        "trial_id": 3,
        "monitor": "val/loss",
        "direction": "minimize",
        "warmup_epochs": 1,
    }
    override = OverridesParser.create().parse_override(trial_override(**fields))
    assert (override.key_or_group, override.is_add(), override.value()) == ("trial", True, fields)


def _job(value=None, status=JobStatus.COMPLETED) -> JobReturn:
    return JobReturn(overrides=["x=1"], status=status, _return_value=value)


def _outcome(status: str, **metrics: float) -> dict:
    return {"overrides": "x=1", "status": status, "reason": "r", "run_id": "", "metrics": metrics}


@pytest.mark.parametrize(
    ("job", "state", "value"),
    [
        (_job(_outcome("FINISHED", **{"val/loss": 0.5})), "COMPLETE", 0.5),
        (_job(_outcome("FINISHED", **{"val/loss": math.nan})), "FAIL", None),
        (_job(_outcome("FINISHED", **{"test/mse": 0.5})), "FAIL", None),
        (_job(_outcome("FAILED")), "FAIL", None),
        (_job(_outcome("BAD_INPUT")), "FAIL", None),
        (_job(_outcome("PRUNED", **{"val/loss": 0.5})), "PRUNED", None),
        (_job(RuntimeError("boom"), JobStatus.FAILED), "FAIL", None),
        (_job(None), "FAIL", None),
    ],
)
def test_each_job_outcome_becomes_a_trial_state(job, state, value):
    verdict = judge(job, "val/loss")
    assert (verdict.state, verdict.value) == (state, value)


# --- (b) a real sweep through Hydra -------------------------------------------------------------

EXPECTED_STATE = {"ok": "COMPLETE", "fail": "FAIL", "raise": "FAIL", "prune": "PRUNED"}


def toy_task(cfg: DictConfig) -> dict:
    """A toy job: objective (x - 0.3)², one per `mode` that fails, raises or is pruned. Like a
    vnnlab job, it reports its epoch's objective to its trial through TrialPruning, which
    rebuilds the trial from the id the sweeper passed (`+trial=…`)."""
    folder = Path(HydraConfig.get().runtime.output_dir)
    seen = {"x": cfg.x, "mode": cfg.mode, "trial": OmegaConf.to_container(cfg.trial)}
    (folder / "seen.json").write_text(json.dumps(seen))
    loss = (cfg.x - 0.3) ** 2
    epoch_end = SimpleNamespace(
        current_epoch=0, sanity_checking=False, callback_metrics={"val/loss": loss},
        should_stop=False,
    )  # fmt: skip
    TrialPruning(**cfg.trial).on_validation_end(epoch_end, None)
    if cfg.mode == "raise":
        raise RuntimeError("the job raised")
    status = {"ok": "FINISHED", "fail": "FAILED", "prune": "PRUNED"}[cfg.mode]
    metrics = {"val/loss": loss}
    return {"overrides": "", "status": status, "reason": "", "run_id": "", "metrics": metrics}


@pytest.fixture
def launch_dir(tmp_path: Path, monkeypatch) -> Path:
    """The folder the sweeps start in (a space in its name: the storage URL must survive
    Hydra's quoting), with the toy task's config."""
    folder = tmp_path / "launch dir"
    (folder / "conf").mkdir(parents=True)
    (folder / "conf" / "config.yaml").write_text("x: 0.0\nmode: ok\ntracking:\n  experiment: toy\n")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # an error in the sweeper raises here
    return folder


def _sweep(launch_dir: Path, n_trials: int, sweep_dir: str, monkeypatch) -> None:
    """`python task.py -m …` of the toy task, in this process (Hydra's basic launcher runs each
    batch of n_jobs trials one after the other)."""
    argv = [
        "task.py", "-m", "hydra/sweeper=vnnlab_optuna", f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.n_jobs=2", "x=interval(0,1)", "mode=choice(ok,fail,raise,prune)",
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    conf = str(launch_dir / "conf")
    hydra.main(version_base="1.3", config_path=conf, config_name="config")(toy_task)()


def _study(launch_dir: Path) -> optuna.Study:
    # The defaults: the launch directory's optuna.db; the experiment and the sorted swept keys.
    storage = f"sqlite:///{launch_dir / 'optuna.db'}"
    return optuna.load_study(study_name="toy:mode,x", storage=storage)


def test_a_sweep_goes_on_past_failed_trials_and_resumes_its_study(launch_dir: Path, monkeypatch):
    _sweep(launch_dir, n_trials=6, sweep_dir="multirun/first", monkeypatch=monkeypatch)
    study = _study(launch_dir)
    first = study.get_trials()
    assert len(first) == 6
    assert [t.state.name for t in first] == [EXPECTED_STATE[t.params["mode"]] for t in first]
    assert {"COMPLETE", "FAIL"} <= {t.state.name for t in first}

    for trial in first:  # each job got its own trial, through a quoted +trial=… override
        seen = json.loads((launch_dir / f"multirun/first/{trial.number}/seen.json").read_text())
        assert seen["trial"]["storage"] == f"sqlite:///{launch_dir / 'optuna.db'}"
        assert (seen["x"], seen["mode"]) == (trial.params["x"], trial.params["mode"])
        # The sweeper passes Optuna's private trial._trial_id; the job's optuna.trial.Trial
        # rebuilt from it must be this very trial (two run at once: n_jobs=2), or its report
        # lands on another trial or fails.
        assert trial.intermediate_values == {0: pytest.approx((trial.params["x"] - 0.3) ** 2)}
    results = (launch_dir / "multirun/first/optimization_results.yaml").read_text()
    assert f"best_value: {study.best_value}" in results

    interrupted = study.ask()  # as a sweep killed mid-trial leaves it: RUNNING
    _sweep(launch_dir, n_trials=9, sweep_dir="multirun/second", monkeypatch=monkeypatch)
    resumed = _study(launch_dir).get_trials()
    assert len(resumed) == 9
    assert [(t.number, t.params, t.state) for t in resumed[:6]] == [
        (t.number, t.params, t.state) for t in first
    ]
    assert resumed[interrupted.number].state == TrialState.FAIL  # counted, not rerun
    assert sorted(p.name for p in (launch_dir / "multirun/second").glob("[0-9]*")) == ["7", "8"]
    xs = [t.params["x"] for t in resumed if t.params]
    assert len(set(xs)) == len(xs)  # the resumed sampler does not replay the first draws


# --- (c) pruning a real Lightning fit -------------------------------------------------------------


class TinyRegressor(pl.LightningModule):
    """Logs val/loss in its own on_validation_epoch_end, as vnnlab's models do (after the
    callbacks' hook of the same name has run)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.val_losses: list[torch.Tensor] = []

    def _loss(self, batch) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.val_losses.append(self._loss(batch))

    def on_validation_epoch_end(self):
        self.log("val/loss", torch.stack(self.val_losses).mean())
        self.val_losses.clear()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def _loader() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=generator)
    y = x.sum(dim=1, keepdim=True) + 10.0  # far from the initial fit: val/loss ≈ 100
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)


def _study_with_others(tmp_path: Path, others_loss: float) -> tuple[str, optuna.Study]:
    """A study whose five finished trials reported `others_loss` at every epoch."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=storage, study_name="toy")
    for _ in range(5):  # the median pruner judges once 5 trials have completed
        values = {epoch: others_loss for epoch in range(5)}
        study.add_trial(optuna.trial.create_trial(value=others_loss, intermediate_values=values))
    return storage, study


def _fit(storage: str, study: optuna.Study, max_epochs: int = 5) -> tuple[TrialPruning, pl.Trainer]:
    trial = study.ask()
    pruning = TrialPruning(storage, "toy", trial._trial_id, "val/loss", warmup_epochs=1)
    trainer = pl.Trainer(
        max_epochs=max_epochs, callbacks=[pruning], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(TinyRegressor(), train_dataloaders=_loader(), val_dataloaders=_loader())
    return pruning, trainer


def test_a_trial_worse_than_the_median_is_stopped_after_its_warmup(tmp_path: Path):
    storage, study = _study_with_others(tmp_path, others_loss=0.01)
    pruning, trainer = _fit(storage, study)
    assert pruning.pruned and pruning.pruned_epoch == 1  # epoch 0 is the warm-up
    assert trainer.current_epoch < 5
    [trial] = optuna.load_study(study_name="toy", storage=storage).get_trials(
        states=(TrialState.RUNNING,)
    )  # the sweeper, not the callback, tells the trial's end
    assert sorted(trial.intermediate_values) == [0, 1]  # the sanity check is not reported
    assert trial.intermediate_values[1] == pytest.approx(
        float(trainer.callback_metrics["val/loss"])
    )


def test_a_trial_better_than_the_median_runs_to_the_end(tmp_path: Path):
    storage, study = _study_with_others(tmp_path, others_loss=1e6)
    pruning, trainer = _fit(storage, study, max_epochs=3)
    assert not pruning.pruned and pruning.pruned_epoch is None
    assert trainer.current_epoch == 3
    [trial] = study.get_trials(states=(TrialState.RUNNING,))
    assert sorted(trial.intermediate_values) == [0, 1, 2]

"""Pruning of an Optuna trial from inside its training run (`hydra/sweeper=vnnlab_optuna`).

The sweeper hands each job its trial as `+trial={storage, study_name, trial_id, monitor,
direction, warmup_epochs}`; the job passes `TrialPruning(**cfg.trial)` to `train(cfg,
callbacks=[…])` and reports PRUNED when `callback.pruned`. The study lives in a shared storage
(vnnlab.sweep.study_storage), so this process, the sweeper and the other jobs all see the same
trials.
"""

import optuna
import pytorch_lightning as pl

from vnnlab.sweep.study_storage import open_storage

# Optuna's default: the median of fewer completed trials says little.
MEDIAN_STARTUP_TRIALS = 5


class TrialPruning(pl.Callback):
    """After each validation epoch, report `monitor` to the trial as the epoch's intermediate
    value and ask the study's median pruner whether to go on. When it says prune: stop
    training (`trainer.should_stop`) and remember the epoch. No exception is raised: the run
    ends normally and is tested on the model it stopped with; the job then says PRUNED.

    `warmup_epochs`: epochs 0 … warmup_epochs-1 are never pruned (too early to judge).
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_id: int,
        monitor: str,
        direction: str = "minimize",
        warmup_epochs: int = 1,
    ):
        self.storage = storage
        self.study_name = study_name
        self.trial_id = trial_id
        self.monitor = monitor
        self.direction = direction
        self.warmup_epochs = warmup_epochs
        self.pruned_epoch: int | None = None
        self._trial: optuna.Trial | None = None
        self._reported_epochs: set[int] = set()

    @property
    def pruned(self) -> bool:
        return self.pruned_epoch is not None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: a model logs its epoch metrics in its
        # own on_validation_epoch_end (vnnlab's do), which Lightning runs after the callbacks'.
        epoch = trainer.current_epoch
        if trainer.sanity_checking or self.pruned or epoch in self._reported_epochs:
            return  # several validations in one epoch (val_check_interval < 1): the first counts
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        trial = self._open_trial()
        trial.report(float(value), step=epoch)
        self._reported_epochs.add(epoch)
        if trial.should_prune():
            self.pruned_epoch = epoch
            trainer.should_stop = True

    def _open_trial(self) -> optuna.Trial:
        """The trial, from the storage (once): a study loaded with the pruner the sweeper
        describes; its direction checked against the stored one."""
        if self._trial is None:
            pruner = optuna.pruners.MedianPruner(
                n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=self.warmup_epochs
            )
            study = optuna.load_study(
                study_name=self.study_name, storage=open_storage(self.storage), pruner=pruner
            )
            stored = study.direction.name.lower()
            if stored != self.direction:
                raise ValueError(f"study {self.study_name} is to {stored}, not {self.direction}")
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

"""What every vnnlab model shares: the optimiser (the `optimizer` config group) and its
schedule, the {stage}/{term} logging contract, stateful evaluation metrics, and a stop at the
first non-finite loss."""

import inspect
from collections.abc import Mapping
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics import MeanMetric, Metric

from vnnlab.data.base import DataInfo, Target
from vnnlab.errors import BadInputError
from vnnlab.models.optimizers import ADAM, DecayFactor, LRSchedule, make_optimizer, make_scheduler
from vnnlab.schema import Positive


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite: the run stops at once and ends FAILED."""


class VNNModule(pl.LightningModule):
    """Subclasses set `needs_target`, build their network in __init__ and implement:

    - `training_terms(batch) -> dict[str, Tensor]`: scalar terms of the training objective,
      "loss" (what the optimiser minimises) among them; logged as train/<term> epoch means;
    - `evaluate(batch, stage) -> dict[str, Tensor | tuple]`: for val and test. A (B,) tensor is
      one value per example, averaged over the whole split by a torchmetrics MeanMetric; a tuple
      holds the update arguments of a metric that `special_metrics` declares (e.g. ECE);
    - `special_metrics(stage)`, `derived_metrics(values)` (optional): metrics that are not
      means over examples, and values computed from the others (e.g. rmse = √mse);
    - `use_training_inputs(x)`, `use_training_targets(y)`, `reference_metrics(info)`,
      `figures(info, train, test)`
      (optional): what a model computes from the data it is handed, see each below.

    Each subclass lists the knobs of `VNNModule.__init__` in its own signature (the config's
    keys are exactly its parameters) and passes them on; `optimizer` is the `optimizer` config
    group's node (models.optimizers), which train() hands to every model.
    """

    needs_target: ClassVar[Target]  # the targets it trains on; None: inputs only

    def __init__(
        self,
        lr: Positive = 1e-3,
        lr_schedule: LRSchedule = "cosine",
        lr_gamma: DecayFactor = 0.95,
        optimizer: Mapping[str, Any] = ADAM,
    ):
        super().__init__()
        self.lr, self.optimizer_config = lr, dict(optimizer)
        self.schedule = {"name": lr_schedule, "gamma": lr_gamma}
        self._metrics: dict[str, dict[str, Metric]] = {}

    # --- what a model says about its inputs -------------------------------------------------

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        """Raise BadInputError for values that are wrong together."""

    @classmethod
    def default(cls, name: str) -> Any:
        """The signature default of knob `name` (for checks on configs that omit it)."""
        return inspect.signature(cls).parameters[name].default

    @classmethod
    def check_data(cls, info: DataInfo, args: Mapping[str, Any]) -> None:
        """Raise BadInputError when this model cannot train on data described by `info`."""
        if cls.needs_target is None or info.target == cls.needs_target:
            return
        offered = f"{info.target} targets" if info.target else "inputs only"
        mismatch = (
            f"model={cls.__name__} trains on data with {cls.needs_target} targets, but this "
            f"data set has {offered}"
        )
        if info.other_target is not None and info.other_target[0] == cls.needs_target:
            raise BadInputError(f"{mismatch}: add {info.other_target[1]} to read its target as "
                                f"{cls.needs_target} values")  # fmt: skip
        raise BadInputError(f"{mismatch}: pick a matching pair")

    # --- optimisation -----------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.parameter_groups())
        cosine = self.schedule["name"] == "cosine"  # the only schedule that needs the fit's length
        steps = self.trainer.estimated_stepping_batches if cosine else 0
        scheduler = make_scheduler(optimizer, self.schedule["name"], self.schedule["gamma"], steps)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def make_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer_config, groups, self.lr)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: each a dict of "params" and, optionally,
        "lr_scale" (that group's learning rate is lr × lr_scale; a schedule scales every group
        alike). Default: one group of every parameter."""
        return [{"params": list(self.parameters())}]

    def groups_by_name(self, lr_scales: Mapping[str, float]) -> list[dict[str, Any]]:
        """Parameter groups for `parameter_groups`: a parameter whose name ends with a key of
        `lr_scales` learns at lr × that value, every other one at lr."""
        named = list(self.named_parameters())
        groups = [{"params": [p for name, p in named if not name.endswith(tuple(lr_scales))]}]
        for suffix, scale in lr_scales.items():
            params = [p for name, p in named if name.endswith(suffix)]
            groups.append({"params": params, "lr_scale": scale})
        return groups

    # --- the hooks subclasses implement -----------------------------------------------------

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        raise NotImplementedError

    def evaluate(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Any]:
        raise NotImplementedError

    def special_metrics(self, stage: str) -> dict[str, Metric]:
        return {}

    def derived_metrics(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        return {}

    def training_epoch_metrics(self, means: dict[str, Tensor]) -> dict[str, Tensor]:
        """Once per training epoch, with the epoch means of `training_terms` (by term name):
        further train/ metrics (ratios of those means, states of the parameters), logged
        with them. A model may also keep what it needs across epochs here."""
        return {}

    def use_training_inputs(self, x: Tensor) -> None:
        """Closed-form parts of a model computed from the whole training split's inputs x
        (N, n), e.g. PCA's components; train() calls it once before fitting."""

    def use_training_targets(self, y: Tensor) -> None:
        """What a model takes from the whole training split's targets y (N, q) or (N,), e.g.
        a regressor's target scaling; train() calls it once before fitting."""

    def fit_posthoc(self, train: tuple[Tensor, ...], batch_size: int) -> None:
        """What a model fits on the whole training split once training has ended (a Laplace
        approximation); train() calls it before saving the trained state and testing."""

    def reference_metrics(self, info: DataInfo) -> dict[str, float]:
        """Yardsticks for this model on data described by `info`, logged as test/<name> beside
        the data's own (VNNDataModule.reference_metrics)."""
        return {}

    def figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        """Artifacts drawn after the test: `train`, `test` are whole splits as the data module's
        split() gives them, (x, y) or (x,)."""
        return {}

    # --- Lightning's loop -------------------------------------------------------------------

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        terms = self.training_terms(batch)
        self._watch_for_non_finite(terms["loss"], batch_idx)
        self._add_to_epoch_means(terms, len(batch[0]))
        return terms["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # after the step, not in it: an optimiser that runs the step several times (IVON's
        # samples) would end the epoch more than once; before the epoch ends, so that callbacks
        # see its means there
        if batch_idx + 1 == self.trainer.num_training_batches:
            self._end_training_epoch()

    def on_train_epoch_start(self) -> None:
        self._train_sums: dict[str, Tensor] = {}
        self._train_count = 0
        # the first step of the epoch with a non-finite loss: (step, batch, loss); -1: none
        self._first_non_finite = torch.tensor([-1.0, -1.0, 0.0], device=self.device)

    def on_train_epoch_end(self) -> None:
        if self._train_count:  # an epoch cut short (max_steps, a time limit)
            self._end_training_epoch()

    # --- train/ epoch means and the non-finite check ----------------------------------------
    # Kept on the device and handed over once per epoch: a training step never waits for the
    # device (no .item(), no `if tensor`), and `self.log` costs about 1 ms a call even with
    # on_step=False (its result collection is walked every time), a quarter of a small BNN's
    # fit with four terms a step. A loss that turns NaN or infinite stops the run at the end
    # of its epoch, naming the step where it first did.

    def _watch_for_non_finite(self, loss: Tensor, batch_idx: int) -> None:
        loss = loss.detach().float()
        first_here = ~torch.isfinite(loss) & (self._first_non_finite[0] < 0)
        here = torch.stack([torch.full_like(loss, self.global_step),
                            torch.full_like(loss, batch_idx), loss])  # fmt: skip
        self._first_non_finite = torch.where(first_here, here, self._first_non_finite)

    def _add_to_epoch_means(self, terms: Mapping[str, Tensor], batch_size: int) -> None:
        for name, value in terms.items():
            weighted = value.detach() * batch_size
            previous = self._train_sums.get(name)
            self._train_sums[name] = weighted if previous is None else previous + weighted
        self._train_count += batch_size

    def _end_training_epoch(self) -> None:
        """Stop at a non-finite loss, else log train/<term>: the mean over the epoch's examples
        (batches weighted by their size; in a multi-process fit, over every process's
        examples), and what `training_epoch_metrics` adds."""
        names = list(self._train_sums)
        count = torch.tensor(float(self._train_count), device=self.device)
        failed = (self._first_non_finite[0] >= 0).float()
        local = torch.stack([*(self._train_sums[name] for name in names), count, failed])
        *sums, count, failed = self.trainer.strategy.reduce(local, reduce_op="sum")
        if failed > 0:  # also where only another process diverged: all of them stop
            raise self._non_finite_error()
        means = {name: total / count for name, total in zip(names, sums, strict=True)}
        means |= self.training_epoch_metrics(means)
        logged = {f"train/{name}": value for name, value in means.items()}
        self.log_dict(logged, on_step=False, on_epoch=True, batch_size=1)
        self._train_sums, self._train_count = {}, 0

    def _non_finite_error(self) -> NonFiniteLossError:
        step, batch, loss = self._first_non_finite.tolist()
        if step < 0:
            return NonFiniteLossError(
                "train/loss became non-finite in another process of this fit "
                f"(epoch {self.current_epoch})"
            )
        return NonFiniteLossError(
            f"train/loss became {loss} at step {int(step)} "
            f"(epoch {self.current_epoch}, batch {int(batch)})"
        )

    def on_validation_epoch_start(self) -> None:
        self._reset_metrics("val")

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._update_metrics("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._reset_metrics("test")

    def test_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> None:
        self._update_metrics("test", batch)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # --- evaluation metrics over a whole split ----------------------------------------------

    def _reset_metrics(self, stage: str) -> None:
        # Fresh objects each epoch, kept out of the state dict (they hold no learnt state).
        self._metrics[stage] = {
            name: metric.to(self.device) for name, metric in self.special_metrics(stage).items()
        }

    @torch.no_grad()
    def _update_metrics(self, stage: str, batch: tuple[Tensor, ...]) -> None:
        metrics = self._metrics[stage]
        for name, value in self.evaluate(batch, stage).items():
            if isinstance(value, tuple):
                metrics[name].update(*value)
                continue
            if name not in metrics:
                metrics[name] = MeanMetric().to(self.device)
            metrics[name].update(value.detach())

    def _log_metrics(self, stage: str) -> None:
        values = {name: metric.compute() for name, metric in self._metrics.pop(stage).items()}
        values |= self.derived_metrics(values)
        self.log_dict(
            {f"{stage}/{name}": value for name, value in values.items()}, prog_bar=stage == "val"
        )

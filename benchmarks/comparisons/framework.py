"""2. Framework overhead, 4. tracking overhead and 7. the hardware limit, on two workloads:

- the Bernoulli VAE 784-400-20 on MNIST (Adam 1e-3, batch 128), one training epoch
  (A) through `vnnlab.train.train` (Lightning, MLflow tracking and checkpoints as configured),
  (B) through the same Trainer without an MLflow run, (C) in a plain PyTorch loop over the same
  tensors (the data module's batches) with the same model and optimiser, and (D) in the same
  plain loop fed by torchvision's per-item MNIST through a DataLoader (the dimension-reduction
  issue's "2× faster" figure). Validation is off, so that every path runs the same steps.
- the default job (BNN regressor on synthetic data, validation every epoch): (A) against (B).

Each path trains 1 + repeats epochs in one go; epoch 1 is the warm-up; medians of the rest.
The hardware limit: the epoch's matrix-product FLOPs (torch.utils.flop_counter on one step)
over the machine's measured matmul rate."""

import itertools
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import pytorch_lightning as pl
import torch

from comparisons.common import Row, Scale, compose_config, training_step_flops, working_directory
from comparisons.data_path import per_item_batches
from vnnlab.console import quiet_dependencies
from vnnlab.train import build_data_and_model, build_trainer, train

VAE = ["model=vae", "model.hidden=[400]", "model.latent_dim=20", "model.likelihood=bernoulli",
       "model.lr=0.001", "model.lr_schedule=none", "data=mnist", "data.batch_size=128",
       "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0"]  # fmt: skip
QUIET = ["trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]


class EpochClock(pl.Callback):
    """Whole epochs as the user waits for them: from one epoch's start to the next (the last
    to the end of training), so epoch-end logging and checkpoint writes are inside."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end = time.perf_counter()

    def timed_epochs(self) -> list[float]:
        """Every epoch after the first (the warm-up)."""
        marks = [*self.starts, self.end]
        return [after - before for before, after in zip(marks[1:-1], marks[2:], strict=True)]


def tracked_epochs(overrides: list[str], folder: Path) -> list[float]:
    """(A): the real `train()`, its run in a store of its own under `folder`."""
    clock = EpochClock()
    cfg = compose_config([*overrides, f"tracking.uri=sqlite:///{folder}/mlflow.db"])
    with working_directory(folder):
        train(cfg, callbacks=[clock])
    return clock.timed_epochs()


def untracked_epochs(overrides: list[str], folder: Path) -> list[float]:
    """(B): the Trainer `train()` builds, with its checkpoints, fitted without a run."""
    clock = EpochClock()
    cfg = compose_config(overrides)
    datamodule, model = build_data_and_model(cfg)
    with quiet_dependencies():
        trainer = build_trainer(cfg, Path(tempfile.mkdtemp(dir=folder)), [clock])
        trainer.fit(model, datamodule=datamodule)
    return clock.timed_epochs()


def plain_epochs(overrides: list[str], epochs: int, batches: Iterable | None) -> tuple:
    """(C), or (D) when `batches` (torchvision's) is given: the same model and optimiser in a
    hand-written loop; returns (epoch seconds after the warm-up, FLOPs per example)."""
    cfg = compose_config(overrides)
    datamodule, model = build_data_and_model(cfg)
    optimizer = model.configure_optimizers()  # the fused Adam of lr_schedule=none
    feed = batches if batches is not None else datamodule.train_dataloader()
    limit = cfg.trainer.limit_train_batches

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        x, y = batch
        loss = model.training_terms((x.flatten(start_dim=1), y))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    first = next(iter(feed))
    flops_per_example = training_step_flops(lambda: step(first)) / len(first[0])
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for batch in itertools.islice(feed, limit):
            step(batch)
        seconds.append(time.perf_counter() - start)
    return seconds[1:], flops_per_example


def compare(root: str, n_val: int, scale: Scale, matmul_rate: float) -> list[Row]:
    epochs = 1 + scale.repeats
    limit = [f"trainer.limit_train_batches={scale.batches}"] if scale.batches else []
    vae = [*VAE, f"data.root={root}", f"data.n_val={n_val}", f"trainer.max_epochs={epochs}",
           *limit, *QUIET]  # fmt: skip
    default_job = [f"trainer.max_epochs={1 + 4 * scale.repeats}", *QUIET]
    with tempfile.TemporaryDirectory(prefix="vnnlab-bench-") as temporary:
        folder = Path(temporary)
        seconds = {
            "vnnlab (train)": tracked_epochs(vae, folder),
            "Lightning, no run": untracked_epochs(vae, folder),
        }
        seconds["plain loop"], flops_per_example = plain_epochs(vae, epochs, None)
        indices = build_data_and_model(compose_config(vae))[0].split_indices["train"].tolist()
        torchvision_feed = per_item_batches(root, indices, 128, seed=0)
        seconds["plain loop, per-item DataLoader"], _ = plain_epochs(vae, epochs, torchvision_feed)
        default_seconds = {
            "vnnlab (train)": tracked_epochs(default_job, folder),
            "Lightning, no run": untracked_epochs(default_job, folder),
        }
    n_examples = (scale.batches * 128) if scale.batches else len(indices)
    return vae_rows(seconds, flops_per_example, n_examples, matmul_rate) + [
        tracking_row("tracking overhead: default BNN epoch (with validation)", default_seconds)
    ]


def vae_rows(
    seconds: dict[str, list[float]], flops_per_example: float, n_examples: int, matmul_rate: float
) -> list[Row]:
    median = {path: statistics.median(each) for path, each in seconds.items()}
    vnnlab, plain = median["vnnlab (train)"], median["plain loop"]
    per_item = median["plain loop, per-item DataLoader"]
    limit = flops_per_example * n_examples / matmul_rate  # seconds at the measured matmul rate
    details = {"epoch_seconds": median, "each": seconds, "flops_per_example": flops_per_example,
               "examples_per_epoch": n_examples, "limit_seconds": limit,
               "plain_loop_over_limit": plain / limit}  # fmt: skip
    return [
        Row("framework overhead: VAE epoch, vnnlab / plain loop", vnnlab / plain, "×",
            "≤ 1.15×", vnnlab / plain <= 1.15, details),
        tracking_row("tracking overhead: VAE epoch", seconds),
        Row("VAE epoch: plain loop on per-item DataLoader / vnnlab", per_item / vnnlab, "×",
            "≥ 2×", per_item / vnnlab >= 2),
        Row("hardware limit: VAE epoch / its FLOPs at the matmul rate", vnnlab / limit, "×",
            "≤ 2.5×", vnnlab / limit <= 2.5),
    ]  # fmt: skip


def tracking_row(name: str, seconds: dict[str, list[float]]) -> Row:
    tracked = statistics.median(seconds["vnnlab (train)"])
    untracked = statistics.median(seconds["Lightning, no run"])
    overhead = tracked / untracked - 1
    details = {"epoch_seconds": {"tracked": tracked, "untracked": untracked}}
    return Row(name, overhead, "%", "≤ 5%", overhead <= 0.05, details)

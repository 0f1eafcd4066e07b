"""2. Framework overhead, 4. tracking overhead and 7. the hardware limit, on two workloads:

- the Bernoulli VAE 784-400-20 on MNIST (Adam 1e-3, batch 128), one training epoch
  (A) through `vnnlab.run.training.train` (Lightning, MLflow tracking and checkpoints as
  configured), (B) through the same Trainer without an MLflow run, (C) in a plain PyTorch loop
  over the same tensors (the data module's batches) with the same model and optimiser, and (D) in
  the same plain loop fed by torchvision's per-item MNIST through a DataLoader (the
  dimension-reduction issue's "2× faster" figure). Validation is off, so that every path runs the
  same steps.
- the default job (BNN regressor on synthetic data, validation every epoch): (A) against (B).

Each round runs every path once, two epochs each (the first warms up), so that a change in the
machine's load falls on all paths alike; medians over the rounds. Tracking is also measured
directly: the seconds spent in the run's records (TrackedRun.send) per epoch of (A).
The hardware limit: the epoch's matrix-product FLOPs (torch.utils.flop_counter on one step)
over the machine's measured matmul rate.

With --device cuda every path trains on the GPU: (A) and (B) with trainer.accelerator=gpu and
trainer.devices=1; (C) with the model, its optimiser and the training split on the GPU (the split
moved there once, as vnnlab's data modules do in a fit). Every clock read around GPU work comes
after torch.cuda.synchronize(). (D), a per-item DataLoader, is a CPU figure: not run on cuda."""

import itertools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch

from comparisons.common import (
    Row,
    Scale,
    compose_config,
    synchronize,
    training_step_flops,
    working_directory,
)
from comparisons.data_path import per_item_batches
from vnnlab.run.build import build_data_and_model, build_trainer
from vnnlab.run.console import quiet_dependencies
from vnnlab.run.training import train
from vnnlab.tracking.run import TrackedRun

VAE = ["model=vae", "model.hidden=[400]", "model.latent_dim=20", "model.likelihood=bernoulli",
       "model.lr=0.001", "model.lr_schedule=none", "data=mnist", "data.batch_size=128",
       "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0"]  # fmt: skip
QUIET = ["trainer.enable_progress_bar=false"]
ACCELERATOR = {"cpu": ["trainer.accelerator=cpu"],
               "cuda": ["trainer.accelerator=gpu", "trainer.devices=1"]}  # fmt: skip
TRACKED, UNTRACKED, PLAIN, PER_ITEM = ("vnnlab (train)", "Lightning, no run", "plain loop",
                                       "plain loop, per-item DataLoader")  # fmt: skip


class SendClock:
    """Seconds spent sending the run's records to the store, summed over every TrackedRun."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def counting(self) -> Iterator[None]:
        original = TrackedRun.send

        def timed_send(run: TrackedRun, *args, **kwargs) -> None:
            start = time.perf_counter()
            try:
                original(run, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        TrackedRun.send = timed_send
        try:
            yield
        finally:
            TrackedRun.send = original


class EpochClock(pl.Callback):
    """Whole epochs as the user waits for them: from one epoch's start to the next (the last
    to the end of training), so epoch-end logging and checkpoint writes are inside; and, with
    a SendClock, the part of each epoch spent sending records."""

    def __init__(self, sends: SendClock | None = None) -> None:
        self.sends = sends
        self.marks: list[tuple[float, float]] = []  # (time, send seconds so far)

    def _mark(self, pl_module: pl.LightningModule) -> None:
        synchronize(pl_module.device.type)  # the GPU's queued work belongs to the epoch before
        self.marks.append((time.perf_counter(), self.sends.seconds if self.sends else 0.0))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark(pl_module)

    def timed_epochs(self) -> list[tuple[float, float]]:
        """(seconds, of which sending records) of every epoch after the first (the warm-up)."""
        pairs = zip(self.marks[1:-1], self.marks[2:], strict=True)
        return [(end - start, sent_end - sent) for (start, sent), (end, sent_end) in pairs]


def tracked_epochs(overrides: list[str], folder: Path) -> list[tuple[float, float]]:
    """(A): the real `train()`, its run in a store of its own under `folder`."""
    sends = SendClock()
    clock = EpochClock(sends)
    cfg = compose_config([*overrides, f"tracking.uri=sqlite:///{folder}/mlflow.db"])
    with working_directory(folder), sends.counting():
        train(cfg, callbacks=[clock])
    return clock.timed_epochs()


def untracked_epochs(overrides: list[str], folder: Path) -> list[float]:
    """(B): the Trainer `train()` builds, with its checkpoints, fitted without a run."""
    clock = EpochClock()
    cfg = compose_config(overrides)
    datamodule, model = build_data_and_model(cfg)
    with quiet_dependencies():
        trainer = build_trainer(cfg, Path(tempfile.mkdtemp(dir=folder)), [clock])
        model.use_training_inputs(datamodule.split("train")[0])  # as train() does (PCA)
        trainer.fit(model, datamodule=datamodule)
    return [seconds for seconds, _ in clock.timed_epochs()]


def plain_epochs(
    overrides: list[str], epochs: int, batches: Iterable | None, device: str = "cpu"
) -> list[float]:
    """(C), or (D) when `batches` (torchvision's, on the CPU) is given: the same model and
    optimiser in a hand-written loop on `device`; the seconds of each epoch after the first."""
    cfg = compose_config(overrides)
    datamodule, model = build_data_and_model(cfg)
    model.to(device)
    step = plain_step(model)  # its optimiser made after the move, as Lightning makes it
    if batches is not None:
        feed = batches
    else:  # the data module's batches, their tensors moved to the device once, as in a fit
        feed = datamodule.train_dataloader()
        feed.tensors = tuple(t.to(device) for t in feed.tensors)
    seconds = []
    for _ in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        for batch in itertools.islice(feed, cfg.trainer.limit_train_batches):
            step(batch)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def plain_step(model) -> Callable[[tuple[torch.Tensor, ...]], None]:
    optimizer = model.configure_optimizers()  # the fused Adam of lr_schedule=none

    def step(batch: tuple[torch.Tensor, ...]) -> None:
        x, y = batch  # torchvision's images are (B, 1, 28, 28)
        loss = model.training_terms((x.flatten(start_dim=1), y))["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def vae_flops_per_example(overrides: list[str]) -> float:
    datamodule, model = build_data_and_model(compose_config(overrides))
    batch = next(iter(datamodule.train_dataloader()))
    return training_step_flops(lambda: plain_step(model)(batch)) / len(batch[0])


def compare(root: str, n_val: int, scale: Scale, matmul_rate: float, device: str) -> list[Row]:
    limit = [f"trainer.limit_train_batches={scale.batches}"] if scale.batches else []
    on_device = [*QUIET, *ACCELERATOR[device]]
    vae = [*VAE, f"data.root={root}", f"data.n_val={n_val}", "trainer.max_epochs=2", *limit,
           *on_device]  # fmt: skip
    default_job = ["trainer.max_epochs=5", *on_device]
    indices = build_data_and_model(compose_config(vae))[0].split_indices["train"].tolist()
    paths = [TRACKED, UNTRACKED, PLAIN] + ([PER_ITEM] if device == "cpu" else [])
    vae_seconds = {path: [] for path in paths}
    vae_sending, default_seconds, default_sending = [], {TRACKED: [], UNTRACKED: []}, []
    with tempfile.TemporaryDirectory(prefix="vnnlab-bench-") as temporary:
        folder = Path(temporary)
        for _ in range(scale.repeats):
            for seconds, sent in tracked_epochs(vae, folder):
                vae_seconds[TRACKED].append(seconds)
                vae_sending.append(sent / seconds)
            vae_seconds[UNTRACKED] += untracked_epochs(vae, folder)
            vae_seconds[PLAIN] += plain_epochs(vae, 2, None, device)
            if PER_ITEM in vae_seconds:  # CPU only
                torchvision_feed = per_item_batches(root, indices, 128, seed=0)
                vae_seconds[PER_ITEM] += plain_epochs(vae, 2, torchvision_feed)
            for seconds, sent in tracked_epochs(default_job, folder):
                default_seconds[TRACKED].append(seconds)
                default_sending.append(sent / seconds)
            default_seconds[UNTRACKED] += untracked_epochs(default_job, folder)
    n_examples = scale.batches * 128 if scale.batches else len(indices)
    limit_seconds = vae_flops_per_example(vae) * n_examples / matmul_rate
    return [
        *vae_rows(vae_seconds, limit_seconds),
        tracking_row("tracking: VAE epoch", vae_seconds, vae_sending),
        tracking_row("tracking: default BNN epoch (with validation)", default_seconds,
                     default_sending),
    ]  # fmt: skip


def vae_rows(seconds: dict[str, list[float]], limit_seconds: float) -> list[Row]:
    """The rows of the VAE's paths; the per-item DataLoader's only where it was measured (CPU)."""
    median = {path: statistics.median(each) for path, each in seconds.items()}
    vnnlab, plain = median[TRACKED], median[PLAIN]
    details = {"epoch_seconds": median, "each": seconds, "limit_seconds": limit_seconds,
               "plain_loop_over_limit": plain / limit_seconds}  # fmt: skip
    rows = [
        Row("framework overhead: VAE epoch, vnnlab / plain loop", vnnlab / plain, "×",
            "≤ 1.15×", vnnlab / plain <= 1.15, details),
    ]  # fmt: skip
    if PER_ITEM in median:
        per_item = median[PER_ITEM]
        rows.append(Row("VAE epoch: plain loop on per-item DataLoader / vnnlab",
                        per_item / vnnlab, "×", "≥ 2×", per_item / vnnlab >= 2))  # fmt: skip
    limit_ratio = vnnlab / limit_seconds
    rows.append(Row("hardware limit: VAE epoch / its FLOPs at the matmul rate", limit_ratio, "×",
                    "≤ 2.5×", limit_ratio <= 2.5))  # fmt: skip
    return rows


def tracking_row(name: str, seconds: dict[str, list[float]], sending: list[float]) -> Row:
    """The share of a tracked epoch spent sending records (the row), beside the difference
    between tracked and untracked epochs (details: noisier, the epochs being different runs)."""
    share = statistics.median(sending)
    tracked, untracked = statistics.median(seconds[TRACKED]), statistics.median(seconds[UNTRACKED])
    details = {"epoch_seconds": {"tracked": tracked, "untracked": untracked},
               "tracked_over_untracked_minus_1": tracked / untracked - 1}  # fmt: skip
    return Row(f"{name}: share spent sending records", share, "%", "≤ 5%", share <= 0.05, details)

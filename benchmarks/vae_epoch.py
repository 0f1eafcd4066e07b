"""Seconds per VAE training epoch: vnnlab's Lightning path against a plain loop over torchvision.

(A) vnnlab: the real `vnnlab.models.vae.VAE` (Bernoulli, 784-400-20, Adam 1e-3, no schedule) fed by
    `MNISTDataModule` through a `pytorch_lightning.Trainer(max_epochs=1)` without validation,
    logger or checkpoints; the epoch is timed from on_train_epoch_start to on_train_epoch_end.
(B) plain: the same network and loss (pytorch/examples `vae/main.py`) in a plain PyTorch loop
    with the same fused Adam, fed by `DataLoader(MNIST(root, transform=ToTensor()),
    batch_size=128, shuffle=True)` over the same 55k training images.

One untimed warm-up epoch each, then `--repeats` rounds that alternate A and B; medians.
Run from the repository root:

    python benchmarks/vae_epoch.py --root ../shared/data
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torchvision
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import ToTensor

from vnnlab.console import quiet_dependencies
from vnnlab.data.mnist import MNISTDataModule
from vnnlab.models.vae import VAE

RESULTS = Path(__file__).parent / "results" / "vae_epoch.json"
VNNLAB = "vnnlab VAE + MNISTDataModule + Lightning"
PLAIN = "plain loop + DataLoader(MNIST, ToTensor)"
IN_FEATURES, HIDDEN, LATENT = 784, 400, 20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("VNNLAB_DATA_ROOT", "data"))
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per path")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


# --- (A) vnnlab ------------------------------------------------------------------------------


class EpochTimer(pl.Callback):
    """Seconds of each training epoch, from Lightning's own epoch hooks."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def vnnlab_epoch(module: MNISTDataModule, seed: int) -> tuple[float, float, float]:
    """One epoch of a fresh, seeded VAE: (epoch seconds, whole fit() seconds, train loss)."""
    torch.manual_seed(seed)
    model = VAE(IN_FEATURES, latent_dim=LATENT, hidden=[HIDDEN], likelihood="bernoulli",
                lr=1e-3, lr_schedule="none")  # fmt: skip
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=module)
    fit_seconds = time.perf_counter() - start
    [seconds] = timer.seconds
    return seconds, fit_seconds, float(trainer.callback_metrics["train/loss"])


# --- (B) plain PyTorch -----------------------------------------------------------------------


class PlainVAE(nn.Module):
    """pytorch/examples vae/main.py: 784-400-(20, 20) encoder, 20-400-784 decoder, ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(IN_FEATURES, HIDDEN)
        self.fc21 = nn.Linear(HIDDEN, LATENT)  # mean
        self.fc22 = nn.Linear(HIDDEN, LATENT)  # log-variance
        self.fc3 = nn.Linear(LATENT, HIDDEN)
        self.fc4 = nn.Linear(HIDDEN, IN_FEATURES)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = torch.relu(self.fc1(x))
        mean, logvar = self.fc21(h), self.fc22(h)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return self.fc4(torch.relu(self.fc3(z))), mean, logvar  # logits (B, 784)


def negative_elbo(x: Tensor, logits: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """Mean over the batch of BCE summed over pixels + KL(N(μ, σ²) ‖ N(0, I)), as vnnlab's loss."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp())
    return (bce + kl) / len(x)


def plain_epoch(batches: DataLoader, seed: int) -> tuple[float, float]:
    """One epoch of a fresh, seeded network: (seconds, mean training loss)."""
    torch.manual_seed(seed)
    model = PlainVAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as vnnlab trains
    total_loss, n_batches = 0.0, 0
    start = time.perf_counter()
    for images, _ in batches:
        x = images.flatten(start_dim=1)  # (B, 1, 28, 28) → (B, 784)
        loss = negative_elbo(x, *model(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        n_batches += 1
    return time.perf_counter() - start, total_loss / n_batches


def per_item_batches(root: str, indices: list[int], batch_size: int, seed: int) -> DataLoader:
    dataset = torchvision.datasets.MNIST(root, train=True, transform=ToTensor())
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(Subset(dataset, indices), batch_size, shuffle=True, generator=generator)


# --- side by side ----------------------------------------------------------------------------


def time_both(module: MNISTDataModule, loader: DataLoader, repeats: int, seed: int) -> dict:
    vnnlab_epoch(module, seed)  # warm-up, untimed
    plain_epoch(loader, seed)
    runs = {VNNLAB: {"epoch": [], "fit": [], "loss": []}, PLAIN: {"epoch": [], "loss": []}}
    for _ in range(repeats):
        seconds, fit_seconds, loss = vnnlab_epoch(module, seed)
        runs[VNNLAB]["epoch"].append(seconds)
        runs[VNNLAB]["fit"].append(fit_seconds)
        runs[VNNLAB]["loss"].append(loss)
        seconds, loss = plain_epoch(loader, seed)
        runs[PLAIN]["epoch"].append(seconds)
        runs[PLAIN]["loss"].append(loss)
    return runs


def summarise(runs: dict) -> dict:
    summary = {}
    for name, run in runs.items():
        summary[name] = {
            "seconds_per_epoch": statistics.median(run["epoch"]),
            "seconds_each": [round(seconds, 3) for seconds in run["epoch"]],
            "mean_train_loss": statistics.median(run["loss"]),
        }
        if "fit" in run:
            summary[name]["fit_seconds"] = statistics.median(run["fit"])
    return summary


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    module = MNISTDataModule(root=args.root, batch_size=args.batch_size, seed=args.seed)
    module.setup()
    indices = module.split_indices["train"].tolist()
    loader = per_item_batches(args.root, indices, args.batch_size, args.seed)
    start = time.perf_counter()
    with quiet_dependencies():  # Lightning's device lines and tips, once per repeat
        summary = summarise(time_both(module, loader, args.repeats, args.seed))
    ratio = summary[PLAIN]["seconds_per_epoch"] / summary[VNNLAB]["seconds_per_epoch"]
    print(f"{'path':<44} {'epoch s (median)':>16} {'train loss':>11}")
    for name, row in summary.items():
        print(f"{name:<44} {row['seconds_per_epoch']:>16.3f} {row['mean_train_loss']:>11.2f}")
    print(f"{'ratio plain / vnnlab':<44} {ratio:>15.2f}x")
    report = {
        "command": " ".join(sys.argv),
        "train_images": len(indices),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "paths": summary,
        "ratio_plain_over_vnnlab": round(ratio, 2),
        "target_ratio_ge_2": ratio >= 2,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": pl.__version__,
        "machine": f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

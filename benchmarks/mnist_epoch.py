"""Seconds per MNIST training epoch: MNISTDataModule's slices against torchvision's per-item path.

Both feed the same MLP (784-400-400-10, ReLU, fused Adam 1e-3) in a plain PyTorch loop over the same
55k training images; only the input pipeline differs. Run from the repository root:

    python benchmarks/mnist_epoch.py --root ../shared/data
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.transforms import ToTensor

from vnnlab.data.mnist import MNISTDataModule

RESULTS = Path(__file__).parent / "results" / "mnist_epoch.json"
IN_MEMORY, PER_ITEM = "MNISTDataModule (index slices)", "DataLoader(MNIST, ToTensor)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=os.environ.get("VNNLAB_DATA_ROOT", "data"))
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per pipeline")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args()


def make_mlp() -> nn.Module:
    # Flatten turns torchvision's (B, 1, 28, 28) into (B, 784); the module's batches already are.
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 400),
        nn.ReLU(),
        nn.Linear(400, 400),
        nn.ReLU(),
        nn.Linear(400, 10),
    )


def train_epoch(batches: Iterable, seed: int) -> tuple[float, float]:
    """One epoch from a fresh, seeded MLP: (seconds, mean training loss)."""
    torch.manual_seed(seed)
    model = make_mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as vnnlab trains
    total_loss, n_batches = 0.0, 0
    start = time.perf_counter()
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        n_batches += 1
    return time.perf_counter() - start, total_loss / n_batches


def per_item_batches(root: str, indices: list[int], batch_size: int, seed: int) -> Iterable:
    """torchvision's usual path: a PIL image and a ToTensor per sample, collated per batch."""
    dataset = torchvision.datasets.MNIST(root, train=True, transform=ToTensor())
    generator = torch.Generator().manual_seed(seed)
    subset = Subset(dataset, indices)
    return DataLoader(subset, batch_size, shuffle=True, num_workers=0, generator=generator)


def read_epoch(batches: Iterable) -> float:
    """Seconds to draw every batch once without training: the input pipeline alone."""
    start = time.perf_counter()
    for _ in batches:
        pass
    return time.perf_counter() - start


def time_pipelines(pipelines: dict[str, Iterable], repeats: int, seed: int) -> dict[str, dict]:
    """Untimed warm-up epoch each, then `repeats` rounds that alternate the pipelines."""
    for batches in pipelines.values():
        train_epoch(batches, seed)
    runs = {name: {"train": [], "loss": [], "read": []} for name in pipelines}
    for _ in range(repeats):
        for name, batches in pipelines.items():
            seconds, loss = train_epoch(batches, seed)
            runs[name]["train"].append(seconds)
            runs[name]["loss"].append(loss)
            runs[name]["read"].append(read_epoch(batches))
    return runs


def summarise(runs: dict[str, dict]) -> dict[str, dict]:
    return {
        name: {
            "seconds_per_epoch": statistics.median(run["train"]),
            "seconds_each": [round(seconds, 4) for seconds in run["train"]],
            "data_only_seconds": statistics.median(run["read"]),
            "mean_train_loss": statistics.median(run["loss"]),
        }
        for name, run in runs.items()
    }


def speedups(summary: dict[str, dict]) -> dict[str, float]:
    """Per-item time over in-memory time, for the whole epoch and for the data alone."""
    fast, slow = summary[IN_MEMORY], summary[PER_ITEM]
    return {key: slow[key] / fast[key] for key in ("seconds_per_epoch", "data_only_seconds")}


def print_table(summary: dict[str, dict], ratios: dict[str, float]) -> None:
    print(f"{'pipeline':<32} {'epoch s (median)':>16} {'data-only s':>12} {'train loss':>11}")
    for name, row in summary.items():
        print(
            f"{name:<32} {row['seconds_per_epoch']:>16.3f} {row['data_only_seconds']:>12.3f} "
            f"{row['mean_train_loss']:>11.4f}"
        )
    epoch, data = ratios["seconds_per_epoch"], ratios["data_only_seconds"]
    print(f"{'ratio per-item / in-memory':<32} {epoch:>15.1f}x {data:>11.1f}x")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    module = MNISTDataModule(root=args.root, batch_size=args.batch_size, seed=args.seed)
    start = time.perf_counter()
    module.setup()
    setup_seconds = time.perf_counter() - start
    indices = module.split_indices["train"].tolist()
    pipelines = {
        IN_MEMORY: module.train_dataloader(),
        PER_ITEM: per_item_batches(args.root, indices, args.batch_size, args.seed),
    }
    summary = summarise(time_pipelines(pipelines, args.repeats, args.seed))
    ratios = speedups(summary)
    print_table(summary, ratios)
    report = {
        "command": " ".join(sys.argv),
        "train_images": len(indices),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "repeats": args.repeats,
        "setup_seconds": round(setup_seconds, 3),
        "pipelines": summary,
        "speedup_epoch": round(ratios["seconds_per_epoch"], 2),
        "speedup_data_only": round(ratios["data_only_seconds"], 2),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""vnnlab's benchmark suite: every comparison side by side in one invocation on this machine,
as ratios against the targets of the performance issue, printed as a table with the machine's
description and written as Markdown and JSON.

    python benchmarks/suite.py --root ../shared/data            # the full suite (~10 min)
    python benchmarks/suite.py --quick --root ../shared/data    # a reduced run (< 1 min)
    python benchmarks/suite.py --device cuda --root ../shared/data  # on the GPU

Comparisons (one module each in benchmarks/comparisons/): data path, framework overhead,
tracking overhead and the hardware limit (framework), Monte Carlo cost, the inference methods'
costs (ensemble, MC dropout, Laplace), start-up and sweep throughput. Every repeated timing is
a median after an untimed warm-up.

--device cuda trains on the GPU: the framework comparison (the VAE and BNN epochs through
vnnlab, through Lightning without a run, and in the plain loop, every one on the GPU), the
hardware limit (against the GPU's float32 matmul rate) and the Monte Carlo cost. The targets
were set for a CPU: on a GPU a step of batch 128 may be bound by kernel launches, not by the
matmul rate, which the hardware-limit row then shows as a large ratio.

CPU-only, skipped with --device cuda: the data path and the VAE on a per-item DataLoader
(torchvision's per-item loading is a CPU cost), start-up and sweep throughput (commands in
fresh processes, as a user runs them). The table's header line says so. The results go to
suite-cuda.md and .json, beside the CPU run's suite.md and .json.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

# `python benchmarks/suite.py` puts benchmarks/ on the path: the comparisons import as a package
from comparisons import data_path, framework, inference, monte_carlo, startup
from comparisons.common import Row, Scale, machine, matmul_flops_per_second

RESULTS = Path(__file__).parent / "results"
PARTS = ("data_path", "framework", "monte_carlo", "inference", "startup")
GPU_PARTS = (
    "framework",
    "monte_carlo",
    "inference",
)  # the others are CPU-only (the docstring says why)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few batches and repeats each")
    parser.add_argument("--root", default=os.environ.get("VNNLAB_DATA_ROOT", "data"),
                        help="MNIST in torchvision's layout (<root>/MNIST/raw)")  # fmt: skip
    parser.add_argument("--n-val", type=int, default=5000, help="validation images (data.n_val)")
    parser.add_argument("--parts", nargs="+", choices=PARTS,
                        help=f"default: all on cpu, {' '.join(GPU_PARTS)} on cuda")  # fmt: skip
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the models train (cuda: the first GPU)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    args = parser.parse_args()
    available = GPU_PARTS if args.device == "cuda" else PARTS
    if args.parts is None:
        args.parts = list(available)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU (torch.cuda.is_available() is False)")
    if not set(args.parts) <= set(available):
        parser.error(f"--device {args.device} runs only {', '.join(available)}")
    return args


def run_parts(args: argparse.Namespace, scale: Scale, matmul_rate: float) -> list[Row]:
    root = str(Path(args.root).resolve())
    measure = {
        "data_path": lambda: data_path.compare(root, args.n_val, scale),
        "framework": lambda: framework.compare(root, args.n_val, scale, matmul_rate, args.device),
        "monte_carlo": lambda: monte_carlo.compare(scale, args.device),
        "inference": lambda: inference.compare(scale, args.device),
        "startup": lambda: startup.compare(scale),
    }
    rows = []
    for part in args.parts:
        start = time.perf_counter()
        rows += measure[part]()
        print(f"  {part}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[Row], description: dict, matmul_rate: float, quick: bool) -> str:
    verdict = {True: "yes", False: "**no**", None: ""}
    device = description["device"]
    if device == "cuda":
        device = (f"cuda ({description['gpu']}; data path, per-item DataLoader, start-up and "
                  "sweep are CPU-only, not measured here)")  # fmt: skip
    lines = [
        f"Benchmark suite{' (--quick: a few batches, not the targets)' if quick else ''}: "
        f"{description['cpu']}, {description['cores']} cores, {description['torch_threads']} "
        f"torch threads, torch {description['torch']}, Lightning {description['lightning']}, "
        f"device {device}; matmul {matmul_rate / 1e9:.0f} GFLOP/s (float32).",
        "",
        "| comparison | measured | target | met |",
        "|---|---:|---|---|",
        *(f"| {r.comparison} | {r.shown()} | {r.target} | {verdict[r.met]} |" for r in rows),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    scale = Scale.reduced() if args.quick else Scale.full()
    start = time.perf_counter()
    description = machine(device=args.device)
    matmul_rate = matmul_flops_per_second(args.device)
    rows = run_parts(args, scale, matmul_rate)
    table = markdown(rows, description, matmul_rate, args.quick)
    print(table)
    name = "suite" + ("-quick" if args.quick else "") + ("-cuda" if args.device == "cuda" else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.md").write_text(table, encoding="utf-8")
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": description,
        "matmul_flops_per_second": matmul_rate,
        "rows": [row.__dict__ for row in rows],
        "wall_seconds": round(time.perf_counter() - start, 1),
        "load_average_at_end": round(os.getloadavg()[0], 2),
    }
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out / name}.md and .json")


if __name__ == "__main__":
    main()

"""3. Monte Carlo cost: one BNN training step (forward with M samples, the ELBO, backward,
fused Adam) on 784-400-400-10, batch 128, for M = 1, 10, 50 and both estimators: sampled
weights (Blundell et al.) and local reparameterisation. vnnlab draws all M samples in one
batched pass; a Python loop over M single-sample passes (as common BNN libraries do) is
measured beside it for reference (not with --quick). With --device cuda the model and the batch
are on the GPU and each step ends with torch.cuda.synchronize(), so its kernels are timed."""

import torch

from comparisons.common import Row, Scale, median_seconds, synchronize
from vnnlab.models.classification import Classifier

SAMPLES = (1, 10, 50)
# the ceilings for M = 10 and M = 50, relative to M = 1 of the same estimator
CEILINGS = {"weights": {10: 3.0, 50: 18.0}, "local_reparam": {10: 2.5, 50: 8.0}}


def step_seconds(
    estimator: str, mc_samples: int, python_loop: bool, steps: int, device: str
) -> float:
    """Median seconds of one training step on `device`, over `steps` steps after a warm-up."""
    torch.manual_seed(0)
    samples_per_pass = 1 if python_loop else mc_samples
    bbb = {"_target_": "vnnlab.inference.bbb.BayesByBackprop", "estimator": estimator,
           "mc_samples": samples_per_pass}  # fmt: skip
    model = Classifier(784, 10, 55_000, inference=bbb, lr_schedule="none").to(device)
    optimizer = model.configure_optimizers()  # after .to(device): fused Adam on the device
    x = torch.rand(128, 784, device=device)
    labels = torch.randint(0, 10, (128,), device=device)
    draws = mc_samples if python_loop else 1

    def step() -> None:
        loss = sum(model.training_terms((x, labels))["loss"] for _ in range(draws)) / draws
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)

    seconds, _ = median_seconds(step, steps)
    return seconds


def compare(scale: Scale, device: str) -> list[Row]:
    steps = 3 if scale.quick else 15
    seconds = {
        (estimator, m): step_seconds(estimator, m, python_loop=False, steps=steps, device=device)
        for estimator in CEILINGS
        for m in SAMPLES
    }
    rows = []
    for estimator, ceilings in CEILINGS.items():
        step_ms = {f"M={m}": round(1e3 * seconds[(estimator, m)], 2) for m in SAMPLES}
        for m, ceiling in ceilings.items():
            ratio = seconds[(estimator, m)] / seconds[(estimator, 1)]
            rows.append(Row(f"MC cost: {estimator} step, M = {m} / M = 1", ratio, "×",
                            f"≤ {ceiling:g}×", ratio <= ceiling, {"step_ms": step_ms}))  # fmt: skip
    for m in () if scale.quick else SAMPLES[1:]:  # the loop over M = 50 alone takes seconds
        loop = step_seconds("weights", m, python_loop=True, steps=steps, device=device)
        rows.append(Row(f"MC cost: weights step as a Python loop over M = {m} / M = 1",
                        loop / seconds[("weights", 1)], "×", "(reference)"))  # fmt: skip
    return rows

"""7. What each inference method costs beside the others, on MNIST's network (784-400-400-10,
batch 128) and on the default regression job's (1-50-50-1, batch 50):

- a training step of a deep ensemble of K = 5 (one vectorised pass) against one MAP network's
  step (target ≤ 2.5×; K separate networks cost about K×);
- the S = 100 predictive pass over a test batch of MC dropout against BBB's (target ≤ 1.5×);
- Laplace's fit after training (last layer and all weights, Kronecker-factored, with its
  marginal-likelihood tuning) on N = 55 000 inputs, against one MAP epoch of the same N
  (55 000 / 128 steps).

Random inputs of MNIST's shape: the costs do not depend on the pixels."""

import time

import torch

from comparisons.common import Row, Scale, median_seconds, synchronize
from vnnlab.models.classification import Classifier
from vnnlab.models.regression import Regressor

METHODS = {
    "map": {"_target_": "vnnlab.inference.map.MAP"},
    "ensemble": {"_target_": "vnnlab.inference.ensemble.Ensemble", "members": 5},
    "mc_dropout": {"_target_": "vnnlab.inference.mc_dropout.MCDropout", "predict_samples": 100},
    "bbb": {"_target_": "vnnlab.inference.bbb.BayesByBackprop", "predict_samples": 100},
}
N_TRAIN, BATCH = 55_000, 128


def mnist_model(inference: dict, device: str) -> Classifier:
    torch.manual_seed(0)
    return Classifier(784, 10, N_TRAIN, inference=inference, lr_schedule="none").to(device)


def step_seconds(model, batch: tuple[torch.Tensor, ...], steps: int, device: str) -> float:
    """Median seconds of one training step (forward, loss, backward, optimiser step)."""
    optimizer = model.configure_optimizers()

    def step() -> None:
        loss = model.training_terms(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        synchronize(device)

    return median_seconds(step, steps)[0]


def predictive_seconds(model, x: torch.Tensor, repeats: int, device: str) -> float:
    def predict() -> None:
        with torch.no_grad():
            model.predict_proba(x)
        synchronize(device)

    return median_seconds(predict, repeats)[0]


def ensemble_rows(steps: int, device: str) -> list[Row]:
    mnist = (torch.rand(BATCH, 784, device=device), torch.randint(0, 10, (BATCH,), device=device))
    one = step_seconds(mnist_model(METHODS["map"], device), mnist, steps, device)
    five = step_seconds(mnist_model(METHODS["ensemble"], device), mnist, steps, device)
    torch.manual_seed(0)
    sine = (torch.rand(50, 1, device=device), torch.randn(50, 1, device=device))
    small = {name: Regressor(1, 1, 1000, inference=METHODS[name], lr_schedule="none").to(device)
             for name in ("map", "ensemble")}  # fmt: skip
    small_one = step_seconds(small["map"], sine, steps, device)
    small_five = step_seconds(small["ensemble"], sine, steps, device)
    return [
        Row("inference: ensemble K = 5 step / map step (784-400-400-10)", five / one, "×",
            "≤ 2.5×", five / one <= 2.5, {"step_ms": {"map": 1e3 * one, "ensemble": 1e3 * five}}),
        Row("inference: ensemble K = 5 step / map step (1-50-50-1)", small_five / small_one, "×",
            "≤ 2.5×", small_five / small_one <= 2.5,
            {"step_ms": {"map": 1e3 * small_one, "ensemble": 1e3 * small_five}}),
    ]  # fmt: skip


def dropout_row(repeats: int, device: str) -> Row:
    x = torch.rand(BATCH, 784, device=device)
    dropout = predictive_seconds(mnist_model(METHODS["mc_dropout"], device), x, repeats, device)
    bbb = predictive_seconds(mnist_model(METHODS["bbb"], device), x, repeats, device)
    return Row("inference: MC dropout S = 100 predictive / BBB S = 100", dropout / bbb, "×",
               "≤ 1.5×", dropout / bbb <= 1.5,
               {"ms": {"mc_dropout": 1e3 * dropout, "bbb": 1e3 * bbb}})  # fmt: skip


def laplace_rows(n_train: int, steps: int, device: str) -> list[Row]:
    x = torch.rand(n_train, 784, device=device)
    labels = torch.randint(0, 10, (n_train,), device=device)
    map_step = step_seconds(mnist_model(METHODS["map"], device), (x[:BATCH], labels[:BATCH]),
                            steps, device)  # fmt: skip
    epoch = map_step * n_train / BATCH
    rows = []
    for subset in ("last_layer", "all"):
        laplace = {"_target_": "vnnlab.inference.laplace.Laplace", "subset_of_weights": subset,
                   "hessian_structure": "kron"}  # fmt: skip
        model = mnist_model(laplace, device)
        start = time.perf_counter()
        model.fit_posthoc((x, labels), BATCH)
        synchronize(device)
        seconds = time.perf_counter() - start
        rows.append(Row(f"inference: Laplace fit ({subset}, kron) on N = {n_train}", seconds,
                        "s", "(reference)", None,
                        {"one_map_epoch_s": round(epoch, 2)}))  # fmt: skip
    return rows


def compare(scale: Scale, device: str) -> list[Row]:
    steps = 3 if scale.quick else 15
    n_train = 2_000 if scale.quick else N_TRAIN
    return [*ensemble_rows(steps, device), dropout_row(steps, device),
            *laplace_rows(n_train, steps, device)]  # fmt: skip

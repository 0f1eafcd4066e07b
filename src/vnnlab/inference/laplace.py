"""`laplace`: MAP training, then a Gaussian posterior fitted around θ_MAP (a post-hoc Laplace
approximation: MacKay 1992; Daxberger et al. 2021, with their library laplace-torch).

Training is MAP's (inference.map). When it ends, `fit_posthoc` fits on the training split

    q(θ) = N(θ_MAP, (H + λI)⁻¹),   H = Σ_n J_nᵀ Λ_n J_n,                                 (1)

J_n = ∂f(x_n)/∂θ at θ_MAP and Λ_n the negative log likelihood's Hessian in f (I/σ² for
regression, diag(p) − ppᵀ for the softmax): the generalised Gauss–Newton approximation of the
Hessian, over the last layer's weights or all of them (`subset_of_weights`), diagonal,
Kronecker-factored or full (`hessian_structure`). λ is the prior N(0, λ⁻¹I)'s precision in the
units of the summed log likelihood: the optimiser's per-point weight decay w is λ = N·w. With
`tune="marglik"`, λ and (regression) σ maximise the Laplace approximation of the evidence
(MacKay 1992), by Adam on log λ and log σ from their starting values:

    log p(D | λ, σ) ≈ log p(D | θ_MAP; σ) − ½ λ‖θ_MAP‖² − ½ log det(H + λI) + ½ P log λ.   (2)

σ starts at the training residual's root mean square, the first term's maximiser: the optimum
of (2) lies at or above it (H scales as 1/σ², so the log determinant falls as σ grows), and
Adam's steps of a fixed size (`MARGLIK_LR` in log σ) from a start far below it stall short of
it. With `tune="none"`, σ² is the model's (`model.sigma2`).

The predictive linearises the network around θ_MAP (the GLM predictive), so that under (1)

    f(x) ≈ f_MAP(x) + J(x)(θ − θ_MAP)  ~  N(f_MAP(x), J(x)(H + λI)⁻¹J(x)ᵀ),                (3)

of which `predictive_outputs` returns S = `predict_samples` draws: for regression each output
from its marginal (the task adds σ², Laplace's own: `noise_variance`); for classification the K
logits jointly. Before the fit (training's validation epochs) the predictive is the MAP network.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import Enum
from typing import Any, ClassVar, Literal

import torch
from laplace import Laplace as laplace_torch
from laplace.baselaplace import BaseLaplace
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from vnnlab.errors import bad_value
from vnnlab.inference.base import NetworkSpec, PosthocData
from vnnlab.inference.map import MAP
from vnnlab.models.objectives import optimal_noise_variance
from vnnlab.schema import Positive, PositiveInt

SubsetOfWeights = Literal["last_layer", "all"]
HessianStructure = Literal["diag", "kron", "full"]
Tuning = Literal["marglik", "none"]
MARGLIK_LR = 0.1  # Adam's step on log λ and log σ, laplace-torch's README's
JACOBIAN_ELEMENTS = 2**27  # Jacobians (rows, out, P) per predictive chunk: 512 MiB in float32
FULL_HESSIAN_ELEMENTS = 2**28  # P² at most for hessian_structure=full: 1 GiB in float32


class Laplace(MAP):
    """Laplace(subset_of_weights="last_layer", hessian_structure="kron", prior_precision=1.0,
    tune="marglik", marglik_steps=100, predict_samples=100): see the module docstring;
    `prior_precision` is λ, the starting value when tuned."""

    # laplace-torch's regression likelihood has one σ² for every point
    heteroscedastic: ClassVar[bool] = False

    def __init__(
        self,
        subset_of_weights: SubsetOfWeights = "last_layer",
        hessian_structure: HessianStructure = "kron",
        prior_precision: Positive = 1.0,
        tune: Tuning = "marglik",
        marglik_steps: PositiveInt = 100,
        predict_samples: PositiveInt = 100,
    ):
        super().__init__()
        self.subset_of_weights, self.hessian_structure = subset_of_weights, hessian_structure
        self.prior_precision, self.tune = prior_precision, tune
        self.marglik_steps, self.predict_samples = marglik_steps, predict_samples
        self._state: dict[str, Any] = {}  # laplace-torch's state as plain values; {}: unfitted
        self._laplace: BaseLaplace | None = None  # built from _state when first needed

    @classmethod
    def check_with(cls, model_args: Mapping[str, Any], optimizer_args: Mapping[str, Any]) -> None:
        if model_args.get("noise") == "heteroscedastic":
            raise bad_value("inference", "laplace", "model.noise=homoscedastic (laplace-torch's "
                            "regression likelihood has one σ²)")  # fmt: skip
        if model_args.get("learn_sigma2"):
            raise bad_value("inference", "laplace", "model.learn_sigma2=false (Laplace tunes σ² "
                            "itself, by its marginal likelihood)")  # fmt: skip

    def build(self, spec: NetworkSpec) -> None:
        super().build(spec)
        covered = self.net if self.subset_of_weights == "all" else list(self.net.children())[-1]
        weights = sum(p.numel() for p in covered.parameters())
        if self.hessian_structure == "full" and weights**2 > FULL_HESSIAN_ELEMENTS:
            allowed = f"kron or diag for {weights} weights (a full Hessian is {weights}² numbers)"
            raise bad_value("inference.hessian_structure", "full", allowed)

    # --- the fit ------------------------------------------------------------------------------

    def fit_posthoc(self, data: PosthocData) -> None:
        loader = DataLoader(TensorDataset(data.x, data.y), batch_size=data.batch_size)
        if data.likelihood == "regression" and self.tune == "marglik":
            sigma = residual_rms(self.net, data, loader)
        else:
            sigma = 1.0 if data.noise_var is None else data.noise_var**0.5
        laplace = self._new_laplace(data.likelihood, sigma)
        training = self.net.training  # laplace-torch's fit leaves the network in eval mode
        with autograd_on():
            laplace.fit(loader)
            if self.tune == "marglik":
                tune_by_marglik(laplace, self.marglik_steps)
        self.net.train(training)
        self._laplace, self._state = laplace, plain(laplace.state_dict())

    def _new_laplace(self, likelihood: str, sigma: float = 1.0) -> BaseLaplace:
        """An unfitted laplace-torch approximation around self.net; a last-layer one holds a
        copy of the network, made now."""
        knobs: dict[str, Any] = {"prior_precision": self.prior_precision}
        if likelihood == "regression":
            knobs["sigma_noise"] = sigma
        if self.subset_of_weights == "last_layer":  # named: else it keeps a batch to find it
            knobs["last_layer_name"] = list(self.net.named_children())[-1][0]
        return laplace_torch(self.net, likelihood, self.subset_of_weights,
                             self.hessian_structure, **knobs)  # fmt: skip

    @property
    def laplace(self) -> BaseLaplace | None:
        """The fitted laplace-torch approximation around the current network, None before the
        fit; rebuilt from the state after a checkpoint's weights were loaded or the network
        moved to another device."""
        if not self._state:
            return None
        device = next(self.net.parameters()).device
        if self._laplace is None or self._laplace.mean.device != device:
            self._laplace = self._new_laplace(self._state["likelihood"])
            self._laplace.load_state_dict(plain(self._state, device))
        return self._laplace

    # --- the predictive -----------------------------------------------------------------------

    def predictive_outputs(self, x: Tensor) -> Tensor:
        laplace = self.laplace
        if laplace is None:
            return super().predictive_outputs(x)  # (1, B, out)
        rows = max(1, JACOBIAN_ELEMENTS // (laplace.n_outputs * laplace.n_params))
        with autograd_on():
            # clone: a tensor autograd may use, should x come from inference mode
            draws = [self._draws(laplace, chunk.clone()) for chunk in x.split(rows)]
        return torch.cat(draws, dim=1)  # (S, B, out)

    def _draws(self, laplace: BaseLaplace, x: Tensor) -> Tensor:
        """S draws of (3) → (S, B, out)."""
        if laplace.likelihood == "regression":
            mean, var = self.glm_moments(x)
            noise = torch.randn(self.predict_samples, *mean.shape, dtype=mean.dtype,
                                device=mean.device)  # fmt: skip
            return mean + var.sqrt() * noise
        return laplace.functional_samples(x, pred_type="glm", n_samples=self.predict_samples)

    def glm_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Regression, after the fit: (3)'s mean f_MAP(x) and marginal variances, (B, out)
        each."""
        mean, covariance = self.laplace(x, pred_type="glm")  # (B, out), (B, out, out)
        return mean, covariance.diagonal(dim1=-2, dim2=-1)

    def noise_variance(self) -> Tensor | None:
        laplace = self.laplace
        if laplace is None or laplace.likelihood != "regression":
            return None
        return laplace.sigma_noise.detach().square()

    # --- checkpoints --------------------------------------------------------------------------

    def save_state(self) -> dict[str, Any]:
        return self._state

    def load_state(self, state: Mapping[str, Any]) -> None:
        """The Laplace object is rebuilt when first needed: load_model calls this before it
        loads the network's weights (a last-layer approximation copies them)."""
        self._state, self._laplace = dict(state), None


def residual_rms(net: torch.nn.Module, data: PosthocData, loader: DataLoader) -> float:
    """The σ that maximises the likelihood at the network's weights: √σ²*, σ²* the mean squared
    residual per element over the posthoc rows (objectives.optimal_noise_variance)."""
    with torch.no_grad():
        fitted = torch.cat([net(x) for x, _ in loader])  # (N, q), in batches
    return optimal_noise_variance(data.y, fitted).item() ** 0.5


def tune_by_marglik(laplace: BaseLaplace, steps: int) -> None:
    """λ and, for regression, σ that maximise (2): `steps` Adam steps on their logs."""
    start = {"prior_precision": laplace.prior_precision}
    if laplace.likelihood == "regression":
        start["sigma"] = laplace.sigma_noise
    logs = {name: value.detach().log().requires_grad_() for name, value in start.items()}
    adam = torch.optim.Adam(list(logs.values()), lr=MARGLIK_LR)
    for _ in range(steps):
        adam.zero_grad()
        (-log_evidence(laplace, **{name: log.exp() for name, log in logs.items()})).backward()
        adam.step()
    laplace.prior_precision = logs["prior_precision"].detach().exp()
    if "sigma" in logs:
        laplace.sigma_noise = logs["sigma"].detach().exp()


def log_evidence(
    laplace: BaseLaplace, prior_precision: Tensor, sigma: Tensor | None = None
) -> Tensor:
    """(2) at λ and, for regression, σ, differentiable in both; leaves them set in `laplace`.
    laplace-torch scales Kronecker factors by 1/σ² with math.pow, which drops σ's gradient, so
    here σ reaches the log determinant through the prior: log det(H/σ² + λI) =
    log det(H + σ²λI) − P log σ²."""
    if sigma is None:
        return laplace.log_marginal_likelihood(prior_precision)
    laplace.prior_precision, laplace.sigma_noise = sigma.square() * prior_precision, 1.0
    log_det = laplace.log_det_posterior_precision - laplace.n_params * sigma.square().log()
    laplace.prior_precision, laplace.sigma_noise = prior_precision, sigma
    prior = laplace.scatter - laplace.log_det_prior_precision  # λ‖θ‖² − P log λ
    return laplace.log_likelihood - 0.5 * (log_det + prior)


@contextmanager
def autograd_on() -> Iterator[None]:
    """Curvature and Jacobians need autograd, also where Lightning evaluates under no_grad or
    inference mode."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def plain(value: Any, device: torch.device | None = None) -> Any:
    """laplace-torch's state as torch.load(weights_only=True) reads it: tensors (detached, on
    `device` if given), lists, dicts and plain scalars; an Enum as its value."""
    if isinstance(value, Tensor):
        return value.detach() if device is None else value.detach().to(device)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): plain(item, device) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item, device) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"laplace-torch state holds a {type(value).__name__}")

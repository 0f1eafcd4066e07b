"""inference.laplace against exact Bayesian linear regression, its checkpoint round trip, its
refusals and its YAML; then through the real task modules.

On a network with no hidden layer and an identity output, f(x) = wᵀx + b is linear in
θ = (w, b) (laplace-torch's order: weight, then bias) and the Gaussian likelihood's Laplace
approximation is exact: the posterior is N(μ, Σ), Σ = (X̃ᵀX̃/σ² + λI)⁻¹, μ = ΣX̃ᵀy/σ², with
X̃ = [X, 1]; the GLM predictive at x̃ is N(x̃ᵀμ, x̃ᵀΣx̃); the evidence is N(y; 0, σ²I + X̃X̃ᵀ/λ).
Each is computed here in float64, independently of laplace-torch.

Checked broken on purpose: without `prior_precision` passed to laplace-torch (λ = 1, its
default) test_posterior_is_exact_bayesian_linear_regression fails on the covariance; with
log_evidence's σ passed through laplace-torch's own 1/σ² scaling, test_evidence_gradient fails
on ∂/∂σ for Kronecker factors.
"""

import inspect
import io
from pathlib import Path

import numpy as np
import pytest
import scipy.optimize
import torch
from omegaconf import OmegaConf
from torch import Tensor

from vnnlab import CONFIG_DIR
from vnnlab.errors import BadInputError
from vnnlab.inference.base import NetworkSpec, PosthocData
from vnnlab.inference.laplace import Laplace, log_evidence
from vnnlab.models.classification import Classifier
from vnnlab.models.regression import Regressor

N, D = 40, 3
PRIOR_PRECISION, SIGMA2 = 2.0, 0.25
EXACT = {"subset_of_weights": "all", "hessian_structure": "full", "tune": "none",
         "prior_precision": PRIOR_PRECISION}  # fmt: skip
LINEAR = NetworkSpec(in_features=D, hidden=(), out_features=1, activation="identity", n_train=N)
TOL = {"rtol": 1e-4, "atol": 1e-6}  # float32 against float64


def with_bias(x: Tensor) -> Tensor:
    """X̃ = [X, 1] in float64: the bias is the last weight."""
    return torch.cat([x, torch.ones(len(x), 1)], dim=1).double()


def linear_data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=generator)
    y = (
        x @ torch.tensor([[1.0], [-2.0], [0.5]])
        + 0.3
        + 0.5 * torch.randn(N, 1, generator=generator)
    )
    return x, y


def exact_posterior(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """μ (D + 1,) and Σ (D + 1, D + 1) of Bayesian linear regression, float64."""
    features = with_bias(x)
    precision = features.T @ features / SIGMA2 + PRIOR_PRECISION * torch.eye(D + 1).double()
    covariance = torch.linalg.inv(precision)
    return covariance @ features.T @ y.double().squeeze(1) / SIGMA2, covariance


def fitted_linear(noise_var: float = SIGMA2, **knobs) -> tuple[Laplace, Tensor, Tensor]:
    """A Laplace method on the linear model, its weights the exact posterior mean, fitted with
    `noise_var` as the model's σ²."""
    x, y = linear_data()
    method = Laplace(**(EXACT | knobs))
    method.build(LINEAR)
    mean, _ = exact_posterior(x, y)
    with torch.no_grad():
        method.net[0].weight.copy_(mean[:D].reshape(1, D))
        method.net[0].bias.copy_(mean[D:])
    method.fit_posthoc(PosthocData(x, y, "regression", noise_var, batch_size=16))
    return method, x, y


def test_posterior_is_exact_bayesian_linear_regression():
    method, x, y = fitted_linear()
    mean, covariance = exact_posterior(x, y)
    torch.testing.assert_close(method.laplace.mean.double(), mean, **TOL)
    torch.testing.assert_close(method.laplace.posterior_covariance.double(), covariance, **TOL)
    torch.testing.assert_close(method.noise_variance(), torch.tensor(SIGMA2))


def test_glm_predictive_has_the_exact_variance():
    method, x, y = fitted_linear(predict_samples=20000)
    mean, covariance = exact_posterior(x, y)
    x_new = torch.randn(5, D, generator=torch.Generator().manual_seed(1))
    features = with_bias(x_new)
    f_mean, f_var = method.glm_moments(x_new)  # (5, 1) each
    torch.testing.assert_close(f_mean.squeeze(1).double(), features @ mean, **TOL)
    exact_var = torch.einsum("bi,ij,bj->b", features, covariance, features)
    torch.testing.assert_close(f_var.squeeze(1).double(), exact_var, **TOL)
    torch.manual_seed(0)
    draws = method.predictive_outputs(x_new)  # (S, 5, 1)
    assert draws.shape == (20000, 5, 1)
    # 20000 draws: the sample variance within 5% (its sd is √(2/S) ≈ 1%)
    torch.testing.assert_close(draws.var(dim=0).squeeze(1).double(), exact_var, rtol=0.05, atol=0)


def test_evidence_is_the_exact_marginal_likelihood():
    """(2) at the λ, σ the weights were fitted with: exact for a linear-Gaussian model."""
    method, x, y = fitted_linear()
    features = with_bias(x)
    covariance = SIGMA2 * torch.eye(N).double() + features @ features.T / PRIOR_PRECISION
    exact = torch.distributions.MultivariateNormal(torch.zeros(N).double(), covariance)
    evidence = log_evidence(method.laplace, torch.tensor([PRIOR_PRECISION]),
                            torch.tensor(SIGMA2**0.5))  # fmt: skip
    torch.testing.assert_close(evidence.double(), exact.log_prob(y.double().squeeze(1)), **TOL)


def test_marglik_reaches_the_evidence_maximum_from_a_far_sigma2():
    """model.sigma2 at 10⁻⁴ of the noise: the tuned (λ, σ) are where Nelder–Mead (scipy), run
    on (2) from a neutral start, finds its maximum. Broken on purpose: with σ started at
    √model.sigma2 rather than the residual's root mean square, 100 Adam steps stop short."""
    method, _, _ = fitted_linear(tune="marglik", noise_var=SIGMA2 * 1e-4)
    tuned = [method.laplace.prior_precision.item(), method.laplace.sigma_noise.item()]

    def negative_evidence(logs: np.ndarray) -> float:
        at = torch.tensor(logs).exp().float()
        with torch.no_grad():
            return -log_evidence(method.laplace, at[:1], at[1]).item()

    best = scipy.optimize.minimize(negative_evidence, np.zeros(2), method="Nelder-Mead",
                                   options={"xatol": 1e-6, "fatol": 1e-9})  # fmt: skip
    assert best.success
    np.testing.assert_allclose(tuned, np.exp(best.x), rtol=0.02)


@pytest.mark.parametrize("structure", ["kron", "diag", "full"])
def test_evidence_gradient(structure):
    """∂(2)/∂(log λ, log σ) by autograd equals central differences, float64 (laplace-torch's
    Kronecker factors drop σ's gradient: log_evidence must not depend on them for it)."""
    torch.manual_seed(0)
    method = Laplace(subset_of_weights="all", hessian_structure=structure, tune="none")
    method.build(NetworkSpec(2, (8,), 1, "tanh", 64))
    method.double()
    x, y = torch.randn(64, 2).double(), torch.randn(64, 1).double()
    method.fit_posthoc(PosthocData(x, y, "regression", 0.1, batch_size=32))
    logs = torch.tensor([0.3, -0.5], dtype=torch.float64, requires_grad=True)

    def evidence(at: Tensor) -> Tensor:
        return log_evidence(method.laplace, at[:1].exp(), at[1].exp())

    gradient = torch.autograd.grad(evidence(logs), logs)[0]
    step = 1e-6 * torch.eye(2).double()
    with torch.no_grad():
        central = torch.stack([(evidence(logs + h) - evidence(logs - h)) / 2e-6 for h in step])
    torch.testing.assert_close(gradient, central, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("likelihood", "subset", "structure"),
    [("regression", "all", "full"), ("regression", "last_layer", "kron"),
     ("regression", "all", "kron"), ("classification", "last_layer", "diag"),
     ("classification", "all", "kron")],
)  # fmt: skip
def test_checkpoint_reproduces_the_predictive(likelihood, subset, structure):
    """save_state → torch.save → torch.load(weights_only=True) → load_state, in load_model's
    order (the state first, the network's weights after)."""
    torch.manual_seed(0)
    knobs = {"subset_of_weights": subset, "hessian_structure": structure, "marglik_steps": 5}
    classes = 3 if likelihood == "classification" else 1
    spec = NetworkSpec(2, (8,), classes, "tanh", 64)
    method = Laplace(**knobs)
    method.build(spec)
    x = torch.randn(64, 2)
    y = torch.randint(0, 3, (64,)) if classes == 3 else torch.randn(64, 1)
    method.fit_posthoc(PosthocData(x, y, likelihood, 0.1 if classes == 1 else None, 32))
    buffer = io.BytesIO()
    torch.save({"inference": method.save_state(), "weights": method.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    loaded = Laplace(**knobs)
    loaded.build(spec)
    loaded.load_state(checkpoint["inference"])
    loaded.load_state_dict(checkpoint["weights"])
    draws = []
    for model in (method, loaded):
        torch.manual_seed(1)
        draws.append(model.predictive_outputs(x[:5]))
    torch.testing.assert_close(draws[0], draws[1])
    if likelihood == "regression":
        for before, after in zip(method.glm_moments(x), loaded.glm_moments(x), strict=True):
            torch.testing.assert_close(before, after)
        torch.testing.assert_close(method.noise_variance(), loaded.noise_variance())


def test_unfitted_is_the_map_network_and_saves_nothing():
    method = Laplace()
    method.build(LINEAR)
    x = torch.randn(4, D)
    torch.testing.assert_close(method.predictive_outputs(x), method.net(x).unsqueeze(0))
    assert method.save_state() == {}
    assert method.noise_variance() is None


@pytest.mark.parametrize("model_args", [{"noise": "heteroscedastic"}, {"learn_sigma2": True},
                                        {"learn_sigma2": "optimal"}])  # fmt: skip
def test_refuses_a_model_with_its_own_sigma2(model_args):
    with pytest.raises(BadInputError, match="inference='laplace'") as refused:
        Laplace.check_with(model_args, {})
    assert "\n" not in str(refused.value)
    Laplace.check_with({"noise": "homoscedastic", "learn_sigma2": False}, {})


def test_refuses_a_full_hessian_too_large_to_hold():
    mnist = NetworkSpec(784, (400, 400), 10, "relu", 55000)
    with pytest.raises(BadInputError, match="hessian_structure='full'"):
        Laplace(subset_of_weights="all", hessian_structure="full").build(mnist)
    Laplace(subset_of_weights="last_layer", hessian_structure="full").build(mnist)


def test_yaml_lists_the_signature_defaults():
    node = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / "inference/laplace.yaml"))
    assert node.pop("_target_") == "vnnlab.inference.laplace.Laplace"
    parameters = inspect.signature(Laplace).parameters.values()
    assert node == {p.name: p.default for p in parameters}


# --- through the task modules -----------------------------------------------------------------

LAST_LAYER_KRON = {"_target_": "vnnlab.inference.laplace.Laplace",
                   "subset_of_weights": "last_layer", "hessian_structure": "kron"}  # fmt: skip


def test_regressor_fits_and_predicts():
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 200).unsqueeze(1)
    y = torch.sin(2 * x) + 0.1 * torch.randn_like(x)
    model = Regressor(1, 1, 200, inference=LAST_LAYER_KRON)
    _, map_var = model.predict(x)
    torch.testing.assert_close(map_var, model.noise().expand_as(map_var))  # no epistemic part
    model.fit_posthoc((x, y), batch_size=50)
    with torch.inference_mode():  # as Lightning's test loop calls it
        mean, var = model.predict(x)
    noise = model.inference.noise_variance()
    assert mean.shape == var.shape == (200, 1)
    assert torch.isfinite(mean).all() and torch.isfinite(var).all()
    assert (var > noise).all()
    assert torch.isfinite(model.evaluate((x, y), "test")["nll"]).all()


def test_classifier_fits_and_predicts():
    torch.manual_seed(0)
    x = torch.randn(150, 2)
    labels = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes
    model = Classifier(2, 3, 150, inference=LAST_LAYER_KRON, hidden=(16,))
    model.fit_posthoc((x, labels), batch_size=50)
    with torch.inference_mode():
        logits = model.predictive_logits(x)  # (S, B, 3)
        probs = model.predict_proba(x)
    assert logits.shape == (100, 150, 3)
    assert (logits.std(dim=0) > 0).all()
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(150))
    assert model.inference.noise_variance() is None

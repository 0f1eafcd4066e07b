"""IVON (vnnlab.inference.ivon) against independent computations: its posterior on Bayesian linear
regression against the exact one, its vectorised predictive draws against a loop and against
the Gaussian they come from, a resumed fit against an uninterrupted one, and a fit through
Lightning.

Each test was checked to fail with the method broken on purpose (then restored):
- `ess=1` instead of N in make_optimizer: tests 1 and 2 (σ √N too wide);
- IVON given weight_decay 0, or δ/N (a prior scaled otherwise): test 1's mean is ≈3 sd off;
- δ left out of σ in copy_posterior_sd: test 2 ("σ = 1/√(λ(h + δ))");
- the closure run without `sampled_params`: every test that steps (IVON has no Hessian sample);
- `posterior_sd * noise` replaced by `noise` in sample_parameters: test 2's spread;
- start_fit not setting `current_step`: test 3's parameters differ (its own control shows that
  t matters) and test 4 counts 4 steps after the resume, not 12.
"""

import inspect
import io
import math

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from vnnlab import CONFIG_DIR
from vnnlab.errors import BadInputError
from vnnlab.inference.base import NetworkSpec
from vnnlab.inference.ivon import IVON
from vnnlab.models.objectives import gaussian_nll
from vnnlab.models.regression import Regressor


def make_method(spec: NetworkSpec, **knobs) -> IVON:
    method = IVON(**knobs)
    method.build(spec)
    return method


def closure_for(method: IVON, optimizer, x, y, sigma2: float):
    """What Lightning's closure does: zero_grad, the training step, backward."""

    def closure():
        optimizer.zero_grad()
        nll = gaussian_nll(y, method.training_outputs(x), sigma2)  # (M, B)
        loss = method.objective(nll)["loss"].mean()
        loss.backward()
        return loss

    return closure


def fit(method: IVON, optimizer, batches, scheduler=None) -> None:
    """A plain loop doing what Lightning does: the method steps the optimiser with the closure."""
    for x, y, sigma2 in batches:
        method.optimizer_step(optimizer, closure_for(method, optimizer, x, y, sigma2))
        if scheduler is not None:
            scheduler.step()


def test_the_yaml_lists_the_signature_defaults():
    node = OmegaConf.to_container(OmegaConf.load(f"{CONFIG_DIR}/inference/ivon.yaml"))
    assert node.pop("_target_") == "vnnlab.inference.ivon.IVON"
    assert node == {p.name: p.default for p in inspect.signature(IVON).parameters.values()}


def test_the_posterior_of_bayesian_linear_regression_is_the_exact_one():
    """y = Xw + b + ε, ε ~ N(0, σ²): with λ = N, IVON's ℓ̄ = (1/N)Σ nllᵢ + (δ/2)‖θ‖² makes its
    target the posterior under the prior N(0, I/(Nδ)): precision Λ = AᵀA/σ² + NδI with
    A = [X 1], mean μ = Λ⁻¹Aᵀy/σ² (float64). δ is strong enough that a prior scaled otherwise
    moves μ by about 3 posterior sd."""
    torch.manual_seed(0)
    n, sigma2, delta, steps = 200, 0.25, 0.3, 1000
    x = torch.randn(n, 2, dtype=torch.float64)
    noise = sigma2**0.5 * torch.randn(n, 1, dtype=torch.float64)
    y = x @ torch.tensor([[1.5], [-0.7]], dtype=torch.float64) + 0.3 + noise
    a = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)  # (N, 3): w₁, w₂, b
    precision = a.T @ a / sigma2 + n * delta * torch.eye(3, dtype=torch.float64)
    exact_mean = torch.linalg.solve(precision, a.T @ y / sigma2).squeeze(1)
    exact_sd = torch.linalg.inv(precision).diagonal().sqrt()

    spec = NetworkSpec(2, (), 1, "identity", n)
    method = make_method(spec, hess_init=1.0, beta2=0.995, weight_decay=delta).double()
    optimizer = method.make_optimizer([{"params": list(method.parameters())}], 0.1, {})
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)  # as the task's
    fit(method, optimizer, [(x, y, sigma2)] * steps, decay)

    mean = torch.nn.utils.parameters_to_vector(method.net.parameters()).detach()
    # The cosine decay stills the mean's jitter: within 0.3 sd over 8 seeds it was within 0.11.
    assert ((mean - exact_mean).abs() / exact_sd).max() < 0.3
    # σ only roughly: h is a running average (β₂) of one-draw estimates whose noise grows with
    # the prior's pull (the nll's gradient at the mean is −δm); 0.87-1.15 × over 8 seeds.
    # The mean-field sd 1/√Λᵢᵢ is within 1% of the exact marginal here (features independent).
    assert torch.allclose(method.posterior_sd, exact_sd, rtol=0.25)


def test_the_predictive_draws_are_the_posterior_s_in_one_vectorised_pass():
    torch.manual_seed(1)
    n_train, hess_init, delta = 50, 0.5, 0.1
    method = make_method(NetworkSpec(3, (), 1, "identity", n_train), hess_init=hess_init,
                         weight_decay=delta, predict_samples=20_000)  # fmt: skip
    # before any step: σ from h₀
    assert torch.allclose(method.posterior_sd,
                          torch.tensor((n_train * (hess_init + delta)) ** -0.5))  # fmt: skip

    # after one: σ = 1/√(λ(h + δ)) of IVON's own state
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    optimizer = method.make_optimizer([{"params": list(method.parameters())}], 0.01, {})
    fit(method, optimizer, [(x, y, 1.0)])
    group = optimizer.param_groups[0]
    assert torch.allclose(method.posterior_sd, (n_train * (group["hess"] + delta)).rsqrt())

    # the vectorised pass equals a loop over the same S parameter sets
    drawn = method.sample_parameters(5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        vectorised = method.outputs_at(drawn, x)  # (5, B, 1)
        looped = torch.stack([functional_call(method.net, {k: v[s] for k, v in drawn.items()},
                                              (x,)) for s in range(5)])  # fmt: skip
    assert torch.allclose(vectorised, looped, atol=1e-6)

    # S distinct draws with the stated Gaussian's mean and spread: f = wᵀx + b with
    # w, b ~ N(m, σ²) independent, so f ~ N(m_wᵀx + m_b, Σᵢ σ²_wᵢ xᵢ² + σ²_b); σ made unequal
    # so that a σ matched to the wrong parameter shows.
    method.posterior_sd.copy_(torch.tensor([0.05, 0.2, 0.4, 0.1]))
    with torch.no_grad():
        draws = method.predictive_outputs(x[:4]).squeeze(-1)  # (S, 4)
        mean = method.net(x[:4]).squeeze(-1)
    assert torch.unique(draws, dim=0).shape[0] == 20_000  # no two draws alike
    variance = x[:4].pow(2) @ torch.tensor([0.05, 0.2, 0.4]).pow(2) + 0.1**2
    standard_error = (variance / 20_000).sqrt()
    assert ((draws.mean(dim=0) - mean).abs() < 4 * standard_error).all()
    # the sample variance's relative standard error is √(2/S) = 1%
    assert torch.allclose(draws.var(dim=0), variance, rtol=0.05)


def test_a_resumed_fit_ends_where_an_uninterrupted_one_does():
    """Stop after 5 steps, keep the parameters, the optimiser's state_dict, save_state() and the
    RNG (through torch.save and torch.load(weights_only=True)), then go on from a fresh
    method and optimiser: IVON's step count t, outside its state_dict, must come back."""
    spec = NetworkSpec(1, (8,), 1, "tanh", 40)
    data = torch.Generator().manual_seed(0)
    batches = [(torch.randn(10, 1, generator=data), torch.randn(10, 1, generator=data), 0.1)
               for _ in range(10)]  # fmt: skip

    def fresh() -> tuple[IVON, torch.optim.Optimizer]:
        method = make_method(spec)
        return method, method.make_optimizer([{"params": list(method.parameters())}], 0.01, {})

    torch.manual_seed(0)
    whole, whole_optimizer = fresh()
    fit(whole, whole_optimizer, batches)

    torch.manual_seed(0)
    first, first_optimizer = fresh()
    fit(first, first_optimizer, batches[:5])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": first_optimizer.state_dict(),
                "inference": first.save_state(), "rng": torch.get_rng_state()}, buffer)  # fmt: skip

    def resumed(start_fit: bool) -> IVON:
        buffer.seek(0)
        checkpoint = torch.load(buffer, weights_only=True)
        method, optimizer = fresh()
        method.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        method.load_state(checkpoint["inference"])
        if start_fit:
            method.start_fit(optimizer)
        torch.set_rng_state(checkpoint["rng"])
        fit(method, optimizer, batches[5:])
        return method

    second = resumed(start_fit=True)
    assert second.current_step == whole.current_step == 10
    for name, value in whole.state_dict().items():
        assert torch.equal(second.state_dict()[name], value), name
    # the control: without t the debiasing 1 − β₁ᵗ restarts and the fit ends elsewhere
    unresumed = resumed(start_fit=False)
    assert not torch.equal(unresumed.net[0].weight, whole.net[0].weight)


def sine_loader(n: int = 200, batch_size: int = 50) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=generator) * 6 - 3
    y = torch.sin(x) + 0.1 * torch.randn(n, 1, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)


def trainer(max_epochs: int, root) -> pl.Trainer:
    return pl.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", default_root_dir=root)  # fmt: skip


def test_a_regressor_fits_and_resumes_through_lightning(tmp_path):
    """Lightning's closure goes through optimizer_step, its checkpoint keeps t, and a resumed
    fit's IVON counts on from it (2 epochs of 4 steps, then a third)."""
    pl.seed_everything(0, verbose=False)
    inference = {"_target_": "vnnlab.inference.ivon.IVON"}
    model = Regressor(1, 1, 200, inference=inference, hidden=[16], lr=0.01)
    start = model.inference.posterior_sd.clone()
    fitter = trainer(2, tmp_path)
    fitter.fit(model, sine_loader())
    assert model.inference.current_step == fitter.global_step == 8
    assert math.isfinite(fitter.callback_metrics["train/loss"].item())
    assert not torch.equal(model.inference.posterior_sd, start)
    with torch.no_grad():
        draws = model.inference.predictive_outputs(torch.zeros(3, 1))
    assert draws.shape == (100, 3, 1) and draws.std(dim=0).min() > 0

    fitter.save_checkpoint(tmp_path / "last.ckpt")
    again = Regressor(1, 1, 200, inference=inference, hidden=[16], lr=0.01)
    refitter = trainer(3, tmp_path)
    refitter.fit(again, sine_loader(), ckpt_path=tmp_path / "last.ckpt")
    assert again.inference.current_step == refitter.global_step == 12


def test_the_optimizer_group_s_weight_decay_is_refused():
    IVON.check_with({}, {"weight_decay": 0.0})
    with pytest.raises(BadInputError, match="inference.weight_decay"):
        IVON.check_with({}, {"weight_decay": 1e-4})

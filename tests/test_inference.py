"""Each inference method against an independent computation: the ensemble's predictive against
torch.distributions' mixture, MC dropout's batched draws against separate passes, Flipout's
gradient against the weight-sampling estimator's, and BBB's tempered objective and warm-up.
(Laplace and IVON have their own files.)"""

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from helpers import task_model
from vnnlab.inference.bbb import BayesByBackprop, warmed_kl_weight
from vnnlab.inference.ensemble import Ensemble
from vnnlab.inference.mc_dropout import MCDropout
from vnnlab.models.classification import Classifier
from vnnlab.models.layers import BayesLinear, make_mlp
from vnnlab.models.regression import Regressor


def test_the_ensemble_nll_is_the_mixture_of_its_members():
    torch.manual_seed(0)
    model = task_model(Regressor, Ensemble, 2, 1, 100, hidden=[8], members=4)
    assert model.heteroscedastic  # noise=auto: a mean and a variance per member and point
    x, y = torch.randn(30, 2), torch.randn(30, 1)
    with torch.no_grad():
        values = model.evaluate((x, y), "test")
        means, variances = model.predictive(x)  # (K, B, 1) each
    members = Independent(Normal(means.permute(1, 0, 2), variances.permute(1, 0, 2).sqrt()), 1)
    mixture = MixtureSameFamily(Categorical(torch.ones(30, 4)), members)
    assert torch.allclose(values["nll"], -mixture.log_prob(y), atol=1e-5)


def test_the_ensemble_classifier_nll_is_the_mixture_of_its_members():
    torch.manual_seed(1)
    model = task_model(Classifier, Ensemble, 5, 3, 100, hidden=[8], members=3)
    x, labels = torch.randn(20, 5), torch.randint(0, 3, (20,))
    with torch.no_grad():
        values = model.evaluate((x, labels), "test")
        logits = model.predictive_logits(x)  # (K, B, 3)
    mixture = MixtureSameFamily(Categorical(torch.ones(20, 3)),
                                Categorical(logits=logits.permute(1, 0, 2)))  # fmt: skip
    assert torch.allclose(values["nll"], -mixture.log_prob(labels), atol=1e-5)


def test_the_vectorised_members_are_k_separate_networks():
    """Member k's draw is what a plain network with member k's weights computes."""
    torch.manual_seed(7)
    model = task_model(Regressor, Ensemble, 3, 1, 100, hidden=[6, 5], members=3)
    method, x = model.inference, torch.randn(9, 3)
    draws = method.predictive_outputs(x)  # (K, B, 2)
    for k in range(3):
        member = make_mlp(3, [6, 5], 2, "tanh")
        stacked = zip(method.names, method.stacked, strict=True)
        member.load_state_dict({name: p[k] for name, p in stacked})
        torch.testing.assert_close(draws[k], member(x))


def test_each_member_starts_from_its_own_weights_and_learns_from_its_own_loss():
    torch.manual_seed(2)
    model = task_model(Regressor, Ensemble, 1, 1, 100, hidden=[4], members=3)
    method = model.inference
    first_layer = method.stacked[0]  # (K, 4, 1)
    assert not torch.equal(first_layer[0], first_layer[1])
    x, y = torch.randn(10, 1), torch.randn(10, 1)
    outputs = method.training_outputs(x)  # (K, B, 2)
    loss = model.training_terms((x, y))["loss"]
    loss.backward()
    # member 0's gradient is that of member 0's own loss alone
    grad_all = first_layer.grad[0].clone()
    first_layer.grad = None
    mean, var = model.mean_and_variance(outputs)
    own = (0.5 * (y - mean[0]) ** 2 / var[0] + 0.5 * torch.log(2 * torch.pi * var[0])).sum(-1)
    own.mean().backward()
    assert torch.allclose(grad_all, first_layer.grad[0], atol=1e-6)


def test_mc_dropout_draws_differ_and_average_as_separate_passes():
    torch.manual_seed(3)
    model = task_model(Regressor, MCDropout, 3, 1, 100, hidden=[16, 16], dropout=0.3,
                       predict_samples=4000)  # fmt: skip
    model.eval()  # dropout stays on: it is the posterior's sampler
    x = torch.randn(5, 3)
    with torch.no_grad():
        draws = model.inference.predictive_outputs(x)  # (S, B, 1), one batched call
        separate = torch.stack([model.inference.net(x) for _ in range(4000)])  # S passes
    assert draws.shape == (4000, 5, 1)
    assert draws.std(dim=0).min() > 0  # the draws differ
    standard_error = (draws.var(dim=0) / 4000 + separate.var(dim=0) / 4000).sqrt()
    assert ((draws.mean(dim=0) - separate.mean(dim=0)).abs() < 4 * standard_error).all()


def test_mc_dropout_without_dropout_is_one_deterministic_network():
    model = task_model(Regressor, MCDropout, 3, 1, 100, hidden=[8], dropout=0.0,
                       predict_samples=7)  # fmt: skip
    draws = model.inference.predictive_outputs(torch.randn(4, 3))
    assert torch.equal(draws, draws[:1].expand_as(draws))


def gradients(layer: BayesLinear, x: torch.Tensor, seeds: range) -> torch.Tensor:
    """∂/∂(μ, ρ) of Σ tanh(output)² for one draw per seed: (seeds, parameters)."""
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        layer.zero_grad()
        layer(x, 1).tanh().pow(2).sum().backward()
        rows.append(torch.cat([p.grad.flatten() for p in layer.parameters()]))
    return torch.stack(rows)


def test_flipout_gradient_is_unbiased_against_weight_sampling():
    """A seeded statistical test: the mean gradient over 3000 draws of each estimator agrees
    within 4.5 standard errors for every parameter. (Scaling Flipout's perturbation by 2, or
    dropping its std, makes this fail for most ρ's.)"""
    torch.manual_seed(4)
    layer = BayesLinear(3, 2, rho_init=-0.5, estimator="weights")
    x = torch.randn(6, 3)
    weights = gradients(layer, x, range(3000))
    layer.estimator = "flipout"
    flipout = gradients(layer, x, range(3000, 6000))
    difference = weights.mean(dim=0) - flipout.mean(dim=0)
    standard_error = (weights.var(dim=0) / 3000 + flipout.var(dim=0) / 3000).sqrt()
    assert (difference.abs() < 4.5 * standard_error).all()


def test_flipout_decorrelates_the_examples_of_a_batch():
    """With one weight draw per batch, two identical inputs get identical outputs; Flipout's
    signs give them different ones with the same marginal distribution."""
    torch.manual_seed(5)
    layer = BayesLinear(3, 2, rho_init=0.0, estimator="flipout")
    x = torch.randn(1, 3).expand(2, 3)
    out = layer(x, 1)[0]  # (2, 2)
    assert not torch.allclose(out[0], out[1])
    layer.estimator = "weights"
    out = layer(x, 1)[0]
    assert torch.allclose(out[0], out[1])


def test_a_tempered_posterior_weighs_the_kl_by_beta_and_reports_the_true_elbo():
    torch.manual_seed(6)
    model = task_model(Regressor, BayesByBackprop, 1, 1, 100, hidden=[4], kl_weight=0.25)
    method = model.inference
    nll = torch.rand(3, 10)  # (M, B)
    terms = method.objective(nll)
    kl_per_point = method.net.kl("closed_form") / 100
    assert torch.allclose(terms["loss"], nll.mean(0) + 0.25 * kl_per_point)
    assert torch.allclose(terms["elbo"], -(nll.mean(0) + kl_per_point))  # β = 1, always


@pytest.mark.parametrize(
    ("warmup", "epoch", "expected"), [(0, 0, 0.5), (4, 0, 0.0), (4, 2, 0.25), (4, 4, 0.5),
                                      (4, 9, 0.5)],
)  # fmt: skip
def test_the_kl_warmup_ramps_beta_over_its_epochs(warmup, epoch, expected):
    assert warmed_kl_weight(0.5, warmup, epoch) == pytest.approx(expected)
    method = BayesByBackprop(kl_weight=0.5, kl_warmup_epochs=warmup)
    method.start_epoch(epoch)
    assert method.kl_weight_now == pytest.approx(expected)

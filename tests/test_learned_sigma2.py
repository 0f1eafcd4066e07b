"""σ² learned as part of the objective reaches the residual variance on data with known noise,
and every predictive metric then uses the learned value."""

import pytest
import pytorch_lightning as pl
import torch

from helpers import task_model
from vnnlab.data.manifold import SyntheticManifoldDataModule
from vnnlab.data.synthetic import SyntheticRegressionDataModule
from vnnlab.inference.bbb import BayesByBackprop
from vnnlab.models.metrics import coverage, mixture_nll
from vnnlab.models.objectives import gaussian_nll
from vnnlab.models.regression import Regressor
from vnnlab.models.vae import VAE


def fit(model: pl.LightningModule, data: pl.LightningDataModule, epochs: int) -> None:
    trainer = pl.Trainer(max_epochs=epochs, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, datamodule=data)


def test_a_bnn_learns_the_noise_variance_of_its_data():
    """Bayesian linear regression (no hidden layer) on y = x + ε, Var ε = 0.04, 500 points,
    σ² started 12× too high. At the ELBO's optimum σ² = (1/N) Σ E_q (yᵢ − f_θ(xᵢ))², and with
    500 points the posterior of the two weights is narrow (its spread adds about 2/N of the
    noise), so that equals the residual variance of the true line on these points, ε's own
    sample variance, to within a few tenths of a percent. 3% leaves room for the optimiser's
    last steps; a σ² stuck where it started (0.5) or at a wrong optimum (e.g. the mean
    residual without the square, or Σ without 1/N) misses it by far more."""
    pl.seed_everything(0, verbose=False)
    data = SyntheticRegressionDataModule(function="linear", noise_var=0.04, n_train=500,
                                         n_val=50, n_test=2000, batch_size=50)  # fmt: skip
    model = task_model(
        Regressor,
        BayesByBackprop,
        1,
        1,
        500,
        hidden=[],
        sigma2=0.5,
        learn_sigma2=True,
        sigma2_lr_scale=5.0,
    )
    fit(model, data, epochs=100)
    x, y = data.split("train")
    residual_variance = ((y - data.info().true_function(x)) ** 2).mean().item()
    with torch.no_grad():
        expected_residual = (
            ((y - model.inference.net(x, 4000)) ** 2).mean().item()
        )  # E_q, 4000 draws
    learned = model.noise().item()
    assert learned == pytest.approx(residual_variance, rel=0.03)
    assert learned == pytest.approx(expected_residual, rel=0.03)
    assert residual_variance == pytest.approx(0.04, rel=0.2)  # the data's own noise

    # the predictive uses it: variance = spread of the draws + learned σ², nll and coverage too
    x_test, y_test = data.split("test")
    torch.manual_seed(1)
    with torch.no_grad():
        _, var = model.predict(x_test)
        torch.manual_seed(2)
        values = model.evaluate((x_test, y_test), "test")
        torch.manual_seed(2)
        draws = model.predictive(x_test)[0]
    spread = draws.var(dim=0, unbiased=False)
    assert torch.allclose(var - learned, spread, atol=1e-3)
    assert torch.allclose(values["nll"], mixture_nll(gaussian_nll(y_test, draws, learned)))
    covered = coverage(y_test, draws.mean(0), spread + learned).mean().item()
    assert values["coverage95"].mean().item() == pytest.approx(covered)
    assert covered == pytest.approx(0.95, abs=0.02)  # calibrated, as σ² is right


@pytest.mark.parametrize("mode", [True, "optimal"])
def test_a_gaussian_vae_learns_the_noise_variance_of_its_data(mode):
    """Inputs x = V y + ε in ℝ¹⁰ with y on a plane (k = 2 = latent size) and Var ε = 0.05 per
    coordinate. σ²'s optimum is the mean squared reconstruction error per input under q, which a
    decoder that has found the plane brings to about the noise's 0.05 (the 8 directions off the
    plane carry noise only; in the plane the encoder's spread adds a little). Learned (true,
    from 2× the noise) and closed-form (optimal, from 10×) both reach it: 5% of the
    reconstruction error measured afterwards (the last epoch's σ² trails the decoder's last
    steps), 10% of the noise."""
    pl.seed_everything(0, verbose=False)
    data = SyntheticManifoldDataModule(input_dim=10, intrinsic_dim=2, variances=[4.0, 1.0],
                                       noise_var=0.05, n_train=1000, n_val=100, n_test=100,
                                       batch_size=50)  # fmt: skip
    start = 0.1 if mode is True else 0.5
    model = VAE(10, latent_dim=2, hidden=[32], sigma2=start, learn_sigma2=mode, lr=0.01)
    fit(model, data, epochs=30)
    (x,) = data.split("train")
    with torch.no_grad():
        mean, logvar = model.posterior(x)
        reconstruction = model.decoder(model.sample_latent(mean, logvar, 200))
        error = ((x - reconstruction) ** 2).mean().item()  # E_q, per input element
    learned = model.noise().item()
    assert learned == pytest.approx(error, rel=0.05)
    assert learned == pytest.approx(0.05, rel=0.1)

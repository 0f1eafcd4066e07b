"""The synthetic manifold data: known covariance, known PCA error, seeded, checked arguments."""

import math

import numpy as np
import pytest
import torch

from vnnlab.data.manifold import ARC_HALF_ANGLE, SyntheticManifoldDataModule, arc_moments
from vnnlab.data.synthetic import SyntheticRegressionDataModule
from vnnlab.errors import BadInputError
from vnnlab.models.metrics import reconstruction_mse
from vnnlab.models.reduction import PCA, Autoencoder
from vnnlab.models.subspaces import principal_subspace

STRUCTURES = ["subspace", "curve"]
LARGE = {"input_dim": 8, "intrinsic_dim": 2, "variances": [4.0, 1.0], "noise_var": 0.05}


def pca_mse(data: SyntheticManifoldDataModule, latent_dim: int) -> float:
    """The yardstick a reduction model of this latent_dim logs on this data (test/pca_mse)."""
    return PCA(data.input_dim, latent_dim).reference_metrics(data.info())["pca_mse"]


def test_arc_moments_match_quadrature():
    t = np.linspace(-ARC_HALF_ANGLE, ARC_HALF_ANGLE, 200_001)
    mean_cos = np.trapezoid(np.cos(t), t) / (2 * ARC_HALF_ANGLE)
    var_sin = np.trapezoid(np.sin(t) ** 2, t) / (2 * ARC_HALF_ANGLE)
    var_cos = np.trapezoid((np.cos(t) - mean_cos) ** 2, t) / (2 * ARC_HALF_ANGLE)
    assert arc_moments(ARC_HALF_ANGLE) == pytest.approx((mean_cos, var_sin, var_cos), rel=1e-9)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_sample_covariance_matches_the_generating_covariance(structure):
    dm = SyntheticManifoldDataModule(structure=structure, n_train=100_000, **LARGE)
    (x,) = dm.split("train")
    sigma = dm.covariance()
    sample = torch.cov(x.double().T, correction=0)
    assert x.mean(dim=0).abs().max() < 5 * math.sqrt(sigma.diag().max() / len(x))
    # Standard error of a Gaussian sample covariance: √((Σᵢᵢ Σⱼⱼ + Σᵢⱼ²) / N).
    standard_error = ((sigma.diag()[:, None] * sigma.diag() + sigma**2) / len(x)).sqrt()
    assert ((sample - sigma) / standard_error).abs().max() < 5
    assert torch.allclose(torch.linalg.eigvalsh(sigma).flip(0), dm.population_variances())
    eigenvalues = torch.tensor(dm.info().input_variances, dtype=torch.float64)  # what models read
    assert torch.allclose(torch.linalg.eigvalsh(sigma).flip(0), eigenvalues)


@pytest.mark.parametrize("structure", STRUCTURES)
def test_pca_of_a_large_sample_reaches_the_reference_error(structure):
    dm = SyntheticManifoldDataModule(structure=structure, n_train=50_000, n_test=20_000, **LARGE)
    (x_train,), (x_test,) = dm.split("train"), dm.split("test")
    for latent_dim in range(1, 6):
        mean, components, _ = principal_subspace(x_train, latent_dim)
        x_hat = mean + (x_test - mean) @ components @ components.T
        test_mse = reconstruction_mse(x_test, x_hat).mean().item()
        assert test_mse == pytest.approx(pca_mse(dm, latent_dim), rel=0.03)


def test_reference_error_by_hand():
    dm = SyntheticManifoldDataModule()  # n = 20, λ = (9, 4, 1), τ² = 0.01
    assert pca_mse(dm, 2) == pytest.approx((1.0 + 0.01 + 17 * 0.01) / 20)
    assert pca_mse(dm, 3) == pytest.approx(17 * 0.01 / 20)
    # every reduction model computes it for its own latent_dim
    assert Autoencoder(20, latent_dim=1).reference_metrics(dm.info()) == {
        "pca_mse": pytest.approx((4.0 + 1.0 + 19 * 0.01) / 20)
    }
    assert dm.reference_metrics() == {}  # the data alone sets no yardstick here
    curve = SyntheticManifoldDataModule(structure="curve", input_dim=4, intrinsic_dim=1,
                                        variances=[2.0], noise_var=0.0)  # fmt: skip
    _, var_sin, var_cos = arc_moments(ARC_HALF_ANGLE)
    # One arc: variance 2 along its sine direction, 2 κ along its cosine direction.
    expected = 2.0 * var_cos / var_sin / 4
    assert pca_mse(curve, 1) == pytest.approx(expected)
    unknown = SyntheticRegressionDataModule(input_dim=3).info()  # variances not known
    assert PCA(3, latent_dim=1).reference_metrics(unknown) == {}


def test_inputs_only_info_and_seeded_splits():
    first, second = SyntheticManifoldDataModule(seed=3), SyntheticManifoldDataModule(seed=3)
    info = first.info()
    assert (info.in_features, info.n_train, info.target, info.out_features) == (20, 5000, None, 0)
    assert len(first.split("test")) == 1 and first.split("val")[0].shape == (1000, 20)
    for split in ("train", "val", "test"):
        assert torch.equal(first.split(split)[0], second.split(split)[0])
    assert torch.equal(first.basis, second.basis)
    other = SyntheticManifoldDataModule(seed=4)
    assert not torch.equal(first.split("train")[0], other.split("train")[0])
    assert not torch.equal(first.split("train")[0][:1000], first.split("val")[0])


def test_batches_are_one_tuples_covering_the_split_reshuffled_each_epoch():
    dm = SyntheticManifoldDataModule(structure="curve", n_train=103, batch_size=10)
    loader = dm.train_dataloader()
    first_epoch = list(loader)
    assert len(loader) == 11 and all(len(batch) == 1 for batch in first_epoch)
    x = torch.cat([batch[0] for batch in first_epoch])
    train = dm.split("train")[0]
    assert sorted(x[:, 0].tolist()) == sorted(train[:, 0].tolist())
    assert not torch.equal(x, torch.cat([batch[0] for batch in loader]))
    assert torch.equal(torch.cat([batch[0] for batch in dm.test_dataloader()]), dm.split("test")[0])


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ({"input_dim": 3, "intrinsic_dim": 3}, "data.intrinsic_dim"),
        ({"structure": "curve", "input_dim": 5}, "data.intrinsic_dim"),
        ({"intrinsic_dim": 2}, "data.variances"),
        ({"variances": [1.0, 4.0, 9.0]}, "data.variances"),
        ({"variances": [9.0, 4.0, 0.0]}, "data.variances"),
    ],
)
def test_values_wrong_together_are_bad_input(args, key):
    with pytest.raises(BadInputError, match=rf"^{key}="):
        SyntheticManifoldDataModule.check_args(args)


def test_default_and_boundary_arguments_pass():
    SyntheticManifoldDataModule.check_args({})
    SyntheticManifoldDataModule.check_args({"structure": "curve", "input_dim": 6})
    SyntheticManifoldDataModule.check_args({"variances": [2.0, 2.0, 1.0]})  # ties are allowed

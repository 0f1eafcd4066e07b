"""Deterministic dimension reduction (tutorial, "reduction of dimension"): PCA in closed form,
and autoencoders e: ℝⁿ → ℝᵐ, d: ℝᵐ → ℝⁿ (m < n) trained on ‖X − d(e(X))‖².

A linear autoencoder's optimum spans PCA's subspace, but its decoder need not be orthogonal
(Baldi & Hornik 1989; Bourlard & Kamp 1988): it logs both facts against PCA of the same m.
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vnnlab.models.base import DecayFactor, LRSchedule, Momentum, Optimizer
from vnnlab.models.layers import Activation, make_mlp
from vnnlab.models.losses import (
    largest_principal_angle,
    orthogonality_defect,
    principal_subspace,
)
from vnnlab.models.tasks import ReductionModule
from vnnlab.schema import Positive, PositiveInt


class PCA(ReductionModule):
    """Centred PCA of the training inputs: e(x) = Wᵀ(x − x̄), d(z) = x̄ + W z, with W (n, m) the m
    leading eigenvectors of the training covariance. Fitted in closed form by
    `use_training_inputs` from the whole training split; no gradient steps. Its one epoch records
    the same metrics as the trained models (train/recon_mse is then the exact training error,
    Σ_{j>m} λ_j / n)."""

    def __init__(self, in_features: int, latent_dim: PositiveInt = 8):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.automatic_optimization = False  # nothing to optimise
        # Buffers, not parameters: saved in checkpoints, never trained. W stays zero until
        # use_training_inputs fits it (orthonormal columns are never all zero).
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("components", torch.zeros(in_features, latent_dim))

    def configure_optimizers(self) -> None:
        return None

    def use_training_inputs(self, x: Tensor) -> None:
        mean, components, _ = principal_subspace(x.to(self.mean), self.hparams["latent_dim"])
        self.mean.copy_(mean)
        self.components.copy_(components)

    def on_fit_start(self) -> None:
        if not self.components.any():
            raise RuntimeError(
                "PCA.use_training_inputs(x_train) was not called before fitting: PCA takes its "
                "mean and components from the training inputs, not from gradient steps"
            )

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.trainer.should_stop = True  # one pass: the fit is closed-form

    def encode(self, x: Tensor) -> Tensor:
        return (x - self.mean) @ self.components  # (B, m)

    def decode(self, z: Tensor) -> Tensor:
        return self.mean + z @ self.components.T  # (B, n)


class Autoencoder(ReductionModule):
    """MLP encoder n → hidden → m and decoder m → reversed(hidden) → n, no activation on the
    code or the output; loss = mean over the batch of ‖x − d(e(x))‖²."""

    def __init__(
        self,
        in_features: int,
        latent_dim: PositiveInt = 8,
        hidden: Sequence[PositiveInt] = (400,),
        activation: Activation = "relu",
        lr: Positive = 1e-3, optimizer: Optimizer = "adam", momentum: Momentum = 0.0,
        nesterov: bool = False, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
    ):  # fmt: skip
        super().__init__(lr, optimizer, momentum, nesterov, lr_schedule, lr_gamma)
        self.save_hyperparameters(logger=False)
        self.encoder = make_mlp(in_features, hidden, latent_dim, activation)
        self.decoder = make_mlp(latent_dim, list(reversed(hidden)), in_features, activation)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)


class LinearAutoencoder(ReductionModule):
    """e(x) = A x + a, d(z) = W z + b: one linear map each way, no activation.

    At test it also logs, against PCA of the same m fitted on the training split:
    `principal_angle`, the largest principal angle (degrees) between span(W) and PCA's
    subspace, and `orthogonality_defect`, ‖WᵀW − I‖_F of its decoder.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: PositiveInt = 8,
        lr: Positive = 1e-2, optimizer: Optimizer = "adam", momentum: Momentum = 0.0,
        nesterov: bool = False, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
    ):  # fmt: skip
        super().__init__(lr, optimizer, momentum, nesterov, lr_schedule, lr_gamma)
        self.save_hyperparameters(logger=False)
        self.encoder = nn.Linear(in_features, latent_dim)
        self.decoder = nn.Linear(latent_dim, in_features)  # weight W: (n, m)
        # PCA's subspace of the training inputs (n, m), from use_training_inputs; left out of
        # checkpoints (non-persistent): it is a yardstick, not part of the model.
        self.register_buffer("pca_components", None, persistent=False)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def use_training_inputs(self, x: Tensor) -> None:
        _, components, _ = principal_subspace(x.to(self.decoder.weight), self.hparams["latent_dim"])
        self.pca_components = components  # (n, m)

    def on_test_start(self) -> None:
        if self.pca_components is None:
            raise RuntimeError(
                "LinearAutoencoder.use_training_inputs(x_train) was not called: its test compares "
                "the decoder with PCA of the training inputs"
            )

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        w = self.decoder.weight.detach()
        self.log_dict(
            {
                "test/principal_angle": largest_principal_angle(w, self.pca_components).float(),
                "test/orthogonality_defect": orthogonality_defect(w),
            }
        )

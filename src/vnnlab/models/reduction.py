"""Deterministic dimension reduction (tutorial, "reduction of dimension"): PCA in closed form,
and autoencoders e: ℝⁿ → ℝᵐ, d: ℝᵐ → ℝⁿ (m < n) trained on ‖X − d(e(X))‖².

A linear autoencoder's optimum spans PCA's subspace, but its decoder need not be orthogonal
(Baldi & Hornik 1989; Bourlard & Kamp 1988): it logs both facts against PCA of the same m.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from vnnlab import plots
from vnnlab.data.base import DataInfo
from vnnlab.errors import bad_value
from vnnlab.models.base import VNNModule
from vnnlab.models.layers import Activation, make_mlp
from vnnlab.models.metrics import reconstruction_mse
from vnnlab.models.optimizers import ADAM, DecayFactor, LRSchedule
from vnnlab.models.subspaces import (
    largest_principal_angle,
    orthogonality_defect,
    principal_subspace,
)
from vnnlab.schema import Positive, PositiveInt

PREDICT_CHUNK = 4096  # rows per forward pass when a figure encodes a whole split
FIGURE_EXAMPLES = 10  # test examples shown beside their reconstructions


class ReductionModule(VNNModule):
    """Dimension reduction: inputs only, so it trains on every data module (a batch's targets,
    if any, are ignored). Subclasses implement `encode(x) -> (B, m)` (for a VAE, the posterior
    mean) and `decode(z) -> (B, n)` (the reconstruction's mean); `recon_mse` is the mean
    squared error per input element of x̂ = decode(encode(x)), in every model."""

    needs_target = None

    @classmethod
    def check_data(cls, info: DataInfo, args: Mapping[str, Any]) -> None:
        latent_dim = args.get("latent_dim", cls.default("latent_dim"))
        if not latent_dim < info.in_features:
            raise bad_value("model.latent_dim", latent_dim, f"an integer < {info.in_features} "
                            "(the data's input dimension)")  # fmt: skip

    def encode(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """loss = mean over the batch of ‖x − d(e(x))‖²; recon_mse = the same per element."""
        return {name: value.mean() for name, value in self.evaluate(batch, "train").items()}

    def evaluate(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Any]:
        x = batch[0]
        recon_mse = reconstruction_mse(x, self.reconstruct(x))  # (B,)
        return {"loss": recon_mse * x.shape[-1], "recon_mse": recon_mse}

    def reference_metrics(self, info: DataInfo) -> dict[str, float]:
        """`pca_mse`, when the data knows the population variances λ₁ ≥ … ≥ λₙ of its inputs:
        the expected test reconstruction MSE per element of the population-optimal rank-m PCA
        (x̂ = W Wᵀ x, W the m leading eigenvectors of the covariance), m = this model's
        latent_dim. A model fitted on a finite training set does slightly worse."""
        if info.input_variances is None:
            return {}
        m, n = self.hparams["latent_dim"], info.in_features
        left_out = torch.tensor(info.input_variances[m:], dtype=torch.float64)
        return {"pca_mse": left_out.sum().item() / n}  # (1/n) Σ_{j>m} λ_j

    @torch.no_grad()
    def figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        x_test, *targets = test
        shown = x_test[:FIGURE_EXAMPLES].to(self.device)
        figures = {
            "reconstructions.png": plots.reconstructions(
                shown.cpu(), self.reconstruct(shown).cpu(), info.image_shape
            )
        }
        latent = torch.cat(
            [self.encode(c.to(self.device)).cpu() for c in x_test.split(PREDICT_CHUNK)]
        )
        labels = targets[0] if info.target == "class" else None
        figures["latent.png"] = latent_figure(latent, labels)
        return figures


def latent_figure(latent: Tensor, labels: Tensor | None) -> Figure:
    """Latent codes (N, m) in 2-D: as they are for m ≤ 2, else their two principal components."""
    if latent.shape[1] == 1:
        return plots.latent_scatter(torch.cat([latent, torch.zeros_like(latent)], 1), labels,
                                    "z₁", "")  # fmt: skip
    if latent.shape[1] == 2:
        return plots.latent_scatter(latent, labels, "z₁", "z₂")
    mean, components, _ = principal_subspace(latent, 2)
    return plots.latent_scatter((latent - mean) @ components, labels, "PC 1 of z", "PC 2 of z")


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
        lr: Positive = 1e-3, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
        optimizer: Mapping[str, Any] = ADAM,
    ):  # fmt: skip
        super().__init__(lr, lr_schedule, lr_gamma, optimizer)
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
        lr: Positive = 1e-2, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
        optimizer: Mapping[str, Any] = ADAM,
    ):  # fmt: skip
        super().__init__(lr, lr_schedule, lr_gamma, optimizer)
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

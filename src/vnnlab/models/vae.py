"""The variational autoencoder (Kingma & Welling 2014; tutorial, "variational autoencoder").

Encoder: a trunk h₁ shared by the mean head g and the log-variance head, giving
q(z | x) = N(g(x), diag h(x)²); reparameterised z = g(x) + h(x) ⊙ ζ, ζ ~ N(0, I_m);
prior p(z) = N(0, I_m); decoder d_θ with likelihood p(x | z):
- gaussian: N(x; d_θ(z), σ² I), −log p = ‖x − d_θ(z)‖²/(2σ²) + (n/2) log 2πσ², one σ² shared
  by every input: `sigma2` fixed, or with `learn_sigma2` a parameter of the ELBO started at
  `sigma2` (true) or its closed-form optimum given the reconstructions, the calibrated decoder
  of Rybkin et al. 2021 (optimal); see layers.NoiseVariance. Logged as train/sigma2;
- bernoulli: d_θ(z) are logits, −log p = binary cross-entropy summed over the n inputs.

ELBO(x) = −E_q[−log p(x | z)] − KL(q(z | x) ‖ p(z)), in nats per example; the expectation is
the mean over M = `mc_samples` draws of z, the KL in closed form. Logged terms per example:
`recon` = E_q[−log p(x | z)], `kl`, `elbo` and `loss` = −elbo. σ² weighs reconstruction
against the KL: a larger σ² makes reconstruction errors cheaper, so the KL shrinks.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vnnlab import plots
from vnnlab.data.base import DataInfo
from vnnlab.errors import bad_value
from vnnlab.models.layers import ACTIVATIONS, Activation, NoiseVariance, make_mlp, noise_mode
from vnnlab.models.metrics import active_units as count_active_units
from vnnlab.models.metrics import reconstruction_mse
from vnnlab.models.objectives import (
    bernoulli_nll,
    gaussian_log_prob,
    gaussian_nll,
    importance_weighted_log_likelihood,
    standard_normal_kl,
)
from vnnlab.models.optimizers import ADAM, DecayFactor, LRSchedule
from vnnlab.models.reduction import ReductionModule
from vnnlab.schema import NonNegativeInt, Positive, PositiveInt

Likelihood = Literal["gaussian", "bernoulli"]
TRAVERSAL_VALUES = torch.linspace(-3, 3, 9)  # prior standard deviations along each latent axis
TRAVERSED_DIMS = 8
PRIOR_SAMPLES = 40


class ActiveUnits(Metric):
    """Latent dimensions whose posterior mean varies across a split (Burda et al. 2016):
    the posterior means are gathered over the split, then counted by metrics.active_units."""

    def __init__(self, threshold: float = 0.01):
        super().__init__()
        self.threshold = threshold
        self.add_state("means", default=[], dist_reduce_fx="cat")

    def update(self, posterior_means: Tensor) -> None:
        self.means.append(posterior_means)

    def compute(self) -> Tensor:
        return count_active_units(dim_zero_cat(self.means), self.threshold)


class VAE(ReductionModule):
    """VAE(latent_dim=8, sigma2=0.1, lr=1e-3): encoder n → hidden → (g, log h²), decoder
    m → reversed(hidden) → n. At test, `log_likelihood` is the importance-weighted estimate
    of log p(x) with K = `is_samples` draws from q on the first `is_points` test examples; on
    the same K draws it is never below their ELBO estimate (Jensen's inequality)."""

    def __init__(
        self,
        in_features: int,
        latent_dim: PositiveInt = 8,
        hidden: Sequence[PositiveInt] = (400,),
        activation: Activation = "relu",
        likelihood: Likelihood = "gaussian",
        sigma2: Positive = 0.1,
        learn_sigma2: bool | Literal["optimal"] = False,
        sigma2_lr_scale: Positive = 10.0,
        mc_samples: PositiveInt = 1,
        is_samples: PositiveInt = 100,
        is_points: NonNegativeInt = 1000,
        # lr_schedule="none", a constant step: on MNIST (784-400-20, 10 epochs) cosine decay
        # ended at 107.3 nats of test −ELBO against 105.6 with a constant lr (benchmarks/results).
        lr: Positive = 1e-3, lr_schedule: LRSchedule = "none", lr_gamma: DecayFactor = 0.95,
        optimizer: Mapping[str, Any] = ADAM,
    ):  # fmt: skip
        super().__init__(lr, lr_schedule, lr_gamma, optimizer)
        self.save_hyperparameters(logger=False)
        self.trunk = nn.Sequential(
            make_mlp(in_features, hidden[:-1], hidden[-1], activation), ACTIVATIONS[activation]()
        )
        self.mean_head = nn.Linear(hidden[-1], latent_dim)  # g
        self.logvar_head = nn.Linear(hidden[-1], latent_dim)  # log h²
        self.decoder = make_mlp(latent_dim, list(reversed(hidden)), in_features, activation)
        self.likelihood, self.mc_samples = likelihood, mc_samples
        self.noise = NoiseVariance(sigma2, noise_mode(learn_sigma2))
        self._is_points_seen = 0

    @classmethod
    def check_args(cls, args: Mapping[str, Any]) -> None:
        super().check_args(args)
        if not args.get("hidden", cls.default("hidden")):
            raise bad_value("model.hidden", args["hidden"], "at least one layer: the trunk")
        learn_sigma2 = args.get("learn_sigma2", False)
        if learn_sigma2 is not False and args.get("likelihood", "gaussian") == "bernoulli":
            raise bad_value("model.learn_sigma2", learn_sigma2, "false with model.likelihood="
                            "bernoulli (σ² belongs to the Gaussian likelihood)")  # fmt: skip

    @classmethod
    def check_data(cls, info: DataInfo, args: Mapping[str, Any]) -> None:
        super().check_data(info, args)
        if args.get("likelihood", cls.default("likelihood")) == "bernoulli" and not (
            info.unit_interval
        ):
            raise bad_value("model.likelihood", "bernoulli", "gaussian for data whose inputs "
                            "are not all in [0, 1]")  # fmt: skip

    # --- the model --------------------------------------------------------------------------

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x): mean g(x) and log-variance log h(x)², each (B, m)."""
        features = self.trunk(x)
        return self.mean_head(features), self.logvar_head(features)

    def sample_latent(self, mean: Tensor, logvar: Tensor, n_samples: int) -> Tensor:
        """z = g + h ⊙ ζ, ζ ~ N(0, I): (n_samples, B, m)."""
        noise = torch.randn(n_samples, *mean.shape, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * noise

    def reconstruction_nll(
        self, x: Tensor, decoded: Tensor, sigma2: Tensor | None = None
    ) -> Tensor:
        """−log p(x | z) per example: decoded (..., B, n) → (..., B); a Gaussian's σ² is
        `sigma2` when given (a training step's), else the current one."""
        if self.likelihood == "bernoulli":
            return bernoulli_nll(x, decoded)
        return gaussian_nll(x, decoded, self.noise() if sigma2 is None else sigma2)

    def likelihood_mean(self, decoded: Tensor) -> Tensor:
        """E[x | z]: the decoder's mean (σ(logits) for Bernoulli pixels)."""
        return decoded.sigmoid() if self.likelihood == "bernoulli" else decoded

    def encode(self, x: Tensor) -> Tensor:
        return self.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        return self.likelihood_mean(self.decoder(z))

    def elbo_terms(
        self, x: Tensor, posterior: tuple[Tensor, Tensor], training: bool = False
    ) -> dict[str, Tensor]:
        """Per example (B,): recon = E_q[−log p(x | z)] over M draws, kl, elbo, loss = −elbo;
        `posterior`: (g(x), log h(x)²) from `posterior(x)`. `training`: σ² is the step's
        (layers.NoiseVariance.for_step), and the terms include it as `sigma2` (Gaussian)."""
        mean, logvar = posterior
        z = self.sample_latent(mean, logvar, self.mc_samples)  # (M, B, m)
        decoded = self.decoder(z)
        sigma2 = None
        if training and self.likelihood == "gaussian":
            sigma2 = self.noise.for_step(x, decoded)
        recon = self.reconstruction_nll(x, decoded, sigma2).mean(dim=0)
        kl = standard_normal_kl(mean, logvar)
        elbo = -(recon + kl)
        terms = {"loss": -elbo, "elbo": elbo, "recon": recon, "kl": kl}
        if sigma2 is not None:
            terms["sigma2"] = sigma2.detach().expand_as(recon)
        return terms

    def log_likelihood(self, x: Tensor, n_samples: int) -> Tensor:
        """Importance-weighted estimate of log p(x) (B,) with K = n_samples draws from q."""
        return self._log_likelihood(x, n_samples, self.posterior(x))

    def _log_likelihood(
        self, x: Tensor, n_samples: int, posterior: tuple[Tensor, Tensor]
    ) -> Tensor:
        mean, logvar = posterior
        z = self.sample_latent(mean, logvar, n_samples)  # (K, B, m)
        log_prior = gaussian_log_prob(z, torch.zeros_like(z), 1.0).sum(dim=-1)  # (K, B)
        log_q = gaussian_log_prob(z, mean, logvar.exp()).sum(dim=-1)
        log_joint = log_prior - self.reconstruction_nll(x, self.decoder(z))
        return importance_weighted_log_likelihood(log_joint, log_q)

    # --- training and evaluation ------------------------------------------------------------

    def parameter_groups(self) -> list[dict[str, Any]]:
        """A learned log σ² learns at lr × `sigma2_lr_scale`: its gradient is huge while the
        reconstructions are poor (σ² ≪ their error), which keeps Adam's steps for it small for
        a thousand steps afterwards (measured: at lr alone, 300 steps left σ² 45% above the
        reconstruction error it was heading for; at 10 × lr, 3%)."""
        return self.groups_by_name({"log_sigma2": self.hparams["sigma2_lr_scale"]})

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x = batch[0]
        terms = self.elbo_terms(x, self.posterior(x), training=True)
        return {name: value.mean() for name, value in terms.items()}

    def training_epoch_metrics(self, means: dict[str, Tensor]) -> dict[str, Tensor]:
        if "sigma2" in means:
            self.noise.end_epoch(means["sigma2"])
        return {}

    def special_metrics(self, stage: str) -> dict[str, Metric]:
        return {"active_units": ActiveUnits()} if stage == "test" else {}

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self._is_points_seen = 0

    def evaluate(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Any]:
        x = batch[0]
        mean, logvar = self.posterior(x)  # one encoder pass serves every value below
        values = self.elbo_terms(x, (mean, logvar))
        values["recon_mse"] = reconstruction_mse(x, self.decode(mean))
        if stage != "test":
            return values
        values["active_units"] = (mean,)
        wanted = min(len(x), self.hparams["is_points"] - self._is_points_seen)
        if wanted > 0:
            first = (mean[:wanted], logvar[:wanted])
            values["log_likelihood"] = self._log_likelihood(
                x[:wanted], self.hparams["is_samples"], first
            )
            self._is_points_seen += wanted
        return values

    @torch.no_grad()
    def figures(
        self, info: DataInfo, train: tuple[Tensor, ...], test: tuple[Tensor, ...]
    ) -> dict[str, Figure]:
        figures = super().figures(info, train, test)  # reconstructions, latent means in 2-D
        prior = self.decode(
            torch.randn(PRIOR_SAMPLES, self.hparams["latent_dim"], device=self.device)
        )
        if info.image_shape is not None:
            figures["prior_samples.png"] = plots.image_grid(
                prior.cpu(), info.image_shape, "decoder means at z ~ N(0, I)"
            )
        dims = min(self.hparams["latent_dim"], TRAVERSED_DIMS)
        codes = torch.zeros(dims, len(TRAVERSAL_VALUES), self.hparams["latent_dim"])
        for dim in range(dims):
            codes[dim, :, dim] = TRAVERSAL_VALUES
        decoded = self.decode(codes.to(self.device)).cpu()  # (dims, V, n)
        figures["traversal.png"] = plots.latent_traversal(
            decoded, TRAVERSAL_VALUES, info.image_shape
        )
        return figures

"""The variational autoencoder (Kingma & Welling 2014; tutorial, "variational autoencoder"),
its importance-weighted bound (Burda et al. 2016), and the linear VAE, which is probabilistic
PCA (Tipping & Bishop 1999).

Encoder: a trunk h₁ shared by the mean head g and the log-variance head, giving
q(z | x) = N(g(x), diag h(x)²); reparameterised z = g(x) + h(x) ⊙ ζ, ζ ~ N(0, I_m);
prior p(z) = N(0, I_m); decoder d_θ with likelihood p(x | z):
- gaussian: N(x; d_θ(z), σ² I), −log p = ‖x − d_θ(z)‖²/(2σ²) + (n/2) log 2πσ², one σ² shared
  by every input: `sigma2` fixed, or with `learn_sigma2` a parameter of the ELBO started at
  `sigma2` (true) or its closed-form optimum given the reconstructions, the calibrated decoder
  of Rybkin et al. 2021 (optimal); see layers.NoiseVariance. Logged as train/sigma2;
- bernoulli: d_θ(z) are logits, −log p = binary cross-entropy summed over the n inputs.

The objective, from k = `mc_samples` draws z_k ~ q(z | x) and their importance weights
w_k = p(x | z_k) p(z_k) / q(z_k | x), in nats per example:
- objective=elbo: ELBO(x) = E_q[log p(x | z)] − KL(q(z | x) ‖ p(z)), the expectation the mean
  over the k draws, the KL in closed form; with a KL weight β (`kl_weight`, warmed up as
  β·min(1, e/W) over W = `kl_warmup_epochs` epochs) the optimiser minimises
  E_q[−log p(x | z)] + β_e KL, and `elbo` stays the true bound (β = 1);
- objective=iwae: the k-sample bound L_k = log (1/k) Σ_k w_k (objectives.
  importance_weighted_log_likelihood), L_1 ≤ L_k ≤ log p(x); `elbo` is then (1/k) Σ_k log w_k,
  the ELBO estimated from the same draws (its KL the Monte Carlo mean of log q − log p), so
  L_k ≥ elbo draw by draw and L_1 = elbo. No β: the bound has no KL term to weigh.
Logged terms per example: `recon` = E_q[−log p(x | z)], `kl`, `elbo`, `iwae_bound` (iwae
only), `loss` = minus the objective (training: with β_e; val and test: with β, the warm-up's
end), and train/kl_weight = β_e per epoch. σ² weighs reconstruction against the KL: a larger σ²
makes reconstruction errors cheaper, so the KL shrinks.

At test, `log_likelihood` is the importance-weighted estimate of log p(x) with K = `is_samples`
draws (5000 in the literature) on the first `is_points` test examples (all: every one), a chunk
of draws × points at a time so that memory stays bounded; `active_units` counts the latent
dimensions whose posterior mean varies over the test set (variance > 0.01, Burda et al.).

LinearVAE: q(z | x) = N(A x + b, diag s²) and p(x | z) = N(W z + μ, σ² I), the ELBO in closed
form; at its optimum it is probabilistic PCA (see the class).
"""

import math
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
    linear_gaussian_expected_nll,
    linear_gaussian_log_marginal,
    ppca_max_log_likelihood,
    ppca_noise_variance,
    standard_normal_kl,
    warmed_kl_weight,
)
from vnnlab.models.optimizers import ADAM, DecayFactor, LRSchedule
from vnnlab.models.reduction import ReductionModule
from vnnlab.models.subspaces import principal_subspace
from vnnlab.schema import NonNegative, NonNegativeInt, Positive, PositiveInt

Likelihood = Literal["gaussian", "bernoulli"]
Objective = Literal["elbo", "iwae"]
# Draws × points per decoder pass of the test log-likelihood: 2¹⁵ rows of 784 logits are
# 100 MB, about 0.4 GB with the likelihood's temporaries, on a CPU or a GPU alike.
IS_CHUNK_ROWS = 2**15
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
    m → reversed(hidden) → n; `objective` elbo | iwae with k = `mc_samples`, β = `kl_weight`
    warmed up over `kl_warmup_epochs` (the module docstring). At test, `log_likelihood` is the
    importance-weighted estimate of log p(x) with K = `is_samples` draws from q on the first
    `is_points` test examples ("all": the whole split); on the same K draws it is never below
    their ELBO estimate (Jensen's inequality). With `val_is_samples` = K' > 0 every validation
    logs the same estimate with K' draws on the whole validation split (the curve of log p(x)
    against epochs; 0: not logged)."""

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
        objective: Objective = "elbo",
        kl_weight: NonNegative = 1.0,
        kl_warmup_epochs: NonNegativeInt = 0,
        is_samples: PositiveInt = 100,
        is_points: NonNegativeInt | Literal["all"] = 1000,
        val_is_samples: NonNegativeInt = 0,
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
        self.likelihood, self.mc_samples, self.objective = likelihood, mc_samples, objective
        self.noise = NoiseVariance(sigma2, noise_mode(learn_sigma2))
        self.kl_weight_now = warmed_kl_weight(kl_weight, kl_warmup_epochs, 0)  # β_e
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
        if args.get("objective", cls.default("objective")) == "iwae":
            tempered = {"model.kl_weight": (args.get("kl_weight", 1.0), 1.0),
                        "model.kl_warmup_epochs": (args.get("kl_warmup_epochs", 0), 0)}  # fmt: skip
            for key, (value, needed) in tempered.items():
                if value != needed:
                    allowed = f"{needed:g} with model.objective=iwae (the importance-weighted "
                    raise bad_value(key, value, f"{allowed}bound has no KL term to weigh)")

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
        self,
        x: Tensor,
        posterior: tuple[Tensor, Tensor],
        training: bool = False,
        kl_weight: float | None = None,
    ) -> dict[str, Tensor]:
        """Per example (B,), from k = `mc_samples` draws: recon = E_q[−log p(x | z)], kl,
        elbo, iwae_bound (objective=iwae) and loss = minus the objective with KL weight
        `kl_weight` (default: β, the warm-up's end). `posterior`: (g(x), log h(x)²) from
        `posterior(x)`. `training`: σ² is the step's (layers.NoiseVariance.for_step), and the
        terms include it as `sigma2` (Gaussian)."""
        mean, logvar = posterior
        z = self.sample_latent(mean, logvar, self.mc_samples)  # (k, B, m)
        decoded = self.decoder(z)
        sigma2 = None
        if training and self.likelihood == "gaussian":
            sigma2 = self.noise.for_step(x, decoded)
        nll = self.reconstruction_nll(x, decoded, sigma2)  # (k, B)
        recon = nll.mean(dim=0)
        if self.objective == "iwae":
            log_prior, log_q = self.latent_log_densities(z, mean, logvar)  # (k, B) each
            bound = importance_weighted_log_likelihood(log_prior - nll, log_q)
            kl = (log_q - log_prior).mean(dim=0)  # the KL's Monte Carlo estimate, same draws
            terms = {"loss": -bound, "iwae_bound": bound}
        else:
            kl = standard_normal_kl(mean, logvar)
            beta = self.hparams["kl_weight"] if kl_weight is None else kl_weight
            terms = {"loss": recon + beta * kl}
        terms |= {"elbo": -(recon + kl), "recon": recon, "kl": kl}
        if sigma2 is not None:
            terms["sigma2"] = sigma2.detach().expand_as(recon)
        return terms

    def latent_log_densities(
        self, z: Tensor, mean: Tensor, logvar: Tensor
    ) -> tuple[Tensor, Tensor]:
        """log p(z) and log q(z | x) of draws z (..., B, m), p = N(0, I), q = N(mean,
        diag e^logvar): each (..., B)."""
        log_prior = gaussian_log_prob(z, torch.zeros_like(z), 1.0).sum(dim=-1)
        return log_prior, gaussian_log_prob(z, mean, logvar.exp()).sum(dim=-1)

    def log_likelihood(self, x: Tensor, n_samples: int) -> Tensor:
        """Importance-weighted estimate of log p(x) (B,) with K = n_samples draws from q."""
        return self._log_likelihood(x, n_samples, self.posterior(x))

    def _log_likelihood(
        self, x: Tensor, n_samples: int, posterior: tuple[Tensor, Tensor]
    ) -> Tensor:
        """L_K of objectives.importance_weighted_log_likelihood, accumulated over chunks of
        k_c draws (k_c × B ≤ IS_CHUNK_ROWS): log Σ_c Σ_{k∈c} w_k − log K, by logsumexp."""
        mean, logvar = posterior
        per_chunk = max(1, IS_CHUNK_ROWS // len(x))
        sums = []
        for start in range(0, n_samples, per_chunk):
            draws = min(per_chunk, n_samples - start)
            z = self.sample_latent(mean, logvar, draws)  # (k_c, B, m)
            log_prior, log_q = self.latent_log_densities(z, mean, logvar)
            log_joint = log_prior - self.reconstruction_nll(x, self.decoder(z))
            sums.append(torch.logsumexp(log_joint - log_q, dim=0))  # (B,)
        return torch.logsumexp(torch.stack(sums), dim=0) - math.log(n_samples)

    # --- training and evaluation ------------------------------------------------------------

    def parameter_groups(self) -> list[dict[str, Any]]:
        """A learned log σ² learns at lr × `sigma2_lr_scale`: its gradient is huge while the
        reconstructions are poor (σ² ≪ their error), which keeps Adam's steps for it small for
        a thousand steps afterwards (measured: at lr alone, 300 steps left σ² 45% above the
        reconstruction error it was heading for; at 10 × lr, 3%)."""
        return self.groups_by_name({"log_sigma2": self.hparams["sigma2_lr_scale"]})

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        beta, warmup = self.hparams["kl_weight"], self.hparams["kl_warmup_epochs"]
        self.kl_weight_now = warmed_kl_weight(beta, warmup, self.current_epoch)

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x = batch[0]
        terms = self.elbo_terms(x, self.posterior(x), True, self.kl_weight_now)
        return {name: value.mean() for name, value in terms.items()}

    def training_epoch_metrics(self, means: dict[str, Tensor]) -> dict[str, Tensor]:
        if "sigma2" in means:
            self.noise.end_epoch(means["sigma2"])
        return {"kl_weight": torch.tensor(self.kl_weight_now, device=self.device)}

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
            if self.hparams["val_is_samples"] > 0:
                values["log_likelihood"] = self._log_likelihood(
                    x, self.hparams["val_is_samples"], (mean, logvar)
                )
            return values
        values["active_units"] = (mean,)
        is_points = self.hparams["is_points"]
        wanted = len(x) if is_points == "all" else min(len(x), is_points - self._is_points_seen)
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


class LinearVAE(ReductionModule):
    """The linear VAE, LinearVAE(latent_dim=8): q(z | x) = N(A x + b, diag s²) with s² one
    variance per latent (the same for every x), p(z) = N(0, I), p(x | z) = N(W z + μ, σ² I)
    with σ² learned (`learn_sigma2`) or held at `sigma2`. Its ELBO has a closed form (no draws,
    objectives.linear_gaussian_expected_nll), and so has its log-likelihood: x ~ N(μ, W Wᵀ +
    σ² I), probabilistic PCA (Tipping & Bishop 1999), logged exactly as test/log_likelihood.

    The ELBO's maximum is pPCA's maximum likelihood, reached with q the exact posterior
    N(M⁻¹Wᵀ(x − μ), σ² M⁻¹), M = WᵀW + σ² I, which is diagonal for W = U_q(Λ_q − σ² I)^{1/2}
    (Lucas et al. 2019, "Don't blame the ELBO"): σ² → σ²_ML, the mean of the discarded
    eigenvalues of the training covariance; with σ² held fixed, latent j collapses (its column
    of W and the variance of its posterior mean go to 0) exactly when λ_j ≤ σ². The yardsticks
    from the training inputs are logged beside the test metrics: test/ppca_sigma2 = σ²_ML and
    test/ppca_log_likelihood, the training set's largest mean log-likelihood at the model's
    σ² setting (σ²_ML when learned), which train/elbo approaches from below, and
    test/ppca_active_units = #{j ≤ q: λ_j > σ²}, the latents the optimum keeps (test/
    active_units counts them by Burda et al.'s 0.01 threshold: a latent whose λ_j is within 1%
    of σ² keeps a posterior mean of variance (λ_j − σ²)/λ_j < 0.01 and is not counted).
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: PositiveInt = 8,
        sigma2: Positive = 1.0,
        learn_sigma2: bool = True,
        lr: Positive = 0.01, lr_schedule: LRSchedule = "cosine", lr_gamma: DecayFactor = 0.95,
        optimizer: Mapping[str, Any] = ADAM,
    ):  # fmt: skip
        super().__init__(lr, lr_schedule, lr_gamma, optimizer)
        self.save_hyperparameters(logger=False)
        self.encoder = nn.Linear(in_features, latent_dim)  # A, b
        self.posterior_logvar = nn.Parameter(torch.zeros(latent_dim))  # log s²
        self.decoder = nn.Linear(latent_dim, in_features)  # W, μ
        self.noise = NoiseVariance(sigma2, "learned" if learn_sigma2 else "fixed")
        self._references: dict[str, float] = {}

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x): mean A x + b (B, m) and log-variance log s² (m,)."""
        return self.encoder(x), self.posterior_logvar

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def elbo_terms(self, x: Tensor) -> dict[str, Tensor]:
        """Per example (B,), exact: recon = E_q[−log p(x | z)], kl, elbo, loss = −elbo."""
        mean, logvar = self.posterior(x)
        recon = linear_gaussian_expected_nll(
            x, mean, logvar.exp(), self.decoder.weight, self.decoder.bias, self.noise()
        )
        kl = standard_normal_kl(mean, logvar.expand_as(mean))
        elbo = -(recon + kl)
        return {"loss": -elbo, "elbo": elbo, "recon": recon, "kl": kl}

    def log_likelihood(self, x: Tensor) -> Tensor:
        """log p(x) = log N(x; μ, W Wᵀ + σ² I) per example (B,), exactly."""
        return linear_gaussian_log_marginal(x, self.decoder.weight, self.decoder.bias, self.noise())

    def use_training_inputs(self, x: Tensor) -> None:
        """pPCA's closed form on the training inputs, kept as yardsticks (not in checkpoints)."""
        variances = principal_subspace(x, self.hparams["latent_dim"])[2].double()
        sigma2_ml = ppca_noise_variance(variances, self.hparams["latent_dim"])
        sigma2 = sigma2_ml if self.hparams["learn_sigma2"] else self.hparams["sigma2"]
        best = ppca_max_log_likelihood(variances, self.hparams["latent_dim"], sigma2)
        kept = int((variances[: self.hparams["latent_dim"]] > sigma2).sum())  # #{j ≤ q: λ_j > σ²}
        self._references = {
            "ppca_sigma2": sigma2_ml.item(),
            "ppca_log_likelihood": best.item(),
            "ppca_active_units": float(kept),
        }

    def reference_metrics(self, info: DataInfo) -> dict[str, float]:
        return super().reference_metrics(info) | self._references

    def training_terms(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        return {name: value.mean() for name, value in self.elbo_terms(batch[0]).items()}

    def training_epoch_metrics(self, means: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"sigma2": self.noise().detach()}

    def special_metrics(self, stage: str) -> dict[str, Metric]:
        return {"active_units": ActiveUnits()} if stage == "test" else {}

    def evaluate(self, batch: tuple[Tensor, ...], stage: str) -> dict[str, Any]:
        x = batch[0]
        values = self.elbo_terms(x)
        values["recon_mse"] = reconstruction_mse(x, self.reconstruct(x))
        if stage == "test":
            values["log_likelihood"] = self.log_likelihood(x)
            values["active_units"] = (self.encode(x),)
        return values

"""`ivon`: IVON, the Improved Variational Online Newton optimiser (Shen et al. 2024, "Variational
Learning is Effective for Large Deep Networks"), whose state is a mean-field Gaussian posterior.

q(θ) = N(m, diag σ²),  σ² = 1 / (λ (h + δ)),  λ = ess = N training points,
h the optimiser's running estimate of the diagonal Hessian of the mean nll per point, δ its
weight decay. IVON minimises E_q[ℓ̄(θ)] − H(q)/λ with ℓ̄ = (1/N) Σᵢ −log p(yᵢ | θ) + (δ/2)‖θ‖²; at
λ = N that is the negative ELBO / N under the prior N(0, I / (Nδ)): δ is a prior precision per
training point (N = 1000, δ = 1e-3: prior sd 1). One step (Shen et al. 2024, Algorithm 1):

    θ = m + σ ⊙ ε, ε ~ N(0, I);  g = ∇ℓ̂(θ) (a minibatch);  ĥ = g ⊙ (θ − m) / σ²
    ḡ ← β₁ ḡ + (1 − β₁) g
    h ← β₂ h + (1 − β₂) ĥ + ½ (1 − β₂)² (h − ĥ)² / (h + δ)
    m ← m − α (ḡ / (1 − β₁ᵗ) + δ m) / (h + δ),  α = lr · (h₀ + δ)

so the step starts as SGD with momentum at `lr` and shrinks as h grows. The posterior is the
optimiser's state (ḡ and h live in its param_groups, saved by its state_dict, and t in
`current_step`, saved here); after every step σ is copied into the buffer `posterior_sd`, so that
prediction and checkpoints need no optimiser. The `optimizer` config group is not used: IVON is
the optimiser, at the model's `lr` (and its schedule).

Training: `mc_samples` draws of θ per step, each a forward and backward pass of its own (IVON's
own loop: Lightning's closure, and so the task's training_step, runs that many times a step).
Prediction: S = `predict_samples` draws θ⁽ˢ⁾ ~ q, all in one vectorised pass (torch.vmap).

Why the defaults (the regression job: 1-50-50-1 tanh, 1000 points of sin x + N(0, 0.01),
batch 50, 50 epochs = 1000 steps, cosine decay, model.lr = 0.01): δ = 1e-3 is the N(0, 1) prior
of bbb's default. IVON's own β₂ = 0.99999 suits 10⁵ steps and more: in 1000, h stays near h₀
while the nll's curvature (∝ 1/σ² = 100) is far above it, and the first steps, SGD at lr,
diverged. β₂ = 0.95 lets h follow; with h₀ = 1 the test MSE was 0.0105–0.0107, NLL
−0.79 and coverage 0.99 on 4 seeds (bbb: 0.0108, −0.815, 0.977), and stayed so at lr 0.03;
β₂ = 0.99 gave NLL −0.71, lr 0.1 diverged on 1 seed of 4.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

import ivon
import torch
from torch import Tensor, nn
from torch.func import functional_call

from vnnlab.errors import bad_value
from vnnlab.inference.base import InferenceMethod, NetworkSpec
from vnnlab.models.layers import make_mlp
from vnnlab.schema import NonNegative, Positive, PositiveInt, Probability


class IVON(InferenceMethod):
    """See the module docstring. `hess_init` h₀ sets the posterior sd before the first step,
    1/√(N(h₀ + δ)), and the step size's scale; `clip_radius` clips each coordinate of
    (ḡ/(1 − β₁ᵗ) + δm)/(h + δ) (inf: none)."""

    def __init__(
        self,
        hess_init: Positive = 1.0,
        beta1: Probability = 0.9,
        beta2: Probability = 0.95,
        weight_decay: NonNegative = 1e-3,
        mc_samples: PositiveInt = 1,
        predict_samples: PositiveInt = 100,
        clip_radius: Positive = math.inf,
    ):
        super().__init__()
        self.knobs = {"hess_init": hess_init, "beta1": beta1, "beta2": beta2,
                      "weight_decay": weight_decay, "mc_samples": mc_samples,
                      "clip_radius": clip_radius}  # fmt: skip
        self.predict_samples = predict_samples
        self.current_step = 0  # IVON's t, which its state_dict leaves out

    @classmethod
    def check_with(cls, model_args: Mapping[str, Any], optimizer_args: Mapping[str, Any]) -> None:
        decay = optimizer_args.get("weight_decay", 0.0)
        if decay:  # IVON replaces the optimiser, whose prior would silently vanish
            raise bad_value("optimizer.weight_decay", decay, "0 with inference=ivon (IVON is the "
                            "optimiser; its prior is inference.weight_decay)")  # fmt: skip

    def build(self, spec: NetworkSpec) -> None:
        self.net: nn.Module = make_mlp(spec.in_features, spec.hidden, spec.out_features,
                                       spec.activation)  # fmt: skip
        self.n_train = spec.n_train
        n_params = sum(p.numel() for p in self.net.parameters())
        self.register_buffer("posterior_sd", torch.full((n_params,), self.initial_sd()))

    def initial_sd(self) -> float:
        """σ before the first step: 1/√(N(h₀ + δ))."""
        precision = self.n_train * (self.knobs["hess_init"] + self.knobs["weight_decay"])
        return precision**-0.5

    def training_outputs(self, x: Tensor) -> Tensor:
        return self.net(x).unsqueeze(0)  # (1, B, out) at the θ IVON drew for this pass

    def objective(self, nll: Tensor) -> dict[str, Tensor]:
        """The mean nll per point over the draws (M, B) → (B,); the prior is IVON's δ."""
        return {"loss": nll.mean(dim=0)}

    # --- the predictive: S draws in one pass --------------------------------------------------

    def predictive_outputs(self, x: Tensor) -> Tensor:
        return self.outputs_at(self.sample_parameters(self.predict_samples), x)  # (S, B, out)

    def sample_parameters(
        self, n_samples: int, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """n_samples draws θ⁽ˢ⁾ = m + σ ⊙ ξ⁽ˢ⁾, ξ⁽ˢ⁾ ~ N(0, I): {name: (S, *shape)}."""
        mean = nn.utils.parameters_to_vector(self.net.parameters())  # (P,)
        noise = torch.randn(n_samples, mean.numel(), generator=generator,
                            device=mean.device, dtype=mean.dtype)  # fmt: skip
        flat = mean + self.posterior_sd * noise  # (S, P)
        named = list(self.net.named_parameters())
        pieces = flat.split([p.numel() for _, p in named], dim=1)
        return {name: piece.view(n_samples, *p.shape)
                for (name, p), piece in zip(named, pieces, strict=True)}  # fmt: skip

    def outputs_at(self, parameters: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The network at S parameter sets {name: (S, *shape)}, vmapped over S: (S, B, out)."""
        return torch.vmap(lambda theta: functional_call(self.net, theta, (x,)))(dict(parameters))

    # --- the optimiser is the posterior -------------------------------------------------------

    def make_optimizer(
        self, groups: list[dict[str, Any]], lr: float, optimizer: Mapping[str, Any]
    ) -> torch.optim.Optimizer:
        """One IVON over every group (a group learns at lr × its "lr_scale"); `optimizer`, the
        `optimizer` config group, is not used. Every group shares ess = N and the knobs: the
        task's own parameters (a learned log σ²) are drawn and decayed by δ like the network's."""
        groups = [{"params": group["params"], "lr": lr * group.get("lr_scale", 1.0)}
                  for group in groups if group["params"]]  # fmt: skip
        return ivon.IVON(groups, lr=lr, ess=self.n_train, **self.knobs)

    def optimizer_step(self, optimizer: Any, closure: Callable[[], Any]) -> None:
        """Each call of `closure` (forward, zero_grad, backward) runs at a fresh θ ~ q, after
        which IVON collects its gradient; then σ is copied into `posterior_sd`."""
        posterior = _ivon_of(optimizer)

        def sampled_closure() -> Any:
            with posterior.sampled_params(train=True):
                return closure()

        optimizer.step(closure=sampled_closure)
        self.current_step = posterior.current_step
        self.copy_posterior_sd(posterior)

    @torch.no_grad()
    def copy_posterior_sd(self, posterior: ivon.IVON) -> None:
        """σ = 1/√(λ(h + δ)) of the network's parameters, in their order, from IVON's groups."""
        sd_of: dict[int, Tensor] = {}
        for group in posterior.param_groups:
            sd = (group["ess"] * (group["hess"] + group["weight_decay"])).rsqrt()
            for p, piece in zip(group["params"], sd.split([p.numel() for p in group["params"]]),
                                strict=True):  # fmt: skip
                sd_of[id(p)] = piece
        self.posterior_sd.copy_(torch.cat([sd_of[id(p)] for p in self.net.parameters()]))

    def start_fit(self, optimizer: Any) -> None:
        """Give a restored IVON its step count t (for the debiasing 1 − β₁ᵗ) and put ḡ and h on
        its parameters' device: torch restores param_groups as saved, on the checkpoint's."""
        posterior = _ivon_of(optimizer)
        posterior.current_step = self.current_step
        for group in posterior.param_groups:
            like = group["params"][0]
            for key in ("momentum", "hess"):
                group[key] = group[key].to(device=like.device, dtype=like.dtype)

    def epoch_metrics(self, means: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The median posterior sd of each layer's weights and biases (make_mlp's layers: a
        weight and a bias each, in that order)."""
        sizes = [p.numel() for p in self.net.parameters()]
        pieces = self.posterior_sd.split(sizes)
        layers = [torch.cat(pieces[i : i + 2]) for i in range(0, len(pieces), 2)]
        return {f"posterior_sd_layer{i}": sd.median() for i, sd in enumerate(layers, start=1)}

    def save_state(self) -> dict[str, Any]:
        return {"current_step": self.current_step}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.current_step = int(state.get("current_step", 0))


def _ivon_of(optimizer: Any) -> ivon.IVON:
    """The IVON instance behind Lightning's LightningOptimizer (or IVON itself)."""
    return optimizer if isinstance(optimizer, ivon.IVON) else optimizer.optimizer

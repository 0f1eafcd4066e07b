"""Does a BNN run's posterior learn? One run of `vnnlab-train <overrides>` (in a temporary
store), then its figures as README.md reports them, as JSON on stdout:

- per layer, the median posterior sd softplus(ρ) of the weights (train/posterior_sd_layer<i>
  counts the biases too);
- KL/N after the first and the last epoch, the data term E_q[−log ℓ]/N and the ELBO at the end;
- the ELBO's rise over the last 10% of epochs (least-squares line, ± its standard error: the
  check behind the end-of-run warning, inference.bbb.recent_gain);
- with data.gap set: the mean predictive sd for x in the gap shrunk by 0.1 at each end, over
  the mean sd where training data are dense (0.3 away from the gap out to 0.1 inside the data's
  range), each on a grid of 200 points, S = predict_samples draws;
- the test metrics.

    python experiments/gap_uncertainty/measure.py                          # the default job
    python experiments/gap_uncertainty/measure.py +experiment=gap_uncertainty seed=1 data.seed=1
"""

import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from vnnlab import CONFIG_DIR
from vnnlab.inference.bbb import recent_gain
from vnnlab.run.training import train


def gap_ratio(model, gap: tuple[float, float], low: float, high: float) -> dict[str, float]:
    inside = torch.linspace(gap[0] + 0.1, gap[1] - 0.1, 200)
    dense = torch.cat([torch.linspace(low + 0.1, gap[0] - 0.3, 100),
                       torch.linspace(gap[1] + 0.3, high - 0.1, 100)])  # fmt: skip
    torch.manual_seed(0)
    with torch.no_grad():
        sd_inside = model.predict(inside.unsqueeze(1))[1].sqrt().mean().item()
        sd_dense = model.predict(dense.unsqueeze(1))[1].sqrt().mean().item()
    return {"sd_in_gap": sd_inside, "sd_dense": sd_dense, "ratio": sd_inside / sd_dense}


def main(overrides: list[str]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="vnnlab-measure-"))
    store = f"sqlite:///{folder / 'mlflow.db'}"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        quiet = ["trainer.enable_progress_bar=false"]
        cfg = compose("config", overrides=[f"tracking.uri={store}", *quiet, *overrides])
    os.chdir(folder)  # Hydra-less: the run's checkpoints go to a temporary folder
    result = train(cfg)
    client = MlflowClient(store)

    def history(key: str) -> list[float]:
        metrics = client.get_metric_history(result.run_id, key)
        return [m.value for m in sorted(metrics, key=lambda m: m.step)]

    elbo, kl = history("train/elbo"), history("train/kl")
    rise, standard_error, epochs = recent_gain(elbo)
    model = result.model.eval()
    report = {
        "overrides": overrides,
        "epochs": len(elbo),
        "weight_sd_median_per_layer": [
            F.softplus(layer.weight_rho).median().item() for layer in model.inference.net.layers
        ],
        "kl_per_point_first_epoch": kl[0],
        "kl_per_point": kl[-1],
        "data_term_per_point": history("train/expected_nll")[-1],
        "elbo_per_point": elbo[-1],
        f"elbo_rise_last_{epochs}_epochs": [rise, standard_error],
        "test": {k: v for k, v in result.metrics.items() if k.startswith("test/")},
    }
    if cfg.data.get("gap"):
        report["gap"] = gap_ratio(model, tuple(cfg.data.gap), cfg.data.x_low, cfg.data.x_high)
    return report


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=1))

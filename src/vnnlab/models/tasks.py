"""Task heads: the test metrics and figures of regression and classification, shared by the
deterministic and the Bayesian models so that `test/nll` means the same thing in both."""

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.functional.classification import multiclass_calibration_error

from vnnlab import plots
from vnnlab.models.base import VNNModule
from vnnlab.models.losses import coverage

ECE_BINS = 15


class RegressionModule(VNNModule):
    """Subclasses implement `predict(x) -> (mean, var or None)` and, if they have a predictive
    density, put per-point `nll` into `predict_batch`."""

    task = "regression"

    def predict(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def predict_batch(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, y = batch
        mean, var = self.predict(x)
        return {"y": y, "mean": mean} | ({} if var is None else {"var": var})

    def test_metrics(self, predictions: dict[str, Tensor]) -> dict[str, Tensor]:
        y, mean = predictions["y"], predictions["mean"]
        mse = ((y - mean) ** 2).sum(dim=-1).mean()
        metrics = {"mse": mse, "rmse": mse.sqrt()}
        if "var" in predictions:
            metrics["coverage95"] = coverage(y, mean, predictions["var"])
        if "nll" in predictions:
            metrics["nll"] = predictions["nll"].mean()
        return metrics

    @torch.no_grad()
    def figures(self, datamodule: pl.LightningDataModule) -> dict[str, Figure]:
        if datamodule.dims()["in_features"] != 1 or not hasattr(datamodule, "true_function"):
            return {}  # the fit figure needs a 1-D input and a known f
        x_train, y_train = datamodule.splits["train"]
        margin = 0.1 * (datamodule.x_high - datamodule.x_low)
        grid = torch.linspace(datamodule.x_low - margin, datamodule.x_high + margin, 400).unsqueeze(
            1
        )
        mean, var = self.predict(grid.to(self.device))
        sd = None if var is None else var.sqrt().cpu()
        figure = plots.regression_fit(
            x_train,
            y_train,
            grid,
            datamodule.true_function(grid),
            mean.cpu(),
            sd,
            gap=datamodule.gap,
        )
        return {"fit.png": figure}


class ClassificationModule(VNNModule):
    """Subclasses implement `predict_proba(x) -> (B, K)` class probabilities."""

    task = "classification"

    def predict_proba(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def predict_batch(self, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        x, labels = batch
        return {"labels": labels, "probs": self.predict_proba(x)}

    def test_metrics(self, predictions: dict[str, Tensor]) -> dict[str, Tensor]:
        labels, probs = predictions["labels"], predictions["probs"]
        p_true = probs.gather(1, labels.unsqueeze(1)).squeeze(1)
        return {
            "acc": (probs.argmax(dim=1) == labels).float().mean(),
            "nll": -torch.log(p_true.clamp_min(torch.finfo(probs.dtype).tiny)).mean(),
            "ece": multiclass_calibration_error(
                probs, labels, num_classes=probs.shape[1], n_bins=ECE_BINS, norm="l1"
            ),
        }

    def figures(self, datamodule: pl.LightningDataModule) -> dict[str, Figure]:
        labels, probs = self.test_predictions["labels"], self.test_predictions["probs"]
        return {
            "reliability.png": plots.reliability_diagram(probs, labels, ECE_BINS),
            "entropy.png": plots.entropy_by_correctness(probs, labels),
        }

"""A run trained on a table (data=tabular) applied to new rows (vnnlab-predict).

The run's checkpoint (loaded with weights_only=True) brings the model and the training split's
standardisation of the inputs; the output keeps every input column and adds, per row: for a
regressor `<target>_mean`, `<target>_sd`, `<target>_lower95`, `<target>_upper95` (mean ± 1.96
sd of the predictive, whatever the inference method); for a classifier `p_<class>` per class
and `predicted`;
for PCA, autoencoders and the VAE `z1` … `zm` (the latent code) and `recon_mse` (on the
standardised inputs, as the run's recon_mse).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from vnnlab.data.tabular import TabularDataModule, numeric_columns, read_table
from vnnlab.errors import bad_value
from vnnlab.models.base import VNNModule
from vnnlab.models.classification import Classifier
from vnnlab.models.regression import Regressor
from vnnlab.run.load import load_run
from vnnlab.tracking.store import resolve_tracking_uri

CHUNK = 4096  # rows per forward pass
Z95 = 1.959964  # the standard normal's 97.5% quantile


def predict(
    run_id: str, path: str, tracking_uri: str | None = None, delimiter: str | None = None
) -> pd.DataFrame:
    """The rows of the table at `path` with the run's predictions as added columns."""
    uri = resolve_tracking_uri(tracking_uri, Path.cwd())
    model, scaling = _trained(run_id, uri)
    table = read_table(path, delimiter)
    absent = [column for column in scaling["inputs"] if column not in table.columns]
    if absent:
        wanted = ", ".join(scaling["inputs"])
        allowed = f"a table with the run's input columns ({wanted}); missing: {', '.join(absent)}"
        raise bad_value("data.path", path, allowed)
    x = torch.tensor(numeric_columns(table, scaling["inputs"]), dtype=torch.float32)
    x = (x - torch.tensor(scaling["loc"])) / torch.tensor(scaling["scale"])
    with torch.no_grad():
        added = pd.concat([_outputs(model, chunk, scaling) for chunk in x.split(CHUNK)])
    return pd.concat([table.reset_index(drop=True), added.reset_index(drop=True)], axis=1)


def _trained(run_id: str, uri: str) -> tuple[VNNModule, dict[str, Any]]:
    """The run's model and its data module's state (input columns, standardisation, classes)."""
    model, checkpoint = load_run(run_id, uri)
    scaling = checkpoint.get(TabularDataModule.__qualname__)
    if not scaling:
        raise bad_value("run_id", run_id, "a run trained on data=tabular")
    return model, scaling


def _outputs(model: VNNModule, x: Tensor, scaling: dict[str, Any]) -> pd.DataFrame:
    if isinstance(model, Regressor):
        return _regression(model, x, scaling["targets"])
    if isinstance(model, Classifier):
        return _classification(model, x, scaling["classes"])
    z = model.encode(x)
    columns = {f"z{i + 1}": z[:, i].numpy() for i in range(z.shape[1])}
    columns["recon_mse"] = ((x - model.decode(z)) ** 2).mean(dim=1).numpy()
    return pd.DataFrame(columns)


def _regression(model: Regressor, x: Tensor, targets: Sequence[str]) -> pd.DataFrame:
    mean, var = model.predict(x)
    columns: dict[str, Any] = {}
    for j, target in enumerate(targets):
        columns[f"{target}_mean"] = mean[:, j].numpy()
        sd = var[:, j].sqrt()
        columns[f"{target}_sd"] = sd.numpy()
        columns[f"{target}_lower95"] = (mean[:, j] - Z95 * sd).numpy()
        columns[f"{target}_upper95"] = (mean[:, j] + Z95 * sd).numpy()
    return pd.DataFrame(columns)


def _classification(model: Classifier, x: Tensor, classes: list) -> pd.DataFrame:
    probabilities = model.predict_proba(x)
    columns: dict[str, Any] = {f"p_{label}": probabilities[:, k].numpy()
                               for k, label in enumerate(classes)}  # fmt: skip
    columns["predicted"] = [classes[k] for k in probabilities.argmax(dim=1).tolist()]
    return pd.DataFrame(columns)

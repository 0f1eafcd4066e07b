"""Bad input through `vnnlab-train` (its `main`, in this process): every case exits 2 with one
line naming the key, the value and what is allowed, and leaves no run in the store (nor a store
where there was none).
"""

from pathlib import Path

import numpy as np
import pytest

from helpers import QUICK, InProcessCommand, free_port
from idx_files import write_idx_images, write_idx_labels, write_mnist


def valid_mnist(root: Path) -> Path:
    write_mnist(root, n_train=20, n_test=10)
    return root


def corrupt_mnist(root: Path) -> Path:
    """Valid test files, a training-image file cut short after its header."""
    write_mnist(root, n_train=20, n_test=10)
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    return root


def mislabelled_mnist(root: Path) -> Path:
    write_mnist(root, n_train=20, n_test=10)
    raw = root / "MNIST" / "raw"
    write_idx_labels(raw / "train-labels-idx1-ubyte", np.full(20, 12))
    return root


def mismatched_mnist(root: Path) -> Path:
    write_mnist(root, n_train=20, n_test=10)
    write_idx_images(root / "MNIST" / "raw" / "train-images-idx3-ubyte", np.zeros((5, 28, 28)))
    return root


UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"
# (id, overrides, what the one line must contain); "{data}" is the case's data folder
CASES = [
    ("epochs zero", ["trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed: expected"),
    ("epochs text", ["trainer.max_epochs=abc"], "trainer.max_epochs='abc' is not allowed"),
    ("max_steps", ["trainer.max_steps=-2"], "trainer.max_steps=-2 is not allowed"),
    ("limit batches", ["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5"),
    ("precision", ["trainer.precision=8"], "trainer.precision=8"),
    ("accelerator", ["trainer.accelerator=abacus"], "trainer: "),  # Lightning's own refusal
    ("unknown trainer key", ["+trainer.epochs=3"], "trainer.epochs=3 is not allowed: expected"),
    ("seed", ["seed=-1"], "seed=-1 is not allowed: expected an integer ≥ 0"),
    ("checkpoint", ["checkpoint.every_n_epochs=0"], "checkpoint.every_n_epochs=0 is not allowed"),
    ("lr zero", ["model.lr=0"], "model.lr=0 is not allowed: expected a number > 0"),
    ("sigma2 nan", ["model.sigma2=nan"], "model.sigma2=nan is not allowed"),
    ("mc samples", ["inference.mc_samples=2.5"], "inference.mc_samples=2.5 is not allowed"),
    ("hidden zero", ["model.hidden=[50,0]"], "model.hidden=[50, 0] is not allowed"),
    ("activation", ["model.activation=swish"], "model.activation='swish' is not allowed"),
    ("kl option", ["inference.kl=exact"], "inference.kl='exact' is not allowed"),
    ("kl with estimator", ["inference.kl=monte_carlo", "inference.estimator=local_reparam"],
     "inference.kl='monte_carlo' is not allowed: expected closed_form with inference.estimator"),
    ("momentum", ["optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum=1.5"),
    ("nesterov", ["optimizer=sgd", "optimizer.nesterov=true"],
     "optimizer.nesterov=True is not allowed"),
    ("unknown model key", ["+model.dropout=0.1"], "model.dropout=0.1 is not allowed: expected"),
    ("latent too large", ["model=vae", "data=manifold", "model.latent_dim=20"],
     "model.latent_dim=20 is not allowed: expected"),
    ("bernoulli off [0,1]", ["model=vae", "data=manifold", "model.likelihood=bernoulli"],
     "model.likelihood='bernoulli' is not allowed"),
    ("pairing", ["model=mlp_classifier"], "model=Classifier trains on data with class"),
    ("method for a vae", ["model=vae", "data=manifold", "inference=laplace"],
     "inference='laplace' is not allowed: expected none with model=VAE"),
    ("laplace heteroscedastic", ["inference=laplace", "model.noise=heteroscedastic"],
     "inference='laplace' is not allowed: expected model.noise=homoscedastic"),
    ("bbb with weight decay", ["optimizer.weight_decay=0.01"],
     "optimizer.weight_decay=0.01 is not allowed: expected 0 with inference=bbb"),
    ("ensemble size", ["inference=ensemble", "inference.members=0"],
     "inference.members=0 is not allowed"),
    ("batch size", ["data.batch_size=0"], "data.batch_size=0 is not allowed"),
    ("noise", ["data.noise_var=-0.1"], "data.noise_var=-0.1 is not allowed"),
    ("x text", ["data.x_low=abc"], "data.x_low='abc' is not allowed: expected a number"),
    ("manifold dims", ["model=pca", "data=manifold", "data.intrinsic_dim=30"],
     "data.intrinsic_dim=30 is not allowed"),
    ("mnist missing", ["data=mnist", "data.root={data}"], "MNIST not found"),
    ("mnist corrupt", ["data=mnist", "data.root={corrupt}"], "truncated or corrupt"),
    ("mnist labels", ["data=mnist", "data.root={mislabelled}"], "labels outside 0..9"),
    ("mnist sizes", ["data=mnist", "data.root={mismatched}"], "MNIST"),
    ("mnist n_val", ["data=mnist", "data.root={valid}", "data.n_val=20"], "data.n_val=20"),
    ("table without path", ["data=tabular"], "data.path=None is not allowed: expected a file"),
    ("server down", ["tracking.uri=http://127.0.0.1:{port}"], "tracking.uri='http://127.0.0.1"),
    ("store scheme", ["tracking.uri=foo://bar"], "tracking.uri='foo://bar' is not allowed"),
    ("resume unknown", [f"resume={UNKNOWN_RUN}"], f"resume='{UNKNOWN_RUN}' is not allowed"),
    ("resume with lr", [f"resume={UNKNOWN_RUN}", "model.lr=0.1"],
     "model.lr=0.1 cannot be combined with resume="),
    ("hydra key", ["model.no_such_key=1"], "Could not override 'model.no_such_key'"),
    ("hydra group", ["model=no_such_model"], "Could not find 'model/no_such_model'"),
]  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path | int]:
    """What the cases' "{name}" placeholders stand for: data folders, a closed port."""
    data = tmp_path_factory.mktemp("data")
    return {
        "data": data / "empty",
        "corrupt": corrupt_mnist(data / "corrupt"),
        "mislabelled": mislabelled_mnist(data / "mislabelled"),
        "mismatched": mismatched_mnist(data / "mismatched"),
        "valid": valid_mnist(data / "valid"),
        "port": free_port(),
    }


@pytest.mark.parametrize(("name", "overrides", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_no_run(
    tmp_path, capfd, monkeypatch, folders, name, overrides, expected
):
    command = InProcessCommand(tmp_path, capfd, monkeypatch)  # no store yet
    result = command.run(*QUICK, *(o.format(**folders) for o in overrides))
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("vnnlab: ") and expected in lines[0], lines[0]
    assert not command.store.exists() or command.runs() == []

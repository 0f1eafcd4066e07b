"""data.binarize on small IDX files: dynamic training batches drawn afresh, val and test drawn
once from the seed and carried by the data module's checkpoint state."""

import pytest
import torch
from mlflow.tracking import MlflowClient
from pytorch_lightning import Trainer

from helpers import QUICK, composed
from idx_files import write_mnist
from vnnlab.data import mnist
from vnnlab.data.mnist import MNISTDataModule, pack_pixels, unpack_pixels
from vnnlab.models.vae import VAE
from vnnlab.run.load import load_run
from vnnlab.run.training import train

N_TRAIN, N_TEST, N_VAL, BATCH = 60, 30, 12, 16
PASSES = 100  # draws of every training pixel, for the mean of the dynamic draws


@pytest.fixture
def root(tmp_path):
    write_mnist(tmp_path, N_TRAIN, N_TEST)
    return tmp_path


def make_module(root, **overrides) -> MNISTDataModule:
    settings = {"n_val": N_VAL, "batch_size": BATCH, "seed": 3} | overrides
    return MNISTDataModule(root=str(root), **settings)


def inputs(module: MNISTDataModule, split: str) -> torch.Tensor:
    """One pass over a split in its stored order, as the model sees it: (N, 784)."""
    return torch.cat([x for x, _ in module.batches(split)])


def test_dynamic_training_batches_are_fresh_binary_draws_of_the_grey_values(root):
    module = make_module(root, binarize="dynamic")
    grey = module.split("train")[0]  # the grey values, whose draws the batches are
    torch.manual_seed(0)
    draws = torch.stack([inputs(module, "train") for _ in range(PASSES)])  # (PASSES, N, 784)
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(draws[0], draws[1])  # a new draw every epoch
    # each pixel's frequency over the passes estimates its grey value: within 5 standard errors
    standard_error = (grey * (1 - grey) / PASSES).sqrt()
    assert ((draws.mean(dim=0) - grey).abs() <= 5 * standard_error + 1e-6).all()
    assert draws.mean().item() == pytest.approx(grey.mean().item(), abs=2e-3)


def test_dynamic_batches_are_drawn_in_the_batch_by_torch_s_generator(root):
    # the draw is the generator of the device holding the batch: seeded, it repeats
    module = make_module(root, binarize="dynamic")
    torch.manual_seed(7)
    first = [x for x, _ in module.train_dataloader()]
    module_again = make_module(root, binarize="dynamic")
    torch.manual_seed(7)
    again = [x for x, _ in module_again.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_images_binarised_once_are_the_same_in_every_instance_and_epoch(root, binarize):
    module, twin = make_module(root, binarize=binarize), make_module(root, binarize=binarize)
    once = ["val", "test"] + (["train"] if binarize == "static" else [])
    for split in once:
        x = inputs(module, split)
        assert set(x.unique().tolist()) == {0.0, 1.0}
        torch.manual_seed(1)  # the global generator plays no part in them
        assert torch.equal(x, inputs(module, split)) and torch.equal(x, inputs(twin, split))
    other_seed = make_module(root, binarize=binarize, seed=4)
    assert not torch.equal(inputs(module, "test"), inputs(other_seed, "test"))


def test_the_test_images_do_not_depend_on_the_validation_size(root):
    one, other = make_module(root, binarize="dynamic"), make_module(root, binarize="dynamic",
                                                                     n_val=20)  # fmt: skip
    assert torch.equal(inputs(one, "test"), inputs(other, "test"))


def test_binarised_val_and_test_keep_the_grey_level_images_mean(root):
    grey, binary = make_module(root), make_module(root, binarize="dynamic")
    for split in ("val", "test"):
        p, x = inputs(grey, split), inputs(binary, split)
        assert x[p == 0].eq(0).all() and x[p == 1].eq(1).all()  # the all-0 and all-255 images
        assert x.mean().item() == pytest.approx(p.mean().item(), abs=0.02)


def test_grey_images_keep_no_state(root):
    assert make_module(root).state_dict() == {}


def test_packing_eight_pixels_a_byte_round_trips():
    images = torch.randint(0, 2, (5, 28, 28), dtype=torch.uint8) * 255
    packed = pack_pixels(images)
    assert packed.shape == (5, 98) and packed.dtype == torch.uint8
    assert torch.equal(unpack_pixels(packed), images)


@pytest.mark.parametrize("binarize", ["dynamic", "static"])
def test_the_state_carries_the_images_through_a_checkpoint(root, tmp_path, binarize, monkeypatch):
    module = make_module(root, binarize=binarize)
    path = tmp_path / "state.pt"
    torch.save(module.state_dict(), path)
    state = torch.load(path, weights_only=True)
    # a module that would draw other images (another torch, another generator) restores these
    monkeypatch.setattr(mnist, "binarize_once", lambda images, seed: images.mul(0))
    restored = make_module(root, binarize=binarize)
    restored.load_state_dict(state)
    splits = ["val", "test"] + (["train"] if binarize == "static" else [])
    assert sorted(state["packed_images"]) == sorted(splits)
    for split in splits:
        assert torch.equal(inputs(restored, split), inputs(module, split)), split
        assert inputs(restored, split).any()


def test_a_state_binarised_another_way_is_refused(root):
    state = make_module(root, binarize="static").state_dict()
    with pytest.raises(Exception, match="data.binarize='dynamic'") as caught:
        make_module(root, binarize="dynamic").load_state_dict(state)
    assert "\n" not in str(caught.value) and "static" in str(caught.value)


# --- through a fit: the checkpoint carries the images a resumed or reloaded run scores ---------


def quiet_trainer(epochs: int) -> Trainer:
    return Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False,
                   num_sanity_val_steps=0)  # fmt: skip


def test_a_resumed_fit_scores_the_images_of_its_checkpoint(root, tmp_path, monkeypatch):
    module = make_module(root, binarize="dynamic")
    model = VAE(784, latent_dim=2, hidden=[16], likelihood="bernoulli")
    trainer = quiet_trainer(1)
    trainer.fit(model, datamodule=module)
    checkpoint = tmp_path / "last.ckpt"
    trainer.save_checkpoint(checkpoint)
    # the resumed process would draw other images: Lightning's restore puts the saved ones back
    monkeypatch.setattr(mnist, "binarize_once", lambda images, seed: images.mul(0))
    resumed = make_module(root, binarize="dynamic")
    model = VAE(784, latent_dim=2, hidden=[16], likelihood="bernoulli")
    quiet_trainer(2).fit(model, datamodule=resumed, ckpt_path=checkpoint, weights_only=True)
    for split in ("val", "test"):
        assert torch.equal(resumed.splits[split][0], module.splits[split][0]), split


def test_an_iwae_run_on_dynamic_mnist_logs_both_bounds_and_keeps_its_images(root, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = composed(*QUICK, "model=vae", "data=mnist", "data.binarize=dynamic", "data.n_val=12",
                   "model.likelihood=bernoulli", "model.hidden=[16]", "model.latent_dim=2",
                   "model.objective=iwae", "model.mc_samples=3", "model.is_samples=8",
                   "model.is_points=all", f"tracking.uri={uri}")  # fmt: skip
    cfg.data.root = str(root)
    result = train(cfg)
    metrics = MlflowClient(uri).get_run(result.run_id).data.metrics
    bounds = {f"{stage}/{term}" for stage in ("train", "val", "test")
              for term in ("elbo", "iwae_bound", "loss", "recon", "kl")}  # fmt: skip
    wanted = bounds | {"train/kl_weight", "test/log_likelihood", "test/active_units"}
    assert wanted <= set(metrics), wanted - set(metrics)
    for stage in ("train", "val", "test"):
        assert metrics[f"{stage}/iwae_bound"] >= metrics[f"{stage}/elbo"]
        assert metrics[f"{stage}/loss"] == pytest.approx(-metrics[f"{stage}/iwae_bound"])
    _, state = load_run(result.run_id, uri)
    saved = state[MNISTDataModule.__qualname__]["packed_images"]
    for split in ("val", "test"):
        assert torch.equal(unpack_pixels(saved[split]), result.datamodule.splits[split][0])

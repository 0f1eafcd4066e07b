"""MNISTDataModule on small IDX files written here, read through torchvision's real loader."""

import struct

import numpy as np
import pytest
import torch

from idx_files import write_idx_images, write_idx_labels, write_mnist
from vnnlab.data.mnist import MNISTDataModule, rotated
from vnnlab.errors import BadInputError

N_TRAIN, N_TEST, N_VAL, BATCH = 50, 21, 12, 8


@pytest.fixture
def written(tmp_path):
    return write_mnist(tmp_path, N_TRAIN, N_TEST)


def make_module(root, **overrides) -> MNISTDataModule:
    settings = {"n_val": N_VAL, "batch_size": BATCH, "seed": 3} | overrides
    return MNISTDataModule(root=str(root), **settings)


def expected_inputs(images: np.ndarray) -> torch.Tensor:
    """The model input computed without the module: (N, 784) float32 pixels / 255."""
    flat = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    return torch.from_numpy(flat)


def concat(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches, strict=True)
    return torch.cat(xs), torch.cat(ys)


def test_dims_count_the_images_read(tmp_path, written):
    info = make_module(tmp_path).info()
    assert info.model_dims() == {"in_features": 784, "out_features": 10, "n_train": N_TRAIN - N_VAL}
    assert info.target == "class" and info.image_shape == (28, 28) and info.unit_interval


def test_splits_hold_the_written_images_and_labels(tmp_path, written):
    module = make_module(tmp_path)
    module.setup()
    train_images, train_labels = written["train"]
    for split in ("train", "val"):
        index = module.split_indices[split].numpy()
        images, labels = module.splits[split]
        assert images.dtype == torch.uint8 and labels.dtype == torch.int64
        np.testing.assert_array_equal(images.numpy(), train_images[index])
        np.testing.assert_array_equal(labels.numpy(), train_labels[index])
    test_images, test_labels = module.splits["test"]
    np.testing.assert_array_equal(test_images.numpy(), written["test"][0])
    np.testing.assert_array_equal(test_labels.numpy(), written["test"][1])


def test_every_training_image_lands_in_exactly_one_split(tmp_path, written):
    module = make_module(tmp_path)
    module.setup()
    train, val = (module.split_indices[split].tolist() for split in ("train", "val"))
    assert len(val) == N_VAL and len(train) == N_TRAIN - N_VAL
    assert sorted(train + val) == list(range(N_TRAIN))


def test_split_is_reproducible_from_the_seed(tmp_path, written):
    def val_indices(seed):
        module = make_module(tmp_path, seed=seed)
        module.setup()
        return module.split_indices["val"].tolist()

    assert val_indices(3) == val_indices(3)
    assert val_indices(3) != val_indices(4)


def test_test_batches_are_consecutive_slices(tmp_path, written):
    module = make_module(tmp_path)
    module.setup()
    images, labels = written["test"]
    batches = list(module.test_dataloader())
    assert len(batches) == len(module.test_dataloader()) == 3  # 21 images: 8 + 8 + 5
    for number, (x, y) in enumerate(batches):
        rows = slice(number * BATCH, (number + 1) * BATCH)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        torch.testing.assert_close(x, expected_inputs(images[rows]))
        np.testing.assert_array_equal(y.numpy(), labels[rows])


def sorted_rows(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """Each (label, image) pair as bytes, sorted: compares two sets of rows in any order."""
    pairs = zip(labels, images, strict=True)
    return sorted(bytes([label]) + image.tobytes() for label, image in pairs)


def test_train_batches_cover_the_train_split_once_in_range(tmp_path, written):
    module = make_module(tmp_path)
    module.setup()
    batches = module.train_dataloader()
    x, y = concat(batches)
    assert x.shape == (N_TRAIN - N_VAL, 784) and y.dtype == torch.int64
    assert x.min() >= 0.0 and x.max() <= 1.0
    pixels = (x * 255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()
    index = module.split_indices["train"].numpy()
    assert sorted_rows(pixels, y.numpy().astype(np.uint8)) == sorted_rows(
        written["train"][0][index], written["train"][1][index]
    )
    assert not torch.equal(x, concat(batches)[0])  # reshuffled every epoch


def test_val_batches_follow_the_val_indices(tmp_path, written):
    module = make_module(tmp_path)
    module.setup()
    x, y = concat(module.val_dataloader())
    index = module.split_indices["val"].numpy()
    torch.testing.assert_close(x, expected_inputs(written["train"][0][index]))
    np.testing.assert_array_equal(y.numpy(), written["train"][1][index])


@pytest.mark.parametrize("n_val", [0, -1, N_TRAIN, N_TRAIN + 1])
def test_n_val_out_of_range_names_key_value_and_range(tmp_path, written, n_val):
    with pytest.raises(BadInputError) as caught:
        make_module(tmp_path, n_val=n_val).setup()
    message = str(caught.value)
    assert f"data.n_val={n_val}" in message and f"< {N_TRAIN}" in message
    assert "\n" not in message


def test_missing_files_say_where_and_how_and_write_nothing(tmp_path):
    with pytest.raises(BadInputError) as caught:
        make_module(tmp_path).setup()
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "data.download=true" in message and "VNNLAB_DATA_ROOT" in message
    assert list(tmp_path.iterdir()) == []


def test_reading_writes_nothing_next_to_the_data(tmp_path, written):
    before = sorted(tmp_path.rglob("*"))
    make_module(tmp_path).setup()
    assert sorted(tmp_path.rglob("*")) == before


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    # A mirror that cannot answer, so the test never touches the network.
    monkeypatch.setattr("torchvision.datasets.MNIST.mirrors", [(tmp_path / "none").as_uri() + "/"])
    with pytest.raises(BadInputError) as caught:
        make_module(tmp_path, download=True).setup()
    message = str(caught.value)
    assert message.startswith("could not download MNIST") and "\n" not in message


FILE_NAMES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def assert_names_bad_file(root, name):
    with pytest.raises(BadInputError) as caught:
        make_module(root).setup()
    message = str(caught.value)
    assert str(root / "MNIST" / "raw" / name) in message
    assert "truncated or corrupt" in message and "\n" not in message


@pytest.mark.parametrize("keep", [3, 0.5, -1], ids=["inside-header", "half", "last-byte-lost"])
@pytest.mark.parametrize("name", FILE_NAMES)
def test_truncated_file_is_named(tmp_path, written, name, keep):
    path = tmp_path / "MNIST" / "raw" / name
    data = path.read_bytes()
    cut = {3: 3, 0.5: len(data) // 2, -1: len(data) - 1}[keep]
    path.write_bytes(data[:cut])
    assert_names_bad_file(tmp_path, name)


# Zero, garbage, and the other file kind's magic (which torchvision reads as another shape).
WRONG_MAGIC = [0, 0xDEADBEEF]
BAD_MAGIC_CASES = [(name, magic) for name in FILE_NAMES for magic in WRONG_MAGIC] + [
    ("train-images-idx3-ubyte", 2049),
    ("t10k-images-idx3-ubyte", 2049),
    ("train-labels-idx1-ubyte", 2051),
    ("t10k-labels-idx1-ubyte", 2051),
]


@pytest.mark.parametrize("name, magic", BAD_MAGIC_CASES)
def test_wrong_magic_number_is_named(tmp_path, written, name, magic):
    path = tmp_path / "MNIST" / "raw" / name
    path.write_bytes(struct.pack(">I", magic) + path.read_bytes()[4:])
    assert_names_bad_file(tmp_path, name)


def test_image_and_label_counts_must_agree(tmp_path, written):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_labels(raw / "train-labels-idx1-ubyte", written["train"][1][:-1])
    with pytest.raises(BadInputError, match="disagree"):
        make_module(tmp_path).setup()


def test_images_must_be_28_by_28(tmp_path, written):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_images(raw / "t10k-images-idx3-ubyte", np.zeros((N_TEST, 14, 56), np.uint8))
    with pytest.raises(BadInputError, match="expected \\(28, 28\\)"):
        make_module(tmp_path).setup()


def test_labels_must_be_digits(tmp_path, written):
    raw = tmp_path / "MNIST" / "raw"
    labels = written["test"][1].copy()
    labels[-1] = 10
    write_idx_labels(raw / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(BadInputError, match="outside 0..9"):
        make_module(tmp_path).setup()


def test_rotated_test_images_turn_about_their_centre():
    x = torch.rand(4, 784)
    square = x.reshape(4, 1, 28, 28)
    torch.testing.assert_close(rotated(x, 0.0), x)
    quarter = torch.rot90(square, 1, (2, 3)).reshape(4, 784)  # anticlockwise, as torch turns it
    torch.testing.assert_close(rotated(x, 90.0), quarter)
    torch.testing.assert_close(rotated(x, 180.0), square.flip(2, 3).reshape(4, 784))
    assert rotated(x, 30.0).shape == (4, 784)

"""MNIST held in memory as uint8 tensors, read once by torchvision's own IDX loader.

`binarize` makes each pixel a draw x ~ Bernoulli(grey value), the benchmark of the VAE
literature (Burda et al. 2016): "dynamic" draws the training images afresh in every minibatch,
on the device that holds the batch, while validation and test images are drawn once from a
generator seeded by `seed`; "static" draws the training images once too. The images drawn once
are the data module's checkpoint state (8 pixels a byte), so a resumed or reloaded run scores,
and a static run trains on, the very images its first epoch saw, whatever torch's generator
would draw today.
"""

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import rotate

from vnnlab.data.base import DataInfo, VNNDataModule
from vnnlab.data.batches import TensorBatches
from vnnlab.errors import BadInputError, bad_value
from vnnlab.schema import NonNegativeInt, PositiveInt

IMAGE_SIDE = 28
N_CLASSES = 10
FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# What torchvision's reader raises on a bad file: asserts on the magic number, ValueError on a
# header cut short, RuntimeError when the payload does not fill the header's shape, KeyError on
# an unknown type code, OSError when the path cannot be read.
LOADER_ERRORS = (AssertionError, ValueError, RuntimeError, TypeError, KeyError, OSError)
POINT_AT_FILES = "point data.root (or the env var VNNLAB_DATA_ROOT) at the folder with MNIST/raw/"

Binarize = Literal["none", "dynamic", "static"]
BINARIZED_ONCE = {"none": (), "dynamic": ("val", "test"), "static": ("train", "val", "test")}
SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}  # one generator per split: seed·3 + this
BITS_PER_BYTE = 8


def raw_folder(root: str | Path) -> Path:
    """Where torchvision keeps the uncompressed IDX files: <root>/MNIST/raw."""
    return Path(root).expanduser().absolute() / "MNIST" / "raw"


def to_model_inputs(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """(B, 28, 28) uint8, (B,) int64 → (B, 784) float32 in [0, 1], (B,) int64."""
    images, labels = batch
    return images.flatten(start_dim=1).to(torch.float32).div_(255), labels


def binarized_inputs(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Model inputs with every pixel drawn x ~ Bernoulli(grey value), a fresh draw per call,
    by the generator of the device the batch is on: (B, 28, 28) uint8 → (B, 784) in {0, 1}.
    As 1[u < p], u ~ Uniform[0, 1): the same law as torch.bernoulli(p), at a third of its
    cost on a CPU (measured: 0.37 against 1.2 ms per batch of 128 images)."""
    p, labels = to_model_inputs(batch)
    return (torch.rand_like(p) < p).to(p.dtype), labels


def rotated(x: Tensor, degrees: float) -> Tensor:
    """Model inputs (N, 784) with each image turned by `degrees` anticlockwise about its centre
    (bilinear, the corners filled with 0): the rotated test sets of Ovadia et al. 2019, made
    from the files at hand. 90° is torch.rot90 exactly."""
    images = x.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
    turned = rotate(images, degrees, interpolation=InterpolationMode.BILINEAR)
    return turned.reshape(len(x), -1)


def binarize_once(images: Tensor, seed: int) -> Tensor:
    """Each pixel drawn once, x ~ Bernoulli(grey / 255), from a CPU generator seeded by `seed`:
    (N, 28, 28) uint8 grey → uint8 0 or 255 (which to_model_inputs reads as 0 or 1)."""
    probabilities = images.to(torch.float32).div_(255)
    drawn = torch.bernoulli(probabilities, generator=torch.Generator().manual_seed(seed))
    return drawn.to(torch.uint8).mul_(255)


def bit_values(device: torch.device) -> Tensor:
    """128, 64, …, 1: the value of each bit of a byte, the first pixel the highest."""
    return 2 ** torch.arange(BITS_PER_BYTE - 1, -1, -1, device=device).to(torch.uint8)


def pack_pixels(images: Tensor) -> Tensor:
    """Binary images, 8 pixels a byte: (N, 28, 28) uint8 0 or 255 → (N, 98) uint8."""
    bits = (images.flatten(start_dim=1) > 0).to(torch.uint8)
    bits = bits.unflatten(1, (-1, BITS_PER_BYTE))  # (N, 98, 8)
    return (bits * bit_values(images.device)).sum(dim=-1, dtype=torch.uint8)


def unpack_pixels(packed: Tensor) -> Tensor:
    """The inverse of pack_pixels: (N, 98) uint8 → (N, 28, 28) uint8 0 or 255."""
    bits = (packed.unsqueeze(-1) & bit_values(packed.device)) > 0  # (N, 98, 8)
    return bits.to(torch.uint8).mul_(255).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def read_split(root: str | Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    """One official split as (N, 28, 28) uint8 images and (N,) int64 labels."""
    folder = raw_folder(root)
    if not download:
        require_files(folder)
    try:
        dataset = MNIST(str(root), train=train, download=download)
    except LOADER_ERRORS as error:
        raise BadInputError(explain_failure(folder, train, error)) from error
    check_contents(folder, train, dataset.data, dataset.targets)
    return dataset.data, dataset.targets.long()


def require_files(folder: Path) -> None:
    expected = [name for names in FILES.values() for name in names]
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise BadInputError(
            f"MNIST not found: {folder} lacks {', '.join(missing)} (uncompressed IDX files); "
            f"set data.download=true when online, or {POINT_AT_FILES}"
        )


def explain_failure(folder: Path, train: bool, error: Exception) -> str:
    """One line: a failed download, or the first file torchvision's reader rejects."""
    if not all((folder / name).is_file() for name in FILES[train]):
        return f"could not download MNIST to {folder} ({describe(error)}); {POINT_AT_FILES}"
    path, reason = find_unreadable(folder, train, error)
    return (
        f"MNIST file {path} is truncated or corrupt ({describe(reason)}); replace it with the "
        "official file (delete it, then data.download=true when online)"
    )


def find_unreadable(folder: Path, train: bool, error: Exception) -> tuple[Path, Exception]:
    images, labels = (folder / name for name in FILES[train])
    for path, reader in ((images, read_image_file), (labels, read_label_file)):
        try:
            reader(str(path))
        except LOADER_ERRORS as reader_error:
            return path, reader_error
    return folder, error  # both files read on their own: blame the folder


def describe(error: Exception) -> str:
    """`Type: last line of the message`: a failed download ends with the mirror's own error."""
    if isinstance(error, AssertionError):
        return "wrong magic number"  # torchvision asserts on the header without a message
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__


def check_contents(folder: Path, train: bool, images: Tensor, labels: Tensor) -> None:
    """Shapes and label range that a well-formed header alone does not promise."""
    image_file, label_file = (folder / name for name in FILES[train])
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise BadInputError(
            f"MNIST file {image_file} holds images of {tuple(images.shape[1:])}, "
            f"expected ({IMAGE_SIDE}, {IMAGE_SIDE})"
        )
    if len(images) != len(labels):
        raise BadInputError(
            f"MNIST files disagree: {image_file} holds {len(images)} images, "
            f"{label_file} holds {len(labels)} labels"
        )
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < N_CLASSES:
        raise BadInputError(f"MNIST file {label_file} holds labels outside 0..{N_CLASSES - 1}")


class MNISTDataModule(VNNDataModule):
    """The official 60k/10k MNIST; `n_val` training images, drawn by `seed`, form validation;
    `binarize`: none (grey values in [0, 1]) | dynamic | static (the module docstring).

    Images stay uint8 in memory (47 MB); each batch is an index slice converted on its own.
    """

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        n_val: PositiveInt = 5000,
        batch_size: PositiveInt = 128,
        seed: NonNegativeInt = 0,
        binarize: Binarize = "none",
    ):
        super().__init__()
        self.root = root
        self.download = download
        self.n_val = n_val
        self.batch_size = batch_size
        self.seed = seed
        self.binarize = binarize
        self.split_indices: dict[str, Tensor] = {}
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}

    def info(self) -> DataInfo:
        # n_train counts the images actually read (60000 - n_val for the official files).
        self.setup()
        return DataInfo(
            in_features=IMAGE_SIDE**2,
            n_train=len(self.splits["train"][0]),
            target="class",
            out_features=N_CLASSES,
            image_shape=(IMAGE_SIDE, IMAGE_SIDE),
            unit_interval=True,
        )

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """A whole split as model inputs: (N, 784) float32 in [0, 1], (N,) int64."""
        self.setup()
        return to_model_inputs(self.splits[name])

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        images, labels = read_split(self.root, train=True, download=self.download)
        self.split_indices = self._split_indices(len(images))
        for split, index in self.split_indices.items():
            self.splits[split] = (images[index], labels[index])
        self.splits["test"] = read_split(self.root, train=False, download=self.download)
        for split in BINARIZED_ONCE[self.binarize]:
            images, labels = self.splits[split]
            self.splits[split] = (binarize_once(images, self._binarize_seed(split)), labels)

    def _binarize_seed(self, split: str) -> int:
        """A stream of its own for each split, so that one split's images do not depend on
        another's size (the test images stay the same for any n_val)."""
        return len(SPLIT_STREAM) * self.seed + SPLIT_STREAM[split]

    def _split_indices(self, n_images: int) -> dict[str, Tensor]:
        """Sorted indices into the training files: a seeded draw of n_val for validation."""
        if not 0 < self.n_val < n_images:
            raise BadInputError(
                f"data.n_val={self.n_val} is out of range: need 0 < data.n_val < {n_images} "
                f"(the training images in {raw_folder(self.root)})"
            )
        order = torch.randperm(n_images, generator=torch.Generator().manual_seed(self.seed))
        return {
            "train": order[self.n_val :].sort().values,
            "val": order[: self.n_val].sort().values,
        }

    def batches(self, split: str, shuffle: bool = False) -> TensorBatches:
        # uint8 rows in memory; each batch is converted on its own, on the device that holds
        # it, and dynamically binarised training images are drawn there, afresh every batch
        self.setup()
        dynamic = self.binarize == "dynamic" and split == "train"
        transform = binarized_inputs if dynamic else to_model_inputs
        return self.tensor_batches(self.splits[split], shuffle, transform=transform)

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the splits binarised once, packed (val and test: 1.5 MB;
        static training images: 5.4 MB more); nothing for grey images."""
        if self.binarize == "none":
            return {}
        self.setup()
        packed = {
            split: pack_pixels(self.splits[split][0]) for split in BINARIZED_ONCE[self.binarize]
        }
        return {"binarize": self.binarize, "packed_images": packed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The binarised images of a checkpoint replace this module's own draws."""
        saved = state_dict.get("binarize", "none")
        if saved != self.binarize:
            raise bad_value("data.binarize", self.binarize, f"{saved}, as in the checkpoint "
                            "being restored (its images were binarised that way)")  # fmt: skip
        self.setup()
        for split, packed in state_dict.get("packed_images", {}).items():
            images, labels = self.splits[split]
            if len(packed) != len(images):
                raise BadInputError(
                    f"the checkpoint holds {len(packed)} binarised {split} images, this data "
                    f"has {len(images)}: restore it with the data settings it was saved with"
                )
            self.splits[split] = (unpack_pixels(packed), labels)

"""Small, valid MNIST IDX files in torchvision's layout, for tests that must run offline."""

import struct
from pathlib import Path

import numpy as np

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
SIDE = 28


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """(N, 28, 28) uint8 → big-endian header (magic, N, rows, cols) then the raw bytes."""
    header = struct.pack(">IIII", IMAGES_MAGIC, *images.shape)
    path.write_bytes(header + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """(N,) uint8 → big-endian header (magic, N) then the raw bytes."""
    header = struct.pack(">II", LABELS_MAGIC, len(labels))
    path.write_bytes(header + labels.astype(np.uint8).tobytes())


def write_mnist(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, tuple]:
    """Write <root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, uncompressed.

    Returns {"train": (images, labels), "test": (images, labels)} as the uint8 arrays written.
    Pixels cover 0..255 (the first image is all 0, the second all 255 when there are two).
    """
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, SIDE, SIDE), dtype=np.uint8)
        images[:1], images[1:2] = 0, 255
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[split] = (images, labels)
    return written

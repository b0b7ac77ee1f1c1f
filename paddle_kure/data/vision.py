"""Fashion-MNIST as numpy arrays, with a validation split taken from the train split.

The files come from the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``, which ``make demo`` installs); with
``download=True`` Paddle's own downloader is the fallback.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass

import numpy as np

from .._validate import check_int

__all__ = ["FASHION_MNIST_CLASSES", "ImageSplits", "read_idx", "load_fashion_mnist"]

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Mean and std of the 60k training images scaled to [0, 1].
MEAN, STD = 0.2860, 0.3530
_FILES = {split: (f"{split}-images-idx3-ubyte.gz", f"{split}-labels-idx1-ubyte.gz") for split in ("train", "t10k")}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (the MNIST format, gzipped or not) into an array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, OSError, zlib.error) as err:  # a truncated or damaged .gz
        raise ValueError(f"{path}: cannot be read ({type(err).__name__}: {err or 'the file ends early'})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, the file holds {array.size} values")
    return array.reshape(shape)


@dataclass
class ImageSplits:
    """Normalized images ``[N, 1, 28, 28]`` float32 and int64 labels ``[N]`` per split."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __str__(self) -> str:
        return (f"ImageSplits(train={len(self.train_labels)}, val={len(self.val_labels)}, "
                f"test={len(self.test_labels)})")


def _normalize(images: np.ndarray) -> np.ndarray:
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]


def _read_split(data_dir: str, split: str, download: bool):
    image_file, label_file = (os.path.join(data_dir, name) for name in _FILES[split])
    if os.path.isfile(image_file) and os.path.isfile(label_file):
        images, labels = read_idx(image_file), read_idx(label_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{image_file} holds {images.shape[0] if images.ndim else 0} images of shape "
                             f"{images.shape[1:]} but {label_file} {labels.shape[0] if labels.ndim else 0} labels: "
                             f"the files do not belong together")
        return images, labels
    if not download:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: {image_file} and {label_file} are needed. Install the Debian "
            f"package (sudo apt-get install dataset-fashion-mnist, or `make demo`), point Global.data_dir "
            f"at a directory holding the four *-ubyte.gz files, or set Global.download: true to let "
            f"Paddle download them (needs internet)."
        )
    from paddle.vision.datasets import FashionMNIST

    dataset = FashionMNIST(mode="train" if split == "train" else "test", download=True, backend="cv2")
    return dataset.images.reshape(-1, 28, 28).astype(np.uint8), dataset.labels.reshape(-1)


def load_fashion_mnist(data_dir: str = DEFAULT_DIR, val_size: int = 5000, train_size: int = 0,
                       test_size: int = 0, seed: int = 0, download: bool = False) -> ImageSplits:
    """Loads Fashion-MNIST and holds ``val_size`` random train images out for validation.

    Args:
        data_dir (str): directory of ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``.
        val_size (int): validation images, drawn from the train split.
        train_size (int): training images kept of the rest (0: all).
        test_size (int): first test images kept (0: all 10k).
        seed (int): seed of the random split.
        download (bool): use Paddle's downloader when the files are not in ``data_dir``.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.data import load_fashion_mnist
            >>> splits = load_fashion_mnist(val_size=5000, train_size=10000)
            >>> print(splits, splits.train_images.shape)
            ImageSplits(train=10000, val=5000, test=10000) (10000, 1, 28, 28)
    """
    for key, value in (("val_size", val_size), ("train_size", train_size), ("test_size", test_size)):
        check_int("load_fashion_mnist", key, value, low=0)
    train_images, train_labels = _read_split(data_dir, "train", download)
    test_images, test_labels = _read_split(data_dir, "t10k", download)
    if val_size + train_size > len(train_labels):
        raise ValueError(f"load_fashion_mnist: val_size + train_size = {val_size + train_size} exceeds "
                         f"the {len(train_labels)} training images")
    order = np.random.default_rng(seed).permutation(len(train_labels))
    val_index = order[:val_size]
    train_index = order[val_size:val_size + train_size] if train_size else order[val_size:]
    test_index = slice(0, test_size or len(test_labels))
    return ImageSplits(
        train_images=_normalize(train_images[train_index]), train_labels=train_labels[train_index].astype(np.int64),
        val_images=_normalize(train_images[val_index]), val_labels=train_labels[val_index].astype(np.int64),
        test_images=_normalize(test_images[test_index]), test_labels=test_labels[test_index].astype(np.int64),
    )

"""Datasets as numpy arrays (see README.md)."""
from .vision import FASHION_MNIST_CLASSES, ImageSplits, load_fashion_mnist, read_idx

__all__ = ["FASHION_MNIST_CLASSES", "ImageSplits", "load_fashion_mnist", "read_idx"]

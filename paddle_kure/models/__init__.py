"""Models (see README.md)."""
from .cnn import SmallCNN

__all__ = ["SmallCNN"]

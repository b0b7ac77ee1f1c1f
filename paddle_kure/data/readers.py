"""Example data readers for ``paddle-kure compress`` (``Global.reader``).

A reader function is called as ``function(mode, batch_size, **Global.reader_args)``
with ``mode`` 'train' or 'eval' and returns a reader: a callable that returns an
iterable of batches, each a dict {model input name: numpy array}; eval batches
also hold ``label``. Training batches are shuffled anew on each call.

* :func:`fashion_mnist`: for the SmallCNN that ``paddle-kure run`` exports (input ``image``).
* :func:`rotten_tomatoes`: for a MiniLM sentence classifier (inputs ``input_ids``,
  ``token_type_ids``, ``attention_mask``, padded to a fixed length).

'eval' reads the held-out validation split by default (``eval_split: val``), so
that choosing the best step does not look at the test split; ``eval_split: test``
reads the test split, for final numbers.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["fashion_mnist", "rotten_tomatoes"]

MODES = ("train", "eval")


def _check(mode, batch_size, eval_split):
    if mode not in MODES:
        raise ValueError(f"reader mode must be one of {list(MODES)}, got {mode!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if eval_split not in ("val", "test"):
        raise ValueError(f"eval_split must be 'val' or 'test', got {eval_split!r}")


def _reader(arrays, labels, batch_size, shuffle, seed):
    """A reader over ``arrays`` ({name: array}, same first dimension)."""
    calls = [0]

    def reader():
        n = len(labels)
        order = np.random.default_rng([seed, calls[0]]).permutation(n) if shuffle else np.arange(n)
        calls[0] += 1
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            batch = {name: value[index] for name, value in arrays.items()}
            if not shuffle:
                batch["label"] = labels[index]
            yield batch

    return reader


def fashion_mnist(mode, batch_size, data_dir=None, train_size=0, val_size=5000, eval_split="val", eval_size=0,
                  seed=2024, input_name="image"):
    """Fashion-MNIST batches ``{input_name: [B, 1, 28, 28] float32}`` (normalized as
    :func:`paddle_kure.data.load_fashion_mnist` does).

    ``val_size`` and ``seed`` must be those of the run that trained the model (``paddle-kure
    run``'s ``Global.val_size`` and ``Global.seed``) for 'val' to be held out of its training.
    ``train_size``/``eval_size`` 0: all.
    """
    from .vision import DEFAULT_DIR, load_fashion_mnist

    _check(mode, batch_size, eval_split)
    test_size = eval_size if eval_split == "test" else 1
    splits = load_fashion_mnist(data_dir or DEFAULT_DIR, val_size=val_size, train_size=train_size,
                                test_size=test_size, seed=seed)
    if mode == "train":
        return _reader({input_name: splits.train_images}, splits.train_labels, batch_size, True, seed)
    images, labels = ((splits.val_images, splits.val_labels) if eval_split == "val"
                      else (splits.test_images, splits.test_labels))
    if eval_size:
        images, labels = images[:eval_size], labels[:eval_size]
    return _reader({input_name: images}, labels, batch_size, False, seed)


def tokenize_fixed(tokenizer, texts, max_length):
    """``tokenizer(texts)`` (a :class:`paddle_kure.models.BertTokenizer`) padded with
    zeros or truncated to exactly ``max_length`` tokens."""
    batch = tokenizer(texts)
    out = {}
    for name, value in batch.items():
        fixed = np.zeros((len(texts), max_length), dtype="int64")
        if name == "input_ids":
            fixed[:] = tokenizer.pad_id
        width = min(max_length, value.shape[1])
        fixed[:, :width] = value[:, :width]
        out[name] = fixed
    return out


def rotten_tomatoes(mode, batch_size, max_length=128, train_size=0, eval_split="val", eval_size=0, seed=0):
    """Rotten Tomatoes review snippets (split by movie,
    :func:`paddle_kure.data.text.load_rotten_tomatoes` with ``seed``) tokenized by
    all-MiniLM-L6-v2's tokenizer to ``max_length`` tokens. ``train_size``/``eval_size``
    0: all of the split."""
    from ..models.minilm import BertTokenizer, minilm_dir
    from .text import load_rotten_tomatoes

    _check(mode, batch_size, eval_split)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    splits = load_rotten_tomatoes(seed=seed)
    texts, labels = splits["train" if mode == "train" else eval_split]
    size = train_size if mode == "train" else eval_size
    if size:
        texts, labels = texts[:size], labels[:size]
    tokenizer = BertTokenizer(os.path.join(minilm_dir(), "tokenizer.json"), max_length=max_length)
    return _reader(tokenize_fixed(tokenizer, texts, max_length), labels, batch_size, mode == "train", seed)

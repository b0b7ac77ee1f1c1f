"""A BERT encoder in Paddle, with the parameter names of the Hugging Face checkpoints
(:mod:`paddle_kure.models.minilm` loads the pretrained all-MiniLM-L6-v2 into it).

Parameter names are the Hugging Face checkpoint names, so a state dict key is the
safetensors key (only the orientation of linear weights differs: the checkpoint
stores ``[out, in]``, :class:`paddle.nn.Linear` ``[in, out]``). Per block ``N``:

=============================================  =====================================
``encoder.layer.N.attention.self.query``       Q projection (also ``key``, ``value``)
``encoder.layer.N.attention.output.dense``     attention output projection
``encoder.layer.N.attention.output.LayerNorm`` post-attention LayerNorm
``encoder.layer.N.intermediate.dense``         FFN first FC, hidden -> intermediate
``encoder.layer.N.output.dense``               FFN second FC, intermediate -> hidden
``encoder.layer.N.output.LayerNorm``           post-FFN LayerNorm
=============================================  =====================================

and ``embeddings.{word,position,token_type}_embeddings`` and ``embeddings.LayerNorm``.
A name pattern such as ``encoder.layer.*.output.dense.weight`` picks each block's
FFN second FC (``*attention.output.dense*`` the attention output projections).
The checkpoint's ``pooler.*`` is not loaded: sentence embeddings are mean-pooled.

"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from .._validate import ConfigBase, check_dropout, check_int, check_number, check_positive_ints
from .attention import self_attention

__all__ = [
    "BertClassifier",
    "BertConfig",
    "BertModel",
    "mean_pool",
]

# Checkpoint entries that BertModel does not use.
UNUSED_KEYS_PREFIXES = ("pooler.", "embeddings.position_ids")


@dataclasses.dataclass
class BertConfig(ConfigBase):
    """Sizes of :class:`BertModel`, with the Hugging Face ``config.json`` key names.

    The defaults are all-MiniLM-L6-v2's. :meth:`from_json` reads a ``config.json``,
    ignoring keys that do not change the architecture.
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    def validate(self):
        check_positive_ints(self, ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                   "intermediate_size", "max_position_embeddings", "type_vocab_size"))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        check_dropout(self, ("hidden_dropout_prob", "attention_probs_dropout_prob"))
        self._number("layer_norm_eps", low=0.0, low_open=True)
        if self.hidden_act != "gelu":
            raise ValueError(f"BertConfig.hidden_act: only 'gelu' (exact, erf) is supported, got {self.hidden_act!r}")

    @classmethod
    def from_json(cls, path):
        """Reads a Hugging Face BERT ``config.json``."""
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
        if values.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are supported, "
                             f"got {values['position_embedding_type']!r}")
        fields = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in fields})


class BertEmbeddings(nn.Layer):
    """Word + position + token type embeddings, LayerNorm, dropout."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        positions = paddle.arange(input_ids.shape[1], dtype="int64").unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        return self.dropout(self.LayerNorm(x + self.token_type_embeddings(token_type_ids)))


class BertSelfAttention(nn.Layer):
    """Multi-head scaled dot-product attention with ``query``, ``key``, ``value`` linears."""

    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, x, key_bias):
        """``key_bias`` [batch, 1, 1, length]: 0 for tokens, a large negative number for padding."""
        return self_attention(x, self.query, self.key, self.value, self.num_heads, key_bias, self.dropout)


class BertResidualOutput(nn.Layer):
    """``LayerNorm(residual + dropout(dense(x)))``: BERT's ``attention.output`` and ``output``."""

    def __init__(self, in_features, config):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class BertAttention(nn.Layer):
    """Self-attention (sublayer ``self``, as in the checkpoint) and its residual output."""

    def __init__(self, config):
        super().__init__()
        # "self" is the checkpoint's name for this sublayer; add_sublayer keeps it off the
        # attribute namespace, where it would read as the method's own ``self``.
        self.add_sublayer("self", BertSelfAttention(config))
        self.output = BertResidualOutput(config.hidden_size, config)

    def forward(self, x, key_bias):
        return self.output(self._sub_layers["self"](x, key_bias), x)


class BertIntermediate(nn.Layer):
    """The FFN's first FC and its GELU."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))


class BertLayer(nn.Layer):
    """One post-LN encoder block: attention, then FFN (``intermediate``, ``output``)."""

    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config.intermediate_size, config)

    def forward(self, x, key_bias):
        x = self.attention(x, key_bias)
        return self.output(self.intermediate(x), x)


class BertEncoder(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.LayerList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x, key_bias):
        for block in self.layer:
            x = block(x, key_bias)
        return x


def mean_pool(hidden, attention_mask):
    """Mean of ``hidden`` [batch, length, dim] over the positions where ``attention_mask``
    [batch, length] is 1: the sentence-transformers pooling."""
    weights = attention_mask.astype(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(axis=1) / paddle.clip(weights.sum(axis=1), min=1e-9)


class BertModel(nn.Layer):
    """BERT encoder (post-LN, as the original) returning the last hidden states.

    Args:
        config (BertConfig, optional): sizes; all-MiniLM-L6-v2's by default. Weights
            are randomly initialized: :func:`load_minilm` loads the pretrained ones.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.models import BertConfig, BertModel
            >>> model = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
            ...                              num_attention_heads=4, intermediate_size=64))
            >>> ids = paddle.to_tensor([[1, 7, 8, 2], [1, 9, 2, 0]])
            >>> mask = paddle.to_tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
            >>> print(list(model(ids, attention_mask=mask).shape))
            [2, 4, 32]
            >>> print(list(model.sentence_embedding(ids, attention_mask=mask).shape))
            [2, 32]
    """

    def __init__(self, config=None):
        super().__init__()
        config = BertConfig() if config is None else config
        if not isinstance(config, BertConfig):
            raise TypeError(f"BertModel: config must be a BertConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        """Args: int64 tensors [batch, length]; ``token_type_ids`` default all 0,
        ``attention_mask`` (1 token, 0 padding) default all 1. Returns [batch, length, hidden]."""
        length = input_ids.shape[1]
        if length > self.config.max_position_embeddings:
            raise ValueError(f"BertModel: sequence length {length} exceeds max_position_embeddings "
                             f"{self.config.max_position_embeddings}")
        if token_type_ids is None:
            token_type_ids = paddle.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = paddle.ones_like(input_ids)
        key_bias = ((1.0 - attention_mask.astype("float32")) * -1e9).unsqueeze([1, 2])
        return self.encoder(self.embeddings(input_ids, token_type_ids), key_bias)

    def sentence_embedding(self, input_ids, token_type_ids=None, attention_mask=None, normalize=True):
        """Mean-pooled hidden states over the real tokens, L2-normalized by default
        (the all-MiniLM-L6-v2 sentence embedding). Differentiable. Returns [batch, hidden]."""
        if attention_mask is None:
            attention_mask = paddle.ones_like(input_ids)
        pooled = mean_pool(self(input_ids, token_type_ids, attention_mask), attention_mask)
        return F.normalize(pooled, axis=-1) if normalize else pooled

    def linear_weight_names(self):
        """Names of the parameters stored ``[in, out]`` here and ``[out, in]`` in checkpoints."""
        return [f"{name}.weight" for name, layer in self.named_sublayers() if isinstance(layer, nn.Linear)]

    def load_checkpoint_arrays(self, arrays, source="checkpoint"):
        """Sets every parameter from a Hugging Face BERT state dict of numpy arrays
        (e.g. ``safetensors.numpy.load_file(path)``), transposing linear weights.

        Raises:
            ValueError: naming the missing, unexpected or mis-shaped entries of ``source``.
        """
        transposed = set(self.linear_weight_names())
        params = dict(self.named_parameters())
        missing = sorted(set(params) - set(arrays))
        unexpected = sorted(key for key in set(arrays) - set(params) if not key.startswith(UNUSED_KEYS_PREFIXES))
        if missing or unexpected:
            raise ValueError(f"BertModel: {source} does not match the model: missing {missing}, "
                             f"unexpected {unexpected}")
        for name, param in params.items():
            value = arrays[name].T if name in transposed else arrays[name]
            if list(value.shape) != list(param.shape):
                raise ValueError(f"BertModel: {source} has {name} of shape {list(value.shape)}"
                                 f"{' (transposed)' if name in transposed else ''}, the model {list(param.shape)}")
            param.set_value(paddle.to_tensor(np.ascontiguousarray(value)).astype(param.dtype))
        return self


class BertClassifier(nn.Layer):
    """A BERT encoder, mean pooling, dropout and a ``Linear`` head: for fine-tuning.

    Parameter names are the encoder's under ``bert.`` (``bert.encoder.layer.0.output.dense.weight``)
    and ``classifier.weight`` / ``classifier.bias``.

    Args:
        bert (BertModel): the encoder, e.g. from :func:`load_minilm`.
        num_classes (int): outputs.
        dropout (float, optional): dropout before the head. Default 0.1.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.models import BertClassifier, load_minilm
            >>> bert, tokenizer = load_minilm()
            >>> model = BertClassifier(bert, num_classes=2)
            >>> batch = {k: paddle.to_tensor(v) for k, v in tokenizer(["Great!", "Awful."]).items()}
            >>> print(list(model(**batch).shape))
            [2, 2]
    """

    def __init__(self, bert, num_classes, dropout=0.1):
        super().__init__()
        if not isinstance(bert, BertModel):
            raise TypeError(f"BertClassifier: bert must be a BertModel, got {type(bert).__name__}")
        check_int("BertClassifier", "num_classes", num_classes, low=1)
        check_number("BertClassifier", "dropout", dropout, low=0.0, high=1.0, high_open=True)
        self.bert = bert
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bert.config.hidden_size, num_classes)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        pooled = self.bert.sentence_embedding(input_ids, token_type_ids, attention_mask, normalize=False)
        return self.classifier(self.dropout(pooled))

"""A small pre-LN transformer encoder for text classification.

Tokens -> embedding + learned positions -> ``num_layers`` pre-LN encoder blocks
(``x + Attn(LN(x))``, ``x + FFN(LN(x))``) -> final LN -> masked mean pooling ->
classifier ``Linear -> ReLU -> Linear``. Attention uses separate ``q_proj``,
``k_proj``, ``v_proj`` and ``out_proj`` linears so that quantization patterns can
pick them one by one (see :meth:`TransformerClassifier.linear_groups`).

Example:
    .. code-block:: python

        import paddle
        from paddle_kure.models.transformer import TransformerClassifier, TransformerConfig

        model = TransformerClassifier(TransformerConfig(vocab_size=100, num_classes=2))
        logits = model(paddle.to_tensor([[5, 6, 7, 0], [8, 9, 0, 0]]))  # 0 = padding
        print(logits.shape)  # [2, 2]
"""
from __future__ import annotations

import dataclasses

import paddle
import paddle.nn.functional as F
from paddle import nn

from paddle_kure.nn.quantizers import QuantLinear

from .._validate import ConfigBase, check_dropout, check_positive_ints
from .attention import self_attention

__all__ = ["TransformerClassifier", "TransformerConfig", "model_size_bits"]


@dataclasses.dataclass
class TransformerConfig(ConfigBase):
    """Sizes of :class:`TransformerClassifier`; the defaults train in minutes on 2 CPU cores."""

    vocab_size: int
    num_classes: int
    d_model: int = 64
    num_heads: int = 4
    d_ff: int = 128
    num_layers: int = 2
    max_len: int = 64
    classifier_hidden: int = 64
    dropout: float = 0.1
    pad_id: int = 0

    def validate(self):
        check_positive_ints(self, ("vocab_size", "num_classes", "d_model", "num_heads", "d_ff", "num_layers",
                                   "max_len", "classifier_hidden"))
        if self.d_model % self.num_heads:
            raise ValueError(f"TransformerConfig.d_model ({self.d_model}) must be divisible by "
                             f"num_heads ({self.num_heads})")
        check_dropout(self, ("dropout",))


class MultiHeadSelfAttention(nn.Layer):
    def __init__(self, d_model, num_heads, dropout):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, key_bias):
        """``key_bias`` [batch, 1, 1, length] is 0 for real tokens and -1e9 for padding."""
        context = self_attention(x, self.q_proj, self.k_proj, self.v_proj, self.num_heads, key_bias, self.dropout)
        return self.out_proj(context)


class EncoderBlock(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model)
        self.attn = MultiHeadSelfAttention(config.d_model, config.num_heads, config.dropout)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.linear1 = nn.Linear(config.d_model, config.d_ff)
        self.linear2 = nn.Linear(config.d_ff, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, key_bias):
        x = x + self.dropout(self.attn(self.attn_norm(x), key_bias))
        hidden = self.dropout(F.gelu(self.linear1(self.ffn_norm(x))))
        return x + self.dropout(self.linear2(hidden))


class TransformerClassifier(nn.Layer):
    """Pre-LN transformer text classifier over padded token ids [batch, length] (int64)."""

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"config must be a TransformerConfig, got {type(config).__name__}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        self.position = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.LayerList([EncoderBlock(config) for _ in range(config.num_layers)])
        self.final_norm = nn.LayerNorm(config.d_model)
        self.classifier = nn.Linear(config.d_model, config.classifier_hidden)
        self.final = nn.Linear(config.classifier_hidden, config.num_classes)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, token_ids):
        length = token_ids.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.config.max_len}")
        is_token = (token_ids != self.config.pad_id).astype("float32")  # [batch, length]
        key_bias = ((1.0 - is_token) * -1e9).unsqueeze([1, 2])
        x = self.embedding(token_ids) + self.position(paddle.arange(length).unsqueeze(0))
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, key_bias)
        x = self.final_norm(x)
        weights = is_token.unsqueeze(-1)
        pooled = (x * weights).sum(axis=1) / paddle.clip(weights.sum(axis=1), min=1.0)
        return self.final(self.dropout(F.relu(self.classifier(pooled))))

    def linear_groups(self):
        """Sublayer paths of the linears, by the group names used in ``quantizers.PATTERNS``."""
        blocks = [f"blocks.{i}" for i in range(self.config.num_layers)]
        return {
            "q": [f"{b}.attn.q_proj" for b in blocks],
            "k": [f"{b}.attn.k_proj" for b in blocks],
            "v": [f"{b}.attn.v_proj" for b in blocks],
            "out": [f"{b}.attn.out_proj" for b in blocks],
            "ffn": [f"{b}.{name}" for b in blocks for name in ("linear1", "linear2")],
            "classifier": ["classifier"],
            "final": ["final"],
        }


EMBEDDING_PREFIXES = ("embedding.", "position.")


def model_size_bits(model, include_embedding=True):
    """Bits to store ``model``: every stored value, quantizer scales and ranges included.

    A quantized linear counts what its quantizers store (see ``QuantLinear.storage_bits``);
    every other parameter is float32. ``include_embedding=False`` leaves out the token and
    position embeddings.
    """
    total = 0
    quantized_params = set()
    for layer in model.sublayers():
        if isinstance(layer, QuantLinear) and layer.enabled:
            total += layer.storage_bits()
            quantized_params.update(id(p) for p in layer.parameters())
    for name, param in model.named_parameters():
        if id(param) in quantized_params:
            continue
        if not include_embedding and name.startswith(EMBEDDING_PREFIXES):
            continue
        total += param.size * 32
    return total

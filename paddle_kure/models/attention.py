"""Multi-head scaled dot-product self-attention, shared by the BERT encoder and the
small transformer classifier (each keeps its own projection layers and names)."""
from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F

__all__ = ["self_attention"]


def self_attention(x, query, key, value, num_heads, key_bias, dropout):
    """``softmax(Q K^T / sqrt(d) + key_bias) V`` over ``num_heads`` heads, heads merged back.

    Args:
        x (Tensor): [batch, length, hidden] inputs.
        query, key, value (Layer): the projections, called on ``x`` (so a quantizer
            that replaced one of them is used).
        num_heads (int): heads; the projections' width must be divisible by it.
        key_bias (Tensor): [batch, 1, 1, length], 0 for tokens and a large negative
            number for padding.
        dropout (Layer): applied to the attention probabilities.

    Returns:
        Tensor: [batch, length, width of the projections], before any output projection.
    """
    def split_heads(t):
        # 0 copies the batch and length sizes, which a static graph may not know (-1);
        # the head size stays a number there, so the scaling below is one too.
        return t.reshape([0, 0, num_heads, t.shape[-1] // num_heads]).transpose([0, 2, 1, 3])

    q, k, v = (split_heads(proj(x)) for proj in (query, key, value))
    scores = paddle.matmul(q, k, transpose_y=True) / math.sqrt(q.shape[-1]) + key_bias
    context = paddle.matmul(dropout(F.softmax(scores, axis=-1)), v)
    return context.transpose([0, 2, 1, 3]).reshape([0, 0, -1])

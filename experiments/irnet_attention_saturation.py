"""Why IR-Net binarization of the attention projections stalls training: attention scores
and attention entropy of the study's transformer at initialization, FP32 against sign
binarization (mean-|w| scale) and IR-Net (Libra-PB: standardized weights, power-of-two
scale, so unit-magnitude binary weights), all linears but the final one binarized.

Usage::

    OMP_NUM_THREADS=1 python experiments/irnet_attention_saturation.py

prints one line per method (the figures quoted in docs/results/transformer_study.md).
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn.functional as F

from paddle_kure.models.transformer import TransformerClassifier, TransformerConfig
from paddle_kure.nn.quantizers import quantize_linears

LENGTH = 20


def attention_statistics(method, seed=0):
    """Score std, mean attention entropy (nats) and mean top probability of block 0."""
    paddle.seed(seed)
    config = TransformerConfig(vocab_size=500, num_classes=2, d_model=32, num_heads=2, d_ff=64, num_layers=2,
                               max_len=32, classifier_hidden=32, dropout=0.0)
    model = TransformerClassifier(config)
    model.eval()
    if method != "fp32":
        quantize_linears(model, model.linear_groups(), "all", method)
    ids = paddle.to_tensor(np.random.RandomState(seed).randint(2, config.vocab_size, (8, LENGTH)))
    block = model.blocks[0]
    attn = block.attn
    with paddle.no_grad():
        hidden = block.attn_norm(model.embedding(ids) + model.position(paddle.arange(LENGTH).unsqueeze(0)))
        # [batch, heads, length, head_dim] as in paddle_kure.models.attention.self_attention
        q, k = (proj(hidden).numpy().reshape(len(ids), LENGTH, attn.num_heads, -1).transpose(0, 2, 1, 3)
                for proj in (attn.q_proj, attn.k_proj))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(attn.head_dim)
    probs = F.softmax(paddle.to_tensor(scores), axis=-1).numpy()
    entropy = float(-(probs * np.log(probs + 1e-12)).sum(-1).mean())
    return float(scores.std()), entropy, float(probs.max(-1).mean())


def main():
    print(f"uniform attention over {LENGTH} tokens: entropy {math.log(LENGTH):.2f} nats")
    for method in ("fp32", "binary", "irnet"):
        std, entropy, top = attention_statistics(method)
        print(f"{method:6s} score std {std:6.2f}  attention entropy {entropy:.2f} nats  mean top probability {top:.2f}")


if __name__ == "__main__":
    main()

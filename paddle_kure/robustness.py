"""How forgiving is a model to its weight quantization step?

Post-training weight quantization of a trained dygraph model with a chosen
scale per tensor (or per output channel), deliberately perturbed: multiplied by
a fixed ratio, or by random N(1, std) noise. The KURE paper claims that a
KURE-trained model keeps its accuracy when the step is off; seed 000 asked
whether the abs-max scale is a good choice at all. :func:`sweep` answers both
for any model and evaluation function.

Quantization here is symmetric and uniform: with ``qmax = 2**(bits-1) - 1`` and
a clipping threshold ``s`` (the "scale", PaddleSlim's abs-max convention),
``w_q = clip(round(w / s * qmax), -qmax, qmax) * s / qmax``.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import paddle

__all__ = [
    "SCALE_METHODS",
    "SweepConfig",
    "quantize_array",
    "channel_axis",
    "abs_max_scale",
    "mse_scale",
    "quantized_weights",
    "weight_parameters",
    "sweep",
]

SCALE_METHODS = ("abs_max", "mse")


def quantize_array(w: np.ndarray, bits: int, scale, axis=None) -> np.ndarray:
    """Symmetric fake quantization of ``w`` with clipping threshold ``scale``
    (a scalar, or one value per index of ``axis``)."""
    if bits < 2:
        raise ValueError(f"bits must be >= 2 for symmetric quantization, got {bits}")
    qmax = 2 ** (bits - 1) - 1
    scale = np.asarray(scale, dtype=np.float64)
    if axis is not None:
        shape = [1] * w.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(w / safe * qmax), -qmax, qmax) * safe / qmax
    return np.where(scale > 0, q, 0.0).astype(w.dtype)


def channel_axis(layer: paddle.nn.Layer) -> int:
    """Output-channel axis of a weight: Paddle's Linear stores [in, out], Conv [out, in, ...]."""
    return 1 if isinstance(layer, paddle.nn.Linear) else 0


def _reduce_axes(w: np.ndarray, axis):
    return None if axis is None else tuple(i for i in range(w.ndim) if i != axis)


def abs_max_scale(w: np.ndarray, axis=None) -> np.ndarray:
    """max |w| over the tensor, or per index of ``axis``."""
    return np.abs(w).max(axis=_reduce_axes(w, axis))


def mse_scale(w: np.ndarray, bits: int, axis=None, grid: int = 100, low: float = 0.2) -> np.ndarray:
    """The clipping threshold of least squared quantization error, searched on
    ``grid`` fractions of abs-max in [low, 1] (per tensor, or per channel)."""
    base = abs_max_scale(w, axis)
    best_err = np.full(np.shape(base), np.inf)
    best = np.array(base, dtype=np.float64, copy=True)
    axes = _reduce_axes(w, axis)
    for fraction in np.linspace(low, 1.0, grid):
        err = ((quantize_array(w, bits, base * fraction, axis) - w) ** 2).sum(axis=axes)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, base * fraction, best)
    return best


def weight_parameters(model: paddle.nn.Layer, layer_types=(paddle.nn.Linear, paddle.nn.Conv2D)):
    """(name, layer, weight) for every weight of the given layer types."""
    return [
        (f"{name}.weight" if name else "weight", layer, layer.weight)
        for name, layer in model.named_sublayers(include_self=True)
        if isinstance(layer, tuple(layer_types))
    ]


@contextlib.contextmanager
def quantized_weights(
    model: paddle.nn.Layer,
    bits: int,
    per_channel: bool = False,
    scale_method: str = "abs_max",
    factor: float = 1.0,
    noise_std: float = 0.0,
    seed: int = 0,
    layer_types=(paddle.nn.Linear, paddle.nn.Conv2D),
):
    """Within the block, every chosen weight holds its quantized value, with its
    scale(s) multiplied by ``factor`` and by independent N(1, noise_std) draws;
    the original weights come back on exit, also after an error."""
    if scale_method not in SCALE_METHODS:
        raise ValueError(f"scale_method must be one of {SCALE_METHODS}, got {scale_method!r}")
    rng = np.random.default_rng(seed)
    originals = []
    try:
        for _name, layer, weight in weight_parameters(model, layer_types):
            w = weight.numpy()
            originals.append((weight, w))
            axis = channel_axis(layer) if per_channel else None
            scale = abs_max_scale(w, axis) if scale_method == "abs_max" else mse_scale(w, bits, axis)
            scale = scale * factor
            if noise_std:
                scale = scale * rng.normal(1.0, noise_std, size=np.shape(scale))
            weight.set_value(quantize_array(w, bits, scale, axis))
        yield model
    finally:
        for weight, w in originals:
            weight.set_value(w)


@dataclass
class SweepConfig:
    """What :func:`sweep` varies. Validates itself."""

    bits: Sequence[int] = (8, 4, 3)
    per_channel: Sequence[bool] = (False, True)
    factors: Sequence[float] = tuple(np.round(np.linspace(0.7, 1.3, 13), 3))
    noise_stds: Sequence[float] = (0.01, 0.05, 0.1)
    seeds: int = 3
    scale_methods: Sequence[str] = SCALE_METHODS

    def __post_init__(self):
        if not self.bits or any(not isinstance(b, int) or b < 2 or b > 16 for b in self.bits):
            raise ValueError(f"bits must be integers in [2, 16], got {list(self.bits)}")
        if any(not (f > 0 and math.isfinite(f)) for f in self.factors):
            raise ValueError(f"factors must be positive, got {list(self.factors)}")
        if any(not (s >= 0 and math.isfinite(s)) for s in self.noise_stds):
            raise ValueError(f"noise_stds must be >= 0, got {list(self.noise_stds)}")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {self.seeds!r}")
        unknown = [m for m in self.scale_methods if m not in SCALE_METHODS]
        if unknown:
            raise ValueError(f"scale_methods {unknown} unknown; allowed: {SCALE_METHODS}")


@dataclass
class SweepRecord:
    bits: int
    per_channel: bool
    scale_method: str
    perturbation: str  # "ratio" or "noise"
    value: float  # the ratio, or the noise std
    seed: int
    accuracy: float


def sweep(
    model: paddle.nn.Layer,
    evaluate: Callable[[paddle.nn.Layer], float],
    config: SweepConfig = SweepConfig(),
    progress: Callable[[Iterable], Iterable] = lambda it: it,
) -> list[SweepRecord]:
    """Accuracy of ``model`` (via ``evaluate(model) -> float``) with its weights
    quantized under each setting of ``config``: the fixed ratios (one run each,
    deterministic) for every scale method, and N(1, std) noise on the abs-max
    scale over ``config.seeds`` seeds."""
    model.eval()
    plan = []
    for bits in config.bits:
        for per_channel in config.per_channel:
            for method in config.scale_methods:
                plan += [(bits, per_channel, method, "ratio", f, 0) for f in config.factors]
            plan += [
                (bits, per_channel, "abs_max", "noise", std, seed)
                for std in config.noise_stds
                for seed in range(config.seeds)
            ]
    records = []
    for bits, per_channel, method, kind, value, seed in progress(plan):
        kwargs = {"factor": value} if kind == "ratio" else {"noise_std": value, "seed": seed}
        with quantized_weights(model, bits, per_channel, method, **kwargs):
            accuracy = float(evaluate(model))
        records.append(SweepRecord(bits, per_channel, method, kind, float(value), seed, accuracy))
    return records

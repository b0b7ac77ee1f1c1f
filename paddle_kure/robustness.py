"""How forgiving is a model to its weight quantization step?

Post-training weight quantization of a trained dygraph model with a chosen
scale per tensor (or per output channel), deliberately perturbed: multiplied by
a fixed ratio, or by random N(1, std) noise. The KURE paper claims that a
KURE-trained model keeps its accuracy when the step is off; Paddle issue #28522 asked
whether the abs-max scale is a good choice at all. :func:`sweep` answers both
for any model and evaluation function, and :func:`weight_scales` chooses scales
by abs-max, by least squared error (``'mse'``) or by best accuracy on a
calibration set (``'accuracy'``).

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

from ._validate import ConfigBase, check_bool, check_choice, check_int, check_number

__all__ = [
    "SCALE_METHODS",
    "SweepConfig",
    "quantize_array",
    "channel_axis",
    "abs_max_scale",
    "mse_scale",
    "weight_scales",
    "quantized_weights",
    "weight_parameters",
    "scale_ratio",
    "sweep",
]

SCALE_METHODS = ("abs_max", "mse", "accuracy")
# fractions of abs-max that the 'accuracy' method tries for each tensor
ACCURACY_FRACTIONS = tuple(np.round(np.linspace(0.5, 1.0, 11), 3))


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


def _check_method(scale_method):
    if scale_method not in SCALE_METHODS:
        raise ValueError(f"scale_method must be one of {SCALE_METHODS}, got {scale_method!r}")


def _check_fractions(owner, name, fractions):
    if not len(fractions):
        raise ValueError(f"{owner}.{name} must not be empty")
    for f in fractions:
        check_number(owner, name, f, low=0.0, high=1.5, low_open=True)


def weight_scales(
    model: paddle.nn.Layer,
    bits: int,
    per_channel: bool = False,
    scale_method: str = "abs_max",
    calibrate: Callable[[paddle.nn.Layer], float] | None = None,
    fractions: Sequence[float] = ACCURACY_FRACTIONS,
    layer_types=(paddle.nn.Linear, paddle.nn.Conv2D),
) -> dict:
    """The unperturbed clipping threshold(s) of every chosen weight, by weight name
    (as :func:`weight_parameters` names them): a scalar per tensor, or an array per
    output channel.

    Args:
        scale_method (str): 'abs_max'; 'mse' (:func:`mse_scale`); or 'accuracy':
            a greedy search, one tensor at a time in layer order, of the fraction of
            its abs-max scale (one fraction per tensor, also per channel) from
            ``fractions`` that maximizes ``calibrate(model)`` while every weight is
            quantized (the tensors already visited at their chosen fraction, the
            others at abs-max). Ties keep the larger fraction.
        calibrate (callable): ``calibrate(model) -> accuracy`` on a calibration
            split (never the test data); needed by 'accuracy' only.
        fractions (sequence of float): the fractions 'accuracy' tries, in (0, 1.5].

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.robustness import weight_scales
            >>> model = paddle.nn.Sequential(paddle.nn.Linear(8, 4))
            >>> scales = weight_scales(model, bits=4, per_channel=True, scale_method="mse")
            >>> print(list(scales), scales["0.weight"].shape)
            ['0.weight'] (4,)
    """
    _check_method(scale_method)
    weights = weight_parameters(model, layer_types)
    axes = {name: channel_axis(layer) if per_channel else None for name, layer, _ in weights}
    if scale_method == "mse":
        return {name: mse_scale(w.numpy(), bits, axes[name]) for name, _, w in weights}
    scales = {name: abs_max_scale(w.numpy(), axes[name]) for name, _, w in weights}
    if scale_method == "abs_max":
        return scales
    if calibrate is None:
        raise ValueError("scale_method 'accuracy' needs calibrate=fn(model) -> accuracy on a calibration split")
    _check_fractions("weight_scales", "fractions", fractions)
    fractions = sorted({float(f) for f in fractions}, reverse=True)
    chosen = dict(scales)
    for name, _, _ in weights:
        best_accuracy = -math.inf
        for fraction in fractions:
            trial = dict(chosen, **{name: scales[name] * fraction})
            with quantized_weights(model, bits, per_channel, scales=trial, layer_types=layer_types):
                accuracy = float(calibrate(model))
            if accuracy > best_accuracy:
                best_accuracy, chosen[name] = accuracy, trial[name]
    return chosen


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
    scales: dict | None = None,
):
    """Within the block, every chosen weight holds its quantized value, with its
    scale(s) multiplied by ``factor`` and by independent N(1, noise_std) draws;
    the original weights come back on exit, also after an error.

    The scales are ``scales`` (by weight name, as :func:`weight_scales` returns
    them for the same ``per_channel``) when given, else :func:`weight_scales` with
    ``scale_method`` ('abs_max' or 'mse'; 'accuracy' needs precomputed ``scales``).
    """
    _check_method(scale_method)
    weights = weight_parameters(model, layer_types)
    if scales is None:
        scales = weight_scales(model, bits, per_channel, scale_method, layer_types=layer_types)
    missing = [name for name, _, _ in weights if name not in scales]
    if missing:
        raise ValueError(f"scales has no entry for the weights {missing}")
    rng = np.random.default_rng(seed)
    originals = []
    try:
        for name, layer, weight in weights:
            w = weight.numpy()
            originals.append((weight, w))
            scale = np.asarray(scales[name]) * factor
            if noise_std:
                scale = scale * rng.normal(1.0, noise_std, size=np.shape(scale))
            weight.set_value(quantize_array(w, bits, scale, channel_axis(layer) if per_channel else None))
        yield model
    finally:
        for weight, w in originals:
            weight.set_value(w)


def scale_ratio(model: paddle.nn.Layer, scales: dict, per_channel: bool = False,
                layer_types=(paddle.nn.Linear, paddle.nn.Conv2D)) -> float:
    """Median, over all tensors (or all channels of all tensors), of ``scales``
    divided by the abs-max scale: where a scale choice falls on the ratio axis."""
    ratios = []
    for name, layer, weight in weight_parameters(model, layer_types):
        base = abs_max_scale(weight.numpy(), channel_axis(layer) if per_channel else None)
        ratios.append(np.ravel(np.asarray(scales[name]) / np.where(base > 0, base, 1.0)))
    return float(np.median(np.concatenate(ratios)))


@dataclass
class SweepConfig(ConfigBase):
    """What :func:`sweep` varies. Validates itself.

    Attributes:
        bits: weight bit widths, each in [2, 16].
        per_channel: granularities: False per tensor, True per output channel.
        factors: fixed ratios multiplying every scale (> 0).
        noise_stds: std of the N(1, std) factors drawn per scale (>= 0).
        seeds: noise draws per std.
        scale_methods: unperturbed scales swept with ``factors``, from
            :data:`SCALE_METHODS` ('accuracy' needs :func:`sweep`'s ``calibrate``).
            Noise always perturbs the abs-max scale (the setting of Paddle issue #28522).
        accuracy_fractions: the fractions of abs-max that the 'accuracy' method
            tries per tensor (see :func:`weight_scales`).
    """

    bits: Sequence[int] = (8, 4, 3)
    per_channel: Sequence[bool] = (False, True)
    factors: Sequence[float] = tuple(np.round(np.linspace(0.7, 1.3, 13), 3))
    noise_stds: Sequence[float] = (0.01, 0.05, 0.1)
    seeds: int = 3
    scale_methods: Sequence[str] = ("abs_max", "mse")
    accuracy_fractions: Sequence[float] = ACCURACY_FRACTIONS

    def validate(self):
        owner = self.owner()
        for key in ("bits", "per_channel", "scale_methods"):
            if not len(getattr(self, key)):
                raise ValueError(f"{owner}.{key} must not be empty")
        self.bits = [check_int(owner, "bits", b, low=2, high=16) for b in self.bits]
        self.per_channel = [check_bool(owner, "per_channel", p) for p in self.per_channel]
        self.factors = [check_number(owner, "factors", f, low=0.0, low_open=True) for f in self.factors]
        self.noise_stds = [check_number(owner, "noise_stds", s, low=0.0) for s in self.noise_stds]
        self._int("seeds", low=1)
        for method in self.scale_methods:
            check_choice(owner, "scale_methods", method, SCALE_METHODS)
        _check_fractions(owner, "accuracy_fractions", self.accuracy_fractions)


@dataclass
class SweepRecord:
    """One evaluated setting of :func:`sweep`."""

    bits: int
    per_channel: bool
    scale_method: str
    perturbation: str  # "ratio" or "noise"
    value: float  # the ratio, or the noise std
    seed: int
    accuracy: float
    scale_ratio: float  # :func:`scale_ratio` of the unperturbed scale_method scales


def sweep(
    model: paddle.nn.Layer,
    evaluate: Callable[[paddle.nn.Layer], float],
    config: SweepConfig = SweepConfig(),
    progress: Callable[[Iterable], Iterable] = lambda it: it,
    calibrate: Callable[[paddle.nn.Layer], float] | None = None,
) -> list[SweepRecord]:
    """Accuracy of ``model`` (via ``evaluate(model) -> float``) with its weights
    quantized under each setting of ``config``: the fixed ratios (one run each,
    deterministic) for every scale method, and N(1, std) noise on the abs-max
    scale over ``config.seeds`` seeds. ``calibrate(model) -> float`` (on data
    other than ``evaluate``'s) drives the 'accuracy' scale method."""
    if "accuracy" in config.scale_methods and calibrate is None:
        raise ValueError("sweep: scale_methods includes 'accuracy', which needs calibrate=fn(model) -> accuracy")
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
    scales, records = {}, []
    for bits, per_channel, method, kind, value, seed in progress(plan):
        key = (bits, per_channel, method)
        if key not in scales:
            chosen = weight_scales(model, bits, per_channel, method, calibrate, config.accuracy_fractions)
            scales[key] = chosen, scale_ratio(model, chosen, per_channel)
        kwargs = {"factor": value} if kind == "ratio" else {"noise_std": value, "seed": seed}
        with quantized_weights(model, bits, per_channel, scales=scales[key][0], **kwargs):
            accuracy = float(evaluate(model))
        records.append(SweepRecord(bits, per_channel, method, kind, float(value), seed, accuracy, scales[key][1]))
    return records

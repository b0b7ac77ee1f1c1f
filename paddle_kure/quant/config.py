"""Validated configurations of the quantization entry points.

``QuantAwareConfig`` uses PaddleSlim's key names, so a ``QuantAware`` section of
a PaddleSlim auto-compression YAML file reads into it unchanged (for the keys
it has).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence, Tuple, Union

from .._validate import check_keys

__all__ = ["QuantAwareConfig", "PACTConfig", "KureConfig"]

WEIGHT_QUANTIZE_TYPES = ("abs_max", "channel_wise_abs_max")
ACTIVATION_QUANTIZE_TYPES = ("moving_average_abs_max", "range_abs_max", "abs_max")
# Paddle's dygraph QAT (ImperativeQuantAware) implements only this one.
DYGRAPH_ACTIVATION_QUANTIZE_TYPES = ("moving_average_abs_max",)
QUANTIZE_OP_TYPES = ("conv2d", "depthwise_conv2d", "mul", "matmul", "matmul_v2")
SUPPORTED_BITS = (4, 8)
# quantize_op_types -> the dygraph layer types that emit those ops
DYGRAPH_LAYER_TYPES = {
    "conv2d": "Conv2D",
    "depthwise_conv2d": "Conv2D",
    "mul": "Linear",
    "matmul": "Linear",
    "matmul_v2": "Linear",
}


def _check_choice(owner, key, value, allowed):
    if value not in allowed:
        raise ValueError(f"{owner}.{key} must be one of {list(allowed)}, got {value!r}")


def _check_number(owner, key, value, minimum, inclusive):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{owner}.{key} must be a finite number, got {value!r}")
    if value < minimum or (value == minimum and not inclusive):
        raise ValueError(f"{owner}.{key} must be {'>=' if inclusive else '>'} {minimum}, got {value}")


class _FromDict:
    """``from_dict`` for the dataclasses here: unknown keys are errors, not ignored."""

    @classmethod
    def from_dict(cls, values: dict, source: str = ""):
        """Builds the config from a mapping; ``source`` (a file name) is named in errors."""
        where = f" (in {source})" if source else ""
        values = check_keys(cls, values, cls.__name__ + where)
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{err}{where}") from None

    def __post_init__(self):
        self.validate()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class QuantAwareConfig(_FromDict):
    """Quantization settings, with PaddleSlim's key names.

    Attributes:
        weight_bits: 8 or 4.
        activation_bits: 8 or 4.
        weight_quantize_type: 'abs_max' or 'channel_wise_abs_max'.
        activation_quantize_type: 'moving_average_abs_max' (the only one dygraph
            QAT has), 'range_abs_max' or 'abs_max' (static graphs).
        quantize_op_types: ops to quantize, from 'conv2d', 'depthwise_conv2d',
            'mul', 'matmul', 'matmul_v2' (in dygraph: conv ops select Conv2D
            layers, the others Linear layers).
        use_pact: put a PACT clip before each quantized layer's input.
        onnx_format: export quantize_linear/dequantize_linear pairs (True) or
            Paddle's older fake-quant ops (False).

    Examples:
        .. code-block:: python

            >>> from paddle_kure.quant import QuantAwareConfig
            >>> config = QuantAwareConfig(weight_bits=4, activation_bits=4, use_pact=True)
            >>> config = QuantAwareConfig.from_dict({"weight_bits": 8}, source="run.yaml")
    """

    weight_bits: int = 8
    activation_bits: int = 8
    weight_quantize_type: str = "channel_wise_abs_max"
    activation_quantize_type: str = "moving_average_abs_max"
    quantize_op_types: Tuple[str, ...] = ("conv2d", "depthwise_conv2d", "mul", "matmul", "matmul_v2")
    use_pact: bool = False
    onnx_format: bool = True

    def validate(self) -> None:
        name = "QuantAwareConfig"
        for key in ("weight_bits", "activation_bits"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}.{key} must be an int in {list(SUPPORTED_BITS)}, got {value!r}")
            _check_choice(name, key, value, SUPPORTED_BITS)
        _check_choice(name, "weight_quantize_type", self.weight_quantize_type, WEIGHT_QUANTIZE_TYPES)
        _check_choice(name, "activation_quantize_type", self.activation_quantize_type, ACTIVATION_QUANTIZE_TYPES)
        if isinstance(self.quantize_op_types, str) or not isinstance(self.quantize_op_types, (list, tuple)):
            raise TypeError(f"{name}.quantize_op_types must be a list of op types, got {self.quantize_op_types!r}")
        if not self.quantize_op_types:
            raise ValueError(f"{name}.quantize_op_types must not be empty; allowed: {list(QUANTIZE_OP_TYPES)}")
        for op_type in self.quantize_op_types:
            _check_choice(name, "quantize_op_types", op_type, QUANTIZE_OP_TYPES)
        self.quantize_op_types = tuple(self.quantize_op_types)
        for key in ("use_pact", "onnx_format"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"{name}.{key} must be true or false, got {getattr(self, key)!r}")

    def dygraph_layer_types(self) -> list:
        """PaddleSlim dygraph ``quantizable_layer_type`` for ``quantize_op_types``."""
        return sorted({DYGRAPH_LAYER_TYPES[op] for op in self.quantize_op_types})


@dataclass
class PACTConfig(_FromDict):
    """How the PACT layers inserted by :func:`prepare_qat` start and train
    (see :class:`paddle_kure.nn.PACT`).

    Attributes:
        init: a positive number, or 'abs_max' / 'percentile' (from the calibration batch).
        percentile: in (0, 100], for ``init='percentile'``.
        l2_coeff: L2 decay of alpha, >= 0.
        learning_rate: learning-rate multiplier of alpha, > 0.
    """

    init: Union[float, str] = "percentile"
    percentile: float = 99.99
    l2_coeff: float = 0.0
    learning_rate: float = 1.0

    def validate(self) -> None:
        name = "PACTConfig"
        if isinstance(self.init, str):
            _check_choice(name, "init", self.init, ("abs_max", "percentile"))
        else:
            _check_number(name, "init", self.init, 0.0, inclusive=False)
        _check_number(name, "percentile", self.percentile, 0.0, inclusive=False)
        if self.percentile > 100:
            raise ValueError(f"{name}.percentile must be in (0, 100], got {self.percentile}")
        _check_number(name, "l2_coeff", self.l2_coeff, 0.0, inclusive=True)
        _check_number(name, "learning_rate", self.learning_rate, 0.0, inclusive=False)


ParamSelection = Union[None, Sequence[str], Callable[[str, object], bool]]


@dataclass
class KureConfig(_FromDict):
    """Kurtosis regularization of chosen weights during QAT.

    Attributes:
        coeff: the KURE paper's lambda: each of the L chosen tensors gets
            ``KurtosisDecay(coeff / L)``, i.e. ``coeff * mean_l (K_l - target)^2``.
        target: target kurtosis (1.8 = uniform).
        l2_coeff: L2 decay kept on the chosen weights (a per-parameter
            regularizer replaces the optimizer's ``weight_decay``): set it to the
            optimizer's ``weight_decay``.
        params: which weights: a list of parameter names (as in
            ``model.named_parameters()`` before quantization; regular expressions
            matching whole names, see :func:`paddle_kure.plan_kure`), a predicate
            ``fn(name, param) -> bool``, or None for every weight of 2 or more dimensions.
    """

    coeff: float = 1.0
    target: float = 1.8
    l2_coeff: float = 0.0
    params: ParamSelection = None

    def validate(self) -> None:
        name = "KureConfig"
        _check_number(name, "coeff", self.coeff, 0.0, inclusive=True)
        _check_number(name, "target", self.target, 1.0, inclusive=False)
        _check_number(name, "l2_coeff", self.l2_coeff, 0.0, inclusive=True)
        params = self.params
        if params is None or callable(params):
            return
        if isinstance(params, str) or not isinstance(params, (list, tuple)) or not all(isinstance(p, str) for p in params):
            raise TypeError(f"{name}.params must be None, a list of parameter names or a predicate, got {params!r}")

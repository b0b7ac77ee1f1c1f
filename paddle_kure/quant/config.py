"""Validated configurations of the quantization entry points.

``QuantAwareConfig`` uses PaddleSlim's key names, so a ``QuantAware`` section of
a PaddleSlim auto-compression YAML file reads into it unchanged (for the keys
it has).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Tuple, Union

from .._validate import ConfigBase, check_choice, check_int

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


@dataclass
class QuantAwareConfig(ConfigBase):
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
        name = self.owner()
        for key in ("weight_bits", "activation_bits"):
            check_choice(name, key, check_int(name, key, getattr(self, key)), SUPPORTED_BITS)
        self._choice("weight_quantize_type", WEIGHT_QUANTIZE_TYPES)
        self._choice("activation_quantize_type", ACTIVATION_QUANTIZE_TYPES)
        self._str_list("quantize_op_types")
        if not self.quantize_op_types:
            raise ValueError(f"{name}.quantize_op_types must not be empty; allowed: {list(QUANTIZE_OP_TYPES)}")
        for op_type in self.quantize_op_types:
            check_choice(name, "quantize_op_types", op_type, QUANTIZE_OP_TYPES)
        self._bool("use_pact")
        self._bool("onnx_format")

    def slim_config(self, dygraph: bool = False) -> dict:
        """PaddleSlim's config dict for these settings: with ``quantize_op_types`` for
        static ``quant_aware``, or with ``quantizable_layer_type`` for dygraph ``QAT``."""
        ops = ({"quantizable_layer_type": self.dygraph_layer_types()} if dygraph
               else {"quantize_op_types": list(self.quantize_op_types)})
        return {"weight_bits": self.weight_bits, "activation_bits": self.activation_bits,
                "weight_quantize_type": self.weight_quantize_type,
                "activation_quantize_type": self.activation_quantize_type, **ops, "onnx_format": self.onnx_format}

    def dygraph_layer_types(self) -> list:
        """PaddleSlim dygraph ``quantizable_layer_type`` for ``quantize_op_types``."""
        return sorted({DYGRAPH_LAYER_TYPES[op] for op in self.quantize_op_types})


@dataclass
class PACTConfig(ConfigBase):
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
        if isinstance(self.init, str):
            self._choice("init", ("abs_max", "percentile"))
        else:
            self._number("init", low=0.0, low_open=True)
        self._number("percentile", low=0.0, high=100.0, low_open=True)
        self._number("l2_coeff", low=0.0)
        self._number("learning_rate", low=0.0, low_open=True)


ParamSelection = Union[None, Sequence[str], Callable[[str, object], bool]]


@dataclass
class KureConfig(ConfigBase):
    """Kurtosis regularization of chosen weights during QAT.

    Attributes:
        coeff: the KURE paper's lambda: each of the L chosen tensors gets
            ``KurtosisDecay(coeff / L)``, i.e. ``coeff * mean_l (K_l - target)^2``.
        target: target kurtosis (1.8 = uniform).
        l2_coeff: L2 decay kept on the chosen weights (a per-parameter
            regularizer replaces the optimizer's ``weight_decay``): set it to the
            optimizer's ``weight_decay`` (0 under AdamW, whose decoupled decay applies anyway).
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
        name = self.owner()
        self._number("coeff", low=0.0)
        self._number("target", low=1.0, low_open=True)
        self._number("l2_coeff", low=0.0)
        params = self.params
        if params is None or callable(params):
            return
        if isinstance(params, str) or not isinstance(params, (list, tuple)) or not all(isinstance(p, str) for p in params):
            raise TypeError(f"{name}.params must be None, a list of parameter names or a predicate, got {params!r}")

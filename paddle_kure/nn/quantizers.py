"""Fake quantizers and binarizers with straight-through gradients for ``Linear`` layers.

A quantizer is a small ``paddle.nn.Layer`` mapping a tensor to its quantized
(fake, still float32) value; its backward pass is a straight-through estimate
written as ``surrogate + (quantized - surrogate).detach()``, so the forward value
is the quantized one and the gradient is the surrogate's.
:class:`QuantLinear` applies a weight quantizer (and optionally an input
quantizer) to a ``Linear``, reusing its parameters, and :func:`quantize_linears`
swaps the linears of a model selected by a pattern (see :data:`PATTERNS`).

Example:
    .. code-block:: python

        import paddle
        from paddle_kure.nn.quantizers import QuantLinear, WeightFakeQuant

        layer = QuantLinear(paddle.nn.Linear(4, 3), WeightFakeQuant(bits=4))
        y = layer(paddle.randn([2, 4]))
        print(y.shape)                # [2, 3]
        print(layer.storage_bits())   # 12 weights * 4 bits + 32 (scale) + 3 * 32 (bias) = 176
"""
from __future__ import annotations

import math

import paddle
import paddle.nn.functional as F
from paddle import nn

__all__ = [
    "ActivationFakeQuant",
    "IRNetBinarizer",
    "PATTERNS",
    "QuantLinear",
    "SignBinarizer",
    "WeightFakeQuant",
    "ede_parameters",
    "make_weight_quantizer",
    "quantize_linears",
    "set_quantization_enabled",
    "update_ede",
]

SCALE_BITS = 32  # scales and ranges are stored as float32


def _straight_through(surrogate, quantized):
    """Value of ``quantized``, gradient of ``surrogate``."""
    return surrogate + (quantized - surrogate).detach()


def _check_bits(bits):
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")


def _channel_abs(weight, per_channel, reduce):
    """|weight| reduced per output channel (axis 1 of a Paddle Linear weight) or over the tensor."""
    if weight.ndim != 2 and per_channel:
        raise ValueError(f"per-channel quantization needs a 2-D [in, out] weight, got shape {weight.shape}")
    if per_channel:
        return reduce(weight.abs(), axis=0, keepdim=True)
    return reduce(weight.abs())


class WeightFakeQuant(nn.Layer):
    """Symmetric ``bits``-bit fake quantization with an abs-max scale.

    ``q(w) = s * clip(round(w / s), -L, L)`` with ``L = 2**(bits-1) - 1`` and
    ``s = max|w| / L`` (per tensor, or per output channel = column of a Paddle
    ``Linear`` weight). Backward: identity (every ``w`` lies inside the range).
    """

    def __init__(self, bits=8, per_channel=False):
        super().__init__()
        _check_bits(bits)
        self.bits = bits
        self.per_channel = per_channel
        self.levels = 2 ** (bits - 1) - 1

    def forward(self, weight):
        scale = _channel_abs(weight, self.per_channel, paddle.max).detach() / self.levels
        scale = paddle.clip(scale, min=1e-12)  # an all-zero tensor stays zero
        quantized = paddle.clip(paddle.round(weight / scale), -self.levels, self.levels) * scale
        return _straight_through(weight, quantized)

    def storage_bits(self, shape):
        """Bits to store a weight of ``shape`` [in, out]: the codes plus the float32 scales."""
        scales = shape[-1] if self.per_channel else 1
        return math.prod(shape) * self.bits + scales * SCALE_BITS

    def extra_repr(self):
        return f"bits={self.bits}, per_channel={self.per_channel}"


class ActivationFakeQuant(nn.Layer):
    """Symmetric ``bits``-bit fake quantization of activations with a moving-average range.

    In training each batch updates ``range = momentum * range + (1 - momentum) * max|x|``
    (the first batch sets it), then ``x`` is quantized with ``s = range / L``;
    evaluation uses the stored range. Backward: identity inside ``[-range, range]``,
    zero outside (values there were clipped).
    """

    def __init__(self, bits=8, momentum=0.9):
        super().__init__()
        _check_bits(bits)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.bits = bits
        self.momentum = momentum
        self.levels = 2 ** (bits - 1) - 1
        self.register_buffer("abs_max", paddle.zeros([1]))
        self.register_buffer("initialized", paddle.zeros([1]))

    def forward(self, x):
        if self.training:
            batch_max = x.detach().abs().max().reshape([1])
            if self.initialized.item() == 0.0:
                new_range = batch_max
            else:
                new_range = self.momentum * self.abs_max + (1.0 - self.momentum) * batch_max
            paddle.assign(new_range, self.abs_max)
            paddle.assign(paddle.ones([1]), self.initialized)
        elif self.initialized.item() == 0.0:
            raise RuntimeError("ActivationFakeQuant has no range yet: run it in training mode first")
        limit = paddle.clip(self.abs_max, min=1e-12)
        scale = limit / self.levels
        clipped = paddle.clip(x, -limit, limit)
        quantized = paddle.clip(paddle.round(x / scale), -self.levels, self.levels) * scale
        return _straight_through(clipped, quantized)

    def storage_bits(self, shape):
        """Stored values: the one float32 range."""
        return SCALE_BITS

    def extra_repr(self):
        return f"bits={self.bits}, momentum={self.momentum}"


def _binary_sign(x):
    """+1 for x >= 0, -1 otherwise (``paddle.sign`` maps 0 to 0, which is not binary)."""
    return paddle.where(x >= 0, paddle.ones_like(x), -paddle.ones_like(x))


class SignBinarizer(nn.Layer):
    """Binarization ``alpha * sign(w)`` with ``alpha = mean|w|`` (per tensor or per output channel).

    Backward (XNOR-Net): the sign passes the gradient where ``|w| <= 1`` and
    ``alpha`` is differentiated as the mean of ``|w|``.
    """

    def __init__(self, per_channel=False):
        super().__init__()
        self.per_channel = per_channel

    def forward(self, weight):
        alpha = _channel_abs(weight, self.per_channel, paddle.mean)
        sign = _straight_through(paddle.clip(weight, -1.0, 1.0), _binary_sign(weight))
        return alpha * sign

    def storage_bits(self, shape):
        scales = shape[-1] if self.per_channel else 1
        return math.prod(shape) + scales * SCALE_BITS

    def extra_repr(self):
        return f"per_channel={self.per_channel}"


def ede_parameters(epoch, epochs, t_min=0.1, t_max=10.0):
    """IR-Net's Error Decay Estimator schedule: ``(k, t)`` at ``epoch`` of ``epochs``.

    ``t = 10 ** (log10 t_min + (log10 t_max - log10 t_min) * epoch / epochs)``, ``k = max(1/t, 1)``.
    """
    if epochs <= 0 or not 0 <= epoch <= epochs:
        raise ValueError(f"need 0 <= epoch <= epochs and epochs > 0, got epoch={epoch}, epochs={epochs}")
    log_t = math.log10(t_min) + (math.log10(t_max) - math.log10(t_min)) * epoch / epochs
    t = 10.0 ** log_t
    return max(1.0 / t, 1.0), t


class IRNetBinarizer(nn.Layer):
    """IR-Net weight binarization (Qin et al., CVPR 2020).

    Forward (Libra-PB): each output channel is standardized,
    ``w_std = (w - mean) / std`` (population std), then binarized as
    ``sign(w_std) * 2**round(log2(mean|w_std|))``, the power-of-two scale taken per channel.
    Backward (EDE): ``sign`` is differentiated as ``k * tanh(t * w_std)``, i.e.
    ``g * k * t * (1 - tanh(t * w_std)**2)``, then through the standardization; the
    scale is a constant. Call :meth:`set_progress` (or :func:`update_ede`) once per
    epoch to follow the schedule of :func:`ede_parameters`.
    """

    def __init__(self, t_min=0.1, t_max=10.0, eps=1e-8):
        super().__init__()
        if not 0 < t_min < t_max:
            raise ValueError(f"need 0 < t_min < t_max, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max, self.eps = t_min, t_max, eps
        self.k, self.t = ede_parameters(0, 1, t_min, t_max)

    def set_progress(self, epoch, epochs):
        self.k, self.t = ede_parameters(epoch, epochs, self.t_min, self.t_max)

    def forward(self, weight):
        if weight.ndim != 2:
            raise ValueError(f"IRNetBinarizer needs a 2-D [in, out] weight, got shape {weight.shape}")
        centered = weight - weight.mean(axis=0, keepdim=True)
        standardized = centered / paddle.sqrt((centered * centered).mean(axis=0, keepdim=True) + self.eps)
        exponent = paddle.round(paddle.log2(standardized.abs().mean(axis=0, keepdim=True)))
        scale = (2.0 ** exponent).detach()
        surrogate = self.k * paddle.tanh(self.t * standardized)
        return _straight_through(surrogate, _binary_sign(standardized)) * scale

    def storage_bits(self, shape):
        """Signs plus one power-of-two exponent per output channel, counted as float32."""
        return math.prod(shape) + shape[-1] * SCALE_BITS

    def extra_repr(self):
        return f"k={self.k:.4g}, t={self.t:.4g}"


class QuantLinear(nn.Layer):
    """A ``Linear`` whose weight (and optionally input) is fake-quantized in the forward pass.

    It reuses the wrapped layer's ``weight`` and ``bias`` parameters, so state-dict keys
    and trained values carry over. With ``enabled = False`` it is the plain linear
    (used for latent quantization: full precision first, quantizers switched on later).
    """

    def __init__(self, linear, weight_quantizer, input_quantizer=None):
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QuantLinear wraps a paddle.nn.Linear, got {type(linear).__name__}")
        self.weight = linear.weight
        self.bias = linear.bias
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self.enabled = True

    def forward(self, x):
        weight = self.weight
        if self.enabled:
            weight = self.weight_quantizer(weight)
            if self.input_quantizer is not None:
                x = self.input_quantizer(x)
        return F.linear(x, weight, self.bias)

    def storage_bits(self):
        """Bits stored at deployment: quantized weight and scales, float32 bias, input range."""
        bits = self.weight_quantizer.storage_bits(self.weight.shape)
        if self.bias is not None:
            bits += self.bias.size * 32
        if self.input_quantizer is not None:
            bits += self.input_quantizer.storage_bits(None)
        return bits

    def extra_repr(self):
        parts = [f"in={self.weight.shape[0]}", f"out={self.weight.shape[1]}", f"weight={self.weight_quantizer}"]
        if self.input_quantizer is not None:
            parts.append(f"input={self.input_quantizer}")
        if not self.enabled:
            parts.append("enabled=False")
        return ", ".join(parts)


WEIGHT_METHODS = ("weight", "full", "binary", "irnet")


def make_weight_quantizer(method, bits=8, per_channel=False):
    """The weight quantizer for ``method`` in :data:`WEIGHT_METHODS` (``full`` = weight part)."""
    if method in ("weight", "full"):
        return WeightFakeQuant(bits, per_channel)
    if method == "binary":
        return SignBinarizer(per_channel)
    if method == "irnet":
        return IRNetBinarizer()
    raise ValueError(f"method must be one of {WEIGHT_METHODS}, got {method!r}")


# pattern -> linear groups it quantizes; the model names its groups (see
# ``TransformerClassifier.linear_groups``). ``final`` is added only on request.
PATTERNS = {
    "attention": ("q", "k", "v", "out"),
    "ffn": ("ffn",),
    "classifier": ("classifier",),
    "all": ("q", "k", "v", "out", "ffn", "classifier"),
    "all_qk": ("q", "k", "ffn", "classifier"),
    "all_qv": ("q", "v", "ffn", "classifier"),
    "all_kv": ("k", "v", "ffn", "classifier"),
}


def _replace_sublayer(model, path, new_layer):
    parent_path, _, name = path.rpartition(".")
    parent = model
    for part in parent_path.split(".") if parent_path else ():
        parent = getattr(parent, part)
    setattr(parent, name, new_layer)


def quantize_linears(model, groups, pattern, method, bits=8, per_channel=False,
                     quantize_final=False, momentum=0.9):
    """Wrap the linears of ``model`` chosen by ``pattern`` in :class:`QuantLinear`, in place.

    Args:
        model: a layer whose linears are listed by ``groups``.
        groups (dict): group name -> sublayer paths, e.g. ``{"q": ["encoder.0.attn.q_proj"], ...}``;
            must name every group of :data:`PATTERNS` and ``final``.
        pattern (str): a key of :data:`PATTERNS`.
        method (str): ``weight`` (weight-only b-bit), ``full`` (weights and inputs at b bits),
            ``binary`` (:class:`SignBinarizer`) or ``irnet`` (:class:`IRNetBinarizer`).
        quantize_final (bool): also quantize the final (output) layer.

    Returns:
        list[str]: the paths that were wrapped.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {sorted(PATTERNS)}, got {pattern!r}")
    make_weight_quantizer(method, bits, per_channel)  # validates method and bits up front
    chosen = list(PATTERNS[pattern]) + (["final"] if quantize_final else [])
    paths = [path for group in chosen for path in groups[group]]
    for path in paths:
        linear = model
        for part in path.split("."):
            linear = getattr(linear, part)
        input_quantizer = ActivationFakeQuant(bits, momentum) if method == "full" else None
        _replace_sublayer(model, path, QuantLinear(linear, make_weight_quantizer(method, bits, per_channel),
                                                   input_quantizer))
    return paths


def _quant_linears(model):
    return [layer for layer in model.sublayers() if isinstance(layer, QuantLinear)]


def set_quantization_enabled(model, enabled):
    """Switch every :class:`QuantLinear` of ``model`` on or off (latent quantization)."""
    for layer in _quant_linears(model):
        layer.enabled = enabled


def update_ede(model, epoch, epochs):
    """Move every :class:`IRNetBinarizer` in ``model`` to ``epoch`` of its EDE schedule."""
    for layer in model.sublayers():
        if isinstance(layer, IRNetBinarizer):
            layer.set_progress(epoch, epochs)

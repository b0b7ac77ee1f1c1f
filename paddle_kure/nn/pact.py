"""PACT: parameterized clipping activation (Choi et al., 2018)."""
from __future__ import annotations


import numpy as np
import paddle
from paddle import nn

from .._validate import check_number

__all__ = ["PACT", "pact", "calibrate_pact"]

_DATA_INITS = ("abs_max", "percentile")


def pact(x, alpha, signed: bool = False, name=None):
    r"""Parameterized clipping: :math:`y = clip(x, 0, \alpha)`, or
    :math:`clip(x, -\alpha, \alpha)` when ``signed``, with PACT's gradient

    .. math::

        \frac{\partial y}{\partial x} = 1 \text{ for } lo \le x < \alpha \text{ else } 0,
        \qquad
        \frac{\partial y}{\partial \alpha} = 1 \text{ for } x \ge \alpha,
        \; -1 \text{ for } x \le -\alpha \text{ (signed)}, \text{ else } 0,

    where ``lo`` is 0 (or :math:`-\alpha` exclusive when signed). Unlike
    ``paddle.clip``, the gradient reaches ``alpha``. Works in dygraph, PIR and
    legacy static graphs (it uses only comparisons, casts and arithmetic).

    Args:
        x (Tensor): float input.
        alpha (Tensor): positive clipping level, shape [1] (or broadcastable to ``x``).
        signed (bool): clip to [-alpha, alpha] instead of [0, alpha].
        name (str, optional): unused, for API consistency.

    Returns:
        Tensor of ``x``'s shape.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.nn import pact
            >>> alpha = paddle.to_tensor([2.0], stop_gradient=False)
            >>> y = pact(paddle.to_tensor([-1.0, 1.0, 3.0]), alpha)  # [0., 1., 2.]
    """
    # The masks are comparisons, so they carry no gradient: the products below
    # give exactly the piecewise gradients above.
    above = (x >= alpha).astype(x.dtype)
    if signed:
        below = (x <= -alpha).astype(x.dtype)
        inside = 1.0 - above - below
        return x * inside + alpha * (above - below)
    inside = (x >= 0).astype(x.dtype) * (x < alpha).astype(x.dtype)
    return x * inside + alpha * above


class PACT(nn.Layer):
    r"""
    PACT activation: :math:`y = clip(x, 0, \alpha)` with a trainable clipping level
    :math:`\alpha` (see :func:`pact` for the gradient). With ``signed=True`` it is
    the two-sided :math:`clip(x, -\alpha, \alpha)`, for inputs that may be negative
    (PaddleSlim applies this form before every quantized layer's input).

    ``init`` sets the starting :math:`\alpha`: a number, or ``'abs_max'`` /
    ``'percentile'`` to take it from data, the first batch the layer sees
    (call :func:`calibrate_pact` to choose that batch explicitly). For unsigned
    PACT the statistic is over the positive inputs, for signed PACT over ``|x|``.
    The paper's two recipes are a large ``init`` with ``l2_coeff > 0`` or a small
    one without.

    The L2 decay of :math:`\alpha` is set on the parameter itself, so the
    optimizer's ``weight_decay`` never applies to it (``l2_coeff=0`` means none).

    Args:
        init (float|str, optional): initial alpha (> 0), or 'abs_max' or
            'percentile'. Default 'abs_max'.
        signed (bool, optional): two-sided clipping. Default False.
        percentile (float, optional): percentile in (0, 100] for ``init='percentile'``.
            Default 99.99.
        l2_coeff (float, optional): L2 decay coefficient of alpha, >= 0. Default 0.0.
        learning_rate (float, optional): learning-rate multiplier of alpha, > 0. Default 1.0.
        name (str, optional): prefix of the alpha parameter's name.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.nn import PACT
            >>> act = PACT(init=6.0, l2_coeff=1e-4, learning_rate=10.0)
            >>> y = act(paddle.randn([4, 16]) * 10)   # in [0, 6]
            >>> y.sum().backward()                   # act.alpha.grad = number of inputs >= 6
    """

    def __init__(
        self,
        init: float | str = "abs_max",
        signed: bool = False,
        percentile: float = 99.99,
        l2_coeff: float = 0.0,
        learning_rate: float = 1.0,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(init, str):
            if init not in _DATA_INITS:
                raise ValueError(f"PACT: init must be a positive number or one of {_DATA_INITS}, got {init!r}")
            start = 1.0  # placeholder until the first batch sets it
        else:
            start = check_number("PACT", "init", init, low=0.0, low_open=True)
        if not isinstance(signed, bool):
            raise TypeError(f"PACT: signed must be a bool, got {signed!r}")
        self._init = init
        self._signed = signed
        self._percentile = check_number("PACT", "percentile", percentile, low=0.0, low_open=True)
        if self._percentile > 100:
            raise ValueError(f"PACT: percentile must be in (0, 100], got {percentile}")
        self._l2_coeff = check_number("PACT", "l2_coeff", l2_coeff, low=0.0)
        self._learning_rate = check_number("PACT", "learning_rate", learning_rate, low=0.0, low_open=True)
        self._needs_data_init = isinstance(init, str)
        attr = paddle.ParamAttr(
            name=None if name is None else f"{name}.alpha",
            initializer=nn.initializer.Constant(start),
            learning_rate=self._learning_rate,
            regularizer=paddle.regularizer.L2Decay(self._l2_coeff),
        )
        self.alpha = self.create_parameter(shape=[1], attr=attr, dtype=self._helper.get_default_dtype())

    @property
    def signed(self) -> bool:
        return self._signed

    def init_alpha_from(self, x) -> float:
        """Sets alpha from the statistic chosen by ``init`` over the batch ``x`` and returns it."""
        if not isinstance(self._init, str):
            raise RuntimeError(
                f"PACT: alpha starts at the constant {self._init}; use init='abs_max' or "
                "'percentile' to set it from data"
            )
        values = np.asarray(x.numpy() if isinstance(x, paddle.Tensor) else x, dtype=np.float64).ravel()
        values = np.abs(values) if self._signed else values[values > 0]
        if values.size == 0 or not np.all(np.isfinite(values)):
            raise ValueError("PACT: the calibration batch has no finite positive values to set alpha from")
        level = values.max() if self._init == "abs_max" else np.percentile(values, self._percentile)
        if level <= 0:
            raise ValueError("PACT: the calibration batch gives alpha = 0; use a constant init")
        with paddle.no_grad():
            self.alpha.set_value(np.full([1], level, dtype=self.alpha.numpy().dtype))
        self._needs_data_init = False
        return float(level)

    def forward(self, x):
        if self._needs_data_init:
            if not paddle.in_dynamic_mode():
                raise RuntimeError(
                    f"PACT(init={self._init!r}) must see a batch in dygraph before it is traced "
                    "into a static graph: call paddle_kure.nn.calibrate_pact(model, batch)"
                )
            self.init_alpha_from(x)
        return pact(x, self.alpha, signed=self._signed)

    def extra_repr(self) -> str:
        text = f"init={self._init!r}, signed={self._signed}"
        if self._init == "percentile":
            text += f", percentile={self._percentile}"
        if self._l2_coeff:
            text += f", l2_coeff={self._l2_coeff}"
        if self._learning_rate != 1.0:
            text += f", learning_rate={self._learning_rate}"
        return text

    def __str__(self) -> str:
        alpha = "uncalibrated" if self._needs_data_init else f"{float(self.alpha.numpy()[0]):g}"
        return f"PACT(alpha={alpha}, {self.extra_repr()})"


def calibrate_pact(model: nn.Layer, *batch) -> dict:
    """Runs ``model(*batch)`` once without gradients so that every PACT layer with a
    data-driven ``init`` takes its alpha from what it sees; returns
    ``{layer name: alpha}`` for the layers it set. The model's train/eval mode is kept.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.nn import PACT, calibrate_pact
            >>> model = paddle.nn.Sequential(paddle.nn.Linear(8, 8), PACT(init="percentile", percentile=99.0))
            >>> alphas = calibrate_pact(model, paddle.randn([64, 8]))
    """
    pending = {name: layer for name, layer in model.named_sublayers(include_self=True)
               if isinstance(layer, PACT) and layer._needs_data_init}
    with paddle.no_grad():
        model(*batch)
    return {name: float(layer.alpha.numpy()[0]) for name, layer in pending.items()}

"""KurtosisDecay: the KURE weight regularizer in the shape of ``paddle.regularizer.L2Decay``."""
from __future__ import annotations

import paddle
from paddle import pir
from paddle.base import framework
from paddle.regularizer import L2Decay, WeightDecayRegularizer

from ._validate import FLOAT32_MAX, check_int, check_number
from .ops import _accumulate_kurtosis_decay, kurtosis_decay_grad

__all__ = ["KurtosisDecay"]


class KurtosisDecay(WeightDecayRegularizer):
    r"""
    Kurtosis regularization (KURE, Shkolnik et al. 2020): pushes the distribution of
    a weight tensor toward a target kurtosis, by default 1.8, that of a uniform
    distribution, which uniform quantization handles best.

    Like :class:`paddle.regularizer.L2Decay`, it can be set in
    :ref:`api_paddle_ParamAttr` (for one parameter) or as an optimizer's
    ``weight_decay`` (for all of its parameters); a regularizer in ``ParamAttr``
    takes priority over the optimizer's. During the update, the term

    .. math::

        coeff \cdot \frac{\partial}{\partial w} (K(w) - target)^2 + l2\_coeff \cdot w

    is added to the gradient of each parameter it covers, with
    :math:`K(w) = m_4 / m_2^2` over all elements of the tensor. This is the same
    update as adding :math:`coeff \cdot (K(w) - target)^2` (and
    :math:`\frac{l2\_coeff}{2} \lVert w \rVert^2`) to the loss, but computed by a fused
    operator without building autograd graph nodes. The KURE paper's loss averages
    over the L regularized tensors, :math:`\frac{\lambda}{L}\sum (K - 1.8)^2`: use
    ``coeff = lambda / L`` to match it.

    Because a ``ParamAttr`` regularizer replaces the optimizer's ``weight_decay``
    for that parameter, ``l2_coeff`` keeps an L2 decay on it. ``AdamW`` is the
    exception: it applies its own decoupled decay to every parameter whatever its
    regularizer, so under ``AdamW`` leave ``l2_coeff`` at 0 (AdamW also refuses a
    regularizer as its ``weight_decay``: set ``KurtosisDecay`` in ``ParamAttr``).

    The KURE paper regularizes weights only: parameters with fewer than
    ``min_ndim`` dimensions (biases, normalization scales) get only the
    ``l2_coeff`` term, which matters when ``KurtosisDecay`` is an optimizer's
    ``weight_decay`` and so covers every parameter. ``min_ndim=1`` regularizes
    them too.

    A constant tensor (or one of a single element) has no defined kurtosis: its
    kurtosis term is zero.

    Args:
        coeff (float): weight of the kurtosis term, >= 0.
        target (float, optional): target kurtosis, > 1 (1.8 uniform, 3 normal). Default 1.8.
        l2_coeff (float, optional): L2 decay applied together, >= 0. Default 0.0.
            The three are numbers (numpy scalars too) within float32's range.
        min_ndim (int, optional): the kurtosis term applies to parameters of at
            least this many dimensions, >= 1. Default 2.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure import KurtosisDecay
            >>> fc = paddle.nn.Linear(
            ...     256, 256,
            ...     weight_attr=paddle.ParamAttr(regularizer=KurtosisDecay(coeff=1e-2, target=1.8)))
            >>> opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=fc.parameters())
            >>> loss = fc(paddle.randn([8, 256])).square().mean()
            >>> loss.backward()
            >>> opt.step()  # the weight's gradient included the kurtosis term
    """

    def __init__(self, coeff: float = 0.0, target: float = 1.8, l2_coeff: float = 0.0, min_ndim: int = 2) -> None:
        super().__init__()
        # the operator computes in float32: a larger value would become inf
        self._coeff = check_number("KurtosisDecay", "coeff", coeff, low=0.0, high=FLOAT32_MAX)
        # every distribution has K >= 1
        self._target = check_number("KurtosisDecay", "target", target, low=1.0, low_open=True, high=FLOAT32_MAX)
        self._l2_coeff = check_number("KurtosisDecay", "l2_coeff", l2_coeff, low=0.0, high=FLOAT32_MAX)
        self._min_ndim = check_int("KurtosisDecay", "min_ndim", min_ndim, low=1)

    @property
    def coeff(self) -> float:
        return self._coeff

    @property
    def target(self) -> float:
        return self._target

    @property
    def l2_coeff(self) -> float:
        return self._l2_coeff

    @property
    def min_ndim(self) -> int:
        return self._min_ndim

    def __call__(self, param, grad, block):
        """Returns the regularization term added to ``param``'s gradient.

        Args:
            param: the parameter being regularized.
            grad: its gradient (unused: the term depends on the parameter only).
            block: the block to append ops to in a legacy static Program.
        """
        assert isinstance(param, (framework.Variable, pir.Value, pir.core.ParameterMeta))
        assert isinstance(block, (framework.Block, pir.Block))
        if not self._covers(param):
            return L2Decay(self._l2_coeff)(param, grad, block)
        # kurtosis_decay_grad dispatches dygraph/PIR and legacy static itself.
        return kurtosis_decay_grad(param, self._coeff, self._target, self._l2_coeff, block=block)

    def apply_to_grads_(self, parameters) -> None:
        """Adds the regularization term to each parameter's ``.grad`` in place
        (dygraph): an opt-in, faster alternative to setting this regularizer in
        ``ParamAttr`` or as ``weight_decay``.

        Paddle's regularizer mechanism allocates two tensors per parameter and
        step (the term, then its sum with the gradient); here the fused operator
        writes the term straight into the gradient on CPU. Call it between
        ``loss.backward()`` and ``optimizer.step()``; the optimizer then sees
        the same gradient as with ``ParamAttr(regularizer=self)``. One
        difference: an optimizer's own ``weight_decay`` still applies on top
        (a ``ParamAttr`` regularizer replaces it), so do not also pass a
        ``KurtosisDecay`` as the optimizer's ``weight_decay``.

        Args:
            parameters (Tensor|list[Tensor]): parameters to regularize; those
                without a gradient are skipped, those with fewer than
                ``min_ndim`` dimensions get the L2 part only.

        Raises:
            TypeError: for an entry that is not a Tensor.
            ValueError: for a parameter that already has a ``KurtosisDecay`` of its
                own (Paddle would add that term too).
            RuntimeError: outside dygraph mode (in static graphs, use ``ParamAttr``).

        Examples:
            .. code-block:: python

                >>> import paddle
                >>> from paddle_kure import KurtosisDecay
                >>> fc = paddle.nn.Linear(256, 256)
                >>> opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=fc.parameters())
                >>> kure = KurtosisDecay(coeff=1e-2, target=1.8)
                >>> loss = fc(paddle.randn([8, 256])).square().mean()
                >>> loss.backward()
                >>> kure.apply_to_grads_([fc.weight])
                >>> opt.step()
        """
        if not paddle.in_dynamic_mode():
            raise RuntimeError("KurtosisDecay.apply_to_grads_ works in dygraph mode; in a static graph "
                               "set the regularizer in ParamAttr instead")
        if isinstance(parameters, paddle.Tensor):
            parameters = [parameters]
        for param in parameters:
            if not isinstance(param, paddle.Tensor):
                raise TypeError(f"KurtosisDecay.apply_to_grads_: expected Tensors, got {type(param).__name__}")
            if isinstance(getattr(param, "regularizer", None), KurtosisDecay):
                raise ValueError(f"KurtosisDecay.apply_to_grads_: parameter {param.name} already has a KurtosisDecay "
                                 "regularizer, which the optimizer applies: the term would be added twice")
            grad = param.grad
            if grad is not None:
                coeff = self._coeff if self._covers(param) else 0.0  # else the L2 part only, as in __call__
                _accumulate_kurtosis_decay(param, grad, coeff, self._target, self._l2_coeff)

    def _covers(self, param) -> bool:
        """Whether the kurtosis term applies to ``param`` (``min_ndim`` dimensions or more)."""
        return len(param.shape) >= self._min_ndim

    def __str__(self) -> str:
        text = f"KurtosisDecay, coeff={self._coeff:f}, target={self._target:f}"
        if self._l2_coeff:
            text += f", l2_coeff={self._l2_coeff:f}"
        if self._min_ndim != 2:
            text += f", min_ndim={self._min_ndim}"
        return text

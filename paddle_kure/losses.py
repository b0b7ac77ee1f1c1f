"""KURE as a loss term: on weights (:class:`KurtosisLoss`), on activations
(:class:`ActivationKurtosis`, forward hooks) and both at once (:class:`Kure`).

Unlike :class:`paddle_kure.KurtosisDecay`, which adds the gradient of the term in
the optimizer, these return a scalar to add to the loss, differentiated by
autograd through :func:`paddle_kure.kurtosis`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import paddle

from ._validate import check_bool, check_choice, check_number
from .ops import kurtosis
from .selection import plan_kure

__all__ = ["ActivationKurtosis", "Kure", "KurtosisLoss"]

REDUCTIONS = ("mean", "sum", "none")


def _check_target_and_reduction(owner, target, reduction):
    check_number(owner, "target", target, low=1.0, low_open=True)  # every distribution has K >= 1
    check_choice(owner, "reduction", reduction, REDUCTIONS)


def _check_coeff(owner, coeff):
    check_number(owner, "coeff", coeff, low=0.0)


def kurtosis_penalty(kurtoses: Sequence, target: float = 1.8, reduction: str = "mean"):
    """``(K - target)^2`` of each kurtosis tensor, reduced: 'mean', 'sum' or
    'none' (a 1-D tensor). Works in dygraph and static graphs (PIR and legacy)."""
    _check_target_and_reduction("kurtosis_penalty", target, reduction)
    if not kurtoses:
        raise ValueError("kurtosis_penalty: no kurtosis values")
    terms = [paddle.square(k - target) for k in kurtoses]
    if reduction == "none":
        return paddle.stack(terms)
    total = terms[0]
    for term in terms[1:]:
        total = total + term  # paddle.add_n rejects legacy Variables
    return total if reduction == "sum" else total / len(terms)


class KurtosisLoss(paddle.nn.Layer):
    r"""The KURE term of weight tensors, :math:`(K(w) - target)^2` reduced over
    ``params`` (``'mean'``: the KURE paper's average, ``'sum'``, or ``'none'``: one
    value per tensor). Multiply it by the paper's lambda and add it to the loss.

    Args:
        params (list[Tensor]): the tensors, e.g. ``plan_kure(model).parameters()``.
        target (float, optional): target kurtosis, > 1. Default 1.8 (uniform).
        reduction (str, optional): 'mean', 'sum' or 'none'. Default 'mean'.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure import KurtosisLoss
            >>> model = paddle.nn.Sequential(paddle.nn.Linear(8, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 2))
            >>> kure = KurtosisLoss([model[0].weight, model[2].weight])
            >>> loss = model(paddle.randn([4, 8])).mean() + 0.5 * kure()
            >>> loss.backward()
    """

    def __init__(self, params: Sequence, target: float = 1.8, reduction: str = "mean"):
        super().__init__()
        _check_target_and_reduction("KurtosisLoss", target, reduction)
        if isinstance(params, paddle.Tensor) or not isinstance(params, (list, tuple)) or not params:
            raise TypeError(f"KurtosisLoss: params must be a non-empty list of tensors, got {params!r}")
        self._tensors = list(params)
        self.target, self.reduction = float(target), reduction

    def kurtoses(self) -> list:
        """The kurtosis of each tensor, differentiable."""
        return [kurtosis(p) for p in self._tensors]

    def forward(self):
        return kurtosis_penalty(self.kurtoses(), self.target, self.reduction)

    def extra_repr(self) -> str:
        return f"tensors={len(self._tensors)}, target={self.target}, reduction={self.reduction}"


class ActivationKurtosis:
    """KURE on activations: forward post-hooks on the named sublayers record the
    kurtosis of each one's output in its last training call (``layer.training``
    with gradients enabled); :meth:`loss` returns ``coeff * reduction over the
    layers of (K - target)^2`` and forgets them, so nothing of a batch is held
    after its loss is taken. :meth:`remove` (or leaving a ``with`` block)
    takes the hooks off.

    Args:
        model (Layer): the model.
        layer_names (list[str]): names of sublayers (``model.named_sublayers()``)
            whose outputs (a Tensor) are regularized.
        coeff (float, optional): weight of the term. Default 1.
        target (float, optional): target kurtosis. Default 1.8.
        reduction (str, optional): 'mean', 'sum' or 'none'. Default 'mean'.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure import ActivationKurtosis
            >>> model = paddle.nn.Sequential(paddle.nn.Linear(8, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 2))
            >>> with ActivationKurtosis(model, ["0", "2"], coeff=0.1) as term:
            ...     loss = model(paddle.randn([32, 8])).mean() + term.loss()
            ...     loss.backward()
    """

    def __init__(self, model: paddle.nn.Layer, layer_names: Sequence[str], coeff: float = 1.0,
                 target: float = 1.8, reduction: str = "mean"):
        _check_coeff("ActivationKurtosis", coeff)
        _check_target_and_reduction("ActivationKurtosis", target, reduction)
        if isinstance(layer_names, str) or not isinstance(layer_names, (list, tuple)):
            raise TypeError(f"ActivationKurtosis: layer_names must be a list of sublayer names, got {layer_names!r}")
        if not layer_names:
            raise ValueError("ActivationKurtosis: layer_names is empty")
        layers = dict(model.named_sublayers())
        missing = [name for name in layer_names if name not in layers]
        if missing:
            raise ValueError(f"ActivationKurtosis: no sublayers named {missing}; there are {sorted(layers)}")
        self.coeff, self.target, self.reduction = float(coeff), float(target), reduction
        self.layer_names = list(layer_names)
        self._kurtoses = {}
        self._hooks = [layers[name].register_forward_post_hook(self._recorder(name)) for name in layer_names]

    def _recorder(self, name):
        def record(layer, inputs, output):
            if layer.training and paddle.is_grad_enabled():
                if not isinstance(output, paddle.Tensor):
                    raise TypeError(f"ActivationKurtosis: sublayer {name} returned {type(output).__name__}, "
                                    "not a Tensor")
                self._kurtoses[name] = kurtosis(output)
        return record

    @property
    def pending(self) -> int:
        """How many layers' kurtosis values wait for the next :meth:`loss`."""
        return len(self._kurtoses)

    def take(self) -> list:
        """The recorded kurtosis values (differentiable), in layer order, forgotten here."""
        if not self._kurtoses:
            raise RuntimeError("ActivationKurtosis: no training forward pass since the last loss")
        taken, self._kurtoses = self._kurtoses, {}
        return [taken[name] for name in self.layer_names if name in taken]

    def loss(self):
        """The term of the forward passes since the last call."""
        return self.coeff * kurtosis_penalty(self.take(), self.target, self.reduction)

    def remove(self) -> None:
        """Takes the hooks off and forgets what was recorded."""
        for hook in self._hooks:
            hook.remove()
        self._hooks, self._kurtoses = [], {}

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()

    def __str__(self):
        return f"ActivationKurtosis(layers={self.layer_names}, coeff={self.coeff}, target={self.target})"


class Kure:
    """KURE on a model's weights and/or activations as one loss term (Paddle issue #28522's
    ``Kure_reg(on_weights, on_activations)``): ``coeff * reduction of (K - target)^2``
    over the chosen weight tensors and the outputs of the chosen layers recorded
    since the last :meth:`loss`.

    Args:
        model (Layer): the dygraph model.
        coeff (float, optional): the KURE paper's lambda. Default 1.
        target (float, optional): target kurtosis. Default 1.8.
        on_weights (bool, optional): include the weights chosen by
            :func:`paddle_kure.plan_kure`. Default True.
        on_activations (bool, optional): include the outputs of ``layers``. Default False.
        layers (list[str], optional): sublayer names whose outputs are regularized;
            None: the layers owning the chosen weights.
        reduction (str, optional): 'mean' or 'sum' (or 'none'). Default 'mean'.
        **selection: keyword arguments of :func:`paddle_kure.plan_kure`
            (``include``, ``exclude``, ``layer_types``, ``min_size``, ``auto_exclude``, ...).

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure import Kure
            >>> model = paddle.nn.Sequential(paddle.nn.Linear(8, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 2))
            >>> with Kure(model, coeff=0.5, on_activations=True, layer_types=["Linear"]) as kure:
            ...     loss = model(paddle.randn([32, 8])).mean() + kure.loss()
            ...     loss.backward()
            >>> print(kure.plan)  # doctest: +SKIP
    """

    def __init__(self, model: paddle.nn.Layer, coeff: float = 1.0, target: float = 1.8, on_weights: bool = True,
                 on_activations: bool = False, layers: Optional[Sequence[str]] = None, reduction: str = "mean",
                 **selection):
        _check_coeff("Kure", coeff)
        _check_target_and_reduction("Kure", target, reduction)
        check_bool("Kure", "on_weights", on_weights)
        check_bool("Kure", "on_activations", on_activations)
        if not (on_weights or on_activations):
            raise ValueError("Kure: on_weights and on_activations are both False: KURE would do nothing")
        self.coeff, self.target, self.reduction = float(coeff), float(target), reduction
        self.plan = plan_kure(model, **selection) if on_weights or layers is None else None
        if self.plan is not None and not self.plan.chosen:
            raise ValueError(f"Kure: the selection chose no weight:\n{self.plan}")
        self.weights = KurtosisLoss(self.plan.parameters(), target, reduction) if on_weights else None
        self.activations = None
        if on_activations:
            names = layers if layers is not None else list(dict.fromkeys(
                name.rsplit(".", 1)[0] for name in self.plan.chosen if "." in name))
            self.activations = ActivationKurtosis(model, names, 1.0, target, reduction)

    def loss(self):
        """The term: chosen weights now, activations recorded since the last call."""
        kurtoses = self.weights.kurtoses() if self.weights is not None else []
        if self.activations is not None:
            kurtoses += self.activations.take()
        return self.coeff * kurtosis_penalty(kurtoses, self.target, self.reduction)

    def remove(self) -> None:
        """Takes the activation hooks off (the weights need none)."""
        if self.activations is not None:
            self.activations.remove()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()

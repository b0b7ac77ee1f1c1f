"""Selective KURE: choose the tensors a kurtosis regularizer covers and attach it.

Pretrained transformers hold a few weight tensors whose kurtosis is orders of
magnitude above the others' (seed 002: each block's FFN second FC). Pushing those
toward 1.8 swamps the loss; leaving them out does not. :func:`plan_kure` decides,
for every parameter of a dygraph ``Layer`` or a static ``Program`` (PIR or
legacy), whether KURE covers it, and says why; :func:`attach_kure` also sets
:class:`paddle_kure.KurtosisDecay` on the chosen ones.

The criteria, applied in this order (the first that rejects a tensor is its reason):

1. ``include``: regular expressions a whole parameter name must match
   (``re.fullmatch``; a plain name matches itself), or a predicate
   ``fn(name, param) -> bool``; None: every tensor with 2 or more dimensions.
2. ``exclude``: regular expressions (whole names) never chosen.
3. ``layer_types``: the class (or class name, base classes included) of the layer
   owning the parameter, e.g. ``["Linear", "Conv2D"]``; dygraph only.
4. ``min_size``: fewest elements.
5. ``auto_exclude``: leave out the tensors whose kurtosis is an outlier among the
   tensors still chosen: ``'mean_std'`` (seed 000: outside mean +- ``num_std``
   standard deviations of their kurtosis), ``'log_mad'`` (log10 kurtosis beyond
   median + ``mad_k`` median absolute deviations; one extreme tensor cannot hide
   itself by inflating the standard deviation), or None.

Names are the structured names of ``Layer.named_parameters()`` in dygraph and the
parameter names (``fc_0.w_0``) in a Program.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import paddle
from paddle.base import dygraph

from .analysis import outliers_log_mad, outliers_mean_std, tensor_kurtosis
from .ops import kurtosis
from .regularizer import KurtosisDecay

__all__ = ["AUTO_EXCLUDE_RULES", "KurePlan", "TensorChoice", "attach_kure", "plan_kure", "select_tensors"]

AUTO_EXCLUDE_RULES = ("mean_std", "log_mad")

Include = Union[None, Sequence[str], Callable[[str, object], bool]]


@dataclass
class TensorChoice:
    """One row of a :class:`KurePlan`.

    Attributes:
        name: the parameter's name.
        shape: its shape.
        kurtosis: its kurtosis when planned (NaN when unknown: a Program whose
            startup program has not run).
        chosen: whether KURE covers it.
        reason: why it is chosen or left out.
        layer_type: class name of the owning layer ('' in a Program).
        l2_coeff: L2 decay kept together with KURE (set by :meth:`KurePlan.attach`).
    """

    name: str
    shape: tuple
    kurtosis: float
    chosen: bool
    reason: str
    layer_type: str = ""
    l2_coeff: Optional[float] = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class _Tensor:
    name: str
    shape: tuple
    kurtosis: float
    layer: object = None  # owning dygraph Layer
    param: object = None


class KurePlan:
    """Which tensors KURE covers and why; ``print(plan)`` lists every tensor.

    Built by :func:`plan_kure` / :func:`select_tensors`; :meth:`attach` sets the
    regularizer. ``coeff`` and ``target`` are None until attached.
    """

    def __init__(self, rows: list, params: dict, rule: Optional[str]):
        self.rows = rows
        self.rule = rule
        self.coeff = None
        self.target = None
        self._params = params

    @property
    def chosen(self) -> list:
        """Names of the chosen tensors, in parameter order."""
        return [row.name for row in self.rows if row.chosen]

    def parameters(self) -> list:
        """The chosen parameters (for :class:`paddle_kure.KurtosisLoss`)."""
        if not self._params:
            raise ValueError("KurePlan.parameters: this plan was built from names and values, it holds no parameters")
        return [self._params[name] for name in self.chosen]

    def attach(self, coeff: float = 1.0, target: float = 1.8, l2_coeff: Optional[float] = None) -> "KurePlan":
        """Sets ``KurtosisDecay(coeff / L, target, l2)`` on each of the L chosen
        parameters (before the optimizer's ``minimize`` in a static Program) and
        returns the plan.

        ``coeff`` is the KURE paper's lambda: the update is that of adding
        ``coeff * mean over the chosen tensors of (K - target)^2`` to the loss.
        A parameter's own regularizer replaces the optimizer's ``weight_decay``, so
        the L2 decay is kept inside ``KurtosisDecay``: ``l2`` is the coeff of the
        parameter's existing ``L2Decay`` (or ``l2_coeff`` of an existing
        ``KurtosisDecay``), else ``l2_coeff`` (pass the optimizer's
        ``weight_decay``), else 0. Any other existing regularizer is an error.
        """
        if not self.chosen:
            raise ValueError("KurePlan.attach: the selection chose no parameter; print the plan to see why")
        KurtosisDecay(coeff, target, l2_coeff or 0.0)  # validates before any parameter changes
        rows, params = self._chosen_rows(), self.parameters()
        kept = [_kept_l2(row.name, param, l2_coeff) for row, param in zip(rows, params)]  # all checked first
        regularizers = {}
        for row, param, l2 in zip(rows, params, kept):
            if l2 not in regularizers:
                regularizers[l2] = KurtosisDecay(coeff / len(params), target, l2)
            param.regularizer = regularizers[l2]
            row.l2_coeff = l2
        self.coeff, self.target = float(coeff), float(target)
        return self

    def _chosen_rows(self) -> list:
        return [row for row in self.rows if row.chosen]

    def to_dict(self) -> dict:
        """Plain data (for JSON): the rule, coeff, target and every row."""
        rows = [dict(vars(row), shape=list(row.shape), size=row.size) for row in self.rows]
        return {"rule": self.rule, "coeff": self.coeff, "target": self.target, "tensors": rows}

    def __str__(self) -> str:
        chosen = self.chosen
        head = f"KURE plan: {len(chosen)} of {len(self.rows)} tensors chosen (auto_exclude={self.rule})"
        if self.coeff is not None:
            head += f", coeff {self.coeff:g} (each {self.coeff / len(chosen):.4g}), target {self.target:g}"
        columns = ["name", "shape", "kurtosis", "chosen", "reason"]
        table = [[row.name, "x".join(map(str, row.shape)), f"{row.kurtosis:.4g}", "yes" if row.chosen else "no",
                  row.reason + (f" (l2 {row.l2_coeff:g})" if row.l2_coeff else "")] for row in self.rows]
        widths = [max(len(line[i]) for line in [columns] + table) for i in range(len(columns))]
        lines = ["  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip()
                 for line in [columns] + table]
        return "\n".join([head] + lines)

    def __repr__(self) -> str:
        return f"KurePlan(chosen={len(self.chosen)} of {len(self.rows)}, auto_exclude={self.rule!r})"


def _kept_l2(name, param, l2_coeff):
    existing = getattr(param, "regularizer", None)
    if existing is None:
        return float(l2_coeff or 0.0)
    if isinstance(existing, KurtosisDecay):
        return existing.l2_coeff
    if isinstance(existing, paddle.regularizer.L2Decay):
        return float(existing._coeff)
    raise ValueError(f"attach_kure: parameter {name} has regularizer {type(existing).__name__}, which KurtosisDecay "
                     "cannot keep (only an L2Decay is kept, as l2_coeff); remove it or leave the parameter out")


def _compile(patterns, key):
    if isinstance(patterns, str) or not isinstance(patterns, (list, tuple)):
        raise TypeError(f"{key} must be a list of regular expressions, got {patterns!r}")
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"{key} must be a list of regular expressions, got the item {pattern!r}")
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ValueError(f"{key}: {pattern!r} is not a regular expression ({err})") from None
    return compiled


def _layer_type_check(layer_types):
    if layer_types is None:
        return None
    if isinstance(layer_types, (str, type)) or not isinstance(layer_types, (list, tuple)) or not layer_types:
        raise TypeError(f"layer_types must be a non-empty list of layer classes or class names, got {layer_types!r}")
    for item in layer_types:
        if not isinstance(item, str) and not (isinstance(item, type) and issubclass(item, paddle.nn.Layer)):
            raise TypeError(f"layer_types: {item!r} is neither a paddle.nn.Layer class nor a class name")

    def matches(layer):
        names = {cls.__name__ for cls in type(layer).__mro__}
        return any(item in names if isinstance(item, str) else isinstance(layer, item) for item in layer_types)
    return matches


def _positive(key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{key} must be a positive number, got {value!r}")


def _select(tensors, include, exclude, layer_types, min_size, auto_exclude, num_std, mad_k) -> KurePlan:
    """The selection itself, on ``_Tensor`` records (defaults live in the public functions only)."""
    predicate = include if callable(include) else None
    patterns = None if include is None or predicate else _compile(include, "include")
    excluded = _compile(exclude, "exclude")
    layer_matches = _layer_type_check(layer_types)
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ValueError(f"min_size must be an integer >= 0, got {min_size!r}")
    if auto_exclude is not None and auto_exclude not in AUTO_EXCLUDE_RULES:
        raise ValueError(f"auto_exclude must be None or one of {list(AUTO_EXCLUDE_RULES)}, got {auto_exclude!r}")
    _positive("num_std", num_std)
    _positive("mad_k", mad_k)
    if layer_matches and any(t.layer is None for t in tensors):
        raise ValueError("layer_types needs a dygraph Layer (a Program's or a state dict's parameters have no layer)")
    if patterns:
        unmatched = [p.pattern for p in patterns if not any(p.fullmatch(t.name) for t in tensors)]
        if unmatched:
            raise ValueError(f"include: no parameters named {unmatched} (patterns are regular expressions matching "
                             f"whole names); there are {[t.name for t in tensors]}")

    def reason_left_out(t):
        if predicate is not None and not predicate(t.name, t.param):
            return "include predicate is false"
        if patterns is not None and not any(p.fullmatch(t.name) for p in patterns):
            return "matches no include pattern"
        if include is None and len(t.shape) < 2:
            return "fewer than 2 dims (not a weight)"
        hit = next((p.pattern for p in excluded if p.fullmatch(t.name)), None)
        if hit is not None:
            return f"exclude pattern {hit}"
        if layer_matches and not layer_matches(t.layer):
            return f"layer type {type(t.layer).__name__} not in layer_types"
        size = int(np.prod(t.shape, dtype=np.int64))
        if size < min_size:
            return f"size {size} < min_size {min_size}"
        return None

    reasons = [reason_left_out(t) for t in tensors]
    candidates = [i for i, reason in enumerate(reasons) if reason is None]
    if auto_exclude is not None and candidates:
        values = np.array([tensors[i].kurtosis for i in candidates], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            unknown = [tensors[i].name for i, v in zip(candidates, values) if not np.isfinite(v)]
            raise ValueError(f"auto_exclude needs the kurtosis of {unknown}: run the startup program first")
        if auto_exclude == "mean_std":
            outliers, rule = outliers_mean_std(values, num_std=num_std), f"mean +- {num_std:g} std"
        else:
            outliers, rule = outliers_log_mad(values, k=mad_k), f"log10 median + {mad_k:g} MAD"
        for i, outlier in zip(candidates, outliers):
            if outlier:
                reasons[i] = f"kurtosis outlier ({auto_exclude}: {rule} of {len(candidates)} tensors)"
    rows = [TensorChoice(t.name, tuple(t.shape), float(t.kurtosis), reason is None, reason or "chosen",
                         type(t.layer).__name__ if t.layer is not None else "") for t, reason in zip(tensors, reasons)]
    return KurePlan(rows, {t.name: t.param for t in tensors if t.param is not None}, auto_exclude)


def select_tensors(shapes: dict, kurtosis_values: dict, *, include: Include = None, exclude: Sequence[str] = (),
                   min_size: int = 0, auto_exclude: Optional[str] = None, num_std: float = 3.0,
                   mad_k: float = 3.5) -> KurePlan:
    """The selection of :func:`plan_kure` on names, shapes and kurtosis values
    (e.g. measured on another copy of the model), without parameters: the plan can
    be printed, not attached. A tensor missing from ``kurtosis_values`` has NaN.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.selection import select_tensors
            >>> shapes = {f"fc{i}.weight": [64, 64] for i in range(12)}
            >>> values = {name: 3.0 for name in shapes}
            >>> values["fc5.weight"] = 900.0
            >>> plan = select_tensors(shapes, values, auto_exclude="log_mad")
            >>> "fc5.weight" in plan.chosen
            False
    """
    tensors = [_Tensor(name, tuple(shape), kurtosis_values.get(name, math.nan)) for name, shape in shapes.items()]
    if callable(include):
        raise TypeError("select_tensors: include must be regular expressions (a predicate needs parameters)")
    return _select(tensors, include, exclude, None, min_size, auto_exclude, num_std, mad_k)


def _program_tensors(program, scope):
    scope = scope or paddle.static.global_scope()
    tensors = []
    for param in program.global_block().all_parameters():
        var = scope.find_var(param.name)
        value = math.nan
        if var is not None and var.get_tensor()._is_initialized():
            with dygraph.guard():  # the kurtosis operator runs eagerly, also while Paddle is in static mode
                value = tensor_kurtosis(np.array(var.get_tensor()))
        tensors.append(_Tensor(param.name, tuple(param.shape), value, param=param))
    return tensors


def _layer_tensors(model):
    owners = {}
    for prefix, layer in model.named_sublayers(include_self=True):
        for name, param in layer.named_parameters(include_sublayers=False):
            owners[f"{prefix}.{name}" if prefix else name] = layer
    return [_Tensor(name, tuple(param.shape), float(kurtosis(param.detach())), owners[name], param)
            for name, param in model.named_parameters()]


def plan_kure(model, include: Include = None, exclude: Sequence[str] = (), layer_types=None, min_size: int = 0,
              auto_exclude: Optional[str] = None, num_std: float = 3.0, mad_k: float = 3.5,
              scope=None) -> KurePlan:
    """Decides which parameters of ``model`` KURE covers; changes nothing.

    Args:
        model (Layer|Program): a dygraph ``paddle.nn.Layer`` or a static
            ``Program`` (PIR or legacy).
        include (list[str]|callable, optional): regular expressions matching whole
            parameter names, or ``fn(name, param) -> bool``; None: every tensor of
            2+ dims. A pattern that matches no parameter is an error.
        exclude (list[str], optional): regular expressions of names left out.
        layer_types (list, optional): layer classes or class names owning the
            chosen parameters (dygraph only).
        min_size (int, optional): fewest elements of a chosen tensor.
        auto_exclude (str, optional): 'mean_std', 'log_mad' or None (see the module).
        num_std (float, optional): band width of 'mean_std'. Default 3.
        mad_k (float, optional): band width of 'log_mad', in MADs. Default 3.5.
        scope (Scope, optional): where a Program's parameter values are (for
            their kurtosis); default the global scope. Kurtosis is NaN for
            parameters not initialized there, and ``auto_exclude`` needs them.

    Returns:
        KurePlan: print it to see every tensor's kurtosis, choice and reason.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure import plan_kure
            >>> model = paddle.nn.Sequential(paddle.nn.Conv2D(1, 8, 3), paddle.nn.Flatten(), paddle.nn.Linear(8, 2))
            >>> plan = plan_kure(model, layer_types=["Linear"], min_size=16)
            >>> plan.chosen
            ['2.weight']
            >>> print(plan)  # doctest: +SKIP
    """
    if isinstance(model, paddle.nn.Layer):
        tensors = _layer_tensors(model)
    elif isinstance(model, (paddle.static.Program, paddle.base.framework.Program)):
        tensors = _program_tensors(model, scope)
    else:
        raise TypeError(f"plan_kure: model must be a paddle.nn.Layer or a static Program, got {type(model).__name__}")
    return _select(tensors, include, exclude, layer_types, min_size, auto_exclude, num_std, mad_k)


def attach_kure(model, coeff: float = 1.0, target: float = 1.8, l2_coeff: Optional[float] = None,
                **selection) -> KurePlan:
    """:func:`plan_kure` (``selection`` are its keyword arguments), then
    :meth:`KurePlan.attach`: each of the L chosen parameters gets
    ``KurtosisDecay(coeff / L, target, l2)``, keeping its L2 decay.

    Args:
        model (Layer|Program): the model; for a Program call this before ``minimize``.
        coeff (float): the KURE paper's lambda, split over the chosen tensors.
        target (float): target kurtosis (1.8: uniform).
        l2_coeff (float, optional): L2 decay kept on chosen parameters that have no
            regularizer of their own: the optimizer's ``weight_decay``.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure import attach_kure
            >>> model = paddle.nn.Sequential(paddle.nn.Linear(16, 32), paddle.nn.ReLU(), paddle.nn.Linear(32, 4))
            >>> plan = attach_kure(model, coeff=1.0, l2_coeff=1e-4, exclude=[r"0\\..*"])
            >>> plan.chosen
            ['2.weight']
            >>> opt = paddle.optimizer.Adam(1e-3, parameters=model.parameters(),
            ...                             weight_decay=paddle.regularizer.L2Decay(1e-4))
    """
    return plan_kure(model, **selection).attach(coeff, target, l2_coeff)

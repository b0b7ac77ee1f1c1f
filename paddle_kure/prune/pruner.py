"""Gradual magnitude pruning for dygraph Layers and static Programs."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import paddle

from .._validate import check_choice
from ..param_filter import ParamFilter
from .schedules import SparsitySchedule

__all__ = ["GRANULARITIES", "MagnitudePruner", "magnitude_masks", "sparsity_table"]

#: "parameter": each parameter loses the same fraction; "global": one magnitude ranking across them
GRANULARITIES = ("parameter", "global")


def magnitude_masks(arrays: Mapping, sparsity: float, granularity: str = "parameter") -> dict:
    """0/1 masks (bool arrays) that zero the ``round(sparsity * n)`` smallest ``|w|``.

    ``n`` counts the elements of each array (``granularity="parameter"``) or of all of
    them together (``"global"``). Ties are broken by position: among equal magnitudes,
    the element earlier in the flattened array (and, globally, in the mapping's order)
    is pruned first, so the masks are deterministic.

    Args:
        arrays (Mapping[str, numpy.ndarray]): the weights, by name.
        sparsity (float): the fraction to prune, in [0, 1).
        granularity (str, optional): ``"parameter"`` or ``"global"``. Default ``"parameter"``.

    Returns:
        dict[str, numpy.ndarray]: a bool mask per name, True where the weight is kept.

    Examples:
        .. code-block:: python

            >>> import numpy as np
            >>> from paddle_kure.prune import magnitude_masks
            >>> masks = magnitude_masks({"w": np.array([0.3, -0.1, 0.2, 0.1])}, 0.5)
            >>> masks["w"].tolist()
            [True, False, True, False]
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}; got {granularity!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if granularity == "parameter":
        return {name: _smallest_pruned(np.abs(np.asarray(a)).ravel(), sparsity).reshape(np.shape(a))
                for name, a in arrays.items()}
    flat = _smallest_pruned(np.concatenate([np.abs(np.asarray(a)).ravel() for a in arrays.values()]), sparsity)
    masks, offset = {}, 0
    for name, a in arrays.items():
        size = np.size(a)
        masks[name] = flat[offset:offset + size].reshape(np.shape(a))
        offset += size
    return masks


def _smallest_pruned(magnitudes: np.ndarray, sparsity: float) -> np.ndarray:
    keep = np.ones(magnitudes.size, dtype=bool)
    # a stable sort ranks equal magnitudes by position: deterministic ties
    keep[np.argsort(magnitudes, kind="stable")[:round(sparsity * magnitudes.size)]] = False
    return keep


def sparsity_table(weights) -> str:
    """A markdown table of the zeros in each weight, with a total row.

    Args:
        weights: a :class:`paddle.nn.Layer` (all its parameters, by structured name),
            a :class:`MagnitudePruner` (the parameters it prunes) or a mapping from
            names to arrays or tensors.

    Returns:
        str: columns ``parameter | shape | zeros | sparsity``.

    Examples:
        .. code-block:: python

            >>> import numpy as np
            >>> from paddle_kure.prune import sparsity_table
            >>> print(sparsity_table({"fc.weight": np.array([[0.0, 1.0], [0.0, 0.0]])}))
            | parameter | shape | zeros | sparsity |
            |---|---|---:|---:|
            | fc.weight | 2x2 | 3 / 4 | 75.00% |
            | **total** | | 3 / 4 | 75.00% |
    """
    if isinstance(weights, paddle.nn.Layer):
        arrays = {name: p.numpy() for name, p in weights.named_parameters()}
    elif isinstance(weights, MagnitudePruner):
        arrays = weights.weights()
    elif isinstance(weights, Mapping):
        arrays = {name: np.asarray(w) for name, w in weights.items()}
    else:
        raise TypeError(f"sparsity_table: expected a paddle.nn.Layer, a MagnitudePruner or a mapping, "
                        f"got {type(weights).__name__}")
    lines = ["| parameter | shape | zeros | sparsity |", "|---|---|---:|---:|"]
    total_zeros = total_size = 0
    for name, a in arrays.items():
        zeros, size = int(np.count_nonzero(a == 0)), int(np.size(a))
        total_zeros, total_size = total_zeros + zeros, total_size + size
        shape = "x".join(str(d) for d in np.shape(a))
        lines.append(f"| {name} | {shape} | {zeros} / {size} | {zeros / max(size, 1):.2%} |")
    lines.append(f"| **total** | | {total_zeros} / {total_size} | {total_zeros / max(total_size, 1):.2%} |")
    return "\n".join(lines)


class _LayerWeights:
    """A dygraph Layer's parameters by structured name (``fc1.weight``), with their layer's type."""

    def __init__(self, layer: paddle.nn.Layer) -> None:
        self.params, self.layer_types, seen = {}, {}, set()
        for prefix, sublayer in layer.named_sublayers(include_self=True):
            for short_name, param in sublayer.named_parameters(include_sublayers=False):
                if id(param) in seen:  # a shared parameter is pruned once, under its first name
                    continue
                seen.add(id(param))
                name = f"{prefix}.{short_name}" if prefix else short_name
                self.params[name] = param
                self.layer_types[name] = type(sublayer)
        self._device_masks = {}

    def shape(self, name):
        return tuple(self.params[name].shape)

    def read(self, name) -> np.ndarray:
        return self.params[name].numpy()

    def multiply(self, name, mask: np.ndarray) -> None:
        param = self.params[name]
        cached = self._device_masks.get(name)
        if cached is None or cached[0] is not mask:
            cached = (mask, paddle.to_tensor(mask, dtype=param.dtype, place=param.place))
            self._device_masks[name] = cached
        with paddle.no_grad():
            param.multiply_(cached[1])


class _ProgramWeights:
    """A static Program's parameters (legacy or PIR), read and written in a scope."""

    def __init__(self, program, scope, place) -> None:
        # by name: legacy and PIR Programs list parameters in different orders
        self.params = {p.name: p for p in sorted(program.global_block().all_parameters(), key=lambda p: p.name)}
        self.layer_types = {}  # a Program has no layers: selection by name only
        self.scope = scope if scope is not None else paddle.static.global_scope()
        self.place = place

    def shape(self, name):
        return tuple(self.params[name].shape)

    def _tensor(self, name):
        var = self.scope.find_var(name)
        if var is None or not var.get_tensor()._is_initialized():
            raise RuntimeError(f"MagnitudePruner: parameter {name!r} is not initialized in the scope; "
                               "run the startup program (or load the weights) before creating the pruner")
        return var.get_tensor()

    def read(self, name) -> np.ndarray:
        return np.array(self._tensor(name))

    def multiply(self, name, mask: np.ndarray) -> None:
        tensor = self._tensor(name)
        tensor.set(np.array(tensor) * mask, self.place or _tensor_place(tensor))


def _tensor_place(tensor):
    """The typed place (``CPUPlace``/``CUDAPlace``) that ``DenseTensor.set`` needs, from a tensor's own."""
    place = tensor._place()
    return paddle.CUDAPlace(place.gpu_device_id()) if place.is_gpu_place() else paddle.CPUPlace()


class MagnitudePruner:
    """Gradual magnitude pruning: keeps the largest ``|w|`` of the chosen weights, zeroes the rest.

    At each update step of ``schedule`` the pruner computes a 0/1 mask per chosen
    parameter keeping its largest magnitudes (per parameter, or ranked across all
    of them with ``granularity="global"``; see :func:`magnitude_masks`) and
    multiplies the parameter by it. Call :meth:`step` after every optimizer step:
    it multiplies the masks in again, so that the optimizer's momentum or Adam
    moments cannot bring a pruned weight back, and counts the iteration. Call
    :meth:`end_epoch` at the end of each epoch. Exported models (``paddle.jit.save``,
    ``save_inference_model``, quantized exports) contain the zeros.

    The pruner acts on creation if step 0 is an update step: create it after the
    weights are initialized or loaded (for a Program, after running the startup program).

    Args:
        target (paddle.nn.Layer | paddle.static.Program): the model. A Program's
            parameters are read and written in ``scope``.
        schedule (SparsitySchedule): when and how much to prune; its ``unit``
            says whether steps are epochs or iterations.
        granularity (str, optional): ``"parameter"`` or ``"global"``. Default ``"parameter"``.
        include (Sequence[str], optional): regular expressions matching whole parameter
            names to prune; default all. Only parameters with two or more dimensions (conv
            and fc weights, not biases or norms) are ever pruned. Names are structured names
            (``conv1.weight``) for a Layer and variable names (``fc_0.w_0``) for a Program.
            The selection is :class:`paddle_kure.param_filter.ParamFilter`'s, as KURE's.
        exclude (Sequence[str], optional): regular expressions of names never pruned.
        layer_types (Sequence[str | type], optional): prune only parameters of these
            layer classes (``"Conv2D"``, ``paddle.nn.Linear``); Layer only.
        min_size (int, optional): fewest elements of a pruned parameter. Default 0.
        scope (paddle.static.Scope, optional): a Program's scope; default the global scope.
        place (paddle.CPUPlace | paddle.CUDAPlace, optional): where a Program's weights
            live; default the place of each weight in ``scope``.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.prune import LogSchedule, MagnitudePruner
            >>> model = paddle.nn.Sequential(paddle.nn.Linear(8, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 2))
            >>> opt = paddle.optimizer.Momentum(0.1, parameters=model.parameters())
            >>> pruner = MagnitudePruner(model, LogSchedule(0.75, interval_pass=1, end_pass=2))
            >>> for epoch in range(3):
            ...     for _ in range(4):
            ...         model(paddle.randn([4, 8])).square().mean().backward()
            ...         opt.step()
            ...         opt.clear_grad()
            ...         pruner.step()
            ...     pruner.end_epoch()
            >>> round(pruner.sparsity(), 2)
            0.75
    """

    def __init__(self, target, schedule: SparsitySchedule, granularity: str = "parameter",
                 include=None, exclude=None, layer_types=None, min_size=0, scope=None, place=None) -> None:
        if not isinstance(schedule, SparsitySchedule):
            raise TypeError(f"MagnitudePruner: schedule must be a SparsitySchedule, got {type(schedule).__name__}")
        check_choice("MagnitudePruner", "granularity", granularity, GRANULARITIES)
        chooser = ParamFilter("MagnitudePruner", include, exclude, layer_types, min_size, min_ndim=2)
        if isinstance(target, paddle.nn.Layer):
            self._weights = _LayerWeights(target)
        elif isinstance(target, (paddle.static.Program, paddle.pir.Program)):
            self._weights = _ProgramWeights(target, scope, place)
        else:
            raise TypeError(f"MagnitudePruner: target must be a paddle.nn.Layer or a static Program, "
                            f"got {type(target).__name__}")
        self.schedule = schedule
        self.granularity = granularity
        self.names = self._choose(chooser)
        self.epoch = 0
        self.iteration = 0
        self._masks = {}
        self._update_if_due()

    def _choose(self, chooser) -> list:
        """Names of the parameters to prune, in the model's order."""
        params = self._weights.params
        chooser.check(list(params), has_layers=bool(self._weights.layer_types))
        names = [name for name in params if chooser.reason_left_out(
            name, self._weights.shape(name), self._weights.layer_types.get(name), params[name]) is None]
        if not names:
            raise ValueError(f"MagnitudePruner: no parameter with two or more dimensions is selected by "
                             f"{chooser.describe()}; parameters: {', '.join(params)}")
        return names

    @property
    def position(self) -> int:
        """The current step in the schedule's unit (epochs or iterations done)."""
        return self.epoch if self.schedule.unit == "epoch" else self.iteration

    def step(self) -> None:
        """Call after every optimizer step: re-applies the masks, counts the iteration,
        and prunes further if the schedule says so."""
        self.apply_masks()
        self.iteration += 1
        if self.schedule.unit == "iteration":
            self._update_if_due()

    def end_epoch(self) -> None:
        """Call after each epoch: counts it and prunes further if the schedule says so."""
        self.epoch += 1
        if self.schedule.unit == "epoch":
            self._update_if_due()

    def _update_if_due(self) -> None:
        if self.schedule.is_update_step(self.position):
            self.prune(self.schedule.sparsity(self.position))

    def prune(self, sparsity: float) -> None:
        """Recomputes the masks from the current weights for ``sparsity`` and applies them."""
        self._masks = magnitude_masks(self.weights(), sparsity, self.granularity)
        self.apply_masks()

    def apply_masks(self) -> None:
        """Multiplies each pruned parameter by its mask."""
        for name, mask in self._masks.items():
            self._weights.multiply(name, mask)

    @property
    def masks(self) -> dict:
        """The current masks (bool arrays, True = kept) by parameter name; empty before the first update."""
        return dict(self._masks)

    def weights(self) -> dict:
        """The current values of the chosen parameters, as numpy arrays by name."""
        return {name: self._weights.read(name) for name in self.names}

    def sparsity(self) -> float:
        """The measured fraction of zeros over the chosen parameters."""
        arrays = self.weights().values()
        return sum(int(np.count_nonzero(a == 0)) for a in arrays) / sum(a.size for a in arrays)

    def sparsity_table(self) -> str:
        """A markdown table of the zeros in each chosen parameter (see :func:`sparsity_table`)."""
        return sparsity_table(self)

    def state_dict(self) -> dict:
        """The masks and the schedule position, for ``paddle.save`` next to the model's checkpoint."""
        return {"epoch": self.epoch, "iteration": self.iteration,
                "masks": {name: mask.copy() for name, mask in self._masks.items()}}

    def set_state_dict(self, state: Mapping) -> None:
        """Restores :meth:`state_dict`'s masks and position and applies the masks."""
        missing = {"epoch", "iteration", "masks"} - set(state)
        if missing:
            raise KeyError(f"MagnitudePruner.set_state_dict: missing keys {sorted(missing)}")
        masks = {}
        for name, mask in state["masks"].items():
            if name not in self.names:
                raise KeyError(f"MagnitudePruner.set_state_dict: mask for {name!r}, which this pruner does not "
                               f"prune (it prunes {', '.join(self.names)})")
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self._weights.shape(name):
                raise ValueError(f"MagnitudePruner.set_state_dict: mask for {name!r} has shape {mask.shape}, "
                                 f"the parameter {self._weights.shape(name)}")
            masks[name] = mask
        self.epoch, self.iteration, self._masks = int(state["epoch"]), int(state["iteration"]), masks
        self.apply_masks()

    def __str__(self) -> str:
        return (f"MagnitudePruner({self.schedule}, granularity={self.granularity}, "
                f"{len(self.names)} parameters, epoch={self.epoch}, iteration={self.iteration}, "
                f"target sparsity={self.schedule.sparsity(self.position):.4f})")

    __repr__ = __str__

"""Sparsity schedules: which fraction of the weights is pruned at each training step.

A schedule is evaluated at integer steps counted in epochs or in iterations (its
``unit``). The masks are recomputed only at the schedule's *update steps*; between
them, the sparsity of the last update step stays in effect.
"""
from __future__ import annotations

import math

from .._validate import check_choice, check_int, check_number

__all__ = ["UNITS", "SparsitySchedule", "ConstantSchedule", "LogSchedule", "CubicSchedule"]

UNITS = ("epoch", "iteration")


def _check_sparsity(owner: str, name: str, value) -> float:
    return check_number(owner, name, value, low=0.0, high=1.0, high_open=True)


def _check_step(owner: str, name: str, value, minimum: int = 0) -> int:
    return check_int(owner, name, value, low=minimum)


class SparsitySchedule:
    """Base class of the schedules. Subclasses define ``_last_update_step``, ``_sparsity_at`` and ``_arguments``."""

    #: the name used in configs (``schedule: {type: ...}``)
    type_name = ""

    def __init__(self, unit: str = "epoch") -> None:
        self.unit = check_choice(type(self).__name__, "unit", unit, UNITS)

    def last_update_step(self, step: int):
        """The latest update step ``<= step``, or ``None`` before the first one."""
        return self._last_update_step(_check_step(type(self).__name__, "step", step))

    def _last_update_step(self, step: int):
        raise NotImplementedError

    def _sparsity_at(self, update_step: int) -> float:
        raise NotImplementedError

    def is_update_step(self, step: int) -> bool:
        """Whether the masks are recomputed at ``step``."""
        return self.last_update_step(step) == step

    def sparsity(self, step: int) -> float:
        """The target sparsity in effect at ``step`` (0 before the first update step)."""
        update_step = self.last_update_step(step)
        return 0.0 if update_step is None else self._sparsity_at(update_step)

    def to_dict(self) -> dict:
        """The config form: ``{"type": ..., <arguments>..., "unit": ...}``; ``from_dict`` inverts it."""
        return {"type": self.type_name, **self._arguments(), "unit": self.unit}

    def _arguments(self) -> dict:
        raise NotImplementedError

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {**self._arguments(), "unit": self.unit}.items())
        return f"{type(self).__name__}({args})"

    __str__ = __repr__


class ConstantSchedule(SparsitySchedule):
    """Prunes once, at step ``start``, to ``sparsity``; the masks then stay fixed.

    Args:
        sparsity (float): the fraction of weights set to zero, in [0, 1).
        start (int, optional): the step at which pruning happens. Default 0.
        unit (str, optional): ``"epoch"`` or ``"iteration"``. Default ``"epoch"``.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.prune import ConstantSchedule
            >>> s = ConstantSchedule(0.5, start=2)
            >>> [s.sparsity(step) for step in range(4)]
            [0.0, 0.0, 0.5, 0.5]
    """

    type_name = "constant"

    def __init__(self, sparsity: float, start: int = 0, unit: str = "epoch") -> None:
        super().__init__(unit)
        self.target = _check_sparsity("ConstantSchedule", "sparsity", sparsity)
        self.start = _check_step("ConstantSchedule", "start", start)

    def _last_update_step(self, step):
        return self.start if step >= self.start else None

    def _sparsity_at(self, update_step):
        return self.target

    def _arguments(self):
        return {"sparsity": self.target, "start": self.start}


class LogSchedule(SparsitySchedule):
    r"""The log schedule of Paddle's 2017 dynamic pruning hook: prunes hard early, gently late.

    The masks are recomputed at the steps :math:`p` with :math:`p \bmod interval\_pass = 0`
    and :math:`p \le end\_pass`, to the sparsity

    .. math::

        s(p) = sparsity\_upper\_bound \cdot
               \frac{\ln(2 + p / interval\_pass)}{\ln(2 + end\_pass / interval\_pass)}

    which reaches ``sparsity_upper_bound`` at ``end_pass`` (a multiple of ``interval_pass``).
    A "pass" is one step of the schedule's ``unit``.

    Args:
        sparsity_upper_bound (float): the final sparsity, in [0, 1).
        interval_pass (int, optional): steps between mask updates, >= 1. Default 3.
        end_pass (int, optional): the step of the last update, a multiple of ``interval_pass``. Default 60.
        unit (str, optional): ``"epoch"`` or ``"iteration"``. Default ``"epoch"``.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.prune import LogSchedule
            >>> s = LogSchedule(0.75, interval_pass=1, end_pass=3)
            >>> [round(s.sparsity(p), 4) for p in range(5)]
            [0.323, 0.512, 0.646, 0.75, 0.75]
    """

    type_name = "log"

    def __init__(self, sparsity_upper_bound: float, interval_pass: int = 3, end_pass: int = 60,
                 unit: str = "epoch") -> None:
        super().__init__(unit)
        self.sparsity_upper_bound = _check_sparsity("LogSchedule", "sparsity_upper_bound", sparsity_upper_bound)
        self.interval_pass = _check_step("LogSchedule", "interval_pass", interval_pass, minimum=1)
        self.end_pass = _check_step("LogSchedule", "end_pass", end_pass)
        if end_pass % interval_pass:
            raise ValueError(
                f"LogSchedule: end_pass ({end_pass}) must be a multiple of interval_pass ({interval_pass}), "
                "otherwise the last update never reaches sparsity_upper_bound"
            )

    def _last_update_step(self, step):
        return min(step - step % self.interval_pass, self.end_pass)

    def _sparsity_at(self, update_step):
        updates = self.end_pass / self.interval_pass
        return self.sparsity_upper_bound * math.log(2 + update_step / self.interval_pass) / math.log(2 + updates)

    def _arguments(self):
        return {"sparsity_upper_bound": self.sparsity_upper_bound, "interval_pass": self.interval_pass,
                "end_pass": self.end_pass}


class CubicSchedule(SparsitySchedule):
    r"""Automated gradual pruning (Zhu & Gupta 2017): a cubic ramp from ``initial_sparsity`` to ``final_sparsity``.

    The masks are recomputed every ``frequency`` steps from ``start`` to ``end``, to

    .. math::

        s_t = s_f + (s_i - s_f) \left(1 - \frac{t - start}{end - start}\right)^3

    Nothing is pruned before ``start``; ``final_sparsity`` holds from ``end`` on.

    Args:
        initial_sparsity (float): :math:`s_i`, the sparsity at ``start``, in [0, 1).
        final_sparsity (float): :math:`s_f`, in [``initial_sparsity``, 1).
        start (int): the first update step, >= 0.
        end (int): the last update step; ``end - start`` is a positive multiple of ``frequency``.
        frequency (int, optional): steps between mask updates, >= 1. Default 1.
        unit (str, optional): ``"epoch"`` or ``"iteration"``. Default ``"epoch"``.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.prune import CubicSchedule
            >>> s = CubicSchedule(0.0, 0.8, start=0, end=300, frequency=100, unit="iteration")
            >>> [round(s.sparsity(t), 4) for t in (0, 99, 100, 200, 300, 1000)]
            [0.0, 0.0, 0.563, 0.7704, 0.8, 0.8]
    """

    type_name = "cubic"

    def __init__(self, initial_sparsity: float, final_sparsity: float, start: int, end: int,
                 frequency: int = 1, unit: str = "epoch") -> None:
        super().__init__(unit)
        self.initial_sparsity = _check_sparsity("CubicSchedule", "initial_sparsity", initial_sparsity)
        self.final_sparsity = _check_sparsity("CubicSchedule", "final_sparsity", final_sparsity)
        self.start = _check_step("CubicSchedule", "start", start)
        self.end = _check_step("CubicSchedule", "end", end, minimum=start + 1)
        self.frequency = _check_step("CubicSchedule", "frequency", frequency, minimum=1)
        if final_sparsity < initial_sparsity:
            raise ValueError(
                f"CubicSchedule: final_sparsity ({final_sparsity}) must be >= initial_sparsity ({initial_sparsity})"
            )
        if (end - start) % frequency:
            raise ValueError(
                f"CubicSchedule: end - start ({end - start}) must be a multiple of frequency ({frequency}), "
                "otherwise the last update never reaches final_sparsity"
            )

    def _last_update_step(self, step):
        if step < self.start:
            return None
        since_start = min(step, self.end) - self.start
        return self.start + since_start - since_start % self.frequency

    def _sparsity_at(self, update_step):
        remaining = 1.0 - (update_step - self.start) / (self.end - self.start)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * remaining ** 3

    def _arguments(self):
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": self.final_sparsity,
                "start": self.start, "end": self.end, "frequency": self.frequency}

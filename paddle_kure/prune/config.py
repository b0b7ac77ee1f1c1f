"""``PruneConfig``: the validated ``Prune`` section of a paddle_kure config."""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping

from .._validate import ConfigBase, check_choice
from ..param_filter import globs_to_regexes
from .pruner import GRANULARITIES, MagnitudePruner
from .schedules import ConstantSchedule, CubicSchedule, LogSchedule, SparsitySchedule

__all__ = ["SCHEDULES", "PruneConfig", "schedule_from_dict"]

#: config name -> schedule class
SCHEDULES = {cls.type_name: cls for cls in (ConstantSchedule, LogSchedule, CubicSchedule)}


def schedule_from_dict(data: Mapping, where: str = "schedule") -> SparsitySchedule:
    """Builds a schedule from its config form, ``{"type": "log", "sparsity_upper_bound": 0.75, ...}``.

    Args:
        data (Mapping): ``type`` (one of ``constant``, ``log``, ``cubic``) and that
            schedule's arguments (see :class:`ConstantSchedule`, :class:`LogSchedule`,
            :class:`CubicSchedule`), ``unit`` included.
        where (str, optional): where ``data`` comes from, for error messages
            (``"config.yaml: Prune.schedule"``).

    Examples:
        .. code-block:: python

            >>> from paddle_kure.prune import schedule_from_dict
            >>> schedule_from_dict({"type": "log", "sparsity_upper_bound": 0.75, "interval_pass": 1, "end_pass": 3})
            LogSchedule(sparsity_upper_bound=0.75, interval_pass=1, end_pass=3, unit='epoch')
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{where}: expected a mapping with a 'type' key, got {data!r}")
    kind = check_choice(where, "type", data.get("type"), list(SCHEDULES))
    cls = SCHEDULES[kind]
    allowed = [name for name in inspect.signature(cls).parameters]
    arguments = {key: value for key, value in data.items() if key != "type"}
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} for a {kind} schedule; allowed: {', '.join(allowed)}")
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{where}: {err}") from None


@dataclasses.dataclass(frozen=True)
class PruneConfig(ConfigBase):
    """What to prune, how much and when: the ``Prune`` section of a config.

    Args:
        schedule (SparsitySchedule): when and how much (a :class:`ConstantSchedule`,
            :class:`LogSchedule` or :class:`CubicSchedule`, with its unit).
        granularity (str, optional): ``"parameter"`` (each parameter to the same
            sparsity) or ``"global"`` (one magnitude ranking across parameters). Default ``"parameter"``.
        include (tuple[str], optional): glob patterns of parameter names to prune;
            empty: all parameters with two or more dimensions.
        exclude (tuple[str], optional): glob patterns of names never pruned.
        layer_types (tuple[str], optional): prune only parameters of these layer
            classes (``"Conv2D"``, ``"Linear"``); dygraph models only.
        min_size (int, optional): fewest elements of a pruned parameter.

    The selection keys are those of the ``Kurtosis`` section; the glob patterns
    become the regular expressions of :class:`MagnitudePruner` in :meth:`build_pruner`.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.prune import PruneConfig
            >>> config = PruneConfig.from_dict({
            ...     "schedule": {"type": "cubic", "initial_sparsity": 0.0, "final_sparsity": 0.75,
            ...                  "start": 0, "end": 900, "frequency": 100, "unit": "iteration"},
            ...     "granularity": "global", "exclude": ["conv1.*"]})
            >>> print(config)
            PruneConfig(schedule=CubicSchedule(initial_sparsity=0.0, final_sparsity=0.75, start=0, end=900, frequency=100, unit='iteration'), granularity='global', include=(), exclude=('conv1.*',), layer_types=(), min_size=0)
            >>> # pruner = config.build_pruner(model)  # then pruner.step() after each optimizer step
    """

    schedule: SparsitySchedule
    granularity: str = "parameter"
    include: tuple = ()
    exclude: tuple = ()
    layer_types: tuple = ()
    min_size: int = 0

    OWNER = "Prune"

    def validate(self) -> None:
        if not isinstance(self.schedule, SparsitySchedule):
            raise TypeError(f"Prune.schedule must be a SparsitySchedule "
                            f"({', '.join(cls.__name__ for cls in SCHEDULES.values())}), got {self.schedule!r}")
        self._choice("granularity", GRANULARITIES)
        for key in ("include", "exclude", "layer_types"):
            self._str_list(key)  # lists from YAML become hashable tuples
        self._int("min_size", low=0)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "") -> "PruneConfig":
        """Builds and validates a config from a mapping (a parsed YAML section);
        ``schedule`` is the mapping :func:`schedule_from_dict` reads. Errors name the
        file (``source``), the key and the allowed values."""
        where = f"{source}: {cls.owner()}" if source else cls.owner()
        if not isinstance(data, Mapping):
            raise TypeError(f"{where}: expected a mapping of keys, got {type(data).__name__}")
        if "schedule" not in data:
            raise ValueError(f"{where}: missing key 'schedule' (a mapping with type: {', '.join(SCHEDULES)})")
        data = dict(data, schedule=schedule_from_dict(data["schedule"], f"{where}.schedule"))
        return super().from_dict(data, source)

    def to_dict(self) -> dict:
        return dict(super().to_dict(), schedule=self.schedule.to_dict())

    def build_pruner(self, target, scope=None, place=None) -> MagnitudePruner:
        """A :class:`MagnitudePruner` for ``target`` (a Layer or a static Program) with this config."""
        return MagnitudePruner(target, self.schedule, granularity=self.granularity,
                               include=globs_to_regexes(self.include) or None, exclude=globs_to_regexes(self.exclude),
                               layer_types=self.layer_types, min_size=self.min_size, scope=scope, place=place)

"""Gradual magnitude pruning: sparsity schedules, a pruner for dygraph
Layers and static Programs, and the ``Prune`` config section."""
from .config import SCHEDULES, PruneConfig, schedule_from_dict
from .pruner import GRANULARITIES, MagnitudePruner, magnitude_masks, sparsity_table
from .schedules import UNITS, ConstantSchedule, CubicSchedule, LogSchedule, SparsitySchedule

__all__ = [
    "GRANULARITIES",
    "SCHEDULES",
    "UNITS",
    "ConstantSchedule",
    "CubicSchedule",
    "LogSchedule",
    "MagnitudePruner",
    "PruneConfig",
    "SparsitySchedule",
    "magnitude_masks",
    "schedule_from_dict",
    "sparsity_table",
]

"""Checks the config dataclasses share: keys read from YAML, sizes and dropout rates."""
from __future__ import annotations

import dataclasses
from typing import Mapping


def check_keys(cls, values, where: str) -> dict:
    """Returns ``values`` as keyword arguments for the dataclass ``cls``.

    Raises a TypeError when ``values`` is not a mapping and a ValueError naming the
    unknown keys and the allowed ones; ``where`` (for example ``"run.yaml: Prune"``)
    starts each message, so that it names the file and the section.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"{where}: expected a mapping of keys, got {type(values).__name__}")
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed keys: {', '.join(allowed)}")
    return dict(values)


def check_positive_ints(config, names) -> None:
    """A ValueError naming ``Class.field`` for each field in ``names`` that is not an int >= 1."""
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive int, got {value!r}")


def check_dropout(config, names) -> None:
    """A ValueError naming ``Class.field`` for each field in ``names`` outside [0, 1)."""
    for name in names:
        value = getattr(config, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{type(config).__name__}.{name} must be in [0, 1), got {value!r}")

"""The one check every config dataclass applies to a mapping read from YAML."""
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

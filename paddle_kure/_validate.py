"""One validation vocabulary for public arguments and config dataclasses.

The policy: a ``TypeError`` for a value of the wrong type, a ``ValueError`` for a
value of the right type that is not allowed (out of range, not finite, not one of
the choices); both messages read ``"{owner}.{key} must be {what is allowed}, got
{value!r}"``, ``owner`` being the class or function the value was given to. Numbers
are ``int``, ``float`` and numpy scalars (``np.float32(0.1)``), never ``bool``.

:class:`ConfigBase` is the base of every config dataclass: it validates on
construction, reads a mapping with :meth:`ConfigBase.from_dict` (an unknown key is
an error naming the allowed ones) and writes one with :meth:`ConfigBase.to_dict`.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Mapping

import numpy as np

# the largest finite float32: Paddle computes in float32, where a larger value becomes inf
FLOAT32_MAX = 3.4028234663852886e38
# numpy's and Paddle's seeds are 32-bit
SEED_MAX = 2 ** 32 - 1


def is_number(value) -> bool:
    """True for a real number (int, float or numpy scalar), False for a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def is_int(value) -> bool:
    """True for an integer (int or numpy integer), False for a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _bound(value) -> str:
    return str(int(value)) if is_int(value) else f"{value:g}"  # a 32-bit seed bound in full, not 4.29497e+09


def _interval(low, high, low_open, high_open) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_bound(low)}, {_bound(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {_bound(low)}"
    if high is not None:
        return f"{'<' if high_open else '<='} {_bound(high)}"
    return ""


def _outside(value, low, high, low_open, high_open) -> bool:
    return ((low is not None and (value < low or (low_open and value == low)))
            or (high is not None and (value > high or (high_open and value == high))))


def check_number(owner: str, key: str, value, low=None, high=None, low_open=False, high_open=False) -> float:
    """``value`` as a float after checking that it is a finite number in the interval
    from ``low`` to ``high`` (None: unbounded; ``*_open``: the bound itself excluded)."""
    allowed = " ".join(filter(None, ("a finite number", _interval(low, high, low_open, high_open))))
    if not is_number(value):
        raise TypeError(f"{owner}.{key} must be {allowed}, got {value!r}")
    if not math.isfinite(value) or _outside(value, low, high, low_open, high_open):
        raise ValueError(f"{owner}.{key} must be {allowed}, got {value!r}")
    return float(value)


def check_int(owner: str, key: str, value, low=None, high=None, high_open=False) -> int:
    """``value`` as an int after checking that it is an integer from ``low`` to ``high``."""
    allowed = " ".join(filter(None, ("an int", _interval(low, high, False, high_open))))
    if not is_int(value):
        raise TypeError(f"{owner}.{key} must be {allowed}, got {value!r}")
    if _outside(value, low, high, False, high_open):
        raise ValueError(f"{owner}.{key} must be {allowed}, got {value!r}")
    return int(value)


def check_bool(owner: str, key: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{owner}.{key} must be true or false, got {value!r}")
    return bool(value)


def check_choice(owner: str, key: str, value, allowed):
    """``value`` after checking that it is one of ``allowed``."""
    if not isinstance(value, str) and any(isinstance(a, str) for a in allowed):
        raise TypeError(f"{owner}.{key} must be one of {list(allowed)}, got {value!r}")
    if value not in allowed:
        raise ValueError(f"{owner}.{key} must be one of {list(allowed)}, got {value!r}")
    return value


def check_str(owner: str, key: str, value) -> str:
    """``value`` after checking that it is a non-empty string."""
    if not isinstance(value, str):
        raise TypeError(f"{owner}.{key} must be a non-empty string, got {value!r}")
    if not value:
        raise ValueError(f"{owner}.{key} must be a non-empty string, got ''")
    return value


def check_str_list(owner: str, key: str, value) -> tuple:
    """``value`` as a tuple after checking that it is a list or tuple of strings."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{owner}.{key} must be a list of strings, got {value!r}")
    return tuple(value)


def check_keys(cls, values, where: str) -> dict:
    """Returns ``values`` as keyword arguments for the dataclass ``cls`` (or for the
    key names ``cls``, a sequence of strings).

    Raises a TypeError when ``values`` is not a mapping and a ValueError naming the
    unknown keys and the allowed ones; ``where`` (for example ``"run.yaml: Prune"``)
    starts each message, so that it names the file and the section.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"{where}: expected a mapping of keys, got {type(values).__name__}")
    allowed = [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else list(cls)
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed keys: {', '.join(allowed)}")
    return dict(values)


def check_positive_ints(config, names) -> None:
    """Each field in ``names`` of ``config`` is an int >= 1."""
    for name in names:
        check_int(type(config).__name__, name, getattr(config, name), low=1)


def check_dropout(config, names) -> None:
    """Each field in ``names`` of ``config`` is a rate in [0, 1)."""
    for name in names:
        check_number(type(config).__name__, name, getattr(config, name), low=0.0, high=1.0, high_open=True)


class ConfigBase:
    """Base of the config dataclasses: :meth:`validate` runs on construction,
    :meth:`from_dict` reads a mapping (a YAML section) and :meth:`to_dict` writes one.

    ``OWNER`` names the config in messages (default: the class name; the sections of
    a YAML file use the section's name). Subclasses implement :meth:`validate` with
    the helpers :meth:`_number`, :meth:`_int`, :meth:`_bool`, :meth:`_choice` and
    :meth:`_str_list`, which also store the normalized value (a tuple for a list).
    """

    OWNER = None

    @classmethod
    def owner(cls) -> str:
        return cls.OWNER or cls.__name__

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raises TypeError/ValueError naming the field; subclasses check their fields."""

    @classmethod
    def from_dict(cls, values, source: str = ""):
        """Builds the config from a mapping; an unknown key is an error, and
        ``source`` (a file name) starts every message."""
        prefix = f"{source}: " if source else ""
        values = check_keys(cls, values, prefix + cls.owner())
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{prefix}{err}") from None

    def to_dict(self) -> dict:
        """The mapping :meth:`from_dict` reads (YAML-friendly: lists, not tuples)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def _set(self, key, value):
        object.__setattr__(self, key, value)  # frozen dataclasses too

    def _number(self, key, **bounds):
        self._set(key, check_number(self.owner(), key, getattr(self, key), **bounds))

    def _int(self, key, **bounds):
        self._set(key, check_int(self.owner(), key, getattr(self, key), **bounds))

    def _bool(self, key):
        self._set(key, check_bool(self.owner(), key, getattr(self, key)))

    def _choice(self, key, allowed):
        check_choice(self.owner(), key, getattr(self, key), allowed)

    def _str_list(self, key):
        self._set(key, check_str_list(self.owner(), key, getattr(self, key)))


def _plain(value):
    if isinstance(value, ConfigBase):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value

"""Which parameters an operation covers: the one selection engine of KURE and pruning.

:class:`ParamFilter` applies, in this order (the first that rejects a parameter is
its reason):

1. ``include``: regular expressions a whole parameter name must match
   (``re.fullmatch``; a plain name matches itself), or a predicate
   ``fn(name, param) -> bool``; None: every parameter.
2. ``min_ndim``: fewest dimensions (2: weights, not biases or norms).
3. ``exclude``: regular expressions (whole names) never chosen.
4. ``layer_types``: the class (or class name, base classes included) of the layer
   owning the parameter, e.g. ``["Linear", "Conv2D"]``; dygraph only.
5. ``min_size``: fewest elements.

The API takes regular expressions; config files write glob patterns
(``conv1.*``), which :func:`globs_to_regexes` translates where the YAML is read.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ._validate import check_int

__all__ = ["ParamFilter", "globs_to_regexes"]

Include = Union[None, Sequence[str], Callable[[str, object], bool]]


def globs_to_regexes(patterns) -> list:
    """Glob patterns of parameter names (``fnmatch``: ``*``, ``?``, ``[...]``) as
    regular expressions matching the same whole names."""
    return [fnmatch.translate(pattern) for pattern in patterns]


def _compile(owner, key, patterns):
    if isinstance(patterns, str) or not isinstance(patterns, (list, tuple)):
        raise TypeError(f"{owner}.{key} must be a list of regular expressions, got {patterns!r}")
    compiled = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"{owner}.{key} must be a list of regular expressions, got the item {pattern!r}")
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ValueError(f"{owner}.{key}: {pattern!r} is not a regular expression ({err})") from None
    return compiled


def _layer_types(owner, layer_types):
    if layer_types is None or (isinstance(layer_types, (list, tuple)) and not layer_types):
        return ()
    if isinstance(layer_types, (str, type)) or not isinstance(layer_types, (list, tuple)):
        raise TypeError(f"{owner}.layer_types must be a list of layer classes or class names, got {layer_types!r}")
    import paddle

    for item in layer_types:
        if not isinstance(item, str) and not (isinstance(item, type) and issubclass(item, paddle.nn.Layer)):
            raise TypeError(f"{owner}.layer_types: {item!r} is neither a paddle.nn.Layer class nor a class name")
    return tuple(layer_types)


class ParamFilter:
    """The selection criteria of the module docstring, validated once.

    Args:
        owner (str): who selects (``"plan_kure"``, ``"MagnitudePruner"``), for messages.
        include, exclude, layer_types, min_size, min_ndim: see the module.
    """

    def __init__(self, owner: str, include: Include = None, exclude: Sequence[str] = (), layer_types=None,
                 min_size: int = 0, min_ndim: int = 0):
        self.owner = owner
        self.predicate = include if callable(include) else None
        self.include = None if include is None or self.predicate else _compile(owner, "include", include)
        self.exclude = _compile(owner, "exclude", () if exclude is None else exclude)
        self.layer_types = _layer_types(owner, layer_types)
        self.min_size = check_int(owner, "min_size", min_size, low=0)
        self.min_ndim = check_int(owner, "min_ndim", min_ndim, low=0)

    def check(self, names, has_layers: bool = True) -> None:
        """Raises a ValueError when an include or exclude pattern matches none of
        ``names`` (a misspelt or stale name would otherwise change nothing, silently)
        or when ``layer_types`` is set for parameters that have no layer (a Program's)."""
        if self.layer_types and not has_layers:
            raise ValueError(f"{self.owner}: layer_types needs a dygraph paddle.nn.Layer (a Program's or a state "
                             "dict's parameters have no layer); select with include/exclude")
        for key, patterns in (("include", self.include or ()), ("exclude", self.exclude)):
            unmatched = [p.pattern for p in patterns if not any(p.fullmatch(n) for n in names)]
            if unmatched:
                raise ValueError(f"{self.owner}: {key}: no parameters named {unmatched} (patterns are regular "
                                 f"expressions matching whole names); there are {list(names)}")

    def reason_left_out(self, name: str, shape, layer_type: Optional[type] = None, param=None) -> Optional[str]:
        """Why the parameter is left out, or None when it is chosen."""
        if self.predicate is not None and not self.predicate(name, param):
            return "include predicate is false"
        if self.include is not None and not any(p.fullmatch(name) for p in self.include):
            return "matches no include pattern"
        if len(shape) < self.min_ndim:
            return f"fewer than {self.min_ndim} dims (not a weight)"
        hit = next((p.pattern for p in self.exclude if p.fullmatch(name)), None)
        if hit is not None:
            return f"exclude pattern {hit}"
        if self.layer_types and not self._layer_matches(layer_type):
            return f"layer type {layer_type.__name__} not in layer_types"
        size = int(np.prod(shape, dtype=np.int64))
        if size < self.min_size:
            return f"size {size} < min_size {self.min_size}"
        return None

    def _layer_matches(self, layer_type) -> bool:
        names = {cls.__name__ for cls in layer_type.__mro__}
        return any(item in names if isinstance(item, str) else issubclass(layer_type, item)
                   for item in self.layer_types)

    def describe(self) -> str:
        include = "a predicate" if self.predicate else [p.pattern for p in self.include or ()]
        return (f"include={include}, exclude={[p.pattern for p in self.exclude]}, "
                f"layer_types={[getattr(t, '__name__', t) for t in self.layer_types]}, min_size={self.min_size}")

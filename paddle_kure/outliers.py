"""Outlier rules for kurtosis values and the kurtosis of a numpy tensor.

Pretrained transformers hold a few weight tensors whose kurtosis is orders of
magnitude above the others' (Zanetti, "Quantization Aware Training, ERNIE and Kurtosis
Regularizer": each block's FFN second FC in ERNIE);
KURE applied to them swamps the loss. Two rules find them: :func:`outliers_mean_std`
(the mean +- k std band) and the robust :func:`outliers_log_mad` (Iglewicz and
Hoaglin's modified z-score on log10 kurtosis). :mod:`paddle_kure.selection` uses
them for ``auto_exclude``; the report of ``paddle-kure analyze`` for its flags.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._validate import check_number
from .ops import kurtosis

__all__ = ["TensorKurtosis", "outliers_log_mad", "outliers_mean_std", "tensor_kurtosis"]

NORMAL_KURTOSIS, UNIFORM_KURTOSIS = 3.0, 1.8
# MAD * 1.4826 estimates the standard deviation of normal data (1 / 0.6745, Iglewicz and Hoaglin).
MAD_TO_STD = 1.4826


def _defined(values):
    """1-D float array of ``values`` and the mask of those with a defined kurtosis
    (finite and > 0: :func:`paddle_kure.kurtosis` gives 0 for a constant tensor)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of kurtosis values, got shape {values.shape}")
    return values, np.isfinite(values) & (values > 0)


def outliers_mean_std(values, num_std=3.0):
    """The rule of Paddle issue #28522: flags the values outside ``mean +- num_std * std`` of all values.

    Undefined values (NaN, Inf, or <= 0, the kurtosis of a constant tensor) take no
    part in the mean and (population) standard deviation and are never flagged.
    With ``n`` values no value can lie more than ``sqrt(n - 1)`` standard deviations
    from the mean, so with ``n <= num_std**2 + 1`` (10 for 3 std) nothing is ever flagged;
    and a few large outliers inflate the std enough to hide each other.

    Args:
        values (sequence of float): one kurtosis per tensor.
        num_std (float, optional): half-width of the accepted band in standard
            deviations, > 0. Default 3.0.

    Returns:
        numpy.ndarray: bool, True where the value is an outlier.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.apps.report import outliers_mean_std
            >>> values = [3.0, 3.2, 2.9, 3.1, 3.0, 3.3, 2.8, 3.1, 3.0, 3.2, 2.9, 500.0]
            >>> outliers_mean_std(values).nonzero()[0].tolist()
            [11]
    """
    check_number("outliers_mean_std", "num_std", num_std, low=0.0, low_open=True)
    values, defined = _defined(values)
    flags = np.zeros(values.shape, dtype=bool)
    if defined.sum() < 2:
        return flags
    mean, std = values[defined].mean(), values[defined].std()
    flags[defined] = np.abs(values[defined] - mean) > num_std * std
    return flags


def outliers_log_mad(values, k=3.5, min_ratio=2.0):
    """Robust rule: flags the values with ``log10(v) > median + k * MAD`` of the log10 values
    that are also more than ``min_ratio`` times the median value.

    ``MAD`` is the normalized median absolute deviation
    ``1.4826 * median(|log10 v - median|)``, an estimate of the standard deviation
    that outliers do not move, so ``k`` counts robust standard deviations and
    ``k = 3.5`` is Iglewicz and Hoaglin's modified z-score cutoff. Median and MAD
    ignore the outliers they look for, so several
    extreme tensors do not hide each other, and the log makes the rule scale-free:
    it asks "how many orders of magnitude above the typical tensor". Only high values
    are flagged (a low kurtosis is what KURE aims at). Undefined values (NaN, Inf,
    <= 0) take no part and are never flagged.

    ``min_ratio`` guards against a tiny MAD: with few, alike tensors (a small CNN
    whose kurtoses all lie within 2.3-2.9) a tensor 1.5 times the median is already
    many MADs above it, though no outlier in the sense that matters here. On
    all-MiniLM-L6-v2 the smallest outlier is 4 times the median, so the guard does
    not change the result there.

    Args:
        values (sequence of float): one kurtosis per tensor.
        k (float, optional): threshold in MADs above the median, > 0. Default 3.5.
        min_ratio (float, optional): a flagged value is also above ``min_ratio``
            times the median, >= 1 (1: no such condition). Default 2.0.

    Returns:
        numpy.ndarray: bool, True where the value is an outlier.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.apps.report import outliers_log_mad
            >>> outliers_log_mad([3.0, 3.5, 2.9, 4.0, 3.2, 150.0, 900.0]).nonzero()[0].tolist()
            [5, 6]
    """
    threshold = _log_mad_threshold(values, k, min_ratio)
    values, defined = _defined(values)
    flags = np.zeros(values.shape, dtype=bool)
    if threshold is not None:
        flags[defined] = values[defined] > threshold
    return flags


def _log_mad_threshold(values, k, min_ratio):
    """The kurtosis above which :func:`outliers_log_mad` flags (None with fewer than 2 defined values)."""
    check_number("outliers_log_mad", "k", k, low=0.0, low_open=True)
    check_number("outliers_log_mad", "min_ratio", min_ratio, low=1.0)
    values, defined = _defined(values)
    if defined.sum() < 2:
        return None
    logs = np.log10(values[defined])
    median = np.median(logs)
    return 10 ** (median + max(k * MAD_TO_STD * np.median(np.abs(logs - median)), math.log10(min_ratio)))


def tensor_kurtosis(array):
    """Kurtosis ``m4 / m2^2`` of all elements of a numpy array (any numeric dtype),
    computed in float64 by :func:`paddle_kure.kurtosis`; 0 for a constant tensor."""
    import paddle

    array = np.asarray(array)
    if array.size == 0:
        raise ValueError("tensor_kurtosis: empty tensor")
    with paddle.no_grad():
        return float(kurtosis(paddle.to_tensor(np.ascontiguousarray(array, dtype=np.float64))))


@dataclasses.dataclass
class TensorKurtosis:
    """One row of a :class:`KurtosisReport`.

    ``layer`` is the name up to its last dot (``encoder.layer.0.output.dense`` for
    ``encoder.layer.0.output.dense.weight``); ``times_median`` is ``kurtosis`` over the
    median kurtosis of the report's tensors.
    """

    name: str
    shape: tuple
    size: int
    layer: str
    kurtosis: float
    times_median: float = math.nan
    outlier_mean_std: bool = False
    outlier_log_mad: bool = False

    @property
    def log10_kurtosis(self):
        return math.log10(self.kurtosis) if self.kurtosis > 0 and math.isfinite(self.kurtosis) else math.nan

"""The kurtosis report of ``paddle-kure analyze``: a table, figures and a summary.

Every weight tensor's kurtosis is measured with the fused :func:`paddle_kure.kurtosis`
(in float64) and flagged under both rules of :mod:`paddle_kure.outliers`
(:func:`~paddle_kure.outliers.outliers_mean_std` and the robust
:func:`~paddle_kure.outliers.outliers_log_mad`).

Example:
    .. code-block:: python

        >>> import paddle
        >>> from paddle_kure.apps.report import KurtosisReport
        >>> model = paddle.nn.Sequential(paddle.nn.Linear(64, 32), paddle.nn.Linear(32, 8))
        >>> report = KurtosisReport.from_arrays({n: p.numpy() for n, p in model.named_parameters()})
        >>> print([row.name for row in report.rows])  # 2+ dimensional tensors by default
        ['0.weight', '1.weight']
        >>> paths = report.write("outputs/kurtosis_report")  # kurtosis.md, .csv, PNGs
"""
from __future__ import annotations

import csv
import glob
import math
import os

import numpy as np

from .._validate import check_int
from ..io import load_named_arrays
from ..outliers import (NORMAL_KURTOSIS, UNIFORM_KURTOSIS, TensorKurtosis, _log_mad_threshold, outliers_log_mad,
                        outliers_mean_std, tensor_kurtosis)
from ..runio import atomic_write

__all__ = ["KurtosisReport"]

HISTOGRAMS_PER_PAGE = 20
CSV_COLUMNS = ("name", "layer", "shape", "size", "kurtosis", "log10_kurtosis", "times_median",
               "outlier_mean_std", "outlier_log_mad")


class KurtosisReport:
    """Kurtosis of a model's weight tensors, with both outlier flags.

    Build it with :meth:`from_arrays` (a name -> array mapping, e.g. a state dict) or
    :meth:`from_model` (a ``.pdparams`` file, an inference model, ``"minilm"`` or a
    ``paddle.nn.Layer``); :meth:`write` puts the table, figures and summary in a folder.

    Args:
        rows (list[TensorKurtosis]): the tensors, in model order.
        source (str): what was analyzed, for titles.
        num_std (float): the mean +- std rule's width (:func:`outliers_mean_std`).
        mad_k (float): the log-MAD rule's threshold (:func:`outliers_log_mad`).
        mad_min_ratio (float): the log-MAD rule's ``min_ratio``.
        arrays (dict, optional): name -> numpy array of the rows' tensors, for the
            histograms of :meth:`write`.
    """

    def __init__(self, rows, source="model", num_std=3.0, mad_k=3.5, mad_min_ratio=2.0, arrays=None):
        if not rows:
            raise ValueError(f"KurtosisReport: {source} has no tensor to analyze")
        self.rows, self.source, self.num_std, self.mad_k = list(rows), source, num_std, mad_k
        self.mad_min_ratio = mad_min_ratio
        self.arrays = arrays
        values = self.values()
        median = np.median(values[np.isfinite(values) & (values > 0)]) if (values > 0).any() else math.nan
        for row, by_std, by_mad in zip(self.rows, outliers_mean_std(values, num_std),
                                       outliers_log_mad(values, mad_k, mad_min_ratio)):
            row.times_median = row.kurtosis / median if median > 0 else math.nan
            row.outlier_mean_std, row.outlier_log_mad = bool(by_std), bool(by_mad)

    @classmethod
    def from_arrays(cls, named_arrays, all_tensors=False, source="model", num_std=3.0, mad_k=3.5,
                    mad_min_ratio=2.0):
        """Report on ``named_arrays`` ({name: numpy array or paddle Tensor}, in model order):
        tensors with 2+ dimensions, or every non-empty tensor with ``all_tensors``."""
        rows, arrays = [], {}
        for name, array in named_arrays.items():
            array = array.numpy() if hasattr(array, "numpy") else np.asarray(array)
            if array.size == 0 or (array.ndim < 2 and not all_tensors):
                continue
            arrays[name] = array
            layer = name.rsplit(".", 1)[0] if "." in name else name
            rows.append(TensorKurtosis(name, tuple(array.shape), int(array.size), layer, tensor_kurtosis(array)))
        return cls(rows, source=source, num_std=num_std, mad_k=mad_k, mad_min_ratio=mad_min_ratio, arrays=arrays)

    @classmethod
    def from_model(cls, model, all_tensors=False, num_std=3.0, mad_k=3.5, mad_min_ratio=2.0):
        """Report on ``model``: a ``paddle.nn.Layer`` (its ``named_parameters()``) or
        anything :func:`load_named_arrays` reads."""
        import paddle

        if isinstance(model, paddle.nn.Layer):
            arrays, source = {n: p.numpy() for n, p in model.named_parameters()}, type(model).__name__
        else:
            arrays, source = load_named_arrays(model)
        return cls.from_arrays(arrays, all_tensors=all_tensors, source=source, num_std=num_std, mad_k=mad_k,
                               mad_min_ratio=mad_min_ratio)

    def values(self):
        """Kurtosis per row as a float64 array."""
        return np.array([row.kurtosis for row in self.rows], dtype=np.float64)

    # ---------------------------------------------------------------- text
    def summary(self):
        """One paragraph: typical kurtosis, what each rule flags, by how much it stands out,
        and how much of a naive KURE loss the flagged tensors would make."""
        values = self.values()
        defined = np.isfinite(values) & (values > 0)
        n, params = len(self.rows), sum(row.size for row in self.rows)
        if not defined.any():
            return f"{self.source}: {n} tensors, none with a defined kurtosis (all constant or non-finite)."
        median = np.median(values[defined])
        q1, q3 = np.percentile(values[defined], [25, 75])
        mean, std = values[defined].mean(), values[defined].std()
        text = [f"{self.source}: {n} weight tensors ({params:,} values); kurtosis median {median:.3g} "
                f"(quartiles {q1:.3g}-{q3:.3g}; normal 3, uniform 1.8), max {values[defined].max():.4g}."]
        threshold = _log_mad_threshold(values, self.mad_k, self.mad_min_ratio)
        for label, key in (
                (f"The robust log-MAD rule (log10 K > median + {self.mad_k:g} MAD and K > "
                 f"{self.mad_min_ratio:g} x median, "
                 + ("needs 2 or more tensors)" if threshold is None else f"i.e. K > {threshold:.3g})"),
                 "outlier_log_mad"),
                (f"The mean+-std rule of Paddle issue #28522 (K outside {mean:.3g} +- {self.num_std:g} * {std:.3g})",
                 "outlier_mean_std")):
            flagged = sorted((row for row in self.rows if getattr(row, key)), key=lambda r: -r.kurtosis)
            if not flagged:
                text.append(f"{label} flags nothing.")
                continue
            listed = ", ".join(f"{row.name} ({row.kurtosis:.4g}, {row.times_median:.0f}x)" for row in flagged[:8])
            more = f" and {len(flagged) - 8} more" if len(flagged) > 8 else ""
            text.append(f"{label} flags {len(flagged)} (kurtosis, times the median): {listed}{more}.")
        excess = (values[defined] - UNIFORM_KURTOSIS) ** 2
        flagged = np.array([row.outlier_log_mad or row.outlier_mean_std for row in self.rows])[defined]
        if flagged.any():
            text.append(f"A naive KURE loss, sum of (K - 1.8)^2, is {excess.sum():.3g} on these tensors, "
                        f"{100 * excess[flagged].sum() / excess.sum():.4g}% of it from the flagged ones; "
                        f"without them {excess[~flagged].sum():.3g}.")
        else:
            text.append(f"A naive KURE loss, sum of (K - 1.8)^2, is {excess.sum():.3g} on these tensors.")
        return " ".join(text)

    def markdown_table(self):
        """The table as markdown, one row per tensor in model order."""
        lines = ["| # | tensor | shape | size | kurtosis | log10 K | x median | mean+-std | log-MAD |",
                 "|---:|---|---|---:|---:|---:|---:|:---:|:---:|"]
        for i, row in enumerate(self.rows):
            lines.append(f"| {i} | `{row.name}` | {list(row.shape)} | {row.size:,} | {row.kurtosis:.4g} | "
                         f"{row.log10_kurtosis:.2f} | {row.times_median:.3g} | "
                         f"{'**yes**' if row.outlier_mean_std else ''} | {'**yes**' if row.outlier_log_mad else ''} |")
        return "\n".join(lines) + "\n"

    def write_csv(self, path):
        with atomic_write(path, newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            for row in self.rows:
                writer.writerow([row.name, row.layer, "x".join(map(str, row.shape)), row.size,
                                 f"{row.kurtosis:.8g}", f"{row.log10_kurtosis:.6g}", f"{row.times_median:.6g}",
                                 int(row.outlier_mean_std), int(row.outlier_log_mad)])

    # ---------------------------------------------------------------- figures
    def plot_bars(self, path):
        """Log10 kurtosis per tensor in model order, coloured by which rule flags it."""
        plt = _pyplot()
        logs = np.array([row.log10_kurtosis for row in self.rows])
        colors = ["#7b3294" if r.outlier_mean_std and r.outlier_log_mad else "#d7191c" if r.outlier_log_mad
                  else "#fdae61" if r.outlier_mean_std else "#2c7bb6" for r in self.rows]
        n = len(self.rows)
        fig, ax = plt.subplots(figsize=(min(max(8.0, 0.2 * n + 2), 24), 4.8))
        ax.bar(np.arange(n), np.nan_to_num(logs, nan=0.0), color=colors, width=0.8)
        ax.axhline(math.log10(NORMAL_KURTOSIS), color="black", linestyle=":", linewidth=1, label="normal (K=3)")
        ax.axhline(math.log10(UNIFORM_KURTOSIS), color="grey", linestyle=":", linewidth=1,
                   label="uniform, KURE target (K=1.8)")
        threshold = _log_mad_threshold(self.values(), self.mad_k, self.mad_min_ratio)
        if threshold is not None:
            ax.axhline(math.log10(threshold), color="#d7191c", linestyle="--", linewidth=1,
                       label=f"log-MAD threshold, k={self.mad_k:g}")
        values = self.values()
        defined = np.isfinite(values) & (values > 0)
        if defined.sum() >= 2:
            upper = values[defined].mean() + self.num_std * values[defined].std()
            ax.axhline(math.log10(upper), color="#fdae61", linestyle="--", linewidth=1,
                       label=f"mean + {self.num_std:g} std")
        for color, label in (("#2c7bb6", "not flagged"), ("#d7191c", "log-MAD only"),
                             ("#fdae61", "mean+-std only"), ("#7b3294", "both rules")):
            ax.bar([0], [0], color=color, label=label)
        if n <= 120:
            ax.set_xticks(np.arange(n), [_short(row.name) for row in self.rows], rotation=90,
                          fontsize=max(4, min(8, 600 // max(n, 1))))
        else:
            ax.set_xlabel("tensor index (model order)")
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylabel("log10 kurtosis")
        ax.set_title(f"Kurtosis per weight tensor: {self.source}")
        ax.legend(fontsize=7, ncol=2, loc="upper right")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    def plot_histograms(self, path_prefix, max_tensors=80):
        """Value histograms (log counts), 20 tensors per PNG page ``{path_prefix}_01.png``, ...,
        with the normal density of the same mean and std dashed. With more than
        ``max_tensors`` tensors, the flagged ones are drawn first. Returns the paths."""
        plt = _pyplot()
        from matplotlib import ticker

        if self.arrays is None:
            raise ValueError("KurtosisReport: the histograms need the tensors (arrays=...)")
        flagged = {i for i, row in enumerate(self.rows) if row.outlier_log_mad or row.outlier_mean_std}
        drawn = set(sorted(range(len(self.rows)), key=lambda i: i not in flagged)[:max_tensors])  # flagged first
        rows = [(row, i in flagged) for i, row in enumerate(self.rows) if i in drawn]
        paths = []
        for page, start in enumerate(range(0, len(rows), HISTOGRAMS_PER_PAGE), 1):
            page_rows = rows[start:start + HISTOGRAMS_PER_PAGE]
            cols = min(5, len(page_rows))
            nrows = math.ceil(len(page_rows) / cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(3.0 * cols, 2.3 * nrows), squeeze=False)
            for ax, (row, is_flagged) in zip(axes.flat, page_rows):
                x = np.asarray(self.arrays[row.name], dtype=np.float64).ravel()
                counts, edges = np.histogram(x, bins=80)
                ax.stairs(counts, edges, fill=True, color="#d7191c" if is_flagged else "#2c7bb6")
                ax.set_yscale("log")
                ax.yaxis.set_minor_locator(ticker.NullLocator())  # log minor ticks make drawing slow
                std = x.std()
                if std > 0:
                    centers = (edges[:-1] + edges[1:]) / 2
                    expected = x.size * (edges[1] - edges[0]) * np.exp(-0.5 * ((centers - x.mean()) / std) ** 2) \
                        / (std * math.sqrt(2 * math.pi))
                    ax.plot(centers, expected, color="black", linestyle="--", linewidth=0.8)
                    ax.set_ylim(0.5, counts.max() * 2)
                ax.set_title(f"{_short(row.name, 38)}\nK={row.kurtosis:.4g}", fontsize=7)
                ax.tick_params(labelsize=6)
            for ax in list(axes.flat)[len(page_rows):]:
                ax.axis("off")
            fig.suptitle(f"{self.source}: weight histograms, log counts (dashed: normal, same mean and std)",
                         fontsize=9)
            fig.subplots_adjust(left=0.05, right=0.98, bottom=0.6 / (2.3 * nrows), top=1 - 0.75 / (2.3 * nrows),
                                wspace=0.3, hspace=0.75)
            path = f"{path_prefix}_{page:02d}.png"
            fig.savefig(path, dpi=72)
            plt.close(fig)
            paths.append(path)
        return paths

    def write(self, output_dir, max_histograms=80):
        """Writes ``kurtosis.md`` (summary and table), ``kurtosis.csv``,
        ``kurtosis_log10.png`` and ``histograms_NN.png`` to ``output_dir``.

        Args:
            output_dir (str): created if needed.
            max_histograms (int, optional): tensors drawn at most (0: none; any other
                value needs the report's ``arrays``). Default 80.

        Returns:
            list[str]: the written paths.
        """
        check_int("KurtosisReport.write", "max_histograms", max_histograms, low=0)
        os.makedirs(output_dir, exist_ok=True)
        for old in glob.glob(os.path.join(output_dir, "histograms_*.png")):
            os.remove(old)  # pages of an earlier, larger report
        md, csv_path = os.path.join(output_dir, "kurtosis.md"), os.path.join(output_dir, "kurtosis.csv")
        bars = os.path.join(output_dir, "kurtosis_log10.png")
        self.plot_bars(bars)
        pages = self.plot_histograms(os.path.join(output_dir, "histograms"), max_histograms) if max_histograms else []
        self.write_csv(csv_path)
        summary = self.summary()  # before the file opens: a failure must not leave it empty
        with atomic_write(md) as f:
            f.write(f"# Weight kurtosis: {self.source}\n\n{summary}\n\n"
                    f"Kurtosis K = m4 / m2^2 over all elements of each tensor (population moments, float64, "
                    f"`paddle_kure.kurtosis`). Flags: *mean+-std* = outside mean +- {self.num_std:g} std of the "
                    f"tensors' K (Paddle issue #28522); *log-MAD* = log10 K > median + {self.mad_k:g} MAD of log10 K "
                    f"(MAD = 1.4826 * median absolute deviation, a robust std) and K > "
                    f"{self.mad_min_ratio:g} x median K. "
                    f"*x median* = K / median K.\n\n"
                    f"![log10 kurtosis per tensor](kurtosis_log10.png)\n\n{self.markdown_table()}\n"
                    + "".join(f"![histograms]({os.path.basename(p)})\n" for p in pages))
        return [md, csv_path, bars, *pages]


def _short(name, width=None):
    name = name[:-len(".weight")] if name.endswith(".weight") else name
    return name if width is None or len(name) <= width else "..." + name[-(width - 3):]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

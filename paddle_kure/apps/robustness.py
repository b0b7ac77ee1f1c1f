"""How a trained model's accuracy depends on the weight quantization step (``paddle-kure robustness``).

The model is a ``.pdparams`` state dict of the default ``SmallCNN``, as ``paddle-kure run``
writes it: ``OUTPUT/fp32.pdparams``, or any stage's ``OUTPUT/checkpoints/<stage>/model.pdparams``
(a QAT checkpoint is read as its latent float weights; its quantizer state is ignored).
Models saved with ``paddle.jit.save`` (``.pdmodel``/``.json`` + ``.pdiparams``) are not
accepted: the sweep needs the layers (Conv2D or Linear) to know each weight's
output-channel axis, which a loaded program does not expose.

Only the weights of every Conv2D and Linear are quantized (symmetric, uniform, by
:mod:`paddle_kure.robustness`); activations stay in float. Accuracies are measured on
the Fashion-MNIST test split; the 'accuracy' scale method chooses its scales on a
calibration slice of the validation split, which ``paddle-kure run`` held out of
training when ``--split-seed`` is the run's ``Global.seed`` and ``--val-size`` at most
its ``Global.val_size``.

Writes ``PREFIX.md`` (tables), ``PREFIX.json`` (everything), ``PREFIX.csv`` (one row
per evaluation) and ``PREFIX.png`` (accuracy against the ratio and against the noise).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os

from ..io import INFERENCE_SUFFIXES
from ..runio import atomic_write

SCALE_METHOD_TITLES = {"abs_max": "abs-max", "mse": "MSE", "accuracy": "accuracy"}


def load_model(path: str):
    """The ``SmallCNN`` whose state dict ``path`` holds, in eval mode.

    A QAT checkpoint's keys (``conv1._layer.weight``, quantizer scales) are mapped
    to the float model's (``conv1.weight``); the quantizer state is dropped.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an inference model, a folder, or a file that is not a SmallCNN state dict.
    """
    import paddle

    from paddle_kure.models import SmallCNN

    if path.endswith(INFERENCE_SUFFIXES):
        raise ValueError(f"{path} is an inference model (paddle.jit.save); the robustness sweep needs the "
                         f"trainable layers: pass the .pdparams state dict (paddle-kure run writes "
                         f"OUTPUT/fp32.pdparams and OUTPUT/checkpoints/<stage>/model.pdparams)")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; pass the .pdparams state dict in it (paddle-kure run writes "
                         f"OUTPUT/fp32.pdparams and OUTPUT/checkpoints/<stage>/model.pdparams)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file not found: {path} (paddle-kure run writes OUTPUT/fp32.pdparams "
                                f"and OUTPUT/checkpoints/<stage>/model.pdparams)")
    try:
        state = paddle.load(path)
    except Exception as err:  # paddle.load raises several types for a foreign file
        raise ValueError(f"{path} is not a Paddle state dict: {err}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {key.replace("._layer.", "."): value for key, value in state.items()
             if "._fake_quant_" not in key and "._ma_output_scale." not in key}
    model = SmallCNN()
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{path} is not a state dict of the default SmallCNN: missing {missing}, "
                         f"unexpected {unexpected}")
    wrong = [f"{k}: {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
             if list(state[k].shape) != list(v.shape)]
    if wrong:
        raise ValueError(f"{path}: shapes differ from the default SmallCNN ({'; '.join(wrong)})")
    model.set_state_dict(state)
    model.eval()
    return model


def sweep_model(model, data, config, calib_size: int = 1000, batch_size: int = 1000, progress: bool = True,
                desc: str = "sweep") -> dict:
    """Runs :func:`paddle_kure.robustness.sweep` on ``model`` with accuracy on
    ``data.test_*`` and the 'accuracy' scales chosen on ``data.val_*[:calib_size]``.

    Returns ``{"fp32_test_acc", "weight_kurtosis", "records"}`` (records as dicts).
    """
    from tqdm import tqdm

    from paddle_kure import kurtosis
    from paddle_kure.robustness import sweep, weight_parameters
    from paddle_kure.train import evaluate

    if not 0 < calib_size <= len(data.val_labels):
        raise ValueError(f"calib_size must be in [1, {len(data.val_labels)}] (the validation images), "
                         f"got {calib_size}")
    calib_images, calib_labels = data.val_images[:calib_size], data.val_labels[:calib_size]
    records = sweep(model, lambda m: evaluate(m, data.test_images, data.test_labels, batch_size), config,
                    progress=lambda plan: tqdm(plan, desc=desc, disable=not progress, leave=False),
                    calibrate=lambda m: evaluate(m, calib_images, calib_labels, batch_size))
    return {
        "fp32_test_acc": evaluate(model, data.test_images, data.test_labels, batch_size),
        "weight_kurtosis": {name: float(kurtosis(w)) for name, _, w in weight_parameters(model)},
        "records": [dataclasses.asdict(r) for r in records],
    }


def _granularity(per_channel: bool) -> str:
    return "per-channel" if per_channel else "per-tensor"


def _groups(results):
    """(model label, bits, per_channel, that model's records) in sweep order."""
    for label, result in results.items():
        keys = dict.fromkeys((r["bits"], r["per_channel"]) for r in result["records"])
        for bits, per_channel in keys:
            yield label, bits, per_channel, [r for r in result["records"]
                                             if r["bits"] == bits and r["per_channel"] == per_channel]


def _ratio_accuracy(records, method, ratio=1.0):
    return next((r["accuracy"] for r in records if r["scale_method"] == method and r["perturbation"] == "ratio"
                 and r["value"] == ratio), None)


def ratio_table(results) -> str:
    """Markdown: test accuracy (%) at each fixed ratio, per model, bits, granularity and scale method."""
    ratios = sorted({r["value"] for res in results.values() for r in res["records"] if r["perturbation"] == "ratio"})
    lines = ["| model | bits | granularity | scale | median scale / abs-max | "
             + " | ".join(f"x{v:g}" for v in ratios) + " |", "|---|---:|---|---|---:|" + "---:|" * len(ratios)]
    for label, bits, per_channel, records in _groups(results):
        for method in dict.fromkeys(r["scale_method"] for r in records if r["perturbation"] == "ratio"):
            rows = {r["value"]: r for r in records if r["scale_method"] == method and r["perturbation"] == "ratio"}
            cells = [f"{100 * rows[v]['accuracy']:.2f}" if v in rows else "-" for v in ratios]
            ratio = next(iter(rows.values()))["scale_ratio"]
            lines.append(f"| {label} | {bits} | {_granularity(per_channel)} | {SCALE_METHOD_TITLES[method]} | "
                         f"{ratio:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def scale_table(results) -> str:
    """Markdown: test accuracy (%) of each unperturbed scale choice and its gain over abs-max (points)."""
    methods = list(dict.fromkeys(r["scale_method"] for res in results.values() for r in res["records"]))
    lines = ["| model | FP32 | bits | granularity | " + " | ".join(SCALE_METHOD_TITLES[m] for m in methods) + " |",
             "|---|---:|---:|---|" + "---:|" * len(methods)]
    for label, bits, per_channel, records in _groups(results):
        base = _ratio_accuracy(records, "abs_max")
        cells = []
        for method in methods:
            acc = _ratio_accuracy(records, method)
            if acc is None:
                cells.append("-")
            elif method == "abs_max" or base is None:
                cells.append(f"{100 * acc:.2f}")
            else:
                cells.append(f"{100 * acc:.2f} ({100 * (acc - base):+.2f})")
        lines.append(f"| {label} | {100 * results[label]['fp32_test_acc']:.2f} | {bits} | "
                     f"{_granularity(per_channel)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def noise_summary(records):
    """{std: (accuracies over seeds)} of the noise records, and the noise-free abs-max accuracy."""
    import numpy as np

    stds = dict.fromkeys(r["value"] for r in records if r["perturbation"] == "noise")
    return ({std: np.array([r["accuracy"] for r in records if r["perturbation"] == "noise" and r["value"] == std])
             for std in stds}, _ratio_accuracy(records, "abs_max"))


def noise_table(results) -> str:
    """Markdown: accuracy (%) with N(1, std) noise on the abs-max scales over seeds,
    and how many draws beat the noise-free abs-max scales."""
    lines = ["| model | bits | granularity | noise std | mean +- std | min | max | draws above abs-max |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for label, bits, per_channel, records in _groups(results):
        by_std, base = noise_summary(records)
        for std, accs in by_std.items():
            above = "-" if base is None else f"{int((accs > base).sum())}/{len(accs)}"
            lines.append(f"| {label} | {bits} | {_granularity(per_channel)} | {std:g} | {100 * accs.mean():.2f} +- "
                         f"{100 * accs.std():.2f} | {100 * accs.min():.2f} | {100 * accs.max():.2f} | {above} |")
    return "\n".join(lines) + "\n"


def plot(results, path: str, title: str = "") -> None:
    """One column per bit width; per granularity a row of accuracy against the ratio
    on the abs-max scale (vertical lines: where the other scale choices fall, as the
    median of their scale / abs-max) and a row of accuracy against the noise std
    (mean over seeds, error bars one std, band min to max). Colours are models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    keys = list(dict.fromkeys((bits, pc) for _, bits, pc, _ in _groups(results)))
    bits_list, granularities = list(dict.fromkeys(b for b, _ in keys)), list(dict.fromkeys(p for _, p in keys))
    has_noise = any(r["perturbation"] == "noise" for res in results.values() for r in res["records"])
    per_gran = 2 if has_noise else 1
    rows = len(granularities) * per_gran
    fig, axes = plt.subplots(rows, len(bits_list), figsize=(4 * len(bits_list), 2.9 * rows + 0.9), squeeze=False)
    colors = {label: f"C{i}" for i, label in enumerate(results)}
    styles = {"mse": "--", "accuracy": "-."}
    for label, bits, per_channel, records in _groups(results):
        color = colors[label]
        row, col = granularities.index(per_channel) * per_gran, bits_list.index(bits)
        ax = axes[row, col]
        points = sorted((r["value"], 100 * r["accuracy"]) for r in records
                        if r["scale_method"] == "abs_max" and r["perturbation"] == "ratio")
        if points:
            ax.plot(*zip(*points), "o-", color=color, markersize=3)
        for method, style in styles.items():
            ratio = next((r["scale_ratio"] for r in records if r["scale_method"] == method), None)
            if ratio is not None:
                ax.axvline(ratio, color=color, linestyle=style, linewidth=1)
        ax.set_title(f"W{bits} {_granularity(per_channel)}: abs-max step x ratio", fontsize=9)
        ax.set_xlabel("scale / abs-max scale", fontsize=8)
        if has_noise:
            by_std, base = noise_summary(records)
            nax, stds = axes[row + 1, col], list(by_std)
            nax.errorbar(stds, [100 * by_std[s].mean() for s in stds], yerr=[100 * by_std[s].std() for s in stds],
                         fmt="o-", color=color, markersize=3, capsize=3)
            nax.fill_between(stds, [100 * by_std[s].min() for s in stds], [100 * by_std[s].max() for s in stds],
                             color=color, alpha=0.2)
            if base is not None:
                nax.axhline(100 * base, color=color, linestyle=":", linewidth=1)
            nax.set_title(f"W{bits} {_granularity(per_channel)}: abs-max step x N(1, std)", fontsize=9)
            nax.set_xlabel("noise std", fontsize=8)
    for ax in axes.flat:
        ax.set_ylabel("test accuracy (%)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=label) for label, c in colors.items()]
    handles += [Line2D([], [], color="black", linestyle=style, label=f"{SCALE_METHOD_TITLES[m]} scale (median ratio)")
                for m, style in styles.items()]
    if has_noise:
        handles += [Line2D([], [], color="black", linestyle=":", label="noise-free abs-max"),
                    Line2D([], [], color="black", marker="o", markersize=3,
                           label="noise: mean over seeds, bars +-1 std, band min-max")]
    height = fig.get_figheight()
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / height),
               ncol=min(len(handles), 4), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / height, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.7 / height))
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_outputs(results, setup: dict, prefix: str, title: str, extra_markdown: str = "") -> list:
    """``PREFIX.{json,csv,md,png}``; returns their paths. ``results`` maps a model
    label to :func:`sweep_model`'s dict; ``extra_markdown`` follows the tables."""
    directory = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(directory, exist_ok=True)
    paths = [prefix + ext for ext in (".md", ".json", ".csv", ".png")]
    with atomic_write(paths[1]) as f:
        json.dump({"setup": setup, "models": results}, f, indent=1)
    with atomic_write(paths[2], newline="") as f:
        writer = None
        for label, result in results.items():
            for record in result["records"]:
                if writer is None:
                    writer = csv.DictWriter(f, ["model", *record])
                    writer.writeheader()
                writer.writerow({"model": label, **record})
    with atomic_write(paths[0]) as f:
        f.write(f"# {title}\n\n{extra_markdown}"
                "## Unperturbed scale choices: test accuracy (%), gain over abs-max in points\n\n"
                + scale_table(results) +
                "\n## Fixed ratios: test accuracy (%) with every scale multiplied by the ratio\n\n"
                + ratio_table(results) +
                "\n## Noise: every abs-max scale multiplied by its own N(1, std) draw, over seeds\n\n"
                + noise_table(results) +
                f"\nFigure: `{os.path.basename(paths[3])}`; every evaluation: `{os.path.basename(paths[2])}`, "
                f"`{os.path.basename(paths[1])}`.\n")
    plot(results, paths[3], title)
    return paths

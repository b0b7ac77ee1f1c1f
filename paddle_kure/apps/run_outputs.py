"""What a ``paddle-kure run`` writes at the end: the results table, results.json and
results.md, and the accuracy and kurtosis plots."""
from __future__ import annotations

import json
import os

__all__ = ["METHOD_TITLES", "accuracy_rows", "precision_name", "results_table", "write_outputs"]

METHOD_TITLES = {
    "fp32": "FP32",
    "fp32_more": "FP32, +QAT epochs",
    "fp32_kure": "FP32+KURE",
    "ptq": "PTQ of FP32",
    "ptq_kure": "PTQ of FP32+KURE",
    "qat": "QAT",
    "qat_pact": "QAT+PACT",
    "qat_kure": "QAT+KURE",
    "qat_kure_pact": "QAT+KURE+PACT",
}

def precision_name(weight_bits: int, activation_bits: int) -> str:
    return f"W{weight_bits}A{activation_bits}"


def accuracy_rows(records, precisions):
    """(method, cells) per method in run order: the exported model's "test (validation)"
    accuracy in % per precision; FP32 rows fill every column, "-" marks no result."""
    by_key = {(r["method"], r["precision"]): r for r in records}
    for method in dict.fromkeys(r["method"] for r in records):
        cells = []
        for precision in precisions:
            r = by_key.get((method, "FP32")) or by_key.get((method, precision))
            cells.append(f"{100 * r['test_acc']:.2f} ({100 * r['val_acc']:.2f})" if r else "-")
        yield method, cells


def results_table(records, precisions) -> str:
    """Markdown: one row per method, test (validation) accuracy per precision, from the exported models."""
    lines = ["| method | " + " | ".join(precisions) + " |", "|" + "---|" * (len(precisions) + 1)]
    lines += [f"| {METHOD_TITLES[method]} | " + " | ".join(cells) + " |"
              for method, cells in accuracy_rows(records, precisions)]
    return "\n".join(lines) + "\n"


def write_outputs(records, config, output_dir):
    """results.json, results.md, accuracy.png and kurtosis.png in ``output_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from paddle_kure.runio import atomic_write

    precisions = [precision_name(w, a) for w, a in config.precisions()]
    with atomic_write(os.path.join(output_dir, "results.json")) as f:
        json.dump({"config": config.to_dict(), "results": records}, f, indent=1)
    diverged = [f"- {r['stage']}: diverged at epoch {r['epoch']}, step {r['step']} ({r['cause']} is not finite)\n"
                for r in records if r.get("status") == "diverged"]
    records = [r for r in records if r.get("status") != "diverged"]
    table = results_table(records, precisions)
    pruned = [f"\n## Sparsity of {r['stage']} (Prune)\n\n{r['sparsity_table']}\n"
              for r in records if "sparsity_table" in r]
    with atomic_write(os.path.join(output_dir, "results.md")) as f:
        f.write("# paddle-kure run: Fashion-MNIST, exported models in paddle.inference\n\n"
                "Top-1 accuracy in %: test split (validation split in parentheses). PTQ calibration: "
                f"{config.QuantPost.algo}, {config.QuantPost.batch_nums} batches of {config.QuantPost.batch_size} "
                "training images.\n\n" + table + "".join(pruned)
                + ("\n## Diverged (no result)\n\n" + "".join(diverged) if diverged else ""))
    if not {"fp32", "fp32_more"} <= {r["method"] for r in records}:
        return table  # the figures compare against both FP32 references

    methods = [m for m in dict.fromkeys(r["method"] for r in records) if not m.startswith("fp32")]
    by_key = {(r["method"], r["precision"]): r for r in records}
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        values = [100 * by_key[(method, p)]["test_acc"] if (method, p) in by_key else np.nan for p in precisions]
        ax.bar(np.arange(len(precisions)) + i * width, values, width, label=METHOD_TITLES[method])
    for method, style in (("fp32", "--"), ("fp32_more", ":"), ("fp32_kure", "-.")):
        if (method, "FP32") not in by_key:
            continue  # fp32_kure diverged
        fp32 = 100 * by_key[(method, "FP32")]["test_acc"]
        ax.axhline(fp32, color="black", linestyle=style, label=f"{METHOD_TITLES[method]} {fp32:.2f}")
    ax.set_xticks(np.arange(len(precisions)) + 0.4 - width / 2, precisions)
    ax.set_ylabel("test accuracy (%)")
    low = min(100 * r["test_acc"] for r in records if "test_acc" in r)
    ax.set_ylim(max(0, low - 5), 100)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, not over them
    ax.set_title("Exported models in paddle.inference")
    fig.tight_layout()
    with atomic_write(os.path.join(output_dir, "accuracy.png"), "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    shown = [r for r in records if "weight_kurtosis" in r
             and (r["method"] in ("fp32", "fp32_kure") or r["precision"] == precisions[-1])]
    names = list(shown[0]["weight_kurtosis"])
    width = 0.8 / len(shown)
    for i, r in enumerate(shown):
        values = [r["weight_kurtosis"].get(n, np.nan) for n in names]
        label = METHOD_TITLES[r["method"]] + ("" if r["precision"] == "FP32" else f" {r['precision']}")
        ax.bar(np.arange(len(names)) + i * width, values, width, label=label)
    ax.axhline(config.Kurtosis.target, color="black", linestyle=":", label=f"target {config.Kurtosis.target}")
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, fontsize=8)
    ax.set_ylabel("weight kurtosis")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(os.path.join(output_dir, "kurtosis.png"), "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return table

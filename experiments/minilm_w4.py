"""Which weight tensors of all-MiniLM-L6-v2 does W4 quantization hurt, and is it their kurtosis?

Each of the 39 weight tensors of 2+ dimensions (3 embedding tables, 6 blocks x 6
linear weights) is quantized alone to 4 bits, symmetric, abs-max step
(``paddle_kure.robustness.quantized_weights``), per tensor and per output channel
(per row for an embedding table); every other weight stays FP32. The damage to the
model's output is measured on a fixed set of Rotten Tomatoes texts (the first
``--eval-size`` of the test split, split by movie):

- 1 - cosine between the FP32 and the quantized sentence embeddings (mean over texts);
- the accuracy drop of a frozen-encoder linear probe: a logistic regression trained
  on FP32 embeddings of ``--train-size`` training texts (C chosen on ``--val-size``
  validation texts), then applied to the quantized embeddings.

The damage is plotted against the tensor's kurtosis (K = m4 / m2^2 over the whole
tensor). All 36 linear weights quantized together (W4 weight-only PTQ of the
encoder) are measured the same way.

Only the blocks from the quantized tensor's block onward are recomputed: the inputs
of every block are cached once for the fixed texts.

Writes ``<out>/minilm_w4.md``, ``.json`` and ``.png``; notes by hand go in
``<out>/minilm_w4_notes.md``, which this script never writes.

    nice -n 10 python experiments/minilm_w4.py
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from paddle_kure.outliers import tensor_kurtosis
from paddle_kure.data.text import load_rotten_tomatoes
from paddle_kure.models import encode, load_minilm
from paddle_kure.models.bert import mean_pool
from paddle_kure.robustness import quantized_weights

BITS = 4
FFN2 = re.compile(r"encoder\.layer\.\d+\.output\.dense\.weight")


class CachedEncoder:
    """Sentence embeddings of fixed texts, recomputed from a chosen block onward.

    The texts are batched in order of length (less padding); the input of every
    block is cached from the FP32 model, so a change in block ``b`` costs only the
    blocks ``b`` and later."""

    def __init__(self, model, tokenizer, texts, batch_size=64):
        self.model = model
        token_counts = tokenizer(texts)["attention_mask"].sum(1)
        self.order = np.argsort(token_counts, kind="stable")
        self.batches = []
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer([texts[i] for i in self.order[start:start + batch_size]])
            self.batches.append({k: paddle.to_tensor(v) for k, v in encoded.items()})
        # cache[batch][b]: the input of block b
        self.cache = []
        with paddle.no_grad():
            for batch in self.batches:
                inputs = [self._embed_tokens(batch)]
                for block in model.encoder.layer[:-1]:
                    inputs.append(block(inputs[-1], self._key_bias(batch)))
                self.cache.append(inputs)

    def _embed_tokens(self, batch):
        return self.model.embeddings(batch["input_ids"], batch["token_type_ids"])

    @staticmethod
    def _key_bias(batch):
        return ((1.0 - batch["attention_mask"].astype("float32")) * -1e9).unsqueeze([1, 2])

    @paddle.no_grad()
    def embed(self, start_block=0, recompute_embeddings=False):
        """Normalized embeddings [texts, hidden] in the texts' order, running the
        blocks from ``start_block`` (and the embedding layer when asked)."""
        out = []
        for batch, inputs in zip(self.batches, self.cache):
            x = self._embed_tokens(batch) if recompute_embeddings else inputs[start_block]
            for block in self.model.encoder.layer[start_block:]:
                x = block(x, self._key_bias(batch))
            out.append(F.normalize(mean_pool(x, batch["attention_mask"]), axis=-1).numpy())
        embeddings = np.empty_like(np.concatenate(out))
        embeddings[self.order] = np.concatenate(out)
        return embeddings


def weight_tensors(model):
    """(name, owning layer, start block) of every 2+ dim weight, in parameter order."""
    rows = []
    for name, layer in model.named_sublayers():
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            match = re.match(r"encoder\.layer\.(\d+)\.", name)
            rows.append((f"{name}.weight", layer, int(match.group(1)) if match else None))
    return rows


def fit_probe(train_x, train_y, val_x, val_y):
    """Logistic regression on embeddings, C chosen on the validation texts."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in (0.1, 1.0, 10.0, 100.0):
        probe = LogisticRegression(C=c, max_iter=2000).fit(train_x, train_y)
        score = probe.score(val_x, val_y)
        if best is None or score > best[0]:
            best = (score, c, probe)
    return best


def damage(reference, embeddings, probe, labels, fp32_acc):
    cos = (reference * embeddings).sum(-1)
    acc = float(probe.score(embeddings, labels))
    return {"one_minus_cos": float(1 - cos.mean()), "min_cos": float(cos.min()), "probe_acc": acc,
            "probe_drop": fp32_acc - acc}


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "one_minus_cos", "1 - cosine to FP32 embedding (mean)"),
                           (axes[1], "probe_drop", "linear-probe accuracy drop (points)")):
        for gran, marker in (("per_tensor", "o"), ("per_channel", "^")):
            k = np.array([r["kurtosis"] for r in rows])
            y = np.array([r[gran][key] for r in rows]) * (100 if key == "probe_drop" else 1)
            ffn2 = np.array([bool(FFN2.fullmatch(r["name"])) for r in rows])
            ax.scatter(k[~ffn2], y[~ffn2], marker=marker, label=f"{gran.replace('_', '-')}", alpha=0.7)
            ax.scatter(k[ffn2], y[ffn2], marker=marker, facecolors="none", edgecolors="red", s=80,
                       label=f"{gran.replace('_', '-')}, FFN second FC" if gran == "per_tensor" else None)
        ax.set_xscale("log")
        if key == "one_minus_cos":
            ax.set_yscale("log")
        ax.set_xlabel("tensor kurtosis (log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"all-MiniLM-L6-v2: one tensor at W{BITS} (abs-max), the rest FP32")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(result) -> str:
    from scipy import stats

    rows, s = result["tensors"], result["setup"]
    lines = [
        "# all-MiniLM-L6-v2: W4 damage per weight tensor against its kurtosis", "",
        "Generated by `experiments/minilm_w4.py` (rewritten on every run; hand-written notes belong in "
        "`minilm_w4_notes.md`).", "",
        f"`{s['command']}`, paddle {s['paddle']}, shared 2-core CPU (heavily loaded), {s['minutes']:.1f} min.", "",
        f"- Texts: Rotten Tomatoes split by movie (seed 0). Damage measured on the first {s['eval_size']} test "
        f"texts; linear probe (logistic regression on FP32 sentence embeddings) trained on the first "
        f"{s['train_size']} training texts, C = {s['probe_c']} chosen on {s['val_size']} validation texts.",
        f"- FP32 probe accuracy on the eval texts: {100 * s['fp32_probe_acc']:.2f}%.",
        f"- Quantization: one tensor at a time, {BITS} bits, symmetric, abs-max step, per tensor or per output "
        "channel (per row for embedding tables); all other weights FP32, activations FP32.", "",
        f"- Tensors measured: {len(rows)} of 39.", "",
        f"## Rank correlation of damage with kurtosis (Spearman, {len(rows)} tensors)", "",
        "| granularity | 1 - cos | probe drop |", "|---|---:|---:|"]
    k = [r["kurtosis"] for r in rows]
    for gran in ("per_tensor", "per_channel"):
        cells = []
        for key in ("one_minus_cos", "probe_drop"):
            rho, p = stats.spearmanr(k, [r[gran][key] for r in rows])
            cells.append(f"{rho:+.2f} (p = {p:.2g})")
        lines.append(f"| {gran.replace('_', '-')} | " + " | ".join(cells) + " |")
    lines += ["", "## All linear weights at W4 together (embeddings FP32)", "",
              "| granularity | 1 - cos | min cos | probe acc (%) | drop (points) |", "|---|---:|---:|---:|---:|"]
    for gran, d in result["all_linear"].items():
        lines.append(f"| {gran.replace('_', '-')} | {d['one_minus_cos']:.4f} | {d['min_cos']:.3f} | "
                     f"{100 * d['probe_acc']:.2f} | {100 * d['probe_drop']:+.2f} |")
    lines += ["", f"## Every tensor (sorted by kurtosis); plot: [minilm_w4.png](minilm_w4.png)", "",
              "| tensor | kurtosis | per-tensor 1 - cos | per-tensor probe drop | per-channel 1 - cos | "
              "per-channel probe drop |", "|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: -r["kurtosis"]):
        lines.append(f"| {r['name']} | {r['kurtosis']:.1f} | {r['per_tensor']['one_minus_cos']:.5f} | "
                     f"{100 * r['per_tensor']['probe_drop']:+.2f} | {r['per_channel']['one_minus_cos']:.5f} | "
                     f"{100 * r['per_channel']['probe_drop']:+.2f} |")
    return "\n".join(lines) + "\n"


def write_report(rows, all_linear, setup, out):
    result = {"setup": setup, "tensors": rows, "all_linear": all_linear}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "minilm_w4.json"), "w") as f:
        json.dump(result, f, indent=1)
    plot(rows, os.path.join(out, "minilm_w4.png"))
    with open(os.path.join(out, "minilm_w4.md"), "w") as f:
        f.write(markdown(result))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval-size", type=int, default=500)
    parser.add_argument("--train-size", type=int, default=600)
    parser.add_argument("--val-size", type=int, default=300)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--work-dir", default="outputs/minilm_w4", help="measured tensors, kept for a resumed run")
    parser.add_argument("--report-only", action="store_true", help="write the report from the tensors measured so far")
    args = parser.parse_args(argv)
    if args.eval_size < 500:
        raise ValueError(f"--eval-size must be >= 500 texts, got {args.eval_size}")
    start = time.time()
    settings = {k: getattr(args, k) for k in ("eval_size", "train_size", "val_size", "max_len")}
    partial_path = os.path.join(args.work_dir, "partial.json")
    partial = json.load(open(partial_path)) if os.path.isfile(partial_path) else {}
    if partial.get("settings") != settings:
        partial = {"settings": settings, "rows": [], "all_linear": None, "setup": None}
    if args.report_only:
        write_report(partial["rows"], partial["all_linear"], partial["setup"], args.out)
        print(f"wrote the report from {len(partial['rows'])} tensors")
        return

    def save():
        os.makedirs(args.work_dir, exist_ok=True)
        partial["setup"]["minutes"] = partial["setup"].get("minutes_before", 0.0) + (time.time() - start) / 60
        with open(partial_path + ".tmp", "w") as f:
            json.dump(partial, f)
        os.replace(partial_path + ".tmp", partial_path)

    splits = load_rotten_tomatoes(seed=0)
    model, tokenizer = load_minilm(max_length=args.max_len)
    texts = {name: (splits[name][0][:size], np.asarray(splits[name][1][:size]))
             for name, size in (("train", args.train_size), ("val", args.val_size), ("test", args.eval_size))}
    train_x = encode(model, tokenizer, texts["train"][0], batch_size=64)
    val_x = encode(model, tokenizer, texts["val"][0], batch_size=64)
    _, probe_c, probe = fit_probe(train_x, texts["train"][1], val_x, texts["val"][1])
    cached = CachedEncoder(model, tokenizer, texts["test"][0])
    reference = cached.embed()
    labels = texts["test"][1]
    fp32_acc = float(probe.score(reference, labels))
    print(f"probe C={probe_c}, FP32 probe accuracy {fp32_acc:.4f}, {time.time() - start:.0f} s", flush=True)
    minutes_before = (partial["setup"] or {}).get("minutes", 0.0)
    partial["setup"] = {**settings, "probe_c": probe_c, "fp32_probe_acc": fp32_acc, "paddle": paddle.__version__,
                        "minutes_before": minutes_before,
                        "command": " ".join(["python experiments/minilm_w4.py",
                                             *(sys.argv[1:] if argv is None else argv)])}
    if partial["all_linear"] is None:
        partial["all_linear"] = {}
        for gran, per_channel in (("per_tensor", False), ("per_channel", True)):
            with quantized_weights(model, BITS, per_channel, layer_types=(nn.Linear,)):
                partial["all_linear"][gran] = damage(reference, cached.embed(), probe, labels, fp32_acc)
        save()
    done = {r["name"] for r in partial["rows"]}
    # cheapest first (the last block needs one block recomputed, an embedding table all six),
    # so an interrupted run has measured as many tensors as possible
    todo = sorted(weight_tensors(model), key=lambda t: 1 if t[2] is None else -t[2])
    for name, layer, start_block in todo:
        if name in done:
            continue
        row = {"name": name, "shape": list(layer.weight.shape), "kurtosis": tensor_kurtosis(layer.weight.numpy())}
        for gran, per_channel in (("per_tensor", False), ("per_channel", True)):
            with quantized_weights(layer, BITS, per_channel, layer_types=(type(layer),)):
                embeddings = cached.embed(start_block or 0, recompute_embeddings=start_block is None)
            row[gran] = damage(reference, embeddings, probe, labels, fp32_acc)
        print(f"{name}: K={row['kurtosis']:.1f} 1-cos {row['per_tensor']['one_minus_cos']:.5f} / "
              f"{row['per_channel']['one_minus_cos']:.5f} ({time.time() - start:.0f} s)", flush=True)
        partial["rows"].append(row)
        save()
    write_report(partial["rows"], partial["all_linear"], partial["setup"], args.out)
    print(f"wrote {args.out}/minilm_w4.md, .json, .png in {partial['setup']['minutes']:.1f} min")


if __name__ == "__main__":
    main()

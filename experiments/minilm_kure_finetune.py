"""Fine-tunes the pretrained all-MiniLM-L6-v2 classifier on Rotten Tomatoes with
no KURE, naive KURE (every trainable weight tensor) and selective KURE (the
``log_mad`` outlier rule), and records the training loss, the KURE term and the
validation accuracy of each.

The word embeddings are frozen in every arm (their Adam update would double the
step time on CPU); "every weight tensor" means every trainable one of 2+ dims.
KURE is ``KurtosisDecay`` set by :func:`paddle_kure.attach_kure` with the paper's
lambda split over the chosen tensors; the KURE term recorded is
``coeff * mean over the arm's tensors of (K - 1.8)^2``.

Usage (about 15 minutes on one core)::

    OMP_NUM_THREADS=1 python experiments/minilm_kure_finetune.py --steps 150
    OMP_NUM_THREADS=1 python experiments/minilm_kure_finetune.py --steps 150 --optimizer momentum \
        --lr 0.01 --output docs/results/minilm_kure_finetune_momentum

write ``docs/results/minilm_kure_finetune{,_momentum}.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np
import paddle

from paddle_kure import KurtosisLoss, attach_kure, plan_kure
from paddle_kure.data.text import load_rotten_tomatoes
from paddle_kure.models import BertClassifier, load_minilm
from paddle_kure.train import evaluate, fit

ARMS = {
    "none": "no KURE",
    "naive": "naive KURE (all weight tensors)",
    "selective": "selective KURE (log_mad rule)",
}
COLORS = {"none": "C0", "naive": "C1", "selective": "C2"}
FROZEN = r"bert\.embeddings\.word_embeddings\.weight"
FFN2 = r"bert\.encoder\.layer\.\d+\.output\.dense\.weight"


def build_model(seed, max_len):
    paddle.seed(seed)
    bert, tokenizer = load_minilm(max_length=max_len)
    model = BertClassifier(bert, num_classes=2)
    model.bert.embeddings.word_embeddings.weight.stop_gradient = True
    return model, tokenizer


def batches(tokenizer, texts, labels, order, batch_size):
    for start in range(0, len(order) - batch_size + 1, batch_size):
        index = order[start:start + batch_size]
        yield tokenizer([texts[i] for i in index]), labels[index]


def accuracy(model, tokenizer, texts, labels, batch_size=64):
    order = np.arange(len(texts))
    return evaluate(model, batches=((tokenizer([texts[i] for i in order[start:start + batch_size]]),
                                     labels[start:start + batch_size]) for start in range(0, len(texts), batch_size)))


@paddle.no_grad()
def kure_term(params, coeff):
    return coeff * float(KurtosisLoss(params)())


def run_arm(arm, splits, args, log):
    model, tokenizer = build_model(args.seed, args.max_len)
    selection = {"exclude": [FROZEN]}
    plan = None
    if arm != "none":
        rule = "log_mad" if arm == "selective" else None
        plan = attach_kure(model, coeff=args.coeff, auto_exclude=rule, **selection)
        log(f"{arm}: KURE on {len(plan.chosen)} tensors; left out by the rule: "
            f"{[r.name for r in plan.rows if r.reason.startswith('kurtosis outlier')]}")
    named = dict(model.named_parameters())
    monitored = {name: plan_kure(model, auto_exclude=rule, **selection).chosen
                 for name, rule in (("naive", None), ("selective", "log_mad"))}
    trained = [p for p in model.parameters() if not p.stop_gradient]
    if args.optimizer == "adam":
        optimizer = paddle.optimizer.Adam(args.lr, parameters=trained)
    else:
        optimizer = paddle.optimizer.Momentum(args.lr, momentum=0.9, parameters=trained)
    texts, labels = splits["train"]
    order = np.random.default_rng(args.seed).permutation(len(texts))
    order = np.concatenate([order] * (1 + args.steps * args.batch_size // len(texts)))
    history = {"step": [], "ce": [], "kure_naive": [], "kure_selective": []}
    start = time.time()

    def record_step(step, loss):
        history["step"].append(step)
        history["ce"].append(loss)
        for key, names in monitored.items():
            history[f"kure_{key}"].append(kure_term([named[n] for n in names], args.coeff))
        if step % 25 == 0:
            log(f"{arm} step {step}: ce {np.mean(history['ce'][-25:]):.4f}, KURE term naive "
                f"{history['kure_naive'][-1]:.4g} selective {history['kure_selective'][-1]:.4g} "
                f"({time.time() - start:.0f} s)")

    # one pass of args.steps batches, the KURE terms recorded after every step
    fit(model, optimizer, None, None, 1, args.batch_size, progress=False, step_callbacks=[record_step],
        batches=lambda _: itertools.islice(batches(tokenizer, texts, labels, order, args.batch_size), args.steps))
    ffn2 = {r.name: r.kurtosis for r in plan_kure(model, include=[FFN2]).rows if r.chosen}
    result = {
        "arm": arm,
        "title": ARMS[arm],
        "regularized": plan.chosen if plan else [],
        "history": history,
        "val_acc": accuracy(model, tokenizer, *splits["val"]),
        "ffn2_kurtosis_after": ffn2,
        "seconds": round(time.time() - start, 1),
    }
    log(f"{arm}: val accuracy {result['val_acc']:.4f} in {result['seconds']} s")
    return result


def smooth(values, width=10):
    values = np.asarray(values, dtype=np.float64)
    return np.convolve(values, np.ones(width) / width, mode="valid") if len(values) >= width else values


def write_outputs(record, prefix):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(prefix + ".json", "w") as f:
        json.dump(record, f, indent=1)
    fig, (ax_ce, ax_kure) = plt.subplots(1, 2, figsize=(11, 4))
    for result in record["results"]:
        h = result["history"]
        color = COLORS[result["arm"]]
        ax_ce.plot(h["step"][9:] if len(h["step"]) >= 10 else h["step"], smooth(h["ce"]), color=color,
                   label=result["title"])
        if result["arm"] != "none":
            ax_kure.semilogy(h["step"], h[f"kure_{result['arm']}"], color=color, label=result["title"])
    ax_ce.set_xlabel("step")
    ax_ce.set_ylabel("training cross-entropy (mean of 10 steps)")
    ax_ce.legend(fontsize=8)
    ax_kure.set_xlabel("step")
    ax_kure.set_ylabel("KURE term, coeff * mean (K - 1.8)^2")
    ax_kure.legend(fontsize=8)
    fig.suptitle(f"all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes ({record['args']['optimizer']})")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(prefix + ".png", dpi=110)
    plt.close(fig)

    a = record["args"]
    lines = [
        "# KURE while fine-tuning the pretrained MiniLM on Rotten Tomatoes",
        "",
        f"all-MiniLM-L6-v2 + mean pooling + linear head, {a['optimizer']} lr {a['lr']}, batch {a['batch_size']}, "
        f"max_len {a['max_len']}, {a['steps']} steps, seed {a['seed']}, KURE coeff (lambda) {a['coeff']}; "
        f"word embeddings frozen. Data: {record['data']}. Command: `{record['command']}`.",
        "",
        "| arm | tensors under KURE | CE first 25 steps | CE last 25 steps | KURE term after step 1 -> last "
        "| val accuracy | FFN2 kurtosis after (min-max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in record["results"]:
        h = result["history"]
        term = h[f"kure_{result['arm']}"] if result["arm"] != "none" else h["kure_selective"]
        ffn2 = list(result["ffn2_kurtosis_after"].values())
        lines.append(
            f"| {result['title']} | {len(result['regularized'])} | {np.mean(h['ce'][:25]):.4f} | "
            f"{np.mean(h['ce'][-25:]):.4f} | {term[0]:.4g} -> {term[-1]:.4g}"
            f"{' (selective set, not trained)' if result['arm'] == 'none' else ''} | "
            f"{100 * result['val_acc']:.2f} | {min(ffn2):.4g}-{max(ffn2):.4g} |")
    n_val = record["val_size"]
    se = max(np.sqrt(r["val_acc"] * (1 - r["val_acc"]) / n_val) for r in record["results"])
    lines += ["", f"One seed; with {n_val} validation texts one accuracy has a standard error of up to "
              f"{100 * se:.1f} points, so differences below about {200 * np.sqrt(2) * se:.1f} points are noise.",
              "", f"Pretrained FFN2 kurtosis: {record['ffn2_kurtosis_before']}.", "",
              f"Left out by the log_mad rule: {record['log_mad_excluded']}.", "",
              f"![loss and KURE term]({os.path.basename(prefix)}.png)", ""]
    with open(prefix + ".md", "w") as f:
        f.write("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=32)
    parser.add_argument("--optimizer", default="adam", choices=["adam", "momentum"])
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--coeff", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--output", default="docs/results/minilm_kure_finetune")
    args = parser.parse_args()

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    splits = load_rotten_tomatoes(seed=args.seed)
    model, _ = build_model(args.seed, args.max_len)
    before = plan_kure(model, include=[FFN2])
    selective = plan_kure(model, exclude=[FROZEN], auto_exclude="log_mad")
    record = {
        "args": vars(args),
        "command": "OMP_NUM_THREADS=1 python experiments/minilm_kure_finetune.py "
                   f"--steps {args.steps} --max-len {args.max_len} --optimizer {args.optimizer} --lr {args.lr} "
                   f"--output {args.output}",
        "data": ", ".join(f"{k} {len(v[0])}" for k, v in splits.items()) + " texts (split by movie)",
        "val_size": len(splits["val"][0]),
        "ffn2_kurtosis_before": {r.name: round(r.kurtosis, 2) for r in before.rows if r.chosen},
        "log_mad_excluded": [r.name for r in selective.rows if r.reason.startswith("kurtosis outlier")],
        "results": [run_arm(arm, splits, args, log) for arm in args.arms],
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    write_outputs(record, args.output)
    log(f"wrote {args.output}.json/.md/.png")


if __name__ == "__main__":
    main()

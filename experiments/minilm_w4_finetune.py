"""Selective KURE fine-tune of all-MiniLM-L6-v2 vs a plain fine-tune, then W4 weight-only PTQ.

Both arms fine-tune the pretrained encoder with a 2-class head on Rotten Tomatoes
(split by movie) from the same initialization and batch order, with Adam at a
learning rate high enough for KURE to move the weights in a short run (word
embeddings frozen, as in `experiments/minilm_kure_finetune.py`). The KURE arm
regularizes the tensors that selective KURE (``attach_kure(auto_exclude='log_mad')``)
chooses: the heavy-tailed FFN second FCs and position/token-type embeddings are
left out. Then every encoder linear weight is quantized to 4 bits (symmetric;
abs-max or MSE-optimal step, per tensor or per output channel; embeddings, head
and activations FP32) and accuracy is measured on the validation texts and on the
first ``--eval-size`` test texts.

Writes ``<out>/minilm_w4_finetune.md`` and ``.json``.

    nice -n 10 python experiments/minilm_w4_finetune.py
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import paddle
from paddle import nn

from paddle_kure import attach_kure, plan_kure
from paddle_kure.outliers import tensor_kurtosis
from paddle_kure.data.text import load_rotten_tomatoes
from paddle_kure.models import BertClassifier, load_minilm
from paddle_kure.robustness import quantized_weights, weight_scales
from paddle_kure.train import fit

FROZEN = r"bert\.embeddings\.word_embeddings\.weight"
BITS = 4
# (step rule, per channel) of the encoder's W4 weight-only PTQ
PTQ_SETTINGS = (("abs_max", False), ("abs_max", True), ("mse", False))


def tokenized_batches(tokenizer, texts, batch_size):
    return [{k: paddle.to_tensor(v) for k, v in tokenizer(texts[i:i + batch_size]).items()}
            for i in range(0, len(texts), batch_size)]


@paddle.no_grad()
def accuracy(model, batches, labels):
    model.eval()
    predictions = np.concatenate([model(**b).argmax(-1).numpy() for b in batches])
    return float((predictions == labels).mean())


def linear_kurtosis(model, names):
    params = dict(model.named_parameters())
    return {n: tensor_kurtosis(params[n].numpy()) for n in names}


def run_arm(arm, splits, eval_sets, args):
    paddle.seed(args.seed)
    bert, tokenizer = load_minilm(max_length=args.max_len)
    model = BertClassifier(bert, num_classes=2)
    model.bert.embeddings.word_embeddings.weight.stop_gradient = True
    # the tensors selective KURE chooses, also monitored in the plain arm
    chosen = plan_kure(model, exclude=[FROZEN], auto_exclude="log_mad").chosen
    linear_names = [f"bert.{n}" for n in model.bert.linear_weight_names()]
    before = linear_kurtosis(model, sorted(set(chosen) | set(linear_names)))
    if arm == "selective_kure":
        plan = attach_kure(model, coeff=args.coeff, exclude=[FROZEN], auto_exclude="log_mad")
        assert plan.chosen == chosen
    trained = [p for p in model.parameters() if not p.stop_gradient]
    optimizer = paddle.optimizer.Adam(args.lr, parameters=trained)
    texts, labels = splits["train"]
    order = np.random.default_rng(args.seed).permutation(len(texts))
    order = np.concatenate([order] * (1 + args.steps * args.batch_size // len(texts)))
    start, losses = time.time(), []

    def batches(epoch):
        for step in range(args.steps):
            index = order[step * args.batch_size:(step + 1) * args.batch_size]
            yield tokenizer([texts[i] for i in index]), labels[index]

    def record(step, loss):
        losses.append(loss)
        if len(losses) % 25 == 0:
            print(f"{arm} step {len(losses)}: ce {np.mean(losses[-25:]):.4f} ({time.time() - start:.0f} s)", flush=True)

    fit(model, optimizer, None, None, 1, args.batch_size, progress=False, desc=arm, batches=batches,
        step_callbacks=[record])
    train_seconds = time.time() - start
    after = linear_kurtosis(model, list(before))
    record = {"arm": arm, "chosen": chosen, "kurtosis_before": before, "kurtosis_after": after,
              "train_seconds": train_seconds, "losses": losses, "accuracy": {}}
    for split, (batches, y) in eval_sets(tokenizer).items():
        record["accuracy"][f"{split}/FP32"] = accuracy(model, batches, y)
    for step_rule, per_channel in PTQ_SETTINGS:
        scales = weight_scales(model.bert, BITS, per_channel, step_rule, layer_types=(nn.Linear,))
        with quantized_weights(model.bert, BITS, per_channel, scales=scales, layer_types=(nn.Linear,)):
            for split, (batches, y) in eval_sets(tokenizer).items():
                key = f"{split}/W{BITS} {'per-channel' if per_channel else 'per-tensor'} {step_rule}"
                record["accuracy"][key] = accuracy(model, batches, y)
    print(f"{arm}: {json.dumps(record['accuracy'])}", flush=True)
    return record


def mean_k(record, names, when):
    return float(np.mean([record[f"kurtosis_{when}"][n] for n in names]))


def markdown(records, setup) -> str:
    by_arm = {r["arm"]: r for r in records}
    chosen = records[0]["chosen"]
    ffn2 = [n for n in records[0]["kurtosis_before"] if n.endswith("output.dense.weight") and "attention" not in n]
    lines = [
        "# all-MiniLM-L6-v2: selective KURE fine-tune vs plain, then W4 weight-only PTQ", "",
        "Generated by `experiments/minilm_w4_finetune.py` (rewritten on every run).", "",
        f"`{setup['command']}`, paddle {setup['paddle']}, shared 2-core CPU, {setup['minutes']:.1f} min. "
        f"One seed ({setup['seed']}): differences are not tested against seed noise.", "",
        f"- Fine-tune: {setup['steps']} steps of batch {setup['batch_size']} Rotten Tomatoes training texts "
        f"(split by movie), Adam lr {setup['lr']}, max length {setup['max_len']}, word embeddings frozen; same "
        f"initialization and batch order in both arms.",
        f"- Selective KURE: `attach_kure(coeff={setup['coeff']}, auto_exclude='log_mad')` on {len(chosen)} "
        f"tensors (lambda split over them, target 1.8).",
        f"- PTQ: every encoder linear weight at {BITS} bits, symmetric: abs-max step per tensor and per output "
        f"channel, MSE-optimal step per tensor; embeddings, head and activations FP32. Accuracy on the first "
        f"{setup['eval_size']} test texts" + (f" and {setup['val_size']} validation texts" if setup['val_size'] else "")
        + ".", "",
        "## Kurtosis of the chosen tensors (mean over them) and of the FFN second FCs", "",
        "| arm | chosen, before | chosen, after | FFN second FC (left out), before | after |",
        "|---|---:|---:|---:|---:|"]
    for arm, r in by_arm.items():
        lines.append(f"| {arm} | {mean_k(r, chosen, 'before'):.2f} | {mean_k(r, chosen, 'after'):.2f} | "
                     f"{mean_k(r, ffn2, 'before'):.1f} | {mean_k(r, ffn2, 'after'):.1f} |")
    keys = list(records[0]["accuracy"])
    lines += ["", "## Accuracy (%)", "", "| setting | " + " | ".join(by_arm) + " | KURE - plain (points) |",
              "|---|" + "---:|" * (len(by_arm) + 1)]
    for key in keys:
        values = [by_arm[a]["accuracy"][key] for a in by_arm]
        lines.append(f"| {key} | " + " | ".join(f"{100 * v:.2f}" for v in values) +
                     f" | {100 * (values[-1] - values[0]):+.2f} |")
    lines += ["", "## Kurtosis of every chosen tensor (before -> after)", "",
              "| tensor | " + " | ".join(by_arm) + " |", "|---|" + "---:|" * len(by_arm)]
    for n in chosen:
        lines.append(f"| {n} | " + " | ".join(f"{r['kurtosis_before'][n]:.2f} -> {r['kurtosis_after'][n]:.2f}"
                                              for r in by_arm.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--coeff", type=float, default=1.0, help="the KURE paper's lambda, split over the tensors")
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--eval-size", type=int, default=500)
    parser.add_argument("--val-size", type=int, default=0, help="also report validation texts (no choice uses them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/results")
    args = parser.parse_args(argv)
    start = time.time()
    splits = load_rotten_tomatoes(seed=0)
    splits = {k: (v[0], np.asarray(v[1])) for k, v in splits.items()}
    subsets = {name: size for name, size in (("val", args.val_size), ("test", args.eval_size)) if size}

    def eval_sets(tokenizer):
        return {name: (tokenized_batches(tokenizer, splits[name][0][:size], 64), splits[name][1][:size])
                for name, size in subsets.items()}

    records = []
    for arm in ("plain", "selective_kure"):
        records.append(run_arm(arm, splits, eval_sets, args))
        os.makedirs("outputs", exist_ok=True)
        with open(os.path.join("outputs", "minilm_w4_finetune_partial.json"), "w") as f:
            json.dump(records, f)  # an interrupted run keeps the finished arm
    setup = {**vars(args), "paddle": paddle.__version__, "minutes": (time.time() - start) / 60,
             "command": " ".join(["python experiments/minilm_w4_finetune.py", *(sys.argv[1:] if argv is None else argv)])}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "minilm_w4_finetune.json"), "w") as f:
        json.dump({"setup": setup, "runs": records}, f, indent=1)
    with open(os.path.join(args.out, "minilm_w4_finetune.md"), "w") as f:
        f.write(markdown(records, setup))
    print(f"wrote {args.out}/minilm_w4_finetune.md and .json in {setup['minutes']:.1f} min")


if __name__ == "__main__":
    main()

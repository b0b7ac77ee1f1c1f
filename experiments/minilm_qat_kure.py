"""INT8 quantization-aware fine-tuning of the pretrained all-MiniLM-L6-v2 classifier on
Rotten Tomatoes: QAT alone, QAT + selective KURE and QAT + naive KURE (Zanetti,
"Quantization Aware Training, ERNIE and Kurtosis Regularizer", claims +1.2 points for
selective KURE over QAT alone on ERNIE / XNLI).

Every arm starts from the same pretrained encoder and the same random head (per seed):
``paddle_kure.quant.prepare_qat`` with ``QuantAwareConfig(weight_bits=8, activation_bits=8)``
(PaddleSlim dygraph QAT: channel-wise abs-max INT8 weights and moving-average abs-max INT8
inputs of every ``Linear``; the attention matmuls stay in float), and for the KURE arms a
``KureConfig`` on the chosen weights (``KurtosisDecay``, lambda split over the tensors):

* ``naive``: every ``Linear`` weight (the 36 encoder projections and the head);
* ``selective``: the same minus the tensors that :func:`paddle_kure.plan_kure`'s ``log_mad``
  rule flags as kurtosis outliers, measured on the pretrained weights.

The split is by movie (``paddle_kure.data.text.load_rotten_tomatoes``); runs use fixed
subsets of the three splits (the same for every arm and seed). The validation subset is
evaluated every ``--eval-every`` steps and picks the checkpoint; the test subset is read
once per run, for that checkpoint. The accuracies are those of the fake-quantized
(simulated INT8) model. The word embeddings are frozen (not quantized, and their Adam
update would double a CPU step); the new head learns ``--head-lr-scale`` times faster.

Usage (about 25 minutes of one core's time; longer on a shared machine)::

    OMP_NUM_THREADS=1 python experiments/minilm_qat_kure.py

writes ``docs/results/minilm_qat_kure.{json,md}``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import numpy as np
import paddle

from paddle_kure import kurtosis, plan_kure
from paddle_kure.apps.transformer_study import evaluate, padded_batches
from paddle_kure.data.text import load_rotten_tomatoes
from paddle_kure.models import BertClassifier, load_minilm
from paddle_kure.quant import KureConfig, QuantAwareConfig, prepare_qat
from paddle_kure.train import fit

ARMS = {
    "qat": "INT8 QAT",
    "selective": "INT8 QAT + selective KURE (log_mad rule)",
    "naive": "INT8 QAT + naive KURE (every Linear weight)",
}
FFN2 = r"bert\.encoder\.layer\.\d+\.output\.dense\.weight"


class TokenIdsClassifier(paddle.nn.Layer):
    """A :class:`BertClassifier` called on right-padded token ids alone (``[PAD]`` = 0),
    the interface of ``transformer_study.evaluate`` and ``padded_batches``."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids, attention_mask=(input_ids != 0).astype("int64"))


def encode_subsets(tokenizer, splits, sizes):
    """Token ids and labels of a fixed random subset of each split (``sizes``: split -> count)."""
    encoded = {}
    for name, (texts, labels) in splits.items():
        index = np.sort(np.random.RandomState(0).permutation(len(texts))[:sizes[name]])
        encoded[name] = (tokenizer([texts[i] for i in index])["input_ids"], labels[index])
    return encoded


def kure_selection(model, arm):
    """The plan of the Linear weights under KURE for ``arm`` (None for QAT alone)."""
    if arm == "qat":
        return None
    return plan_kure(model, layer_types=["Linear"], auto_exclude="log_mad" if arm == "selective" else None)


def mean_kurtosis(params):
    with paddle.no_grad():
        return float(np.mean([float(kurtosis(p)) for p in params]))


def run(arm, seed, data, args, log):
    """One (arm, seed): QAT fine-tuning with validation selection; returns the result row."""
    paddle.seed(seed)
    bert, _ = load_minilm(max_length=args.max_len)
    model = BertClassifier(bert, num_classes=2)
    model.bert.embeddings.word_embeddings.weight.stop_gradient = True
    model.classifier.weight.optimize_attr["learning_rate"] = args.head_lr_scale
    model.classifier.bias.optimize_attr["learning_rate"] = args.head_lr_scale
    named = dict(model.named_parameters())
    ffn2 = plan_kure(model, include=[FFN2]).chosen
    plan = kure_selection(model, arm)
    kure = KureConfig(coeff=args.coeff, params=plan.chosen) if plan else None
    prepare_qat(model, QuantAwareConfig(weight_bits=8, activation_bits=8), kure=kure)
    classifier = TokenIdsClassifier(model)
    optimizer = paddle.optimizer.Adam(args.lr, parameters=[p for p in model.parameters() if not p.stop_gradient])
    train_ids, train_labels = data["train"]
    rng = np.random.RandomState(seed)
    order = np.concatenate([rng.permutation(len(train_labels))
                            for _ in range(1 + args.steps * args.batch_size // len(train_labels))])
    stream = padded_batches(train_ids, train_labels, args.batch_size, order[:args.steps * args.batch_size])
    rounds = -(-args.steps // args.eval_every)  # one validation after every eval_every steps and at the end
    curve = []
    start = time.time()

    def round_batches(_):
        return itertools.islice(stream, args.eval_every)

    def record_point(record):
        point = {"step": min(record["epoch"] * args.eval_every, args.steps), "train_loss": record["loss"],
                 "val_accuracy": record["val_acc"], "ffn2_mean_kurtosis": mean_kurtosis([named[n] for n in ffn2])}
        if plan:
            point["kure_mean_kurtosis"] = mean_kurtosis([named[n] for n in plan.chosen])
        curve.append(point)
        log(f"{arm} seed {seed} step {point['step']}: loss {point['train_loss']:.4f} val {point['val_accuracy']:.4f} "
            f"FFN2 kurtosis {point['ffn2_mean_kurtosis']:.1f} ({time.time() - start:.0f} s)")

    history = fit(classifier, optimizer, None, None, rounds, args.batch_size, progress=False, batches=round_batches,
                  validate=lambda m: evaluate(m, *data["val"], batch_size=64), select_best=True, log=record_point)
    best = next(record for record in history if record.get("selected"))
    best = {"val_accuracy": best["val_acc"], "step": min(best["epoch"] * args.eval_every, args.steps)}
    return {
        "arm": arm,
        "seed": seed,
        "kure_tensors": len(plan.chosen) if plan else 0,
        "kure_left_out": [r.name for r in plan.rows if r.reason.startswith("kurtosis outlier")] if plan else [],
        "best_step": best["step"],
        "val_accuracy": best["val_accuracy"],
        "test_accuracy": evaluate(classifier, *data["test"], batch_size=64),
        "curve": curve,
        "seconds": round(time.time() - start, 1),
    }


def summarize(rows):
    summary = {}
    for arm in ARMS:
        runs = [r for r in rows if r["arm"] == arm]
        if not runs:
            continue
        test = np.array([r["test_accuracy"] for r in runs])
        val = np.array([r["val_accuracy"] for r in runs])
        summary[arm] = {"test_mean": float(test.mean()), "test_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
                        "val_mean": float(val.mean()), "val_std": float(val.std(ddof=1)) if len(val) > 1 else 0.0,
                        "seeds": [r["seed"] for r in runs]}
    if "qat" in summary:
        by_seed = {r["seed"]: r["test_accuracy"] for r in rows if r["arm"] == "qat"}
        for arm in summary:
            diffs = [r["test_accuracy"] - by_seed[r["seed"]] for r in rows if r["arm"] == arm and r["seed"] in by_seed]
            summary[arm]["test_minus_qat_per_seed"] = diffs
    return summary


def markdown(record):
    a = record["args"]
    lines = [
        "# INT8 QAT of the pretrained MiniLM on Rotten Tomatoes, with and without KURE",
        "",
        f"all-MiniLM-L6-v2 + mean pooling + linear head; PaddleSlim dygraph QAT (W8 channel-wise abs-max, "
        f"A8 moving-average abs-max on every Linear input); Adam lr {a['lr']} (head x{a['head_lr_scale']}), "
        f"batch {a['batch_size']}, max_len {a['max_len']}, {a['steps']} steps; KURE lambda {a['coeff']}, "
        f"target 1.8; word embeddings frozen. Data (split by movie, fixed subsets): {record['data']}. "
        f"Validation every {a['eval_every']} steps picks the checkpoint; the test subset is read once per run. "
        f"Seeds {a['seeds']}. Command: `{record['command']}`.",
        "",
        "| Arm | KURE tensors | Test acc (%) mean ± std | Val acc (%) mean ± std | Test − QAT per seed (points) |",
        "|---|---|---|---|---|",
    ]
    for arm, s in record["summary"].items():
        tensors = next(r["kure_tensors"] for r in record["runs"] if r["arm"] == arm)
        diffs = ", ".join(f"{100 * d:+.1f}" for d in s.get("test_minus_qat_per_seed", []))
        lines.append(f"| {ARMS[arm]} | {tensors} | {100 * s['test_mean']:.1f} ± {100 * s['test_std']:.1f} | "
                     f"{100 * s['val_mean']:.1f} ± {100 * s['val_std']:.1f} | {diffs} |")
    lines += ["", f"Left out by the log_mad rule (pretrained kurtosis): {record['log_mad_left_out']}.", "",
              "Per run: selected step, validation and test accuracy, FFN2 mean kurtosis at the selected step:", "",
              "| Arm | Seed | Step | Val (%) | Test (%) | FFN2 kurtosis | Seconds |", "|---|---|---|---|---|---|---|"]
    for r in record["runs"]:
        point = next(p for p in r["curve"] if p["step"] == r["best_step"])
        lines.append(f"| {r['arm']} | {r['seed']} | {r['best_step']} | {100 * r['val_accuracy']:.1f} | "
                     f"{100 * r['test_accuracy']:.1f} | {point['ffn2_mean_kurtosis']:.1f} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def save(record, prefix):
    """Writes ``prefix.json`` and ``prefix.md`` with the summary of the runs so far."""
    record["summary"] = summarize(record["runs"])
    with open(prefix + ".json", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)
    with open(prefix + ".md", "w", encoding="utf-8") as handle:
        handle.write(markdown(record))


SETTINGS_OF_A_RUN = ("steps", "eval_every", "batch_size", "max_len", "lr", "head_lr_scale", "coeff", "sizes")


def previous_runs(args):
    """The runs of ``args.output + '.json'`` (for ``--resume``), if they had the same settings."""
    path = args.output + ".json"
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    changed = [key for key in SETTINGS_OF_A_RUN if record["args"][key] != getattr(args, key)]
    if changed:
        raise SystemExit(f"--resume: {path} was made with other {changed}; choose another --output")
    return record["runs"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-len", type=int, default=32, help="tokens per text, [CLS] and [SEP] included")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--head-lr-scale", type=float, default=20.0)
    parser.add_argument("--coeff", type=float, default=0.5, help="KURE lambda (Zanetti's: 0.5)")
    parser.add_argument("--sizes", type=int, nargs=3, default=[960, 256, 384], metavar=("TRAIN", "VAL", "TEST"),
                        help="subset sizes of the train, validation and test splits")
    parser.add_argument("--output", default="docs/results/minilm_qat_kure")
    parser.add_argument("--resume", action="store_true",
                        help="keep the (arm, seed) runs already in OUTPUT.json and run only the others")
    args = parser.parse_args()
    for name in ("steps", "eval_every", "batch_size", "max_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    def log(message):
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    splits = load_rotten_tomatoes()
    _, tokenizer = load_minilm(max_length=args.max_len)
    data = encode_subsets(tokenizer, splits, dict(zip(("train", "val", "test"), args.sizes)))
    pretrained = BertClassifier(load_minilm()[0], num_classes=2)
    selective = plan_kure(pretrained, layer_types=["Linear"], auto_exclude="log_mad")
    record = {
        "args": vars(args),
        "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
        "data": ", ".join(f"{k} {len(v[1])} of {len(splits[k][1])}" for k, v in data.items()),
        "log_mad_left_out": {r.name: round(r.kurtosis, 1) for r in selective.rows
                             if r.reason.startswith("kurtosis outlier")},
        "runs": previous_runs(args) if args.resume else [],
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    done = {(r["arm"], r["seed"]) for r in record["runs"]}
    for seed in args.seeds:
        for arm in args.arms:
            if (arm, seed) in done:
                continue
            record["runs"].append(run(arm, seed, data, args, log))
            save(record, args.output)  # after every run
            log(f"wrote {args.output}.json and {args.output}.md ({len(record['runs'])} runs)")
    save(record, args.output)
    print(markdown(record))


if __name__ == "__main__":
    main()

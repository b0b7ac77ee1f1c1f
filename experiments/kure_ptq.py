"""Does KURE make a model survive low-bit post-training quantization? Paired Fashion-MNIST experiment.

The claim under test (KURE: Shkolnik et al., "Robust Quantization: One Model to Rule
Them All", NeurIPS 2020): a model trained with the kurtosis regularizer keeps more
accuracy under post-training quantization at low bit widths, and is less hurt by a
badly chosen quantization step.

Design (fixed before the full experiment was run):

- Model: an MLP 784-32-32-32-10 with ReLU (``--hidden 32 --depth 2``), 6 epochs. Sized
  on one probe seed (seed 100, not among the experiment's seeds), FP32 arm only, damage
  read on the test split (a choice of width, never of a KURE difference): at
  hidden 256 W3 per-tensor PTQ cost nothing (86.67 -> 86.74% at abs-max x 1); at
  hidden 32 W3 per-tensor cost 4.2 points averaged over the abs-max ratios
  (85.63 -> 81.41%) and W4 per-tensor 1.1 points; hidden 64 cost 1.9 points.
- Arms, per seed: FP32 (Adam, L2 1e-4 on every parameter) and FP32 + KURE
  (``KurtosisDecay`` through ``paddle_kure.quant.apply_kure``: lambda 1 split over
  the L regularized weights, i.e. 1/L each, target 1.8, the same L2 kept on them).
  KURE covers every weight but the first layer's (the paper's choice). Both arms
  start from the same initialization and see the same batch order.
- Data: 5,000 training images held out as validation (the only split any choice may
  look at); the other 55,000 train; test = the 10k test split, reported only.
- Weight PTQ (activations float), the first and last layer at 8 bits per channel
  (abs-max step) as in the paper; the hidden layers at W3 or W4, per tensor or per
  output channel, with step = abs-max x {0.70, 0.75, ..., 1.30} and with each model's
  MSE-optimal step x {0.8, 1, 1.2} (``paddle_kure.robustness``). The cost of keeping
  the first/last layer at 8 bits is measured (all layers at the low width, abs-max).
- Exported PTQ: W4A8 and W4A4 (all quantizable layers, weights per channel,
  activation scales calibrated with ``--ptq-algo`` on 10 batches of 64 training
  images) through ``paddle_kure.quant.post_training_quantize``; accuracy measured by
  running the exported model in ``paddle.inference``. Paddle's PTQ refuses unequal
  widths, so W4A8 exports at W8A8 a model whose weights hold their W4 values.

Endpoints (fixed before running), each a paired difference KURE - FP32 of test
accuracy per seed, reported as the mean over seeds with a 95% Student-t interval:

- E1: W3 per-tensor accuracy (hidden layers W3, first/last W8) averaged over the 13
  abs-max ratios 0.70 ... 1.30.
- E2: W3 per-tensor accuracy at each model's MSE-optimal step (ratio 1).
- E3: accuracy of the exported W4A4 model in paddle.inference.

Every other cell is reported the same way and is secondary. A cell (endpoints
included) where the FP32 arm loses under 1 point to its own float accuracy (mean
over seeds) is marked uninformative: there is nothing for KURE to recover.

Writes ``<out>/kure_ptq.md`` and ``<out>/kure_ptq.json`` (regenerated on every run);
hand-written notes live in ``<out>/kure_ptq_notes.md``, which this script never
writes. Finished seeds are cached in ``--work-dir`` and reused when the settings
match, so an interrupted run continues.

    nice -n 10 python experiments/kure_ptq.py --seeds 0 1 2 3 4 5
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from paddle_kure.outliers import tensor_kurtosis
from paddle_kure.data import load_fashion_mnist
from paddle_kure.quant import InferenceModel, KureConfig, QuantAwareConfig, apply_kure, post_training_quantize
from paddle_kure.robustness import quantized_weights, weight_scales
from paddle_kure.train import accuracy, evaluate, fit, make_optimizer

DATA_DIR = "/usr/share/datasets/fashion-mnist"
ARMS = ("fp32", "kure")
ABS_MAX_RATIOS = tuple(float(r) for r in np.round(np.linspace(0.7, 1.3, 13), 3))
MSE_RATIOS = (0.8, 1.0, 1.2)
LOW_BITS = (3, 4)
END_BITS = 8
EXPORTS = {"W4A8": (4, 8), "W4A4": (4, 4)}
UNINFORMATIVE_LOSS = 0.01  # FP32 loses under 1 point: the cell cannot show a KURE gain
ENDPOINTS = {
    "E1": "W3 per-tensor, mean over abs-max x 0.70..1.30",
    "E2": "W3 per-tensor at the MSE-optimal step",
    "E3": "exported W4A4, paddle.inference",
}


class MLP(nn.Layer):
    """784 -> hidden -> (hidden x depth) -> 10 with ReLU; ``first`` and ``last`` are
    the layers kept at 8 bits, ``body`` the ones quantized to the low width."""

    def __init__(self, hidden: int, depth: int):
        super().__init__()
        self.first = nn.Linear(28 * 28, hidden)
        self.body = nn.LayerList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.last = nn.Linear(hidden, 10)

    def forward(self, x):
        x = F.relu(self.first(paddle.flatten(x, 1)))
        for layer in self.body:
            x = F.relu(layer(x))
        return self.last(x)


def paired_summary(differences) -> dict:
    """Mean of paired differences with its two-sided 95% Student-t interval."""
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"paired_summary: need 2 or more paired differences, got {d.tolist()}")
    mean = float(d.mean())
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"mean": mean, "ci95": [mean - half, mean + half], "per_seed": d.tolist()}


@contextlib.contextmanager
def ends_at_8_bits(model: MLP):
    """First and last layer quantized per channel at 8 bits (abs-max step)."""
    with quantized_weights(model.first, END_BITS, per_channel=True), \
            quantized_weights(model.last, END_BITS, per_channel=True):
        yield model


def weight_ptq_cells(model: MLP, test_images, test_labels) -> list:
    """Test accuracy of every weight-PTQ cell: hidden layers at 3/4 bits, per tensor
    or per channel, abs-max or MSE-optimal step times the ratios; first/last at 8 bits.
    Also each setting with all layers at the low width (abs-max x 1)."""
    test = lambda: evaluate(model, test_images, test_labels)  # noqa: E731
    cells = []
    for bits in LOW_BITS:
        for per_channel in (False, True):
            for step, ratios in (("abs_max", ABS_MAX_RATIOS), ("mse", MSE_RATIOS)):
                scales = weight_scales(model.body, bits, per_channel, step)
                for ratio in ratios:
                    with ends_at_8_bits(model), quantized_weights(model.body, bits, per_channel, scales=scales,
                                                                  factor=ratio):
                        cells.append({"bits": bits, "per_channel": per_channel, "step": step, "ratio": ratio,
                                      "ends": END_BITS, "test_acc": test()})
            with quantized_weights(model, bits, per_channel):
                cells.append({"bits": bits, "per_channel": per_channel, "step": "abs_max", "ratio": 1.0,
                              "ends": bits, "test_acc": test()})
    return cells


def exported_ptq(model: MLP, data, work_dir: str, algo: str) -> dict:
    """W4A4 and W4A8 through post_training_quantize, run in paddle.inference.

    Paddle's post-training quantization takes equal weight and activation widths
    only, so W4A8 is a W8A8 export of the model whose weights already hold their
    4-bit per-channel abs-max values (the 8-bit grid re-stores them to within half
    an 8-bit step, 1/18 of a 4-bit step)."""
    calib = [data.train_images[i:i + 64] for i in range(0, 640, 64)]
    spec = [paddle.static.InputSpec([None, 1, 28, 28], "float32", "image")]
    results = {}
    for label, (weight_bits, activation_bits) in EXPORTS.items():
        path = os.path.join(work_dir, label.lower())
        config = QuantAwareConfig(weight_bits=activation_bits, activation_bits=activation_bits)
        with contextlib.ExitStack() as stack:
            if weight_bits != activation_bits:
                stack.enter_context(quantized_weights(model, weight_bits, per_channel=True))
            post_training_quantize(model, calib, config, path, spec, batch_nums=10, algo=algo)
        predictor = InferenceModel(path)
        results[label] = {
            "val_acc": accuracy(predictor.predict(data.val_images, batch_size=1000), data.val_labels),
            "test_acc": accuracy(predictor.predict(data.test_images, batch_size=1000), data.test_labels),
        }
    return results


def run_seed(seed: int, data, args) -> list:
    """Trains both arms from one initialization and measures them."""
    paddle.seed(seed)
    initial = {k: v.numpy().copy() for k, v in MLP(args.hidden, args.depth).state_dict().items()}
    records = []
    for arm in args.arms:
        model = MLP(args.hidden, args.depth)
        model.set_state_dict({k: paddle.to_tensor(v) for k, v in initial.items()})
        regularized = []
        if arm == "kure":
            # every weight but the first layer's, lambda split over them, L2 kept
            regularized = apply_kure(model, KureConfig(coeff=args.kure_coeff, target=1.8, l2_coeff=args.weight_decay,
                                                       params=[r"(body\.\d+|last)\.weight"]))
        optimizer = make_optimizer("adam", args.learning_rate, model.parameters(), args.weight_decay)
        start = time.time()
        history = fit(model, optimizer, data.train_images, data.train_labels, args.epochs, args.batch_size,
                      seed=seed, progress=False, desc=arm)
        train_seconds = time.time() - start
        model.eval()
        record = {
            "seed": seed, "arm": arm, "train_seconds": train_seconds, "history": history,
            "regularized": regularized,
            "kurtosis": {name: tensor_kurtosis(p.numpy()) for name, p in model.named_parameters()
                         if name.endswith("weight")},
            "val_acc": evaluate(model, data.val_images, data.val_labels),
            "test_acc": evaluate(model, data.test_images, data.test_labels),
        }
        with ends_at_8_bits(model):
            record["ends8_test_acc"] = evaluate(model, data.test_images, data.test_labels)
        record["weight_ptq"] = weight_ptq_cells(model, data.test_images, data.test_labels)
        if not args.no_export:
            record["exported"] = exported_ptq(model, data, os.path.join(args.work_dir, "export", f"{arm}_{seed}"),
                                              args.ptq_algo)
        record["seconds"] = time.time() - start
        print(f"seed {seed} {arm}: test {record['test_acc']:.4f}, "
              f"W3 per-tensor abs-max x1 {_cell(record, 3, False, 'abs_max', 1.0):.4f}, "
              f"{record['seconds']:.0f} s", flush=True)
        records.append(record)
    return records


def _cell(record, bits, per_channel, step, ratio, ends=END_BITS):
    return next(c["test_acc"] for c in record["weight_ptq"] if c["bits"] == bits and c["per_channel"] == per_channel
                and c["step"] == step and abs(c["ratio"] - ratio) < 1e-9 and c["ends"] == ends)


def endpoint_value(record, endpoint) -> float:
    if endpoint == "E1":
        return float(np.mean([_cell(record, 3, False, "abs_max", r) for r in ABS_MAX_RATIOS]))
    if endpoint == "E2":
        return _cell(record, 3, False, "mse", 1.0)
    if endpoint == "E3":
        return record["exported"]["W4A4"]["test_acc"]
    raise ValueError(f"unknown endpoint {endpoint!r}")


def paired(runs, value) -> dict:
    """Paired KURE - FP32 summary of ``value(record)``, plus the FP32 arm's loss
    against its own float accuracy and whether the cell is informative."""
    by_seed = {(r["seed"], r["arm"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    fp32 = np.array([value(by_seed[s, "fp32"]) for s in seeds])
    kure = np.array([value(by_seed[s, "kure"]) for s in seeds])
    fp32_loss = float(np.mean([by_seed[s, "fp32"]["test_acc"] for s in seeds]) - fp32.mean())
    return {**paired_summary(kure - fp32), "fp32_mean": float(fp32.mean()), "kure_mean": float(kure.mean()),
            "fp32_loss": fp32_loss, "informative": fp32_loss >= UNINFORMATIVE_LOSS}


def summarize(runs) -> dict:
    endpoints = {e: paired(runs, lambda r, e=e: endpoint_value(r, e)) for e in ENDPOINTS}
    cells = []
    first = runs[0]["weight_ptq"]
    for c in first:
        key = (c["bits"], c["per_channel"], c["step"], c["ratio"], c["ends"])
        cells.append({"bits": c["bits"], "per_channel": c["per_channel"], "step": c["step"], "ratio": c["ratio"],
                      "ends": c["ends"], **paired(runs, lambda r, k=key: _cell(r, *k[:4], ends=k[4]))})
    exported = {label: paired(runs, lambda r, lab=label: r["exported"][lab]["test_acc"]) for label in EXPORTS}
    return {"endpoints": endpoints, "cells": cells, "exported": exported,
            "float": paired(runs, lambda r: r["test_acc"]),
            "ends8": paired(runs, lambda r: r["ends8_test_acc"])}


def _pts(x):
    return f"{100 * x:+.2f}"


def _row(label, s, flag_uninformative=True):
    flag = "" if s["informative"] or not flag_uninformative else " (uninformative)"
    return (f"| {label}{flag} | {100 * s['fp32_mean']:.2f} | {100 * s['kure_mean']:.2f} | {_pts(s['mean'])} | "
            f"[{_pts(s['ci95'][0])}, {_pts(s['ci95'][1])}] | {100 * s['fp32_loss']:.2f} |")


TABLE_HEAD = ["| cell | FP32 (%) | KURE (%) | KURE - FP32 (points) | 95% CI | FP32 loss vs float (points) |",
              "|---|---:|---:|---:|---:|---:|"]


def kurtosis_rows(runs):
    names = list(runs[0]["kurtosis"])
    regularized = set(next(r for r in runs if r["arm"] == "kure")["regularized"])
    lines = ["| tensor | regularized | FP32 arm K (mean +- sd) | KURE arm K (mean +- sd) |", "|---|---|---:|---:|"]
    for name in names:
        cols = []
        for arm in ARMS:
            values = [r["kurtosis"][name] for r in runs if r["arm"] == arm]
            cols.append(f"{np.mean(values):.2f} +- {np.std(values, ddof=1):.2f}")
        lines.append(f"| {name} | {'yes' if name in regularized else 'no'} | {cols[0]} | {cols[1]} |")
    return lines


def markdown(summary, runs, setup) -> str:
    n = len(setup["seeds"])
    gran = {False: "per-tensor", True: "per-channel"}
    lines = [
        "# Does KURE make a model survive low-bit post-training quantization?", "",
        f"Generated by `experiments/kure_ptq.py` (do not edit: it is rewritten on every run; hand-written notes "
        f"are in [kure_ptq_notes.md](kure_ptq_notes.md)).", "",
        "## What ran", "",
        f"`{setup['command']}` on a shared 2-core CPU, paddle {setup['paddle']}: {setup['run_minutes']:.1f} min "
        f"of training and measurement summed over the {len(runs)} runs (this invocation: "
        f"{setup['minutes']:.1f} min; finished seeds are reused from the work directory).", "",
        f"- Model: MLP 784-{setup['hidden']}-({setup['hidden']} x {setup['depth']})-10, ReLU. "
        f"Adam {setup['learning_rate']}, batch {setup['batch_size']}, L2 {setup['weight_decay']}, "
        f"{setup['epochs']} epochs, last epoch kept (no selection on test).",
        f"- Data: Fashion-MNIST, {setup['train_size']} training images, {setup['val_size']} held out for validation "
        f"(split seed 0), 10,000 test images.",
        f"- Arms: FP32, and FP32 + KURE (`KurtosisDecay` via `apply_kure`, lambda {setup['kure_coeff']} split over "
        f"the {len(setup['regularized'])} regularized weights {', '.join(setup['regularized'])}, target 1.8, "
        f"L2 kept). Same initialization and batch order per seed; {n} seeds {setup['seeds']}.",
        f"- Weight PTQ (activations float): hidden layers at W3/W4, per tensor or per output channel, step = "
        f"abs-max x {ABS_MAX_RATIOS[0]}...{ABS_MAX_RATIOS[-1]} (13 ratios) or each model's MSE-optimal step x "
        f"{list(MSE_RATIOS)}; first and last layer at 8 bits per channel (abs-max).",
        f"- Exported PTQ: W4A8 and W4A4 through `post_training_quantize` (PaddleSlim `quant_post_static`, every "
        f"layer quantized including first and last, weights per channel abs-max, activations calibrated with "
        f"'{setup['ptq_algo']}' on 640 training images), accuracy from `paddle.inference`. Paddle's PTQ takes "
        f"equal widths only: W4A8 is a W8A8 export of the model with its weights already at their W4 "
        f"per-channel values (re-stored on the 8-bit grid).",
        "- Differences are KURE - FP32 in accuracy points, paired by seed: mean and 95% Student-t interval "
        f"({n - 1} degrees of freedom). 'Uninformative': the FP32 arm loses under "
        f"{100 * UNINFORMATIVE_LOSS:.0f} point to its float accuracy there.", "",
        "## Endpoints (fixed before the run)", "",
        *TABLE_HEAD,
    ]
    for e, text in ENDPOINTS.items():
        lines.append(_row(f"{e}: {text}", summary["endpoints"][e]))
    lines += ["", "Per seed (points, KURE - FP32): " + "; ".join(
        f"{e} " + ", ".join(_pts(d) for d in summary["endpoints"][e]["per_seed"]) for e in ENDPOINTS), "",
        "## Float models and the 8-bit first/last layer", "", *TABLE_HEAD,
        _row("float (no quantization)", summary["float"], flag_uninformative=False),
        _row("first and last layer W8 per-channel, rest float", summary["ends8"], flag_uninformative=False)]
    lines += ["", "Cost of keeping the first/last layer at 8 bits, abs-max x 1 (test %, FP32 arm / KURE arm):", "",
              "| setting | all layers at the low width | first/last at 8 bits |", "|---|---:|---:|"]
    for bits in LOW_BITS:
        for pc in (False, True):
            low = next(c for c in summary["cells"] if c["bits"] == bits and c["per_channel"] == pc and c["ends"] == bits)
            eight = next(c for c in summary["cells"] if c["bits"] == bits and c["per_channel"] == pc
                         and c["ends"] == END_BITS and c["step"] == "abs_max" and c["ratio"] == 1.0)
            lines.append(f"| W{bits} {gran[pc]} | {100 * low['fp32_mean']:.2f} / {100 * low['kure_mean']:.2f} | "
                         f"{100 * eight['fp32_mean']:.2f} / {100 * eight['kure_mean']:.2f} |")
    lines += ["", "## Exported PTQ (paddle.inference)", "", *TABLE_HEAD]
    for label, s in summary["exported"].items():
        lines.append(_row(label, s))
    lines += ["", "## Every weight-PTQ cell (first/last at 8 bits)", "", *TABLE_HEAD]
    for c in summary["cells"]:
        if c["ends"] == END_BITS:
            lines.append(_row(f"W{c['bits']} {gran[c['per_channel']]} {c['step']} x {c['ratio']:.2f}", c))
    lines += ["", "## Weight kurtosis (K = m4 / m2^2 over the whole tensor, after training)", "",
              *kurtosis_rows(runs), ""]
    return "\n".join(lines)


def settings_key(args) -> dict:
    return {k: getattr(args, k) for k in ("hidden", "depth", "epochs", "batch_size", "learning_rate", "weight_decay",
                                          "kure_coeff", "train_size", "val_size", "ptq_algo", "no_export")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--depth", type=int, default=2, help="hidden-to-hidden layers (quantized to W3/W4)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--kure-coeff", type=float, default=1.0, help="the paper's lambda")
    parser.add_argument("--train-size", type=int, default=0, help="0: all 55,000 not held out")
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--ptq-algo", default="mse", help="activation calibration of the exported PTQ")
    parser.add_argument("--no-export", action="store_true", help="skip the exported W4A8/W4A4 models")
    parser.add_argument("--out", default="docs/results")
    parser.add_argument("--work-dir", default="outputs/kure_ptq")
    args = parser.parse_args(argv)
    if len(args.seeds) < 2 and set(args.arms) == set(ARMS):
        print("note: one seed gives no interval; writing the per-seed records only")
    start = time.time()
    data = load_fashion_mnist(DATA_DIR, val_size=args.val_size, train_size=args.train_size, seed=0)
    os.makedirs(args.work_dir, exist_ok=True)
    cache_path = os.path.join(args.work_dir, "runs.json")
    cache = json.load(open(cache_path)) if os.path.isfile(cache_path) else {}
    if cache.get("settings") != settings_key(args):
        cache = {"settings": settings_key(args), "runs": []}
    runs = []
    for seed in args.seeds:
        done = [r for r in cache["runs"] if r["seed"] == seed and r["arm"] in args.arms]
        if len(done) < len(args.arms):
            done = run_seed(seed, data, args)
            cache["runs"] = [r for r in cache["runs"] if r["seed"] != seed] + done
            with open(cache_path + ".tmp", "w") as f:
                json.dump(cache, f)
            os.replace(cache_path + ".tmp", cache_path)
        runs += done
    if len(args.seeds) < 2 or set(args.arms) != set(ARMS) or args.no_export:
        print(json.dumps([{k: r[k] for k in ("seed", "arm", "test_acc", "ends8_test_acc")} for r in runs]))
        for r in runs:
            for c in r["weight_ptq"]:
                if c["ratio"] == 1.0:
                    print(r["arm"], c)
            print(r["arm"], r.get("exported"), r["kurtosis"])
        return
    setup = {**settings_key(args), "seeds": args.seeds, "paddle": paddle.__version__, "python": platform.python_version(),
             "train_size": len(data.train_labels), "minutes": (time.time() - start) / 60,
             "run_minutes": sum(r["seconds"] for r in runs) / 60,
             "regularized": next(r for r in runs if r["arm"] == "kure")["regularized"],
             "command": " ".join(["python experiments/kure_ptq.py", *sys.argv[1:]] if argv is None else argv)}
    summary = summarize(runs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "kure_ptq.json"), "w") as f:
        json.dump({"seeds": args.seeds, "endpoints": {e: {k: summary["endpoints"][e][k] for k in
                                                        ("mean", "ci95", "per_seed", "fp32_mean", "kure_mean",
                                                         "fp32_loss", "informative")} for e in ENDPOINTS},
                   "endpoint_definitions": ENDPOINTS, "setup": setup, "summary": summary, "runs": runs}, f, indent=1)
    with open(os.path.join(args.out, "kure_ptq.md"), "w") as f:
        f.write(markdown(summary, runs, setup))
    print(f"wrote {args.out}/kure_ptq.md and .json in {setup['minutes']:.1f} min")


if __name__ == "__main__":
    main()

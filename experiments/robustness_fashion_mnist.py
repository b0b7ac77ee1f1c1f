"""Does KURE make weight quantization forgiving of a wrong step? Fashion-MNIST, default SmallCNN.

Trains with the ``paddle-kure run`` pipeline (``paddle_kure.apps.run``: same data
split, ``fit``, checkpoints, QAT through ``prepare_qat``):

- FP32 without KURE (the run's ``fp32`` stage);
- FP32 with KURE: ``KurtosisDecay`` through ``apply_kure`` (lambda = ``Kurtosis.coeff``
  = 1.0, target 1.8, every weight but ``conv1``'s), the same epochs;
- QAT W4A4 and QAT+KURE W4A4 fine-tuned from the FP32 weights (the run's stages).

Then every model's float weights go through the ``paddle-kure robustness`` sweep
(``paddle_kure.apps.robustness.sweep_model``) at 8, 4 and 3 bits, per tensor and
per output channel: abs-max scales times fixed ratios and times N(1, std) noise over
seeds, and the unperturbed MSE and accuracy-searched scales (the latter chosen on
validation images). Accuracies are on the first ``--sweep-test-size`` test images.

Writes ``<prefix>.md``, ``.json``, ``.csv`` and ``.png``; training runs go to
``--work-dir`` and are resumed from there when the script is run again.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/robustness_fashion_mnist.py
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import numpy as np
import paddle

from paddle_kure.apps.robustness import load_model, sweep_model, write_outputs
from paddle_kure.apps.run import RunPipeline, choose_kure_weights
from paddle_kure.apps.run_config import config_from_dict
from paddle_kure.quant import KureConfig, apply_kure
from paddle_kure.robustness import SweepConfig
from paddle_kure.runio import atomic_save
from paddle_kure.train import evaluate

# model label -> (stage name, state dict path relative to the work dir)
MODELS = {
    "FP32": ("fp32", "fp32.pdparams"),
    "FP32+KURE": ("fp32_kure", "fp32_kure.pdparams"),
    "QAT W4A4": ("qat_w4a4", os.path.join("checkpoints", "qat_w4a4", "model.pdparams")),
    "QAT+KURE W4A4": ("qat_kure_w4a4", os.path.join("checkpoints", "qat_kure_w4a4", "model.pdparams")),
}
SMALL_ERROR = (0.9, 1.1)  # the step-error window of the sensitivity table


def train_models(args) -> tuple:
    """Runs (or resumes) the four training stages; returns the run and {stage: record}."""
    config = config_from_dict({
        "Global": {"seed": args.seed, "output_dir": args.work_dir, "train_size": args.train_size,
                   "val_size": args.val_size},
        "TrainConfig": {"epochs": args.epochs, "qat_epochs": args.qat_epochs},
        "QuantAware": {"weight_bits": [4], "activation_bits": [4], "use_pact": False},
        "Kurtosis": {"coeff": args.kure_coeff},
    }, source="robustness_fashion_mnist.py")
    run = RunPipeline(config, args.work_dir, resume=True, progress=False)
    records = {"fp32": run.stage("fp32", run.fp32)}
    kure_weights = choose_kure_weights(run.new_model(run.fp32_weights), config.Kurtosis, config.source)
    run.log(f"KURE regularizes {kure_weights}")

    def fp32_kure():
        t, k = config.TrainConfig, config.Kurtosis
        model = run.new_model()
        apply_kure(model, KureConfig(coeff=k.coeff, target=k.target, l2_coeff=t.weight_decay, params=kure_weights))
        history = run.train(model, "fp32_kure", t.epochs, t.learning_rate)
        atomic_save(model.state_dict(), os.path.join(args.work_dir, MODELS["FP32+KURE"][1]))  # never torn
        return {"method": "fp32_kure", "precision": "FP32", "history": history, "kure_weights": kure_weights,
                "val_acc": evaluate(model, run.data.val_images, run.data.val_labels),
                "test_acc": evaluate(model, run.data.test_images, run.data.test_labels)}

    records["fp32_kure"] = run.stage("fp32_kure", fp32_kure)
    for method in ("qat", "qat_kure"):
        records[f"{method}_w4a4"] = run.stage(f"{method}_w4a4", lambda m=method: run.qat(m, 4, 4, kure_weights))
    return run, records


def abs_max_ratios(records):
    """{ratio: accuracy} of the abs-max scales times fixed ratios."""
    return {r["value"]: r["accuracy"] for r in records
            if r["scale_method"] == "abs_max" and r["perturbation"] == "ratio"}


def sensitivity(records) -> dict:
    """Accuracy at the abs-max step, the worst within SMALL_ERROR and over all ratios,
    and the mean and std over all ratios."""
    by_ratio = abs_max_ratios(records)
    near = [a for v, a in by_ratio.items() if SMALL_ERROR[0] <= v <= SMALL_ERROR[1]]
    values = list(by_ratio.values())
    return {"at_1": by_ratio[1.0], "worst_near": min(near), "worst_all": min(values),
            "mean_all": float(np.mean(values)), "std_all": float(np.std(values))}


def _settings(results):
    first = next(iter(results.values()))["records"]
    return list(dict.fromkeys((r["bits"], r["per_channel"]) for r in first))


def _select(records, bits, per_channel):
    return [r for r in records if r["bits"] == bits and r["per_channel"] == per_channel]


def _gran(per_channel):
    return "per-channel" if per_channel else "per-tensor"


def analysis_markdown(results, stages, setup) -> str:
    """What ran, training results, kurtosis, step sensitivity and computed notes."""
    lines = [
        "Generated by `experiments/robustness_fashion_mnist.py`.", "", "## What ran", "",
        f"`{' '.join(['OMP_NUM_THREADS=1 python experiments/robustness_fashion_mnist.py', *setup['argv']])}` "
        f"on a shared 2-core CPU (paddle {setup['paddle']}), {setup['minutes']:.1f} min in all.", "",
        f"- Training (the `paddle-kure run` pipeline): {setup['train_size']} Fashion-MNIST training images, "
        f"{setup['val_size']} validation images held out (split seed {setup['seed']}), Adam 1e-3, batch 128, "
        f"L2 1e-4, {setup['epochs']} FP32 epochs; QAT W4A4 (PaddleSlim, channel-wise abs-max weights, "
        f"moving-average abs-max activations) fine-tunes the FP32 model for {setup['qat_epochs']} epoch(s) at 2e-4.",
        f"- KURE: `KurtosisDecay` via `apply_kure`, lambda {setup['kure_coeff']} (the paper's), target 1.8, "
        f"on {', '.join(stages['fp32_kure']['kure_weights'])} (all but the first conv); L2 kept on them.",
        f"- Sweep: the float weights of every Conv2D/Linear quantized (symmetric, uniform; activations stay "
        f"float; QAT models are read as their latent float weights), accuracy on the first "
        f"{setup['sweep_test_size']} test images. Abs-max scales times ratios {setup['ratios']}; times "
        f"N(1, std) per scale for std {setup['noise_stds']}, {setup['seeds']} seeds each; MSE scale (grid of "
        f"100 fractions of abs-max); accuracy-searched scale (greedy per tensor over fractions "
        f"{setup['accuracy_fractions']} of abs-max, on {setup['calib_size']} validation images).",
        "", "## Trained models", "",
        "| model | val acc (%) | test acc (%), 10k | float weights, sweep test subset (%) | seconds |",
        "|---|---:|---:|---:|---:|"]
    for label, (stage, _) in MODELS.items():
        r = stages[stage]
        lines.append(f"| {label} | {100 * r['val_acc']:.2f} | {100 * r['test_acc']:.2f} | "
                     f"{100 * results[label]['fp32_test_acc']:.2f} | {r['seconds']:.0f} |")
    lines += ["", "QAT rows: the exported W4A4 model run by `paddle.inference` (quantized weights and activations); "
              "the sweep column evaluates their float weights.", "",
              "## Weight kurtosis (K = m4 / m2^2 over the whole tensor)", ""]
    names = list(results["FP32"]["weight_kurtosis"])
    lines += ["| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, result in results.items():
        lines.append(f"| {label} | " + " | ".join(f"{result['weight_kurtosis'][n]:.2f}" for n in names) + " |")
    lines += ["", "## Step sensitivity: abs-max step times a ratio", "",
              f"Test accuracy (%) at x1 / the worst within [{SMALL_ERROR[0]}, {SMALL_ERROR[1]}] / the worst over all "
              "ratios / mean +- std over all ratios.", "",
              "| bits | granularity | " + " | ".join(results) + " |",
              "|---:|---|" + "---:|" * len(results)]
    for bits, per_channel in _settings(results):
        cells = []
        for result in results.values():
            s = sensitivity(_select(result["records"], bits, per_channel))
            cells.append(f"{100 * s['at_1']:.2f} / {100 * s['worst_near']:.2f} / {100 * s['worst_all']:.2f} / "
                         f"{100 * s['mean_all']:.2f} +- {100 * s['std_all']:.2f}")
        lines.append(f"| {bits} | {_gran(per_channel)} | " + " | ".join(cells) + " |")
    return "\n".join(lines + notes(results)) + "\n\n"


def notes(results) -> list:
    """Comparisons computed from the numbers."""
    lines = ["", "## Notes (computed)", ""]
    for plain, kure in (("FP32", "FP32+KURE"), ("QAT W4A4", "QAT+KURE W4A4")):
        for bits, per_channel in _settings(results):
            a = sensitivity(_select(results[plain]["records"], bits, per_channel))
            b = sensitivity(_select(results[kure]["records"], bits, per_channel))
            lines.append(
                f"- W{bits} {_gran(per_channel)}: {plain} loses {100 * (a['at_1'] - a['worst_near']):.2f} pt at its "
                f"worst step within +-10% and {100 * (a['at_1'] - a['worst_all']):.2f} pt within +-30%; {kure} "
                f"{100 * (b['at_1'] - b['worst_near']):.2f} and {100 * (b['at_1'] - b['worst_all']):.2f} pt. "
                f"Accuracy at the abs-max step: {100 * a['at_1']:.2f} vs {100 * b['at_1']:.2f}; std over the ratios "
                f"{100 * a['std_all']:.2f} vs {100 * b['std_all']:.2f} pt.")
    for method in ("mse", "accuracy"):
        gains = {label: [100 * (next(r["accuracy"] for r in res["records"] if r["scale_method"] == method
                                     and r["bits"] == bits and r["per_channel"] == pc)
                                - abs_max_ratios(_select(res["records"], bits, pc))[1.0])
                         for bits, pc in _settings(results)]
                 for label, res in results.items()}
        lines.append(f"- {method} scale minus abs-max (pt, over the {len(_settings(results))} bits x granularity "
                     "settings): " + "; ".join(f"{label} mean {np.mean(g):+.2f} (min {min(g):+.2f}, max "
                                               f"{max(g):+.2f})" for label, g in gains.items()) + ".")
    for bits in dict.fromkeys(b for b, _ in _settings(results)):
        above = total = 0
        best = -np.inf
        for res in results.values():
            for pc in (False, True):
                records = _select(res["records"], bits, pc)
                if not records:
                    continue
                base = abs_max_ratios(records)[1.0]
                noisy = [r["accuracy"] for r in records if r["perturbation"] == "noise"]
                above += sum(a > base for a in noisy)
                total += len(noisy)
                best = max(best, max(noisy) - base)
        lines.append(f"- Noise on the abs-max scales at W{bits}: {above} of {total} draws (all models, "
                     f"granularities, stds) beat the noise-free abs-max accuracy; the best by {100 * best:+.2f} pt.")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default=os.path.join("runs", "robustness_experiment"))
    parser.add_argument("--output", default=os.path.join("docs", "results", "robustness"),
                        help="output prefix (.md, .json, .csv, .png)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3, help="FP32 epochs (with and without KURE)")
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--kure-coeff", type=float, default=1.0)
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4, 3])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3])
    parser.add_argument("--noise-stds", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--accuracy-fractions", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    parser.add_argument("--calib-size", type=int, default=1000, help="validation images for the accuracy search")
    parser.add_argument("--sweep-test-size", type=int, default=2000, help="first test images of the sweep")
    parser.add_argument("--batch-size", type=int, default=250, help="evaluation batch size of the sweep")
    parser.add_argument("--from-json", metavar="JSON",
                        help="rewrite the outputs from an earlier run's JSON (no training, no sweep)")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        setup, results = saved["setup"], saved["models"]
        write(results, setup["training"], setup, args.output)
        return 0
    start = time.time()
    if 1.0 not in args.ratios:
        parser.error("--ratios must include 1.0 (the unperturbed abs-max step)")
    # abs-max with ratios and noise; the other scale choices unperturbed (that is what they are for)
    perturbed = SweepConfig(bits=args.bits, factors=args.ratios, noise_stds=args.noise_stds, seeds=args.seeds,
                            scale_methods=["abs_max"])
    chosen = SweepConfig(bits=args.bits, factors=[1.0], noise_stds=[], scale_methods=["mse", "accuracy"],
                         accuracy_fractions=args.accuracy_fractions)
    run, stages = train_models(args)
    data = dataclasses.replace(run.data, test_images=run.data.test_images[:args.sweep_test_size],
                               test_labels=run.data.test_labels[:args.sweep_test_size])
    results = {}
    for label, (stage, path) in MODELS.items():
        model = load_model(os.path.join(args.work_dir, path))
        result = sweep_model(model, data, perturbed, args.calib_size, args.batch_size, progress=False)
        result["records"] += sweep_model(model, data, chosen, args.calib_size, args.batch_size,
                                         progress=False)["records"]
        results[label] = result
        run.log(f"swept {label}")
    setup = dict(vars(args), argv=(argv if argv is not None else sys.argv[1:]), paddle=paddle.__version__,
                 python=platform.python_version(), minutes=(time.time() - start) / 60)
    write(results, stages, setup, args.output)
    return 0


def write(results, stages, setup, prefix):
    paths = write_outputs(results, dict(setup, training=stages), prefix,
                          "Step-size robustness with and without KURE: Fashion-MNIST, SmallCNN",
                          analysis_markdown(results, stages, setup))
    print("wrote " + ", ".join(paths))


if __name__ == "__main__":
    sys.exit(main())

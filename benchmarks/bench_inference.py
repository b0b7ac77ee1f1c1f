"""Latency and throughput of the exported FP32 and INT8 models in ``paddle.inference`` on CPU.

Reads the models ``paddle-kure run`` exports (``OUTPUT/export/*.pdmodel``) and times
each at batch 1 and batch 64 (or, with ``--minilm FP32 INT8``, a MiniLM sentence
classifier and its ``paddle-kure compress`` output at batch 1, 8 and 32, sequence
length 128, on Rotten Tomatoes test texts), in three predictor setups:

- ``native``: Paddle's own CPU kernels (the quantized graph runs its quantize/dequantize ops);
- ``onednn``: ``enable_onednn()`` (oneDNN FP32 kernels);
- ``onednn-int8``: ``enable_onednn()`` + ``enable_onednn_int8()``, Paddle's oneDNN INT8
  path, which turns the quantize/dequantize pairs of a quantized model into int8 kernels
  (it does not apply to the FP32 model, which is skipped there).

All ratios in the printed table come from this one run. Examples::

    python benchmarks/bench_inference.py runs/default --models fp32 qat_w8a8 ptq_w8a8
    python benchmarks/bench_inference.py --minilm runs/minilm_classifier/fp32 runs/compress_minilm/model
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

SETUPS = ("native", "onednn", "onednn-int8")


def make_predictor(prefix: str, setup: str, threads: int):
    from paddle import inference

    from paddle_kure.quant.inference import cpu_predictor_config

    return inference.create_predictor(cpu_predictor_config(prefix, setup, threads))


def time_predictor(predictor, inputs, repeats: int, warmup: int):
    """Median seconds per run of ``predictor`` on ``inputs`` (one array per model
    input, in the predictor's input order) and its first output."""
    for name, value in zip(predictor.get_input_names(), inputs):
        handle = predictor.get_input_handle(name)
        handle.reshape(value.shape)
        handle.copy_from_cpu(np.ascontiguousarray(value))
    output = predictor.get_output_handle(predictor.get_output_names()[0])
    for _ in range(warmup):
        predictor.run()
    if not repeats:  # warm-up only
        return 0.0, output.copy_to_cpu()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), output.copy_to_cpu()


def minilm_inputs(batch: int, max_length: int):
    """The first ``batch`` Rotten Tomatoes test texts as (input_ids, token_type_ids,
    attention_mask, labels), padded to ``max_length``."""
    from paddle_kure.data.readers import tokenize_fixed
    from paddle_kure.data.text import load_rotten_tomatoes
    from paddle_kure.models.minilm import BertTokenizer, minilm_dir

    texts, labels = load_rotten_tomatoes()["test"]
    tokenizer = BertTokenizer(os.path.join(minilm_dir(), "tokenizer.json"), max_length=max_length)
    batch_inputs = tokenize_fixed(tokenizer, texts[:batch], max_length)
    return [batch_inputs[k] for k in ("input_ids", "token_type_ids", "attention_mask")], labels[:batch]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/default", help="output directory of paddle-kure run")
    parser.add_argument("--minilm", nargs=2, metavar=("FP32", "INT8"),
                        help="path prefixes of a MiniLM classifier and its compressed model: time those instead")
    parser.add_argument("--max-length", type=int, default=128, help="sequence length of --minilm (default: 128)")
    parser.add_argument("--models", nargs="+", default=["fp32", "ptq_w8a8", "qat_w8a8"],
                        help="exported model names under RUN_DIR/export (first: the baseline)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default: 1 64 (1 8 32 with --minilm)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS),
                        help="predictor setups timed (default: all); the first model's first setup is the baseline")
    parser.add_argument("--interleave", action="store_true",
                        help="time the predictors in turn, one run each per round, so that a shared machine's "
                             "load falls on all of them alike")
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args(argv)

    import paddle_kure  # noqa: F401  (registers the custom operators a saved model may use)
    from paddle_kure.data import load_fashion_mnist
    from paddle_kure.train import accuracy

    if args.minilm:
        args.models = ["fp32", "int8"]
        prefixes = dict(zip(args.models, args.minilm))
        args.batch_sizes = args.batch_sizes or [1, 8, 32]
        inputs, labels = minilm_inputs(max(args.batch_sizes), args.max_length)
    else:
        prefixes = {name: os.path.join(args.run_dir, "export", name) for name in args.models}
        args.batch_sizes = args.batch_sizes or [1, 64]
        test = load_fashion_mnist(val_size=1, test_size=max(args.batch_sizes))
        inputs, labels = [test.test_images], test.test_labels
    missing = [p + ".pdmodel" for p in prefixes.values() if not os.path.isfile(p + ".pdmodel")]
    if missing:
        raise SystemExit(f"no exported models {missing}: run `paddle-kure run` (or `paddle-kure compress`) first")
    rows, predictors = [], []
    for name, prefix in prefixes.items():
        for setup in args.setups:
            if setup == "onednn-int8" and name == "fp32":
                continue
            try:
                predictors.append((name, setup, make_predictor(prefix, setup, args.threads)))
            except Exception as err:  # a setup Paddle cannot build for this model is reported, not fatal
                rows.append({"model": name, "setup": setup, "error": str(err).splitlines()[0][:120]})
    for batch in args.batch_sizes:
        batch_inputs = [x[:batch] for x in inputs]
        if args.interleave:
            measured = [time_predictor(p, batch_inputs, 0, args.warmup) for _, _, p in predictors]
            times = [[] for _ in predictors]
            for _ in range(args.repeats):
                for i, (_, _, predictor) in enumerate(predictors):
                    times[i].append(time_predictor(predictor, batch_inputs, 1, 0)[0])
            measured = [(float(np.median(t)), logits) for t, (_, logits) in zip(times, measured)]
        else:
            measured = [time_predictor(p, batch_inputs, args.repeats, args.warmup) for _, _, p in predictors]
        for (name, setup, _), (seconds, logits) in zip(predictors, measured):
            rows.append({"model": name, "setup": setup, "batch": batch, "latency_ms": 1000 * seconds,
                         "samples_per_s": batch / seconds, "batch_accuracy": accuracy(logits, labels[:batch])})

    native = {r["batch"]: r["latency_ms"] for r in rows
              if r["model"] == args.models[0] and r["setup"] == args.setups[0] and "latency_ms" in r}
    best = {batch: min(r["latency_ms"] for r in rows if r["model"] == args.models[0] and r.get("batch") == batch)
            for batch in native}
    print(f"threads={args.threads}, repeats={args.repeats} (median); speedup = {args.models[0]} latency ({args.setups[0]}, "
          f"or its best setup) / latency\n")
    print(f"| model | setup | batch | latency (ms) | samples/s | speedup vs FP32 {args.setups[0]} | vs best FP32 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['setup']} | - | failed: {r['error']} | | | |")
            continue
        r["speedup_vs_baseline_native"] = native[r["batch"]] / r["latency_ms"]
        r["speedup_vs_baseline_best"] = best[r["batch"]] / r["latency_ms"]
        print(f"| {r['model']} | {r['setup']} | {r['batch']} | {r['latency_ms']:.3f} | {r['samples_per_s']:.0f} | "
              f"{r['speedup_vs_baseline_native']:.2f}x | {r['speedup_vs_baseline_best']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

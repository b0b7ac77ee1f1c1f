"""Latency and throughput of the exported FP32 and INT8 models in ``paddle.inference`` on CPU.

Reads the models ``paddle-kure run`` exports (``OUTPUT/export/*.pdmodel``) and times
each at batch 1 and batch 64, in three predictor setups:

- ``native``: Paddle's own CPU kernels (the quantized graph runs its quantize/dequantize ops);
- ``onednn``: ``enable_onednn()`` (oneDNN FP32 kernels);
- ``onednn-int8``: ``enable_onednn()`` + ``enable_onednn_int8()``, Paddle's oneDNN INT8
  path, which turns the quantize/dequantize pairs of a quantized model into int8 kernels
  (it does not apply to the FP32 model, which is skipped there).

All ratios in the printed table come from this one run. Example::

    python benchmarks/bench_inference.py runs/default --models fp32 qat_w8a8 ptq_w8a8
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

    config = inference.Config(prefix + ".pdmodel", prefix + ".pdiparams")
    config.disable_glog_info()
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(threads)
    if setup == "native":
        config.disable_onednn()
    else:
        config.enable_onednn()
        if setup == "onednn-int8":
            config.enable_onednn_int8()
    return inference.create_predictor(config)


def time_predictor(predictor, images: np.ndarray, repeats: int, warmup: int):
    """Median seconds per run of ``predictor`` on ``images`` and its logits."""
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output = predictor.get_output_handle(predictor.get_output_names()[0])
    handle.reshape(images.shape)
    handle.copy_from_cpu(images)
    for _ in range(warmup):
        predictor.run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), output.copy_to_cpu()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", default="runs/default", help="output directory of paddle-kure run")
    parser.add_argument("--models", nargs="+", default=["fp32", "ptq_w8a8", "qat_w8a8"],
                        help="exported model names under RUN_DIR/export (first: the baseline)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args(argv)

    import paddle_kure  # noqa: F401  (registers the custom operators a saved model may use)
    from paddle_kure.data import load_fashion_mnist
    from paddle_kure.train import accuracy

    prefixes = {name: os.path.join(args.run_dir, "export", name) for name in args.models}
    missing = [p + ".pdmodel" for p in prefixes.values() if not os.path.isfile(p + ".pdmodel")]
    if missing:
        raise SystemExit(f"no exported models {missing}: run `paddle-kure run` first (or pass its --output-dir)")
    test = load_fashion_mnist(val_size=1, test_size=max(args.batch_sizes))
    rows = []
    for name, prefix in prefixes.items():
        for setup in SETUPS:
            if setup == "onednn-int8" and name == "fp32":
                continue
            try:
                predictor = make_predictor(prefix, setup, args.threads)
            except Exception as err:  # a setup Paddle cannot build for this model is reported, not fatal
                rows.append({"model": name, "setup": setup, "error": str(err).splitlines()[0][:120]})
                continue
            for batch in args.batch_sizes:
                images = np.ascontiguousarray(test.test_images[:batch])
                seconds, logits = time_predictor(predictor, images, args.repeats, args.warmup)
                agreement = accuracy(logits, test.test_labels[:batch])
                rows.append({"model": name, "setup": setup, "batch": batch, "latency_ms": 1000 * seconds,
                             "images_per_s": batch / seconds, "batch_accuracy": agreement})

    native = {r["batch"]: r["latency_ms"] for r in rows
              if r["model"] == args.models[0] and r["setup"] == "native" and "latency_ms" in r}
    print(f"threads={args.threads}, repeats={args.repeats} (median); speedup = {args.models[0]} native latency / latency\n")
    print("| model | setup | batch | latency (ms) | images/s | speedup vs FP32 native |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['setup']} | - | failed: {r['error']} | | |")
            continue
        r["speedup_vs_baseline_native"] = native[r["batch"]] / r["latency_ms"]
        print(f"| {r['model']} | {r['setup']} | {r['batch']} | {r['latency_ms']:.3f} | {r['images_per_s']:.0f} | "
              f"{r['speedup_vs_baseline_native']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

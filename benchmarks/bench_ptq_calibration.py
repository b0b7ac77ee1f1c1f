"""Accuracy and time of each PTQ calibration algorithm (``QuantPost.algo``) on the models
``paddle-kure run`` trains: the FP32 and the FP32+KURE ``SmallCNN``, exported and
measured in ``paddle.inference``. The default config's ``algo`` was chosen from this
table (validation accuracy; the test split is printed, not used for the choice).

The config's ``Global``, ``TrainConfig``, ``QuantAware`` and ``Kurtosis`` sections are
used as they are; its ``QuantPost.algo`` is replaced by each algorithm in turn. Finished
FP32 stages in WORK_DIR are reused. Example::

    python benchmarks/bench_ptq_calibration.py runs/ptq_calibration
"""
from __future__ import annotations

import argparse
import dataclasses
import time

from paddle_kure.apps.run import PTQ_SOURCES, RunPipeline, choose_kure_weights
from paddle_kure.apps.run_outputs import METHOD_TITLES, precision_name
from paddle_kure.apps.run_config import default_config_path, load_config
from paddle_kure.quant.dygraph import PTQ_ALGOS


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", help="folder for the trained models and the PTQ exports")
    parser.add_argument("--config", default=default_config_path(), help="run config (default: the packaged one)")
    parser.add_argument("--algos", nargs="+", default=list(PTQ_ALGOS), choices=PTQ_ALGOS)
    args = parser.parse_args()

    config = load_config(args.config)
    run = RunPipeline(config, args.work_dir, resume=True, progress=False)
    run.stage("fp32", run.fp32)
    kure_weights = choose_kure_weights(run.new_model(run.fp32_weights), config.Kurtosis, config.source)
    run.stage("fp32_kure", lambda: run.fp32_kure(kure_weights))
    lines = ["| algo | model | precision | val acc (%) | test acc (%) | seconds |", "|---|---|---|---|---|---|"]
    for algo in args.algos:
        config.QuantPost = dataclasses.replace(config.QuantPost, algo=algo)
        for method in PTQ_SOURCES:
            for weight_bits, activation_bits in config.precisions():
                start = time.time()
                record = run.ptq(method, weight_bits, activation_bits)
                lines.append(f"| {algo} | {METHOD_TITLES[method]} | {precision_name(weight_bits, activation_bits)} | "
                             f"{100 * record['val_acc']:.2f} | {100 * record['test_acc']:.2f} | "
                             f"{time.time() - start:.1f} |")
                print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

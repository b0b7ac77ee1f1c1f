"""``paddle-kure robustness MODEL``: how accuracy depends on the weight quantization step
(the sweep and its writers are :mod:`paddle_kure.apps.robustness`)."""
from __future__ import annotations

import dataclasses
import os
import time

HELP = "Quantize a trained model's weights with scaled or noisy steps and plot accuracy against the step."
GRANULARITIES = {"per-tensor": False, "per-channel": True}
DEFAULT_RATIOS = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3)
DEFAULT_OUTPUT = os.path.join("runs", "robustness", "robustness")


def add_arguments(parser):
    parser.add_argument("model", help="a .pdparams state dict of the default SmallCNN (paddle-kure run writes "
                                      "OUTPUT/fp32.pdparams and OUTPUT/checkpoints/<stage>/model.pdparams)")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 4, 3], help="weight bit widths (default: 8 4 3)")
    parser.add_argument("--granularity", nargs="+", choices=list(GRANULARITIES), default=list(GRANULARITIES),
                        help="scale per tensor and/or per output channel (default: both)")
    parser.add_argument("--ratios", type=float, nargs="+", default=list(DEFAULT_RATIOS),
                        help="fixed factors on every scale (default: 0.7 to 1.3 in steps of 0.05)")
    parser.add_argument("--noise-stds", type=float, nargs="*", default=[0.01, 0.05, 0.1],
                        help="std of the N(1, std) factor drawn per scale, on abs-max (default: 0.01 0.05 0.1)")
    parser.add_argument("--seeds", type=int, default=3, help="noise draws per std (default: 3)")
    parser.add_argument("--scale-methods", nargs="+", default=["abs_max", "mse", "accuracy"],
                        help="unperturbed scales swept with the ratios: abs_max, mse, accuracy (default: all)")
    parser.add_argument("--accuracy-fractions", type=float, nargs="+",
                        help="fractions of abs-max the 'accuracy' method tries per tensor (default: 0.5 to 1.0 "
                             "in steps of 0.05)")
    parser.add_argument("--data-dir",
                        help="directory of the Fashion-MNIST *-ubyte.gz files (default: where the Debian package "
                             "dataset-fashion-mnist puts them)")
    parser.add_argument("--split-seed", type=int, default=2024,
                        help="seed of the train/validation split: the training run's Global.seed (default: 2024)")
    parser.add_argument("--val-size", type=int, default=5000,
                        help="validation images; at most the training run's Global.val_size (default: 5000)")
    parser.add_argument("--calib-size", type=int, default=1000,
                        help="validation images the 'accuracy' scale method is chosen on (default: 1000)")
    parser.add_argument("--test-size", type=int, default=0,
                        help="first test images every accuracy is measured on (default 0: all 10k)")
    parser.add_argument("--batch-size", type=int, default=1000, help="evaluation batch size (default: 1000)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"output prefix of .md, .json, .csv, .png (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def check_arguments(args) -> None:
    """The checks a sweep would otherwise reach only at its end: sizes and the output folder."""
    from paddle_kure._validate import check_int
    from paddle_kure.errors import UserError

    for option, low, high in (("--batch-size", 1, None), ("--test-size", 0, 10000), ("--val-size", 1, 59999),
                              ("--seeds", 1, None), ("--calib-size", 1, args.val_size)):
        try:
            check_int("robustness", option, getattr(args, option[2:].replace("-", "_")), low, high)
        except ValueError as err:  # "robustness.--seeds must be ..." read as "--seeds: must be ..."
            raise UserError(f"{option}: {str(err).split(' ', 1)[1]}") from None
    if os.path.isdir(args.output):
        raise UserError(f"--output: {args.output} is a folder; give a file prefix such as {args.output}/robustness")
    directory = os.path.dirname(os.path.abspath(args.output))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise UserError(f"--output: cannot create {directory}: {err.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise UserError(f"--output: {directory} is not writable")


def main(args) -> int:
    from paddle_kure.apps.robustness import load_model, scale_table, sweep_model, write_outputs
    from paddle_kure.data import load_fashion_mnist
    from paddle_kure.data.vision import DEFAULT_DIR
    from paddle_kure.errors import UserError
    from paddle_kure.robustness import SweepConfig

    check_arguments(args)
    fractions = {"accuracy_fractions": args.accuracy_fractions} if args.accuracy_fractions else {}
    try:
        config = SweepConfig(bits=args.bits, per_channel=[GRANULARITIES[g] for g in dict.fromkeys(args.granularity)],
                             factors=args.ratios, noise_stds=args.noise_stds, seeds=args.seeds,
                             scale_methods=list(dict.fromkeys(args.scale_methods)), **fractions)
        model = load_model(args.model)
        start = time.time()
        # train_size=1: the sweep trains nothing, only the validation and test splits are used
        data = load_fashion_mnist(args.data_dir or DEFAULT_DIR, val_size=args.val_size, train_size=1,
                                  test_size=args.test_size, seed=args.split_seed)
    except (FileNotFoundError, ValueError) as err:  # the messages name the option's value or the file
        raise UserError(str(err)) from None
    name = os.path.basename(args.model)
    results = {name: sweep_model(model, data, config, args.calib_size, args.batch_size,
                                 progress=not args.no_progress)}
    setup = {"model": os.path.abspath(args.model), "config": dataclasses.asdict(config),
             "data": str(data), "split_seed": args.split_seed, "calib_size": args.calib_size,
             "seconds": round(time.time() - start, 1)}
    paths = write_outputs(results, setup, args.output, f"Weight quantization step robustness of {name}")
    print(scale_table(results))
    print("wrote " + ", ".join(paths))
    return 0

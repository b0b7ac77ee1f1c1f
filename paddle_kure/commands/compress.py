"""``paddle-kure compress CONFIG``: compress an existing Paddle inference model with
quantization-aware training, KURE (and PACT) and distillation from the FP32 model.

CONFIG is a PaddleSlim auto-compression YAML (``Global``, ``Distillation``,
``QuantAware``, ``TrainConfig``) plus a ``Kurtosis`` section; see
:mod:`paddle_kure.apps.compress_config` for what is honoured and what is refused.
"""
from __future__ import annotations

HELP = ("Compress a Paddle inference model: QAT + KURE (+ PACT) with distillation from the FP32 model, "
        "from a PaddleSlim auto-compression YAML with a Kurtosis section.")


def add_arguments(parser):
    parser.add_argument("config", metavar="CONFIG", help="YAML: PaddleSlim's Global, Distillation, QuantAware, "
                                                          "TrainConfig sections and a Kurtosis section")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the config, the model and the reader and print the plan (ops quantized, "
                             "weights under KURE with their kurtosis) without training")
    parser.add_argument("--save-dir", help="override Global.save_dir")
    parser.add_argument("--threads", type=int, default=1,
                        help="math-library threads of the paddle.inference evaluation (default: 1)")


def main(args) -> int:
    """A bad config, model folder or reader is a UserError: one line, exit status 2 (see paddle_kure.cli)."""
    from paddle_kure.apps.compress import compress, plan_compression, report_markdown
    from paddle_kure.apps.compress_config import load_compress_config

    config = load_compress_config(args.config)
    if args.save_dir:
        config.Global.save_dir = args.save_dir
    if args.dry_run:
        print(plan_compression(config))
        return 0
    print(report_markdown(compress(config, threads=args.threads)))
    return 0

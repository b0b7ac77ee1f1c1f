"""``paddle-kure run [CONFIG]``: on Fashion-MNIST, PTQ of the FP32 and of the FP32+KURE model
against QAT, QAT+PACT, QAT+KURE and QAT+KURE+PACT (the pipeline is :mod:`paddle_kure.apps.run`). Exit status 1 when a stage diverged."""
from __future__ import annotations

HELP = ("Train FP32 and FP32+KURE on Fashion-MNIST; compare PTQ of each with QAT, QAT+PACT, QAT+KURE, "
        "QAT+KURE+PACT at each precision, export and evaluate.")


def add_arguments(parser):
    parser.add_argument("config", nargs="?", default=None,
                        help="YAML config (default: the packaged paddle_kure/configs/default.yaml)")
    parser.add_argument("--output-dir", help="override Global.output_dir")
    parser.add_argument("--resume", action="store_true",
                        help="skip finished stages and continue an interrupted one from its checkpoint (refused when "
                             "the config changed); without it the stages of an earlier run are removed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args) -> int:
    from paddle_kure.apps.run import run_from_config

    table, diverged = run_from_config(args.config, args.output_dir, args.resume, progress=not args.no_progress)
    if table is not None:
        print(table)
    return 1 if diverged else 0

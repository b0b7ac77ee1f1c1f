"""The ``paddle-kure`` console command.

Each subcommand lives in ``paddle_kure/commands/<name>.py``, which defines
``HELP`` (one line), ``add_arguments(parser)`` and ``main(args) -> int``.
Command modules import Paddle inside ``main`` so that ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module under paddle_kure.commands
COMMANDS = {
    "run": "run",
    "analyze": "analyze",
    "robustness": "robustness",
    "transformer": "transformer",
    "compress": "compress",
}


def _load(module_name):
    return importlib.import_module(f"paddle_kure.commands.{module_name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paddle-kure",
        description="Kurtosis regularization, PACT, QAT and pruning for PaddlePaddle.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = _load(module_name)
        except ModuleNotFoundError as err:
            if err.name != f"paddle_kure.commands.{module_name}":
                raise
            continue  # command not shipped in this build
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_main=module.main)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

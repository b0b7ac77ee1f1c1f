"""The ``paddle-kure`` console command.

Each subcommand lives in ``paddle_kure/commands/<name>.py``, which defines
``HELP`` (one line), ``add_arguments(parser)`` and ``main(args) -> int``.
Command modules import Paddle inside ``main`` so that ``--help`` stays fast.
A :class:`paddle_kure.errors.UserError` (a bad config, argument or file) is printed
as one line, ``paddle-kure: error: FILE: KEY: problem``, with exit status 2; its
traceback only with ``--debug``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from paddle_kure.errors import UserError

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
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (for reporting a bug)")
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
    try:
        return int(args._main(args) or 0)
    except UserError as err:
        if args.debug:
            raise
        print(f"paddle-kure: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

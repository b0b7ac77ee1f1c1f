"""``paddle-kure analyze MODEL``: kurtosis of every weight tensor, outlier flags, figures, summary.

MODEL is a ``.pdparams`` state dict, a Paddle inference model (path prefix,
``.pdmodel``/``.json`` or ``.pdiparams`` file, or a folder holding one), or
``minilm`` for the bundled pretrained all-MiniLM-L6-v2. See
:mod:`paddle_kure.apps.report` for the rules.
"""
from __future__ import annotations

import os

HELP = "Kurtosis of every weight tensor of a Paddle model: table (md, csv), log10 bar chart, histograms, summary."
DEFAULT_OUTPUT = os.path.join("outputs", "kurtosis_report")


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL",
                        help="a .pdparams state dict, a Paddle inference model (path prefix, .pdmodel/.json or "
                             ".pdiparams file, or its folder), or 'minilm' (the bundled all-MiniLM-L6-v2)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"folder for kurtosis.md, kurtosis.csv and the PNGs (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--all-tensors", action="store_true",
                        help="include 1-D tensors (biases, norms) too; default: 2+ dimensional weights only")
    parser.add_argument("--num-std", type=float, default=3.0,
                        help="mean +- NUM_STD std rule (Paddle issue #28522) (default: 3.0)")
    parser.add_argument("--mad-k", type=float, default=3.5,
                        help="log-MAD rule: log10 K > median + MAD_K * MAD (default: 3.5)")
    parser.add_argument("--mad-min-ratio", type=float, default=2.0,
                        help="log-MAD rule: flagged tensors also exceed MAD_MIN_RATIO times the median kurtosis; "
                             "1 disables (default: 2.0)")
    parser.add_argument("--max-histograms", type=int, default=80,
                        help="tensors drawn in the histogram pages at most, flagged ones first; 0: none "
                             "(default: 80)")


def main(args) -> int:
    from paddle_kure.apps.report import KurtosisReport
    from paddle_kure.errors import UserError

    try:
        report = KurtosisReport.from_model(args.model, all_tensors=args.all_tensors,
                                           num_std=args.num_std, mad_k=args.mad_k,
                                           mad_min_ratio=args.mad_min_ratio)
        paths = report.write(args.output, max_histograms=args.max_histograms)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from None
    print(report.summary())
    print("wrote " + ", ".join(paths))
    return 0

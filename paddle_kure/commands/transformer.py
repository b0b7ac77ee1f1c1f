"""``paddle-kure transformer [CONFIG]``: the transformer quantization/binarization study."""
from __future__ import annotations

import os

HELP = "Quantize/binarize a small transformer text classifier: accuracy and size table over seeds."
DEFAULT_CONFIG = os.path.join("configs", "transformer_study.yaml")
DEFAULT_OUTPUT = os.path.join("docs", "results", "transformer_study")


def add_arguments(parser):
    parser.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                        help=f"study YAML (default: {DEFAULT_CONFIG})")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"output prefix; writes PREFIX.json and PREFIX.md (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="run only these variants (by name; a pretrained one needs the fp32 one too)")


def main(args) -> int:
    import dataclasses

    from paddle_kure.apps import transformer_study as study

    config = study.load_study_config(args.config)
    overrides = {key: value for key, value in (("seeds", args.seeds), ("epochs", args.epochs)) if value}
    if args.variants:
        names = [v.name for v in config.variants]
        unknown = sorted(set(args.variants) - set(names))
        if unknown:
            raise SystemExit(f"unknown variant(s) {unknown}; {args.config} defines {names}")
        overrides["variants"] = [v for v in config.variants if v.name in args.variants]
    if overrides:
        try:
            config = dataclasses.replace(config, **overrides)  # validates again
        except (TypeError, ValueError) as err:
            raise SystemExit(f"{args.config} with the command's overrides: {err}") from None
    result = study.run_study(config, study.load_text_splits(config.dataset))
    json_path, md_path = study.write_results(result, args.output)
    print(study.markdown_table(result))
    print(f"wrote {json_path} and {md_path}")
    return 0

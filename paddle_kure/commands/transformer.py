"""``paddle-kure transformer [CONFIG]``: the transformer quantization/binarization study."""
from __future__ import annotations

import os

from paddle_kure.errors import UserError, UserFileError, reported_as_user_error

HELP = "Quantize/binarize a small transformer text classifier: accuracy and size table over seeds."
DEFAULT_CONFIG = os.path.join("configs", "transformer_study.yaml")
DEFAULT_OUTPUT = os.path.join("docs", "results", "transformer_study")


def add_arguments(parser):
    parser.add_argument("config", nargs="?",
                        help=f"study YAML (default: {DEFAULT_CONFIG}, here or in the source tree)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT,
                        help=f"output prefix; writes PREFIX.json and PREFIX.md (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--variants", nargs="+", metavar="NAME",
                        help="run only these variants (by name; a pretrained one needs the fp32 one too)")


def _default_config() -> str:
    """DEFAULT_CONFIG under the working directory, else in the source tree this package sits in."""
    source_tree = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir)
    for root in (os.curdir, source_tree):
        if os.path.isfile(os.path.join(root, DEFAULT_CONFIG)):
            return os.path.normpath(os.path.join(root, DEFAULT_CONFIG))
    raise UserFileError(f"{DEFAULT_CONFIG}: default config not found here nor in the source tree; pass CONFIG")


def main(args) -> int:
    import dataclasses

    from paddle_kure.apps import transformer_study as study

    path = args.config or _default_config()
    if not os.path.isfile(path):
        raise UserFileError(f"{path}: {'is a folder, not a config file' if os.path.isdir(path) else 'not found'}")
    with reported_as_user_error(path):
        config = study.load_study_config(path)
        overrides = {key: value for key, value in (("seeds", args.seeds), ("epochs", args.epochs))
                     if value is not None}
        if args.variants:
            names = [v.name for v in config.variants]
            unknown = sorted(set(args.variants) - set(names))
            if unknown:
                raise UserError(f"{path}: --variants: unknown variant(s) {unknown}; the config defines {names}")
            overrides["variants"] = [v for v in config.variants if v.name in args.variants]
        if overrides:
            config = dataclasses.replace(config, **overrides)  # validates again
    result = study.run_study(config, study.load_text_splits(config.dataset))
    json_path, md_path = study.write_results(result, args.output)
    print(study.markdown_table(result))
    print(f"wrote {json_path} and {md_path}")
    return 0

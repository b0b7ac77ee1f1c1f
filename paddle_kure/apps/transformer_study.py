"""Quantization and binarization study of a small transformer text classifier.

For every variant (FP32, weight-only b-bit, full b-bit, sign and IR-Net binarization,
each pattern, latent and FP32-initialized runs) and every seed: train, pick the epoch
with the best validation accuracy, and report the test accuracy of that epoch's model
(the test split is read once per run, at the end). Model sizes count every stored value
(quantizer scales and ranges included) against FP32, with and without the embeddings.

Configs are YAML files (``configs/transformer_*.yaml``) read by :func:`load_study_config`;
an unknown key is an error naming the key and the file.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import List, Mapping, Optional

import numpy as np

from .._validate import ConfigBase, check_bool, check_choice, check_int, check_keys, check_str

METHODS = ("fp32", "weight", "full", "binary", "irnet")
DATASETS = ("rotten_tomatoes", "chinese_reviews")
TOKENIZER_LEVEL = {"rotten_tomatoes": "word", "chinese_reviews": "char"}
MODEL_KEYS = ("d_model", "num_heads", "d_ff", "num_layers", "classifier_hidden", "dropout")


@dataclass
class VariantConfig(ConfigBase):
    """One row of the table.

    Attributes:
        name: row label.
        method: ``fp32``, ``weight`` (weight-only), ``full`` (weights and inputs),
            ``binary`` (sign, mean-|w| scale) or ``irnet`` (Libra-PB + EDE).
        bits: bits of ``weight``/``full`` (ignored by the binarizers).
        pattern: a key of ``paddle_kure.nn.quantizers.PATTERNS``.
        quantize_final: also quantize the output layer.
        per_channel: per-output-channel scales for ``weight``/``full``/``binary``.
        latent_epochs: train in full precision for this many epochs, then switch the
            quantizers on (only quantized epochs are eligible for selection).
        pretrained: start from the FP32 variant's selected model of the same seed.
    """

    name: str
    method: str = "fp32"
    bits: int = 8
    pattern: str = "all"
    quantize_final: bool = False
    per_channel: bool = False
    latent_epochs: int = 0
    pretrained: bool = False

    def validate(self):
        """Checks the fields alone; :meth:`StudyConfig.validate` checks them against the study."""
        from paddle_kure.nn.quantizers import PATTERNS

        check_str("VariantConfig", "name", self.name)
        owner = f"variant {self.name!r}"
        check_choice(owner, "method", self.method, METHODS)
        self.bits = check_int(owner, "bits", self.bits, low=2, high=16)
        check_choice(owner, "pattern", self.pattern, sorted(PATTERNS))
        for key in ("quantize_final", "per_channel", "pretrained"):
            setattr(self, key, check_bool(owner, key, getattr(self, key)))
        self.latent_epochs = check_int(owner, "latent_epochs", self.latent_epochs, low=0)
        if self.method == "fp32" and (self.latent_epochs or self.pretrained or self.quantize_final):
            raise ValueError(f"{owner}: latent_epochs, pretrained and quantize_final need a quantizing method")
        if self.latent_epochs and self.pretrained:
            raise ValueError(f"{owner}: choose latent_epochs or pretrained, not both")


@dataclass
class StudyConfig(ConfigBase):
    """The whole study; see ``configs/transformer_study.yaml``.

    Attributes:
        dataset: ``rotten_tomatoes`` (word tokens) or ``chinese_reviews`` (characters).
        seeds: at least one seed; each variant is trained once per seed.
        epochs, batch_size, learning_rate: Adam training.
        max_len: tokens kept per text.
        vocab_size, min_freq: tokenizer vocabulary, built on the train split.
        train_limit: train on a random subset of N training examples, the same for every seed and
            variant (quick runs; a loader may list the examples grouped by label); null = all.
        model: sizes of ``TransformerConfig`` (keys ``d_model``, ``num_heads``, ``d_ff``,
            ``num_layers``, ``classifier_hidden``, ``dropout``).
        variants: the rows.
    """

    dataset: str = "rotten_tomatoes"
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    max_len: int = 48
    vocab_size: int = 8000
    min_freq: int = 2
    train_limit: Optional[int] = None
    model: dict = field(default_factory=dict)
    variants: List[VariantConfig] = field(default_factory=lambda: [VariantConfig("FP32")])

    def validate(self):
        owner = self.owner()
        self._choice("dataset", DATASETS)
        if not isinstance(self.seeds, list) or not self.seeds:
            raise TypeError(f"{owner}.seeds must be a non-empty list of ints, got {self.seeds!r}")
        self.seeds = [check_int(owner, "seeds", seed) for seed in self.seeds]
        for key in ("epochs", "batch_size", "max_len", "vocab_size", "min_freq"):
            self._int(key, low=1)
        self._number("learning_rate", low=0.0, low_open=True)
        if self.train_limit is not None:
            self._int("train_limit", low=1)
        check_keys(MODEL_KEYS, self.model, f"{owner}.model")
        if not isinstance(self.variants, list) or not self.variants \
                or not all(isinstance(v, VariantConfig) for v in self.variants):
            raise TypeError(f"{owner}.variants must be a non-empty list of VariantConfig, got {self.variants!r}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"{owner}.variants: names must be unique, got {names}")
        for variant in self.variants:
            if variant.latent_epochs >= self.epochs:
                raise ValueError(f"variant {variant.name!r}.latent_epochs must be an int in [0, epochs={self.epochs}), "
                                 f"got {variant.latent_epochs}")
        if any(v.pretrained for v in self.variants) and self.variants[0].method != "fp32":
            raise ValueError(f"{owner}.variants: pretrained variants need an fp32 variant listed first")

    @classmethod
    def from_dict(cls, values, source=""):
        """Builds the study from a mapping whose ``variants`` are mappings of :class:`VariantConfig`."""
        if isinstance(values, Mapping) and isinstance(values.get("variants"), list):
            where = f"{source}: variants" if source else "variants"
            values = dict(values, variants=[VariantConfig.from_dict(v, f"{where}[{i}]")
                                            for i, v in enumerate(values["variants"])])
        return super().from_dict(values, source)


def load_study_config(path):
    """Read and validate a YAML study config."""
    import yaml

    with open(path, encoding="utf-8") as handle:
        values = yaml.safe_load(handle) or {}
    return StudyConfig.from_dict(values, source=str(path))


# ---------------------------------------------------------------- data


@dataclass
class EncodedSplits:
    vocab_size: int
    num_classes: int
    splits: dict  # name -> (token ids [n, max_len] int64, labels [n] int64)


def load_text_splits(dataset):
    """``{"train"|"val"|"test": (texts, labels)}`` from ``paddle_kure.data.text``."""
    from paddle_kure.data import text

    loader = {"rotten_tomatoes": text.load_rotten_tomatoes, "chinese_reviews": text.load_chinese_reviews}[dataset]
    return loader()


def encode_splits(config, raw_splits):
    from paddle_kure.data.tokenize import VocabTokenizer

    train_texts, train_labels = raw_splits["train"]
    if config.train_limit is not None and config.train_limit < len(train_texts):
        keep = np.sort(np.random.RandomState(0).permutation(len(train_texts))[:config.train_limit])
        train_texts, train_labels = [train_texts[i] for i in keep], np.asarray(train_labels)[keep]
    tokenizer = VocabTokenizer.build(train_texts, TOKENIZER_LEVEL[config.dataset],
                                     max_size=config.vocab_size, min_freq=config.min_freq)
    splits = {"train": (train_texts, train_labels), "val": raw_splits["val"], "test": raw_splits["test"]}
    encoded = {name: (tokenizer.encode_batch(list(texts), config.max_len), np.asarray(labels, dtype=np.int64))
               for name, (texts, labels) in splits.items()}
    num_classes = int(max(labels.max() for _, labels in encoded.values())) + 1
    return EncodedSplits(len(tokenizer), num_classes, encoded)


def padded_batches(ids, labels, batch_size, order):
    """Batches ``(ids[index], labels[index])`` of ``order`` (numpy), each cut to its longest row.

    ``ids`` [n, max_len] is right-padded with id 0 (the padding id of ``VocabTokenizer`` and of
    BERT vocabularies); columns that are padding in every row of a batch are dropped.
    """
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = ids[index]
        width = max(1, int((batch != 0).sum(axis=1).max()))  # trim padding shared by the batch
        yield batch[:, :width], labels[index]


# ---------------------------------------------------------------- training


def build_model(config, variant, data):
    from paddle_kure.models.transformer import TransformerClassifier, TransformerConfig
    from paddle_kure.nn.quantizers import quantize_linears

    model = TransformerClassifier(TransformerConfig(vocab_size=data.vocab_size, num_classes=data.num_classes,
                                                    max_len=config.max_len, **config.model))
    if variant.method != "fp32":
        quantize_linears(model, model.linear_groups(), variant.pattern, variant.method, variant.bits,
                         variant.per_channel, variant.quantize_final)
    return model


def evaluate(model, ids, labels, batch_size=256):
    """Accuracy on token ids in padded batches (:func:`paddle_kure.train.evaluate`: eval
    mode, the model's mode restored)."""
    from paddle_kure.train import evaluate as evaluate_batches

    return evaluate_batches(model, batches=padded_batches(ids, labels, batch_size, np.arange(len(labels))))


def train_variant(config, variant, data, seed, init_state=None, log=print):
    """Train one (variant, seed) with :func:`paddle_kure.train.fit`; returns the result
    row and the selected model's state dict."""
    import paddle

    from paddle_kure.models.transformer import model_size_bits
    from paddle_kure.nn import quantizers
    from paddle_kure.train import fit

    paddle.seed(seed)
    rng = np.random.RandomState(seed)
    model = build_model(config, variant, data)
    if init_state is not None:
        own = model.state_dict()
        unexpected = sorted(set(init_state) - set(own))
        missing = sorted(key for key in set(own) - set(init_state) if "quantizer" not in key)
        if unexpected or missing:  # only quantizer buffers (activation ranges) may be new
            raise RuntimeError(f"FP32 state does not fit {variant.name}: missing {missing}, unexpected {unexpected}")
        model.set_state_dict({**own, **init_state})
    optimizer = paddle.optimizer.Adam(config.learning_rate, parameters=model.parameters())
    train_ids, train_labels = data.splits["train"]
    quantized_epochs = config.epochs - variant.latent_epochs

    def switch_quantizers(epoch):
        quantizing = epoch >= variant.latent_epochs
        quantizers.set_quantization_enabled(model, quantizing)
        if quantizing:
            quantizers.update_ede(model, epoch - variant.latent_epochs, quantized_epochs)

    def report(record):
        selectable = record["epoch"] > variant.latent_epochs
        log(f"  {variant.name} seed {seed} epoch {record['epoch']}/{config.epochs}: loss {record['loss']:.4f} "
            f"val {record['val_acc']:.4f}{'' if selectable else ' (full precision, not selectable)'}")

    start = time.time()
    history = fit(model, optimizer, None, None, config.epochs, config.batch_size, progress=False,
                  batches=lambda epoch: padded_batches(train_ids, train_labels, config.batch_size,
                                                       rng.permutation(len(train_labels))),
                  epoch_begin_callbacks=[switch_quantizers], validate=lambda m: evaluate(m, *data.splits["val"]),
                  select_best=lambda epoch: epoch >= variant.latent_epochs, log=report)
    best = next(record for record in history if record.get("selected"))
    return {
        "seed": seed,
        "best_epoch": best["epoch"],
        "val_accuracy": best["val_acc"],
        "test_accuracy": evaluate(model, *data.splits["test"]),
        "size_bits": model_size_bits(model),
        "size_bits_without_embedding": model_size_bits(model, include_embedding=False),
        "train_seconds": round(time.time() - start, 1),
    }, {key: value.numpy().copy() for key, value in model.state_dict().items()}


def _mean_std(values):
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def run_study(config, raw_splits, log=print):
    """Train every variant on every seed; returns the JSON-ready result."""
    data = encode_splits(config, raw_splits)
    log(f"{config.dataset}: train/val/test = {[len(data.splits[s][1]) for s in ('train', 'val', 'test')]}, "
        f"vocabulary {data.vocab_size}, classes {data.num_classes}")
    rows = []
    fp32_states = {}
    for variant in config.variants:
        runs = []
        for seed in config.seeds:
            init_state = fp32_states[seed] if variant.pretrained else None
            result, state = train_variant(config, variant, data, seed, init_state, log)
            if variant is config.variants[0] and variant.method == "fp32":
                fp32_states[seed] = state
            runs.append(result)
            log(f"{variant.name} seed {seed}: epoch {result['best_epoch']} val {result['val_accuracy']:.4f} "
                f"test {result['test_accuracy']:.4f} ({result['train_seconds']} s)")
        rows.append({"variant": dataclasses.asdict(variant), "runs": runs})
    baseline = rows[0]["runs"][0]
    for row in rows:
        first = row["runs"][0]
        row["test_accuracy_mean"], row["test_accuracy_std"] = _mean_std([r["test_accuracy"] for r in row["runs"]])
        row["val_accuracy_mean"], row["val_accuracy_std"] = _mean_std([r["val_accuracy"] for r in row["runs"]])
        row["size_bits"] = first["size_bits"]
        row["size_bits_without_embedding"] = first["size_bits_without_embedding"]
        row["size_ratio"] = first["size_bits"] / baseline["size_bits"]
        row["size_ratio_without_embedding"] = (first["size_bits_without_embedding"]
                                               / baseline["size_bits_without_embedding"])
    return {
        "config": dataclasses.asdict(config),
        "data": {"vocab_size": data.vocab_size, "num_classes": data.num_classes,
                 **{f"{s}_examples": len(data.splits[s][1]) for s in ("train", "val", "test")}},
        "rows": rows,
    }


def _describe(variant):
    if variant["method"] == "fp32":
        return "full precision"
    what = {"weight": f"weight-only {variant['bits']}-bit", "full": f"weights+inputs {variant['bits']}-bit",
            "binary": "sign binarization", "irnet": "IR-Net binarization"}[variant["method"]]
    parts = [what, f"pattern {variant['pattern']}" + (" + final" if variant["quantize_final"] else "")]
    if variant["latent_epochs"]:
        parts.append(f"latent {variant['latent_epochs']} ep")
    if variant["pretrained"]:
        parts.append("init from FP32")
    return ", ".join(parts)


def markdown_table(result):
    config = result["config"]
    lines = [
        f"Dataset `{config['dataset']}` ({result['data']['train_examples']} train / "
        f"{result['data']['val_examples']} val / {result['data']['test_examples']} test), "
        f"{config['epochs']} epochs, seeds {config['seeds']}; test accuracy of the epoch with the best "
        "validation accuracy, mean ± std over seeds. Size: bits of every stored value (scales included), "
        "FP32 = 100%.",
        "",
        "| Variant | What | Test acc (%) | Val acc (%) | Size (KiB) | Size vs FP32 | "
        "Size w/o embedding (KiB) | vs FP32 w/o embedding |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['variant']['name']} | {_describe(row['variant'])} | "
            f"{100 * row['test_accuracy_mean']:.1f} ± {100 * row['test_accuracy_std']:.1f} | "
            f"{100 * row['val_accuracy_mean']:.1f} ± {100 * row['val_accuracy_std']:.1f} | "
            f"{row['size_bits'] / 8192:.1f} | {100 * row['size_ratio']:.1f}% | "
            f"{row['size_bits_without_embedding'] / 8192:.1f} | {100 * row['size_ratio_without_embedding']:.1f}% |")
    return "\n".join(lines) + "\n"


def write_results(result, output_prefix):
    import os

    from ..runio import atomic_write

    os.makedirs(os.path.dirname(output_prefix) or ".", exist_ok=True)
    with atomic_write(output_prefix + ".json") as handle:
        json.dump(result, handle, indent=1)
    with atomic_write(output_prefix + ".md") as handle:
        handle.write(markdown_table(result))
    return output_prefix + ".json", output_prefix + ".md"

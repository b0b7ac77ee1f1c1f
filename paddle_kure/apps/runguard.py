"""Checks of ``paddle-kure run`` that need the config and the model together: what a
stage depends on (its fingerprint, compared on ``--resume``) and the whole config
checked against the model before any training."""
from __future__ import annotations

import fnmatch
import glob
import os
import shutil

from .run_config import ConfigError

__all__ = ["stage_fingerprint", "check_config_against_model", "check_resumable", "stage_files",
           "clear_earlier_run"]

# keys that change no number a stage produces
_NOT_AN_INPUT = {"Global": ("output_dir",), "TrainConfig": ("eval_batch_size",)}
_QAT_ONLY = ("qat_epochs", "qat_learning_rate")


def stage_fingerprint(config, stage: str) -> dict:
    """The config sections and keys the stage ``stage`` (``fp32``, ``fp32_more``,
    ``fp32_kure``, ``ptq_w8a8``, ``ptq_kure_w4a4``, ``qat_pact_w4a4``, ...) depends on;
    a stage of another name (an experiment's) depends on the whole config. The
    precision is part of a quantized stage's name, so ``weight_bits``/``activation_bits``
    are left out: adding a precision keeps the others. Every KURE stage depends on the
    whole ``Kurtosis`` section: its weights are chosen on the FP32 model."""
    values = config.to_dict()
    values.setdefault("Prune", None)
    for section, keys in _NOT_AN_INPUT.items():
        values[section] = {k: v for k, v in values[section].items() if k not in keys}
    # the stage name holds the precision and whether PACT is used
    quant_aware = {k: v for k, v in values["QuantAware"].items()
                   if k not in ("weight_bits", "activation_bits", "use_pact")}
    sections = ("Global", "TrainConfig")
    fp32 = {"Global": values["Global"],
            "TrainConfig": {k: v for k, v in values["TrainConfig"].items() if k not in _QAT_ONLY}}
    if stage == "fp32":
        return fp32
    if stage == "fp32_more":
        return {section: values[section] for section in sections}
    if stage == "fp32_kure":  # trained as fp32 is, with KURE
        return dict(fp32, Kurtosis=values["Kurtosis"])
    if stage.startswith("ptq_kure_"):  # calibrates the fp32_kure weights
        return dict(fp32, Kurtosis=values["Kurtosis"], QuantAware=quant_aware, QuantPost=values["QuantPost"])
    if stage.startswith("ptq_"):  # calibrates the FP32 weights: trains nothing
        return dict(fp32, QuantAware=quant_aware, QuantPost=values["QuantPost"])
    if stage.startswith("qat_"):
        fingerprint = dict({section: values[section] for section in sections}, QuantAware=quant_aware,
                           Prune=values["Prune"])
        if stage.startswith("qat_kure"):
            fingerprint["Kurtosis"] = values["Kurtosis"]
        return fingerprint
    return values


def stage_files(output_dir: str, stage: str, record: dict) -> list:
    """Files (relative to ``output_dir``) a finished stage wrote: its export and, for
    ``fp32`` and ``fp32_kure``, the weights later stages start from."""
    files = [stage + ".pdparams"] if stage in ("fp32", "fp32_kure") else []
    if "export" in record:
        files += sorted(os.path.relpath(p, output_dir)
                        for p in glob.glob(os.path.join(output_dir, glob.escape(record["export"])) + ".*"))
    return files


def check_config_against_model(config, model) -> None:
    """Everything ``paddle-kure run`` would otherwise find out only after the FP32
    (and PTQ) stages: a ConfigError naming the file, the key and the patterns as
    written in the file."""
    from ..quant.config import DYGRAPH_ACTIVATION_QUANTIZE_TYPES
    from ..selection import plan_kure

    where = config.source
    for weight_bits, activation_bits in config.precisions():
        kind = config.quant_config(weight_bits, activation_bits).activation_quantize_type
        if kind not in DYGRAPH_ACTIVATION_QUANTIZE_TYPES:
            raise ConfigError(f"{where}: QuantAware.activation_quantize_type: {kind!r} works on static graphs only; "
                              f"paddle-kure run trains dygraph models, which support "
                              f"{list(DYGRAPH_ACTIVATION_QUANTIZE_TYPES)}")
    g, t, q = config.Global, config.TrainConfig, config.QuantPost
    train_images = g.train_size or 60000 - g.val_size
    if t.batch_size > train_images:
        raise ConfigError(f"{where}: TrainConfig.batch_size: {t.batch_size} exceeds the {train_images} training "
                          f"images (Global.train_size)")
    if any(m.startswith("ptq") for m in config.methods()) and q.batch_nums * q.batch_size > train_images:
        raise ConfigError(f"{where}: QuantPost: batch_nums * batch_size = {q.batch_nums * q.batch_size} "
                          f"calibration images exceed the {train_images} training images")

    k = config.Kurtosis
    shapes = {name: list(p.shape) for name, p in model.named_parameters()}
    weights = ", ".join(f"{name} {shape}" for name, shape in shapes.items() if len(shape) >= 2)
    model_name = type(model).__name__
    for key, patterns in (("include", k.include), ("exclude", k.exclude)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in shapes):
                raise ConfigError(f"{where}: Kurtosis.{key}: {pattern!r} matches no parameter of {model_name} "
                                  f"(weights: {weights})")
    if any("kure" in m for m in config.methods()):
        selection = dict(config.Kurtosis.selection(), auto_exclude=None)  # auto_exclude needs the trained FP32 model
        if not plan_kure(model, **selection).chosen:
            raise ConfigError(f"{where}: Kurtosis: include {list(k.include)}, exclude {list(k.exclude)}, "
                              f"layer_types {list(k.layer_types)} and min_size {k.min_size} leave no weight of "
                              f"{model_name} to regularize (weights: {weights})")
    if config.Prune is not None:
        try:
            config.Prune.build_pruner(model)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: Prune: {err}") from None


def check_resumable(output_dir: str, config) -> None:
    """Before ``--resume`` writes anything: every stage record and checkpoint in
    ``output_dir`` was made with ``config`` (a UserError naming the changed keys if
    not). Damaged files are left to the stage that reads them (it reports them and
    runs again)."""
    import json

    from ..runio import CHECKPOINT_STATE, PREVIOUS_SUFFIX, read_record, stale_error

    for path in sorted(glob.glob(os.path.join(output_dir, "stages", "*.json"))):
        read_record(path, stage_fingerprint(config, os.path.basename(path)[:-len(".json")]))
    for path in sorted(glob.glob(os.path.join(output_dir, "checkpoints", "*", CHECKPOINT_STATE))):
        stage = os.path.basename(os.path.dirname(path))
        stage = stage[:-len(PREVIOUS_SUFFIX)] if stage.endswith(PREVIOUS_SUFFIX) else stage
        try:
            with open(path, encoding="utf-8") as f:
                recorded = json.load(f).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            continue
        if recorded != stage_fingerprint(config, stage):
            raise stale_error(path, recorded, stage_fingerprint(config, stage))


def clear_earlier_run(output_dir: str) -> list:
    """Removes the stage records and checkpoints an earlier run left in ``output_dir``
    (a run without ``--resume`` starts over; left in place, a later ``--resume`` would
    mix them with this run's). Returns what was removed."""
    removed = sorted(glob.glob(os.path.join(output_dir, "stages", "*.json")))
    for path in removed:
        os.remove(path)
    checkpoints = os.path.join(output_dir, "checkpoints")
    if os.path.isdir(checkpoints) and os.listdir(checkpoints):
        shutil.rmtree(checkpoints)
        removed.append(checkpoints)
    return removed

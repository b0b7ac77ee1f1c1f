"""The YAML configuration of ``paddle-kure run``, loaded into validated dataclasses.

Section and key names follow PaddleSlim where PaddleSlim has them (``Global``,
``QuantAware``, ``TrainConfig``; ``QuantPost`` uses the argument names of
``paddleslim.quant.quant_post_static``); ``Kurtosis`` holds the KURE settings
and ``Prune`` (optional) is :class:`paddle_kure.prune.PruneConfig`. An unknown
section or key, a wrong type or an impossible value raises an error that names
the key and the file.

Example:
    .. code-block:: python

        >>> from paddle_kure.apps.run_config import load_config, default_config_path
        >>> config = load_config(default_config_path())
        >>> print(config.TrainConfig.epochs, config.precisions())
        2 [(8, 8), (4, 4)]
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

from .._validate import FLOAT32_MAX, SEED_MAX, ConfigBase, check_str
from ..data.vision import DEFAULT_DIR
from ..errors import UserError, UserFileError
from ..param_filter import globs_to_regexes
from ..quant.dygraph import PTQ_ALGOS

__all__ = [
    "ConfigError",
    "GlobalConfig",
    "TrainConfig",
    "KurtosisConfig",
    "QuantPostConfig",
    "RunConfig",
    "load_config",
    "default_config_path",
]

OPTIMIZERS = ("adam", "momentum", "sgd")


class ConfigError(UserError, ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def default_config_path() -> str:
    """The config shipped inside the package (``paddle_kure/configs/default.yaml``)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.yaml")


@dataclass
class GlobalConfig(ConfigBase):
    """``Global``: data, seed and output.

    Attributes:
        seed: seeds Paddle, numpy and the data split and order.
        output_dir: where results, checkpoints and exported models go.
        data_dir: directory of the Fashion-MNIST ``*-ubyte.gz`` files.
        download: fall back to Paddle's downloader when ``data_dir`` lacks the files.
        train_size: training images taken from the 60k train split (0: all but the validation ones).
        val_size: validation images held out of the train split (used for every choice).
        test_size: test images used for the final numbers (0: all 10k).
    """

    seed: int = 2024
    output_dir: str = "runs/default"
    data_dir: str = DEFAULT_DIR
    download: bool = False
    train_size: int = 0
    val_size: int = 5000
    test_size: int = 0

    OWNER = "Global"

    def validate(self):
        self._int("seed", low=0, high=SEED_MAX)
        for key in ("output_dir", "data_dir"):
            check_str(self.owner(), key, getattr(self, key))
        self._bool("download")
        self._int("train_size", low=0)
        self._int("val_size", low=1)
        self._int("test_size", low=0, high=10000)
        if self.train_size + self.val_size > 60000:
            raise ValueError(f"Global.train_size + val_size must be <= 60000 (the train split), got "
                             f"{self.train_size} + {self.val_size}")


@dataclass
class TrainConfig(ConfigBase):
    """``TrainConfig``: FP32 training, then quantization-aware fine-tuning.

    Attributes:
        epochs: FP32 epochs.
        batch_size: global batch size (split over data-parallel processes).
        learning_rate: FP32 learning rate.
        optimizer: 'adam', 'momentum' or 'sgd'.
        weight_decay: L2 decay (kept on KURE-regularized weights too).
        qat_epochs: epochs of QAT fine-tuning from the FP32 weights.
        qat_learning_rate: learning rate of QAT fine-tuning.
        eval_batch_size: batch size of evaluation.
    """

    epochs: int = 2
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    qat_epochs: int = 1
    qat_learning_rate: float = 2e-4
    eval_batch_size: int = 1000

    def validate(self):
        for key in ("epochs", "batch_size", "qat_epochs", "eval_batch_size"):
            self._int(key, low=1)
        # numbers Paddle computes with in float32: a larger value would become inf
        self._number("learning_rate", low=0.0, low_open=True, high=FLOAT32_MAX)
        self._choice("optimizer", OPTIMIZERS)
        self._number("weight_decay", low=0.0, high=FLOAT32_MAX)
        self._number("qat_learning_rate", low=0.0, low_open=True, high=FLOAT32_MAX)


@dataclass
class KurtosisConfig(ConfigBase):
    """``Kurtosis``: kurtosis regularization (KURE) in the QAT+KURE arms. The
    selection keys are the ``Prune`` section's and map onto :func:`paddle_kure.plan_kure`
    (see :meth:`selection`), applied to the FP32 model.

    Attributes:
        coeff: the KURE paper's lambda: ``coeff * mean over tensors of (K - target)^2``.
        target: target kurtosis (1.8: uniform).
        include: glob patterns of parameter names (``model.named_parameters()``) to
            regularize; empty: every weight with 2+ dimensions.
        exclude: glob patterns never regularized (the paper leaves the first conv out).
        layer_types: regularize only weights of these layer classes (``Conv2D``, ``Linear``).
        min_size: fewest elements of a regularized tensor.
        auto_exclude: also leave out tensors whose FP32 kurtosis is an outlier among
            the chosen ones: ``mean_std`` (the rule of Paddle issue #28522: outside mean +-
            ``num_std`` std), ``log_mad`` (log10 kurtosis beyond median +
            ``mad_k`` MADs), or false. ``true`` means ``mean_std``.
        num_std: the width of the ``mean_std`` band, in standard deviations.
        mad_k: the width of the ``log_mad`` band, in median absolute deviations.
        on_weights: regularize the chosen weights (through ``KurtosisDecay``).
        on_activations: add ``coeff * mean (K - target)^2`` of the outputs of the
            layers owning the chosen weights to the loss.
    """

    coeff: float = 1.0
    target: float = 1.8
    include: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ("conv1.*",)
    layer_types: Tuple[str, ...] = ()
    min_size: int = 0
    auto_exclude: Union[bool, str] = False
    num_std: float = 3.0
    mad_k: float = 3.5
    on_weights: bool = True
    on_activations: bool = False

    OWNER = "Kurtosis"

    def validate(self):
        from ..selection import AUTO_EXCLUDE_RULES

        self._number("coeff", low=0.0, high=FLOAT32_MAX)  # float32, as in KurtosisDecay
        self._number("target", low=1.0, low_open=True, high=FLOAT32_MAX)
        self._str_list("include")
        self._str_list("exclude")
        self._str_list("layer_types")
        self._int("min_size", low=0)
        if not isinstance(self.auto_exclude, bool) and self.auto_exclude not in AUTO_EXCLUDE_RULES:
            raise ValueError(f"Kurtosis.auto_exclude must be false, true or one of {list(AUTO_EXCLUDE_RULES)}, "
                             f"got {self.auto_exclude!r}")
        self._number("num_std", low=0.0, low_open=True)
        self._number("mad_k", low=0.0, low_open=True)
        self._bool("on_weights")
        self._bool("on_activations")
        if not (self.on_weights or self.on_activations):
            raise ValueError("Kurtosis: on_weights and on_activations are both false: KURE would do nothing")

    def check_names(self, names, source: str) -> None:
        """A ConfigError naming each include/exclude pattern that matches none of
        ``names``, the model's parameter names: a misspelt or stale name would
        otherwise change nothing, silently."""
        for key in ("include", "exclude"):
            unmatched = [glob for glob in getattr(self, key)
                         if not any(fnmatch.fnmatchcase(name, glob) for name in names)]
            if unmatched:
                raise ConfigError(f"{source}: Kurtosis.{key}: no parameter is named {unmatched} (glob patterns of "
                                  f"whole names); the model has {list(names)}")

    def selection(self) -> dict:
        """Keyword arguments of :func:`paddle_kure.plan_kure` (glob patterns become
        regular expressions)."""
        rule = "mean_std" if self.auto_exclude is True else (self.auto_exclude or None)
        return {
            "include": globs_to_regexes(self.include) or None,
            "exclude": globs_to_regexes(self.exclude),
            "layer_types": list(self.layer_types) or None,
            "min_size": self.min_size,
            "auto_exclude": rule,
            "num_std": self.num_std,
            "mad_k": self.mad_k,
        }


@dataclass
class QuantPostConfig(ConfigBase):
    """``QuantPost``: post-training quantization of the FP32 and the FP32+KURE model
    (``quant_post_static`` argument names).

    Attributes:
        algo: activation scale algorithm: 'abs_max' (largest |x| seen), 'avg' (mean
            of the batches' largest |x|), 'KL', 'hist' (a percentile) or 'mse'.
        batch_nums: calibration batches (of ``batch_size`` training images).
        batch_size: calibration batch size.
    """

    algo: str = "mse"  # the default config's choice (see its comment)
    batch_nums: int = 10
    batch_size: int = 64

    OWNER = "QuantPost"

    def validate(self):
        self._choice("algo", PTQ_ALGOS)
        self._int("batch_nums", low=1)
        self._int("batch_size", low=1)


# Methods compared at each precision: PTQ of the FP32 and of the FP32+KURE model, then
# QAT from the FP32 weights; the PACT arms run only with QuantAware.use_pact.
METHODS = ("ptq", "ptq_kure", "qat", "qat_pact", "qat_kure", "qat_kure_pact")


@dataclass
class RunConfig:
    """The whole config of ``paddle-kure run``.

    ``QuantAware`` takes :class:`paddle_kure.quant.QuantAwareConfig`'s keys, except
    that ``weight_bits`` and ``activation_bits`` may be lists of equal length: one
    precision compared per pair (``[8, 4]`` and ``[8, 4]``: W8A8 and W4A4).
    ``use_pact`` adds the QAT+PACT and QAT+KURE+PACT arms.
    """

    Global: GlobalConfig = field(default_factory=GlobalConfig)
    TrainConfig: TrainConfig = field(default_factory=TrainConfig)
    QuantAware: dict = field(default_factory=dict)
    QuantPost: QuantPostConfig = field(default_factory=QuantPostConfig)
    Kurtosis: KurtosisConfig = field(default_factory=KurtosisConfig)
    Prune: Optional[object] = None
    source: str = "<dict>"

    def precisions(self) -> list:
        """``[(weight_bits, activation_bits), ...]`` compared."""
        weights, activations = (self.QuantAware.get(k, 8) for k in ("weight_bits", "activation_bits"))
        weights = weights if isinstance(weights, list) else [weights]
        activations = activations if isinstance(activations, list) else [activations]
        return list(zip(weights, activations))

    def methods(self) -> list:
        return [m for m in METHODS if not m.endswith("_pact") or self.QuantAware.get("use_pact", True)]

    def quant_config(self, weight_bits: int, activation_bits: int, use_pact: bool = False):
        """The :class:`QuantAwareConfig` of one precision."""
        from ..quant.config import QuantAwareConfig

        values = dict(self.QuantAware, weight_bits=weight_bits, activation_bits=activation_bits, use_pact=use_pact)
        return QuantAwareConfig.from_dict(values, source=self.source)

    def to_dict(self) -> dict:
        """The mapping :func:`config_from_dict` reads (what the run logs as used)."""
        out = {}
        for section in SECTIONS:
            value = getattr(self, section)
            if value is None:
                continue
            if section == "QuantAware":
                out[section] = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
            else:
                out[section] = value.to_dict()
        return out

    def __str__(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# section -> dataclass (QuantAware and Prune are built by their owners' classes)
SECTIONS = {
    "Global": GlobalConfig,
    "TrainConfig": TrainConfig,
    "QuantAware": None,
    "QuantPost": QuantPostConfig,
    "Kurtosis": KurtosisConfig,
    "Prune": None,
}


def _section(cls, values, source):
    try:
        return cls.from_dict({} if values is None else values, source)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def _quant_aware(values, source):
    """Checks the QuantAware section: each precision must make a valid QuantAwareConfig."""
    from ..quant.config import QuantAwareConfig

    where = f"{source}: QuantAware"
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {values!r}")
    values = dict(values)
    bits = {}
    for key in ("weight_bits", "activation_bits"):
        value = values.get(key, 8)
        bits[key] = value if isinstance(value, list) else [value]
        if not bits[key]:
            raise ConfigError(f"{where}.{key} must not be an empty list")
    if len(bits["weight_bits"]) != len(bits["activation_bits"]):
        raise ConfigError(f"{where}: weight_bits and activation_bits must list the same number of "
                          f"precisions, got {bits['weight_bits']} and {bits['activation_bits']}")
    for weight_bits, activation_bits in zip(bits["weight_bits"], bits["activation_bits"]):
        try:
            QuantAwareConfig.from_dict(dict(values, weight_bits=weight_bits, activation_bits=activation_bits))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None
    return values


def config_from_dict(data: dict, source: str = "<dict>") -> RunConfig:
    """Builds a :class:`RunConfig` from a parsed YAML mapping; ``source`` names the file in errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping of sections {list(SECTIONS)}, got {data!r}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; allowed sections: {list(SECTIONS)}")
    sections = {name: _section(cls, data.get(name), source)
                for name, cls in SECTIONS.items() if cls is not None}
    sections["QuantAware"] = _quant_aware(data.get("QuantAware"), source)
    if data.get("Prune") is not None:
        from ..prune.config import PruneConfig

        try:
            sections["Prune"] = PruneConfig.from_dict(data["Prune"], source=source)
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None
    return RunConfig(**sections, source=source)


def read_config_file(path: str):
    """The parsed YAML file at ``path`` (None when it is empty).

    Raises:
        FileNotFoundError: no such file, or a folder (a :class:`~paddle_kure.errors.UserFileError`).
        ConfigError: not UTF-8 or not valid YAML.
    """
    import yaml

    if os.path.isdir(path):
        raise UserFileError(f"{path}: is a folder, not a config file")
    if not os.path.isfile(path):
        raise UserFileError(f"{path}: config file not found")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None


def load_config(path: str) -> RunConfig:
    """Reads and validates a YAML config file.

    Raises:
        FileNotFoundError: no such file, or a folder (a :class:`~paddle_kure.errors.UserFileError`).
        ConfigError: not UTF-8, bad YAML, empty, an unknown section or key, a wrong
            type or value (the message names the file and the key).
    """
    data = read_config_file(path)
    if data is None:
        # the dataclass defaults are not the packaged experiment: say so rather than run something else
        raise ConfigError(f"{path}: the config is empty; start from a copy of {default_config_path()}")
    return config_from_dict(data, source=path)

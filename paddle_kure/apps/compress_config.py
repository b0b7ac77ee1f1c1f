"""The config of ``paddle-kure compress``: a PaddleSlim auto-compression YAML plus a
``Kurtosis`` section.

Sections and keys are PaddleSlim's (``paddleslim.auto_compression``: ``Global``,
``Distillation``, ``QuantAware``, ``TrainConfig``). Every key PaddleSlim defines is
either honoured or refused with the reason (:data:`REFUSED_SECTIONS`,
:data:`REFUSED_VALUES`); a key PaddleSlim does not define is an error naming the
allowed ones. ``Global`` adds ``reader`` / ``reader_args`` (where the data comes
from), ``save_dir`` and ``seed``; ``Kurtosis`` takes the keys of
:class:`paddle_kure.apps.run_config.KurtosisConfig`, its patterns matched against the
parameter names of the inference model (``conv2d_0.w_0``, ``linear_3.w_0``).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Optional

from .._validate import (FLOAT32_MAX, SEED_MAX, ConfigBase, check_choice, check_keys, check_number,
                         check_str)
from .run_config import ConfigError, KurtosisConfig, read_config_file
from ..quant.config import QUANTIZE_OP_TYPES, QuantAwareConfig
from ..quant.program import DISTILL_LOSSES

__all__ = ["CompressConfig", "DistillationSection", "GlobalSection", "QuantAwareSection", "TrainSection",
           "load_compress_config", "resolve_reader", "REFUSED_SECTIONS", "REFUSED_VALUES"]

# PaddleSlim strategies compress does not run, and why.
REFUSED_SECTIONS = {
    "QuantPost": "post-training quantization: compress trains (quantization-aware training with distillation); "
                 "paddle-kure run compares PTQ, or call paddleslim.quant.quant_post_static",
    "HyperParameterOptimization": "a search over post-training quantization settings; compress does "
                                  "quantization-aware training",
    "MultiTeacherDistillation": "one teacher only: set Distillation.teacher_model_dir",
    "ChannelPrune": "pruning is not part of compress (paddle_kure.prune prunes dygraph models)",
    "UnstructurePrune": "pruning is not part of compress (paddle_kure.prune prunes dygraph models)",
    "TransformerPrune": "pruning is not part of compress (paddle_kure.prune prunes dygraph models)",
    "ASPPrune": "pruning is not part of compress (paddle_kure.prune prunes dygraph models)",
}
SECTIONS = ("Global", "Distillation", "QuantAware", "TrainConfig", "Kurtosis")

# (section, key) -> (values accepted, why other values are refused)
REFUSED_VALUES = {
    ("Global", "reader_config"): (None, "PaddleSlim's example scripts read their dataset settings from it; "
                                        "here Global.reader names the function that returns the reader"),
    ("Global", "deploy_backend"): (None, "compress targets paddle.inference on CPU (oneDNN INT8); the backend "
                                         "switch of PaddleSlim's examples (TensorRT, ...) does not apply"),
    ("Global", "Evaluation"): ((None, True), "compress always evaluates the FP32 and the compressed model; "
                                             "an evaluation-only run is not offered"),
    ("QuantAware", "dtype"): (("int8",), "the INT8 kernels of paddle.inference (oneDNN) take int8"),
    ("QuantAware", "for_tensorrt"): ((False,), "the TensorRT op list does not apply to the CPU target"),
    ("QuantAware", "is_full_quantize"): ((False,), "it quantizes residual adds, layer inputs and outputs too; "
                                                   "oneDNN then runs those in int8 (attention-mask bias and "
                                                   "embedding sums included) and accuracy collapses"),
    ("TrainConfig", "amp_config"): (None, "mixed precision has no use on the CPU this trains on"),
    ("TrainConfig", "recompute_config"): (None, "one process, no memory pressure: recompute is not offered"),
    ("TrainConfig", "sharding_config"): (None, "compress trains in one process; sharding is not offered"),
    ("TrainConfig", "sparse_model"): ((False,), "pruning is not part of compress"),
}

OPTIMIZERS = ("SGD", "Momentum", "Adam", "AdamW")
BUILDER_KEYS = ("optimizer", "weight_decay", "regularizer", "grad_clip")
GRAD_CLIPS = ("ClipGradByNorm", "ClipGradByGlobalNorm", "ClipGradByValue")
SLIM_ONLY_OP_TYPES = ("conv2d_transpose",)  # quantized by PaddleSlim, not in QuantAwareConfig's list


def _accepted(value, accepted):
    if accepted is None:
        return value is None
    return any(value is a or (type(value) is type(a) and value == a) for a in accepted)


def _refuse(section, values, source):
    """Raises a ConfigError for a refused value of a PaddleSlim key."""
    for (name, key), (accepted, reason) in REFUSED_VALUES.items():
        if name == section and key in values and not _accepted(values[key], accepted):
            raise ConfigError(f"{source}: {section}.{key}: {values[key]!r} is not supported: {reason}")


def _one_or_list(value) -> list:
    """A key that takes one value or one per node (PaddleSlim's Distillation)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _Section(ConfigBase):
    """A section of the compress YAML: messages name the section (``Global.batch_size``)."""

    def _optional(self, key, check, **bounds):
        if getattr(self, key) is not None:
            check(key, **bounds)

    def _str(self, key):
        check_str(self.owner(), key, getattr(self, key))

    def _mapping(self, key):
        if not isinstance(getattr(self, key), dict):
            raise TypeError(f"{self.owner()}.{key} must be a mapping, got {getattr(self, key)!r}")


@dataclass
class GlobalSection(_Section):
    """``Global``.

    Attributes:
        model_dir: folder of the FP32 inference model (legacy ``.pdmodel``).
        model_filename, params_filename: its files (default: the one ``*.pdmodel``
            there and the ``.pdiparams`` of the same name).
        batch_size: training batch size, passed to the reader function.
        input_list: the model's input names (default: its feed order); checked
            against the model.
        reader: ``"module:function"``; ``function(mode, batch_size, **reader_args)``
            with ``mode`` 'train' or 'eval' returns a reader: a callable returning an
            iterable of batches, each a dict {input name: numpy array}; eval batches
            also hold 'label' (int class ids).
        reader_args: keyword arguments of the reader function.
        save_dir: where the compressed model and the report go.
        seed: seeds Paddle and numpy.
        reader_config, deploy_backend, Evaluation: PaddleSlim example keys, refused
            (see :data:`REFUSED_VALUES`).
    """

    model_dir: str = ""
    model_filename: Optional[str] = None
    params_filename: Optional[str] = None
    batch_size: int = 32
    input_list: Optional[list] = None
    reader: str = ""
    reader_args: dict = field(default_factory=dict)
    save_dir: str = "./output"
    seed: int = 0
    reader_config: Optional[str] = None
    deploy_backend: Optional[str] = None
    Evaluation: Optional[bool] = None

    OWNER = "Global"

    def validate(self):
        self._str("model_dir")
        self._optional("model_filename", self._str)
        self._optional("params_filename", self._str)
        self._int("batch_size", low=1)
        self._optional("input_list", self._str_list)
        self._str("reader")
        if self.reader.count(":") != 1 or not all(self.reader.split(":")):
            raise ValueError(f"Global.reader must be 'module:function' (e.g. paddle_kure.data.readers:fashion_mnist), "
                             f"got {self.reader!r}")
        self._mapping("reader_args")
        self._str("save_dir")
        self._int("seed", low=0, high=SEED_MAX)


@dataclass
class DistillationSection(_Section):
    """``Distillation`` (PaddleSlim's keys): the student is trained to match the teacher.

    Attributes:
        loss: 'l2' or 'soft_label', or one per node.
        node: variable names of the model whose values are matched (default: its outputs).
        alpha: weight of each node's loss (one number >= 0 or one per node).
        teacher_model_dir, teacher_model_filename, teacher_params_filename: the
            teacher (default: the FP32 model itself).
    """

    loss: object = "l2"
    node: list = field(default_factory=list)
    alpha: object = 1.0
    teacher_model_dir: Optional[str] = None
    teacher_model_filename: Optional[str] = None
    teacher_params_filename: Optional[str] = None

    OWNER = "Distillation"

    def validate(self):
        self._str_list("node")
        for loss in _one_or_list(self.loss):
            check_choice(self.owner(), "loss", loss, tuple(DISTILL_LOSSES))
        for alpha in _one_or_list(self.alpha):
            check_number(self.owner(), "alpha", alpha, low=0.0, high=FLOAT32_MAX)
        for key in ("loss", "alpha"):
            values = getattr(self, key)
            if isinstance(values, (list, tuple)) and len(values) != max(len(self.node), 1):
                raise ValueError(f"Distillation.{key} lists {len(values)} values for {len(self.node)} nodes; give "
                                 f"one value or one per node")
        for key in ("teacher_model_dir", "teacher_model_filename", "teacher_params_filename"):
            self._optional(key, self._str)

    def per_node(self, nodes):
        """``[(node, loss, alpha)]`` for ``nodes`` (the configured ones or the model outputs)."""
        losses, alphas = (list(v) if isinstance(v, (list, tuple)) else [v] * len(nodes)
                          for v in (self.loss, self.alpha))
        if len(losses) != len(nodes) or len(alphas) != len(nodes):
            raise ValueError(f"Distillation: loss and alpha lists must have one value per node ({len(nodes)})")
        return [(node, loss, float(alpha)) for node, loss, alpha in zip(nodes, losses, alphas)]


@dataclass
class _QuantAwareSettings(QuantAwareConfig):
    """A QuantAwareConfig whose messages name the YAML section."""

    OWNER = "QuantAware"


@dataclass
class QuantAwareSection(_Section):
    """``QuantAware``: PaddleSlim's keys (see ``paddleslim.auto_compression.QuantAware``).

    ``weight_bits``/``activation_bits`` 8 or 4; ``not_quant_pattern`` also matches
    an op's variable names (a saved model keeps no name scopes); ``use_pact``
    uses this project's PACT (two-sided, alpha trained and kept in the exported
    model). ``dtype``, ``for_tensorrt`` and ``is_full_quantize`` take only their
    defaults (see :data:`REFUSED_VALUES`).
    """

    quantize_op_types: list = field(default_factory=lambda: ["conv2d", "depthwise_conv2d", "conv2d_transpose",
                                                             "mul", "matmul", "matmul_v2"])
    weight_bits: int = 8
    activation_bits: int = 8
    not_quant_pattern: list = field(default_factory=lambda: ["skip_quant"])
    use_pact: bool = False
    activation_quantize_type: str = "moving_average_abs_max"
    weight_quantize_type: str = "channel_wise_abs_max"
    dtype: str = "int8"
    window_size: int = 10000
    moving_rate: float = 0.9
    for_tensorrt: bool = False
    onnx_format: bool = True
    is_full_quantize: bool = False

    OWNER = "QuantAware"

    def validate(self):
        if isinstance(self.not_quant_pattern, str):  # PaddleSlim takes one pattern too
            self._set("not_quant_pattern", [self.not_quant_pattern])
        self._str_list("not_quant_pattern")
        if not all(self.not_quant_pattern):
            raise ValueError(f"QuantAware.not_quant_pattern must be a list of non-empty strings, "
                             f"got {list(self.not_quant_pattern)!r}")
        self._str_list("quantize_op_types")
        for op_type in self.quantize_op_types:
            check_choice(self.owner(), "quantize_op_types", op_type, QUANTIZE_OP_TYPES + SLIM_ONLY_OP_TYPES)
        self._int("window_size", low=1)
        self._number("moving_rate", low=0.0, high=1.0, low_open=True, high_open=True)
        self.quant_config()  # bits, quantize types, use_pact, onnx_format

    def quant_config(self) -> QuantAwareConfig:
        """The :class:`QuantAwareConfig` of these keys (``conv2d_transpose`` goes through
        :meth:`slim_options`)."""
        op_types = [t for t in self.quantize_op_types if t in QUANTIZE_OP_TYPES] or list(QUANTIZE_OP_TYPES[:1])
        return _QuantAwareSettings(weight_bits=self.weight_bits, activation_bits=self.activation_bits,
                                   weight_quantize_type=self.weight_quantize_type,
                                   activation_quantize_type=self.activation_quantize_type,
                                   quantize_op_types=op_types, use_pact=self.use_pact, onnx_format=self.onnx_format)

    def slim_options(self) -> dict:
        """The ``quant_aware`` config keys that :class:`QuantAwareConfig` does not carry."""
        return {"quantize_op_types": list(self.quantize_op_types), "not_quant_pattern": list(self.not_quant_pattern),
                "window_size": self.window_size, "moving_rate": self.moving_rate, "dtype": self.dtype}


@dataclass
class TrainSection(_Section):
    """``TrainConfig`` (PaddleSlim's keys).

    Attributes:
        epochs: passes over the training reader (or ``train_iter`` steps, which wins).
        train_iter: total training steps.
        learning_rate: a number, or ``{type: <paddle.optimizer.lr class>, ...its arguments}``.
        optimizer_builder: ``{optimizer: {type: SGD|Momentum|Adam|AdamW, ...arguments},
            weight_decay: L2 coeff, regularizer: {type: L2Decay, coeff},
            grad_clip: {type: ClipGradByNorm|ClipGradByGlobalNorm|ClipGradByValue, ...}}``.
        eval_iter: evaluate every this many steps (and at the end); the best
            evaluated weights are exported.
        logging_iter: print the loss every this many steps.
        origin_metric: the FP32 model's metric as the user knows it; reported next
            to the one measured.
        target_metric: stop once the evaluated accuracy reaches it.
        amp_config, recompute_config, sharding_config, sparse_model: refused.
    """

    epochs: Optional[int] = None
    train_iter: Optional[int] = None
    learning_rate: object = 0.02
    optimizer_builder: dict = field(default_factory=lambda: {"optimizer": {"type": "SGD"}})
    eval_iter: int = 1000
    logging_iter: int = 10
    origin_metric: Optional[float] = None
    target_metric: Optional[float] = None
    amp_config: Optional[dict] = None
    recompute_config: Optional[dict] = None
    sharding_config: Optional[dict] = None
    sparse_model: bool = False

    OWNER = "TrainConfig"

    def validate(self):
        self._optional("epochs", self._int, low=1)
        self._optional("train_iter", self._int, low=1)
        if self.epochs is None and self.train_iter is None:
            raise ValueError("TrainConfig.epochs or TrainConfig.train_iter is required")
        self._int("eval_iter", low=1)
        self._int("logging_iter", low=1)
        self._optional("origin_metric", self._number)
        self._optional("target_metric", self._number)
        self.learning_rate_value()
        self._mapping("optimizer_builder")
        builder = check_keys(BUILDER_KEYS, self.optimizer_builder, "TrainConfig.optimizer_builder")
        optimizer = builder.get("optimizer", {"type": "SGD"})
        check_choice(self.owner(), "optimizer_builder.optimizer.type",
                     optimizer.get("type") if isinstance(optimizer, dict) else optimizer, OPTIMIZERS)
        if "weight_decay" in builder and "regularizer" in builder:
            raise ValueError("TrainConfig.optimizer_builder: give weight_decay or regularizer, not both")
        regularizer = builder.get("regularizer")
        if regularizer is not None and (not isinstance(regularizer, dict) or regularizer.get("type") != "L2Decay"):
            raise ValueError(f"TrainConfig.optimizer_builder.regularizer: only {{type: L2Decay, coeff: ...}} is "
                             f"supported (KURE keeps L2 decay on the weights it regularizes, nothing else), "
                             f"got {regularizer!r}")
        self.weight_decay()
        clip = builder.get("grad_clip")
        if clip is not None:
            check_choice(self.owner(), "optimizer_builder.grad_clip.type",
                         clip.get("type") if isinstance(clip, dict) else clip, GRAD_CLIPS)

    def learning_rate_value(self):
        """A float or a ``paddle.optimizer.lr.LRScheduler``."""
        lr = self.learning_rate
        if not isinstance(lr, dict):
            return check_number(self.owner(), "learning_rate", lr, low=0.0, low_open=True, high=FLOAT32_MAX)
        import paddle

        scheduler = lr.get("type")
        cls = getattr(paddle.optimizer.lr, scheduler, None) if isinstance(scheduler, str) else None
        if not (isinstance(cls, type) and issubclass(cls, paddle.optimizer.lr.LRScheduler)):
            raise ValueError(f"TrainConfig.learning_rate.type must name a paddle.optimizer.lr scheduler, "
                             f"got {scheduler!r}")
        try:
            return cls(**{k: v for k, v in lr.items() if k != "type"})
        except TypeError as err:
            raise ValueError(f"TrainConfig.learning_rate: {err}") from None

    def weight_decay(self) -> float:
        """The L2 decay coefficient of ``optimizer_builder`` (0 when none)."""
        builder = self.optimizer_builder
        value = builder.get("weight_decay", (builder.get("regularizer") or {}).get("coeff", 0.0))
        return check_number(self.owner(), "optimizer_builder weight decay", value, low=0.0, high=FLOAT32_MAX)

    def make_optimizer(self):
        """The optimizer ``optimizer_builder`` describes, with L2 ``weight_decay``."""
        import paddle

        builder = self.optimizer_builder
        options = dict(builder.get("optimizer", {"type": "SGD"}))
        cls = getattr(paddle.optimizer, options.pop("type"))
        decay = self.weight_decay()
        clip = None
        if builder.get("grad_clip"):
            clip_options = dict(builder["grad_clip"])
            clip = getattr(paddle.nn, clip_options.pop("type"))(**clip_options)
        if cls is paddle.optimizer.AdamW:  # decoupled decay: a float, not a regularizer
            return cls(self.learning_rate_value(), weight_decay=decay, grad_clip=clip, **options)
        return cls(self.learning_rate_value(), weight_decay=paddle.regularizer.L2Decay(decay) if decay else None,
                   grad_clip=clip, **options)


SECTION_CLASSES = {"Global": GlobalSection, "Distillation": DistillationSection, "QuantAware": QuantAwareSection,
                   "TrainConfig": TrainSection, "Kurtosis": KurtosisConfig}


@dataclass
class CompressConfig:
    """The whole config of ``paddle-kure compress``; ``Distillation`` may be absent
    (then the defaults: the FP32 model's outputs, l2, alpha 1)."""

    Global: GlobalSection
    QuantAware: QuantAwareSection
    TrainConfig: TrainSection
    Distillation: DistillationSection = field(default_factory=DistillationSection)
    Kurtosis: KurtosisConfig = field(default_factory=lambda: KurtosisConfig(exclude=()))
    source: str = "<dict>"

    @classmethod
    def from_dict(cls, data, source: str = "<dict>") -> "CompressConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the config must be a mapping of sections, got {data!r}")
        refused = sorted(set(data) & set(REFUSED_SECTIONS))
        if refused:
            raise ConfigError(f"{source}: section {refused[0]} is not supported by paddle-kure compress: "
                              f"{REFUSED_SECTIONS[refused[0]]}")
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {unknown}; allowed sections: {list(SECTIONS)}")
        for required in ("Global", "QuantAware", "TrainConfig"):
            if data.get(required) is None:
                raise ConfigError(f"{source}: section {required} is required")
        sections = {}
        for name, section_cls in SECTION_CLASSES.items():
            if name not in data:
                continue
            values = {} if data[name] is None else data[name]
            if isinstance(values, dict):
                _refuse(name, values, source)
                if name == "Kurtosis":
                    values = _compress_kurtosis(values, source)
            try:
                sections[name] = section_cls.from_dict(values, source)
            except (TypeError, ValueError) as err:
                raise ConfigError(str(err)) from None
        return cls(**sections, source=source)

    def to_dict(self) -> dict:
        return {name: getattr(self, name).to_dict() for name in SECTIONS}


def _compress_kurtosis(values, source):
    """The Kurtosis section with compress's default and refusal."""
    if values.get("on_activations"):
        raise ConfigError(f"{source}: Kurtosis.on_activations: true is not supported: compress regularizes the "
                          f"weights of an inference model; activation kurtosis needs the dygraph model "
                          f"(paddle-kure run)")
    return {"exclude": [], **values}  # run's default ("conv1.*") names a dygraph layer


def load_compress_config(path: str) -> CompressConfig:
    """Reads and validates a compress YAML file.

    Raises:
        FileNotFoundError: no such file, or a folder (a :class:`~paddle_kure.errors.UserFileError`).
        ConfigError: not UTF-8, bad YAML, a refused or unknown section or key, a wrong type or
            value (the message names the file, the section and the key).
    """
    data = read_config_file(path)
    return CompressConfig.from_dict({} if data is None else data, source=path)


def resolve_reader(spec: str):
    """The function ``spec`` ('module:function') names.

    Raises:
        ConfigError: the module cannot be imported or has no such callable.
    """
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"Global.reader {spec!r}: cannot import {module_name!r} ({err})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"Global.reader {spec!r}: {module_name} has no function {function_name!r}")
    return function

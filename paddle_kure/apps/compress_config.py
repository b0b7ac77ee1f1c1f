"""The config of ``paddle-kure compress``: a PaddleSlim auto-compression YAML plus a
``Kurtosis`` section.

Sections and keys are PaddleSlim's (``paddleslim.auto_compression``: ``Global``,
``Distillation``, ``QuantAware``, ``TrainConfig``). Every key PaddleSlim defines is
either honoured or refused with the reason (:data:`REFUSED_SECTIONS`,
:data:`REFUSED_VALUES`); a key PaddleSlim does not define is an error naming the
allowed ones. ``Global`` adds ``reader`` / ``reader_args`` (where the data comes
from), ``save_dir`` and ``seed``; ``Kurtosis`` takes the keys of
:class:`paddle_kure.config.KurtosisConfig`, its patterns matched against the
parameter names of the inference model (``conv2d_0.w_0``, ``linear_3.w_0``).
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
from dataclasses import dataclass, field
from typing import Optional

from .._sections import check_keys
from ..config import ConfigError, KurtosisConfig
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
GRAD_CLIPS = ("ClipGradByNorm", "ClipGradByGlobalNorm", "ClipGradByValue")
SLIM_ONLY_OP_TYPES = ("conv2d_transpose",)  # quantized by PaddleSlim, not in QuantAwareConfig's list


def _where(source, section):
    return f"{source}: {section}"


def _accepted(value, accepted):
    if accepted is None:
        return value is None
    return any(value is a or (type(value) is type(a) and value == a) for a in accepted)


def _refuse(section, values, source):
    """Raises a ConfigError for a refused value of a PaddleSlim key."""
    for (name, key), (accepted, reason) in REFUSED_VALUES.items():
        if name == section and key in values and not _accepted(values[key], accepted):
            raise ConfigError(f"{_where(source, section)}.{key}: {values[key]!r} is not supported: {reason}")


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _positive_int(key, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{key} must be >= 1, got {value}")


@dataclass
class GlobalSection:
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

    def validate(self):
        if not isinstance(self.model_dir, str) or not self.model_dir:
            raise ValueError(f"model_dir is required: the folder of the FP32 inference model, got {self.model_dir!r}")
        for key in ("model_filename", "params_filename"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"{key} must be a file name, got {value!r}")
        _positive_int("batch_size", self.batch_size)
        if self.input_list is not None and (isinstance(self.input_list, str) or not isinstance(self.input_list, list)
                                            or not all(isinstance(v, str) for v in self.input_list)):
            raise TypeError(f"input_list must be a list of input names, got {self.input_list!r}")
        if not isinstance(self.reader, str) or self.reader.count(":") != 1 or not all(self.reader.split(":")):
            raise ValueError(f"reader must be 'module:function' (e.g. paddle_kure.data.readers:fashion_mnist), "
                             f"got {self.reader!r}")
        if not isinstance(self.reader_args, dict):
            raise TypeError(f"reader_args must be a mapping of keyword arguments, got {self.reader_args!r}")
        if not isinstance(self.save_dir, str) or not self.save_dir:
            raise TypeError(f"save_dir must be a non-empty string, got {self.save_dir!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


@dataclass
class DistillationSection:
    """``Distillation`` (PaddleSlim's keys): the student is trained to match the teacher.

    Attributes:
        loss: 'l2' or 'soft_label', or one per node.
        node: variable names of the model whose values are matched (default: its outputs).
        alpha: weight of each node's loss (one number or one per node).
        teacher_model_dir, teacher_model_filename, teacher_params_filename: the
            teacher (default: the FP32 model itself).
    """

    loss: object = "l2"
    node: list = field(default_factory=list)
    alpha: object = 1.0
    teacher_model_dir: Optional[str] = None
    teacher_model_filename: Optional[str] = None
    teacher_params_filename: Optional[str] = None

    def validate(self):
        if isinstance(self.node, str) or not isinstance(self.node, list) or not all(isinstance(n, str) for n in self.node):
            raise TypeError(f"node must be a list of variable names, got {self.node!r}")
        losses = self.loss if isinstance(self.loss, list) else [self.loss]
        for loss in losses:
            if loss not in DISTILL_LOSSES:
                raise ValueError(f"loss must be one of {list(DISTILL_LOSSES)} (or a list of them), got {loss!r}")
        alphas = self.alpha if isinstance(self.alpha, list) else [self.alpha]
        for alpha in alphas:
            if not _is_number(alpha) or alpha < 0:
                raise ValueError(f"alpha must be a number >= 0 (or a list of them), got {alpha!r}")
        for key, values in (("loss", self.loss), ("alpha", self.alpha)):
            if isinstance(values, list) and len(values) != max(len(self.node), 1):
                raise ValueError(f"{key} lists {len(values)} values for {len(self.node)} nodes; give one value "
                                 f"or one per node")
        if self.teacher_model_dir is not None and not isinstance(self.teacher_model_dir, str):
            raise TypeError(f"teacher_model_dir must be a folder, got {self.teacher_model_dir!r}")

    def per_node(self, nodes):
        """``[(node, loss, alpha)]`` for ``nodes`` (the configured ones or the model outputs)."""
        losses = self.loss if isinstance(self.loss, list) else [self.loss] * len(nodes)
        alphas = self.alpha if isinstance(self.alpha, list) else [self.alpha] * len(nodes)
        if len(losses) != len(nodes) or len(alphas) != len(nodes):
            raise ValueError(f"Distillation: loss and alpha lists must have one value per node ({len(nodes)})")
        return list(zip(nodes, losses, alphas))


@dataclass
class QuantAwareSection:
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

    def validate(self):
        if isinstance(self.not_quant_pattern, str):
            self.not_quant_pattern = [self.not_quant_pattern]
        if not isinstance(self.not_quant_pattern, list) or not all(isinstance(p, str) and p
                                                                   for p in self.not_quant_pattern):
            raise TypeError(f"not_quant_pattern must be a list of non-empty strings, got {self.not_quant_pattern!r}")
        _positive_int("window_size", self.window_size)
        if not _is_number(self.moving_rate) or not 0 < self.moving_rate < 1:
            raise ValueError(f"moving_rate must be in (0, 1), got {self.moving_rate!r}")
        if isinstance(self.quantize_op_types, list):
            unknown = [t for t in self.quantize_op_types if t not in QUANTIZE_OP_TYPES + SLIM_ONLY_OP_TYPES]
            if unknown:
                raise ValueError(f"quantize_op_types: {unknown} not quantizable; allowed: "
                                 f"{list(QUANTIZE_OP_TYPES + SLIM_ONLY_OP_TYPES)}")
        self.quant_config()  # the remaining checks

    def quant_config(self) -> QuantAwareConfig:
        """The :class:`QuantAwareConfig` of these keys (``conv2d_transpose`` goes through
        :meth:`slim_options`)."""
        if isinstance(self.quantize_op_types, str) or not isinstance(self.quantize_op_types, list):
            raise TypeError(f"quantize_op_types must be a list of op types, got {self.quantize_op_types!r}")
        op_types = [t for t in self.quantize_op_types if t in QUANTIZE_OP_TYPES] or list(QUANTIZE_OP_TYPES[:1])
        return QuantAwareConfig(weight_bits=self.weight_bits, activation_bits=self.activation_bits,
                                weight_quantize_type=self.weight_quantize_type,
                                activation_quantize_type=self.activation_quantize_type,
                                quantize_op_types=op_types, use_pact=self.use_pact, onnx_format=self.onnx_format)

    def slim_options(self) -> dict:
        """The ``quant_aware`` config keys that :class:`QuantAwareConfig` does not carry."""
        return {"quantize_op_types": list(self.quantize_op_types), "not_quant_pattern": list(self.not_quant_pattern),
                "window_size": self.window_size, "moving_rate": self.moving_rate, "dtype": self.dtype}


@dataclass
class TrainSection:
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

    def validate(self):
        _positive_int("epochs", self.epochs, allow_none=True)
        _positive_int("train_iter", self.train_iter, allow_none=True)
        if self.epochs is None and self.train_iter is None:
            raise ValueError("epochs or train_iter is required")
        _positive_int("eval_iter", self.eval_iter)
        _positive_int("logging_iter", self.logging_iter)
        for key in ("origin_metric", "target_metric"):
            value = getattr(self, key)
            if value is not None and not _is_number(value):
                raise TypeError(f"{key} must be a number, got {value!r}")
        self.learning_rate_value()
        builder = self.optimizer_builder
        if not isinstance(builder, dict):
            raise TypeError(f"optimizer_builder must be a mapping, got {builder!r}")
        unknown = sorted(set(builder) - {"optimizer", "weight_decay", "regularizer", "grad_clip"})
        if unknown:
            raise ValueError(f"optimizer_builder: unknown keys {unknown}; allowed: optimizer, weight_decay, "
                             f"regularizer, grad_clip")
        optimizer = builder.get("optimizer", {"type": "SGD"})
        if not isinstance(optimizer, dict) or optimizer.get("type") not in OPTIMIZERS:
            raise ValueError(f"optimizer_builder.optimizer.type must be one of {list(OPTIMIZERS)}, got "
                             f"{optimizer.get('type') if isinstance(optimizer, dict) else optimizer!r}")
        if "weight_decay" in builder and "regularizer" in builder:
            raise ValueError("optimizer_builder: give weight_decay or regularizer, not both")
        regularizer = builder.get("regularizer")
        if regularizer is not None and (not isinstance(regularizer, dict) or regularizer.get("type") != "L2Decay"):
            raise ValueError(f"optimizer_builder.regularizer: only {{type: L2Decay, coeff: ...}} is supported (KURE "
                             f"keeps L2 decay on the weights it regularizes, nothing else), got {regularizer!r}")
        self.weight_decay()
        clip = builder.get("grad_clip")
        if clip is not None and (not isinstance(clip, dict) or clip.get("type") not in GRAD_CLIPS):
            raise ValueError(f"optimizer_builder.grad_clip.type must be one of {list(GRAD_CLIPS)}, got {clip!r}")

    def learning_rate_value(self):
        """A float or a ``paddle.optimizer.lr.LRScheduler``."""
        lr = self.learning_rate
        if _is_number(lr):
            if lr <= 0:
                raise ValueError(f"learning_rate must be > 0, got {lr}")
            return float(lr)
        if isinstance(lr, dict) and isinstance(lr.get("type"), str):
            import paddle

            cls = getattr(paddle.optimizer.lr, lr["type"], None)
            if not (isinstance(cls, type) and issubclass(cls, paddle.optimizer.lr.LRScheduler)):
                raise ValueError(f"learning_rate.type: {lr['type']!r} is not a paddle.optimizer.lr scheduler")
            try:
                return cls(**{k: v for k, v in lr.items() if k != "type"})
            except TypeError as err:
                raise ValueError(f"learning_rate: {err}") from None
        raise TypeError(f"learning_rate must be a number or {{type: <scheduler>, ...}}, got {lr!r}")

    def weight_decay(self) -> float:
        """The L2 decay coefficient of ``optimizer_builder`` (0 when none)."""
        builder = self.optimizer_builder
        value = builder.get("weight_decay", (builder.get("regularizer") or {}).get("coeff", 0.0))
        if not _is_number(value) or value < 0:
            raise ValueError(f"optimizer_builder weight decay must be a number >= 0, got {value!r}")
        return float(value)

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
            values = data[name] or {}
            where = _where(source, name)
            try:
                values = check_keys(section_cls, values, where)
            except (TypeError, ValueError) as err:
                raise ConfigError(str(err)) from None
            _refuse(name, values, source)
            if name == "Kurtosis":
                values.setdefault("exclude", [])  # run's default ("conv1.*") names a dygraph layer
                if values.get("on_activations"):
                    raise ConfigError(f"{where}.on_activations: true is not supported: compress regularizes "
                                      f"the weights of an inference model; activation kurtosis needs the "
                                      f"dygraph model (paddle-kure run)")
            try:
                section = section_cls(**values)
                if hasattr(section, "validate") and not isinstance(section, KurtosisConfig):
                    section.validate()
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{where}.{err}") from None
            sections[name] = section
        return cls(**sections, source=source)

    def to_dict(self) -> dict:
        out = {}
        for name in SECTIONS:
            values = dataclasses.asdict(getattr(self, name))
            out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out


def load_compress_config(path: str) -> CompressConfig:
    """Reads and validates a compress YAML file (errors name the file, section and key)."""
    import yaml

    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return CompressConfig.from_dict({} if data is None else data, source=path)


def resolve_reader(spec: str):
    """The function ``spec`` ('module:function') names.

    Raises:
        ValueError: the module cannot be imported or has no such callable.
    """
    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"Global.reader {spec!r}: cannot import {module_name!r} ({err})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ValueError(f"Global.reader {spec!r}: {module_name} has no function {function_name!r}")
    return function

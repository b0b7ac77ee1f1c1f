"""Dygraph quantization: QAT (PaddleSlim) with KURE and PACT, PTQ, export."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import paddle

from .._validate import check_int
from ..nn.pact import calibrate_pact
from ..selection import attach_kure
from . import compat
from .config import DYGRAPH_ACTIVATION_QUANTIZE_TYPES, KureConfig, PACTConfig, QuantAwareConfig

__all__ = ["apply_kure", "prepare_qat", "export_quantized", "post_training_quantize"]

PTQ_ALGOS = ("abs_max", "avg", "KL", "hist", "mse")


def _check_type(name, value, expected, allow_none=False):
    if value is None and allow_none:
        return
    if not isinstance(value, expected):
        raise TypeError(f"{name} must be a {expected.__name__}, got {type(value).__name__}")


def apply_kure(model: paddle.nn.Layer, kure: KureConfig) -> list:
    """Alias of :func:`paddle_kure.attach_kure` taking a :class:`KureConfig` (what
    :func:`prepare_qat` calls): sets ``KurtosisDecay(kure.coeff / L, kure.target, l2)``
    as the regularizer of the L weights that ``kure.params`` chooses (``l2`` is
    ``kure.l2_coeff`` or a weight's own L2Decay); returns their names.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.quant import KureConfig, apply_kure
            >>> model = paddle.nn.Sequential(paddle.nn.Linear(4, 8), paddle.nn.Linear(8, 2))
            >>> apply_kure(model, KureConfig(coeff=1.0, params=["1.weight"]))
            ['1.weight']
    """
    _check_type("kure", kure, KureConfig)
    return attach_kure(model, kure.coeff, kure.target, kure.l2_coeff, include=kure.params).chosen


def prepare_qat(model, config: QuantAwareConfig, kure: KureConfig | None = None,
                pact: PACTConfig | None = None, calib_batch=None):
    """Prepares ``model`` in place for quantization-aware training with
    ``paddleslim.dygraph.quant.QAT`` and returns it.

    Weights chosen by ``kure`` get the kurtosis regularizer (see :func:`apply_kure`).
    With ``config.use_pact`` a two-sided :class:`paddle_kure.nn.PACT` (configured by
    ``pact``, default ``PACTConfig()``) clips the input of every quantized layer,
    instead of PaddleSlim's PACT (alpha 100, learning-rate multiplier 1000).
    ``calib_batch`` (a tensor or tuple of tensors) is run once to set data-driven
    PACT alphas. Train with any optimizer over ``model.parameters()`` (created after
    this call: PACT adds parameters), then :func:`export_quantized`.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.quant import QuantAwareConfig, KureConfig, prepare_qat
            >>> model = paddle.nn.Sequential(paddle.nn.Linear(16, 32), paddle.nn.ReLU(), paddle.nn.Linear(32, 4))
            >>> model = prepare_qat(model, QuantAwareConfig(use_pact=True), kure=KureConfig(coeff=0.5),
            ...                     calib_batch=paddle.randn([64, 16]))
    """
    _check_type("model", model, paddle.nn.Layer)
    _check_type("config", config, QuantAwareConfig)
    _check_type("pact", pact, PACTConfig, allow_none=True)
    if not paddle.in_dynamic_mode():
        raise RuntimeError("prepare_qat works on dygraph models: call paddle.disable_static() first")
    if config.activation_quantize_type not in DYGRAPH_ACTIVATION_QUANTIZE_TYPES:
        raise ValueError(
            f"QuantAwareConfig.activation_quantize_type {config.activation_quantize_type!r} is static-graph "
            f"only; dygraph QAT supports {list(DYGRAPH_ACTIVATION_QUANTIZE_TYPES)}"
        )
    if pact is not None and not config.use_pact:
        raise ValueError("prepare_qat: pact options were given but QuantAwareConfig.use_pact is false")
    if kure is not None:
        apply_kure(model, kure)
    compat.import_paddleslim()
    from paddleslim.dygraph.quant import QAT

    slim_config = config.slim_config(dygraph=True)
    act_preprocess = compat.pact_layer_class(pact or PACTConfig()) if config.use_pact else None
    QAT(config=slim_config, act_preprocess=act_preprocess).quantize(model)
    if calib_batch is not None:
        calibrate_pact(model, *(calib_batch if isinstance(calib_batch, (tuple, list)) else (calib_batch,)))
    return model


def export_quantized(model, path: str, input_spec, config: QuantAwareConfig) -> None:
    """Saves a model prepared by :func:`prepare_qat` (and trained) as a Paddle
    inference model, ``path + '.pdmodel'`` and ``path + '.pdiparams'``, that
    computes what the model computes in eval mode: PACT layers are kept.
    Paddle stays in dygraph mode, and the model in its train/eval mode.

    Args:
        model (Layer): the QAT model.
        path (str): path prefix of the files.
        input_spec (list[InputSpec]): the inputs of ``model.forward``.
        config (QuantAwareConfig): the config given to :func:`prepare_qat`.
    """
    _check_type("model", model, paddle.nn.Layer)
    _check_type("config", config, QuantAwareConfig)
    if not paddle.in_dynamic_mode():
        raise RuntimeError("export_quantized works on dygraph models: call paddle.disable_static() first")
    was_training = model.training
    model.eval()
    try:
        compat.save_quantized_model(model, path, input_spec, config.activation_bits, config.onnx_format)
    finally:
        if was_training:
            model.train()


def _first_input(batch):
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    return batch.numpy() if isinstance(batch, paddle.Tensor) else np.asarray(batch)


def post_training_quantize(model, calib_loader, config: QuantAwareConfig, path: str, input_spec,
                           batch_nums: int = 10, algo: str = "abs_max") -> None:
    """Post-training quantization of a trained FP32 dygraph model with
    ``paddleslim.quant.quant_post_static``, saved like :func:`export_quantized`.

    The model is saved as an FP32 inference model (in a temporary directory),
    calibrated on up to ``batch_nums`` batches of ``calib_loader`` (each a tensor or
    array, or a tuple whose first item is the input), and written to
    ``path + '.pdmodel'/'.pdiparams'``. ``config.activation_quantize_type`` does not
    apply: ``algo`` picks the activation scales.

    Args:
        algo (str): one of 'abs_max', 'avg', 'KL', 'hist', 'mse'.
    """
    _check_type("model", model, paddle.nn.Layer)
    _check_type("config", config, QuantAwareConfig)
    if algo not in PTQ_ALGOS:
        raise ValueError(f"post_training_quantize: algo must be one of {list(PTQ_ALGOS)}, got {algo!r}")
    check_int("post_training_quantize", "batch_nums", batch_nums, low=1)
    if config.use_pact:
        raise ValueError("QuantAwareConfig.use_pact applies to QAT only; set it false for post_training_quantize")
    if config.weight_bits != config.activation_bits:
        # Paddle's PostTrainingQuantization asserts equal widths in either format.
        raise ValueError(
            "post_training_quantize needs weight_bits == activation_bits "
            f"(got {config.weight_bits} and {config.activation_bits}); Paddle's post-training quantization "
            "does not mix them"
        )
    if not paddle.in_dynamic_mode():
        raise RuntimeError("post_training_quantize works on dygraph models: call paddle.disable_static() first")
    compat.import_paddleslim()
    from paddleslim.quant import quant_post_static

    out_dir, name = os.path.split(os.path.abspath(path))
    was_training = model.training
    model.eval()
    with tempfile.TemporaryDirectory() as fp32_dir, compat.keep_paddle_mode():
        fp32_prefix = os.path.join(fp32_dir, "fp32")
        # quant_post_static reads legacy Program files only.
        with paddle.pir_utils.OldIrGuard():
            paddle.jit.save(model, fp32_prefix, input_spec=input_spec)
            paddle.enable_static()
            executor = paddle.static.Executor(paddle.CPUPlace())
            _, feed_names, _ = paddle.static.load_inference_model(fp32_prefix, executor)
            if len(feed_names) != 1:
                raise ValueError(f"post_training_quantize: the model must have one input, it has {feed_names}")

            def feeds():
                for batch in calib_loader:
                    yield {feed_names[0]: _first_input(batch)}

            quant_post_static(
                executor=executor, model_dir=fp32_dir, quantize_model_path=out_dir,
                data_loader=feeds, model_filename="fp32.pdmodel", params_filename="fp32.pdiparams",
                save_model_filename=f"{name}.pdmodel", save_params_filename=f"{name}.pdiparams",
                batch_nums=batch_nums, algo=algo, quantizable_op_type=list(config.quantize_op_types),
                weight_bits=config.weight_bits, activation_bits=config.activation_bits,
                weight_quantize_type=config.weight_quantize_type, onnx_format=config.onnx_format,
            )
    if config.onnx_format:
        compat.set_quantization_range(path)
    if was_training:
        model.train()

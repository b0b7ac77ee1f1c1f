"""Running an exported model with ``paddle.inference``."""
from __future__ import annotations

import os

import numpy as np

from .._validate import check_choice, check_int

__all__ = ["InferenceModel", "PREDICTOR_SETUPS", "cpu_predictor_config"]

# CPU predictor setups: Paddle's own kernels, oneDNN FP32 kernels, oneDNN with its
# INT8 path (which turns a quantized model's quantize/dequantize pairs into int8 kernels).
PREDICTOR_SETUPS = ("native", "onednn", "onednn-int8")


def cpu_predictor_config(path: str, setup: str = "native", threads: int = 1, ir_optim: bool = True):
    """A ``paddle.inference.Config`` for ``path + '.pdmodel'/'.pdiparams'`` on CPU
    in one of :data:`PREDICTOR_SETUPS`, with ``threads`` math-library threads."""
    from paddle import inference

    check_choice("cpu_predictor_config", "setup", setup, PREDICTOR_SETUPS)
    check_int("cpu_predictor_config", "threads", threads, low=1)
    files = [path + ".pdmodel", path + ".pdiparams"]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise FileNotFoundError(f"no exported model at {path!r} (missing {missing})")
    config = inference.Config(*files)
    config.disable_glog_info()
    config.disable_gpu()
    config.switch_ir_optim(ir_optim)
    config.set_cpu_math_library_num_threads(threads)
    if setup == "native":
        config.disable_onednn()
    else:
        config.enable_onednn()
        if setup == "onednn-int8":
            config.enable_onednn_int8()
    return config


class InferenceModel:
    """A ``paddle.inference`` predictor for ``path + '.pdmodel'/'.pdiparams'`` (as
    written by :func:`export_quantized`, :func:`post_training_quantize` or
    ``paddle.static.save_inference_model``), on CPU.

    Args:
        path (str): path prefix of the model files.
        ir_optim (bool, optional): let Paddle fuse and rewrite the graph. Default True.
        setup (str, optional): one of :data:`PREDICTOR_SETUPS`; None (default): Paddle's
            default CPU config.
        threads (int, optional): math-library threads, with ``setup``. Default 1.

    Examples:
        .. code-block:: python

            >>> from paddle_kure.quant import InferenceModel
            >>> model = InferenceModel("out/qat_w8a8")            # doctest: +SKIP
            >>> logits = model.predict(images, batch_size=1000)  # doctest: +SKIP
    """

    def __init__(self, path: str, ir_optim: bool = True, setup: str | None = None, threads: int = 1) -> None:
        from paddle import inference

        # Saved models may use paddle_kure's custom operators: register them here.
        from ..ops import load_library

        load_library()
        files = [path + ".pdmodel", path + ".pdiparams"]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"InferenceModel: no exported model at {path!r} (missing {missing})")
        if setup is not None:
            config = cpu_predictor_config(path, setup, threads, ir_optim)
        else:
            config = inference.Config(*files)
            config.disable_glog_info()
            config.switch_ir_optim(ir_optim)
        self.path = path
        self._predictor = inference.create_predictor(config)
        self.input_names = list(self._predictor.get_input_names())
        self.output_names = list(self._predictor.get_output_names())

    def _run(self, inputs):
        for name, value in zip(self.input_names, inputs):
            self._predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(value))
        self._predictor.run()
        return [self._predictor.get_output_handle(name).copy_to_cpu() for name in self.output_names]

    def predict(self, *inputs, batch_size: int | None = None):
        """Runs the model on numpy arrays (one per model input) and returns its
        output, or a list of outputs when it has several. ``batch_size`` splits the
        first dimension into chunks."""
        if len(inputs) != len(self.input_names):
            raise ValueError(f"InferenceModel.predict: the model takes {len(self.input_names)} inputs "
                             f"{self.input_names}, got {len(inputs)}")
        arrays = [np.asarray(x) for x in inputs]
        if batch_size is None:
            outputs = self._run(arrays)
        else:
            check_int("InferenceModel.predict", "batch_size", batch_size, low=1)
            chunks = [self._run([a[i:i + batch_size] for a in arrays]) for i in range(0, len(arrays[0]), batch_size)]
            outputs = [np.concatenate(parts) for parts in zip(*chunks)]
        return outputs[0] if len(outputs) == 1 else outputs

    def __str__(self) -> str:
        return f"InferenceModel(path={self.path!r}, inputs={self.input_names}, outputs={self.output_names})"

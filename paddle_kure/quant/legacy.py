"""Saving a dygraph model as a legacy-Program inference model (``.pdmodel``).

PaddleSlim's static passes (``quant_aware``, ``convert``, ``quant_post_static``)
rewrite legacy Programs only, so a model to be compressed has to be saved as one:
``paddle.jit.save`` under ``paddle.pir_utils.OldIrGuard()``. In Paddle 3.3.1
``paddle.matmul``, ``paddle.nn.functional.gelu`` and ``paddle.sum`` /
``Tensor.sum`` no longer accept a legacy ``Variable`` (they call the PIR-only
``_C_ops`` directly): a BERT cannot be traced that way. :func:`legacy_program_ops`
gives them back a legacy branch for the duration of an export.
"""
from __future__ import annotations

import contextlib

__all__ = ["legacy_program_ops", "save_legacy_inference_model"]


def _append(op_type, x, inputs, attrs):
    from paddle.base.layer_helper import LayerHelper

    helper = LayerHelper(op_type)
    out = helper.create_variable_for_type_inference(x.dtype)
    helper.append_op(type=op_type, inputs=inputs, outputs={"Out": out}, attrs=attrs)
    return out


@contextlib.contextmanager
def legacy_program_ops():
    """Within the block, ``paddle.matmul``, ``F.gelu``, ``paddle.sum`` and
    ``Variable.sum`` called on a legacy ``Variable`` append the legacy ops
    ``matmul_v2``, ``gelu`` and ``reduce_sum``; on anything else they are Paddle's
    own functions. Restored on exit."""
    import paddle
    import paddle.nn.functional as F
    from paddle.base.framework import Variable

    originals = paddle.matmul, F.gelu, paddle.sum, Variable.sum

    def reduce_sum(x, axis=None, dtype=None, keepdim=False, name=None):
        if dtype is not None:
            raise ValueError("legacy_program_ops: sum(dtype=...) is not supported on a legacy Variable")
        axes = [] if axis is None else [axis] if isinstance(axis, int) else list(axis)
        return _append("reduce_sum", x, {"X": x}, {"dim": axes, "keep_dim": keepdim, "reduce_all": axis is None})

    def matmul(x, y, transpose_x=False, transpose_y=False, name=None):
        if not isinstance(x, Variable):
            return originals[0](x, y, transpose_x, transpose_y, name)
        return _append("matmul_v2", x, {"X": x, "Y": y}, {"trans_x": transpose_x, "trans_y": transpose_y})

    def gelu(x, approximate=False, name=None):
        if not isinstance(x, Variable):
            return originals[1](x, approximate, name)
        return _append("gelu", x, {"X": x}, {"approximate": approximate})

    def paddle_sum(x, axis=None, dtype=None, keepdim=False, name=None):
        if not isinstance(x, Variable):
            return originals[2](x, axis, dtype, keepdim, name)
        return reduce_sum(x, axis, dtype, keepdim)

    paddle.matmul, F.gelu, paddle.sum, Variable.sum = matmul, gelu, paddle_sum, reduce_sum
    try:
        yield
    finally:
        paddle.matmul, F.gelu, paddle.sum, Variable.sum = originals


def save_legacy_inference_model(layer, path: str, input_spec) -> None:
    """``paddle.jit.save(layer, path, input_spec)`` as a legacy Program:
    ``path + '.pdmodel'`` and ``'.pdiparams'``, which ``paddle-kure compress`` and
    PaddleSlim's static passes read. The layer is saved in eval mode (its mode is
    restored).

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> from paddle_kure.quant.legacy import save_legacy_inference_model
            >>> model = paddle.nn.Linear(4, 2)
            >>> spec = [paddle.static.InputSpec([None, 4], "float32", "x")]
            >>> save_legacy_inference_model(model, "out/linear", spec)  # doctest: +SKIP
    """
    import paddle

    if not isinstance(layer, paddle.nn.Layer):
        raise TypeError(f"save_legacy_inference_model: layer must be a paddle.nn.Layer, got {type(layer).__name__}")
    was_training = layer.training
    layer.eval()
    try:
        with paddle.pir_utils.OldIrGuard(), legacy_program_ops():
            paddle.jit.save(layer, path, input_spec=input_spec)
    finally:
        if was_training:
            layer.train()

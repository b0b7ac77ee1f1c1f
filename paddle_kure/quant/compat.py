"""Every workaround for PaddleSlim 2.6.0 on Paddle 3.3.1 lives here.

Each shim has a test in ``tests/test_compat.py`` that shows the problem with
raw PaddleSlim; when that test starts failing, the problem is gone upstream and
the shim can be deleted.
"""
from __future__ import annotations

import contextlib
import importlib

__all__ = [
    "allow_input_gradients",
    "check_input_gradients",
    "drop_output_quantization",
    "freeze_pass_knows_preprocessed_inputs",
    "import_paddleslim",
    "keep_paddle_mode",
    "pact_layer_class",
    "quantize_weights_with_current_scale",
    "save_quantized_model",
    "set_program_quantization_range",
    "set_quantization_range",
    "test_subgraphs_for_test",
]


def import_paddleslim():
    """Imports and returns ``paddleslim``, or says what to install: PaddleSlim 2.6
    imports ``pkg_resources``, which setuptools 81 and later no longer ship."""
    try:
        importlib.import_module("pkg_resources")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "PaddleSlim imports pkg_resources, which setuptools >= 81 no longer ships: "
            "pip install 'setuptools<81' (paddle_kure's own install pins it)"
        ) from err
    return importlib.import_module("paddleslim")


@contextlib.contextmanager
def keep_paddle_mode():
    """Restores dygraph/static mode on exit: PaddleSlim's
    ``QAT.save_quantized_model`` ends with ``paddle.enable_static()`` when the
    model has preprocess (PACT) layers."""
    import paddle

    was_dynamic = paddle.in_dynamic_mode()
    try:
        yield
    finally:
        if was_dynamic and not paddle.in_dynamic_mode():
            paddle.disable_static()
        elif not was_dynamic and paddle.in_dynamic_mode():
            paddle.enable_static()


def save_quantized_model(model, path: str, input_spec, activation_bits: int, onnx_format: bool) -> None:
    """Exports a dygraph QAT model (from ``paddleslim.dygraph.quant.QAT``) so that
    the inference model computes what the trained model computes.

    - ``QAT.save_quantized_model`` re-quantizes a copy of the model taken *before*
      ``quantize``, without preprocess layers: PACT is dropped. Paddle's
      ``ImperativeQuantAware.save_quantized_model``, which it wraps, exports the
      model as it is, so this calls that directly.
    - ``QAT.save_quantized_model`` also ends in static mode; this leaves the mode
      as it was.
    - Under ``onnx_format`` the export quantizes every layer's output as well (see
      :func:`drop_output_quantization`).
    """
    import paddle

    saver = paddle.quantization.ImperativeQuantAware(activation_bits=activation_bits, onnx_format=onnx_format)
    with keep_paddle_mode():
        saver.save_quantized_model(layer=model, path=path, input_spec=input_spec)
    if onnx_format:
        drop_output_quantization(path)
        set_quantization_range(path)


def _rewrite_saved_model(path: str, rewrite) -> None:
    """Loads the legacy inference model at ``path``, calls ``rewrite(block)`` on its
    global block, which returns {old fetch name: new name} for renamed outputs,
    and saves it back."""
    import paddle

    with paddle.pir_utils.OldIrGuard(), keep_paddle_mode(), paddle.static.scope_guard(paddle.static.Scope()):
        paddle.enable_static()
        executor = paddle.static.Executor(paddle.CPUPlace())
        program, feed_names, fetch_vars = paddle.static.load_inference_model(path, executor)
        block = program.global_block()
        renamed = rewrite(block)
        feed_vars = [block.var(name) for name in feed_names]
        fetch_vars = [block.var(renamed.get(var.name, var.name)) for var in fetch_vars]
        paddle.static.save_inference_model(path, feed_vars, fetch_vars, executor, program=program, clip_extra=True)


def drop_output_quantization(path: str) -> None:
    """Removes from the saved model at ``path`` every activation
    quantize_linear/dequantize_linear pair that does not feed a conv or matmul.

    Under ``onnx_format``, Paddle's QAT export turns each layer's output-scale
    observer into such a pair, the logits' included, which training never
    applies: the exported model then disagrees with the trained one.
    """
    from .config import QUANTIZE_OP_TYPES

    def rewrite(block):
        producer = {name: op for op in block.ops for name in op.output_arg_names}
        users = {}
        for op in block.ops:
            for name in op.input_arg_names:
                users.setdefault(name, []).append(op)
        replaced = {}
        for dequantize in [op for op in block.ops if op.type == "dequantize_linear"]:
            quantize = producer.get(dequantize.input("X")[0])
            out = dequantize.output("Y")[0]
            if quantize is None or quantize.type != "quantize_linear":
                continue  # a weight: stored quantized, no quantize op
            if any(op.type in QUANTIZE_OP_TYPES for op in users.get(out, [])):
                continue
            source = quantize.input("X")[0]
            for op in users.get(out, []):
                op._rename_input(out, source)
            replaced[out] = source
            for op in (dequantize, quantize):
                block._remove_op(list(block.ops).index(op))
        return replaced

    _rewrite_saved_model(path, rewrite)


_LINEAR_QUANT_OPS = ("quantize_linear", "dequantize_linear")


def _set_range(desc) -> None:
    """Gives one quantize_linear/dequantize_linear op desc the symmetric integer
    range of its ``bit_length``, ``-(2^(b-1) - 1)`` to ``2^(b-1) - 1``, and
    rounding half away from zero (``round_type`` 1): what PaddleSlim's fake
    quantizers train with."""
    if desc.type() in _LINEAR_QUANT_OPS:
        qmax = 2 ** (desc.attr("bit_length") - 1) - 1
        desc._set_int32_attr("qmax", qmax)
        desc._set_int32_attr("qmin", -qmax)
        if not desc.has_attr("round_type"):
            desc._set_int32_attr("round_type", 1)


def set_program_quantization_range(program) -> None:
    """Gives every quantize_linear/dequantize_linear op of ``program`` (a legacy
    Program, or the CompiledProgram that ``paddleslim.quant.quant_aware`` returns
    for training) the integer range of its ``bit_length``.

    ``quant_aware(onnx_format=True)`` and ``quant_post_static(onnx_format=True)``
    write these ops without ``qmin``/``qmax``, and Paddle's kernels then use the
    8-bit range whatever the ``bit_length``: a W4 program computes exactly what
    the W8 program computes. Paddle's dygraph export also leaves ``round_type``
    at its default, rounding ties to even where training rounded them away from
    zero: activations on a tie (frequent after quantized layers) move by one step.
    """
    graph = getattr(program, "_graph", None)
    if graph is not None:  # a CompiledProgram built from PaddleSlim's IrGraph
        for node in graph.nodes():
            if node.is_op():
                _set_range(node.op())
        return
    for block in program.blocks:
        for op in block.ops:
            _set_range(op.desc)


_WEIGHT_QUANT_OPS = ("quantize_linear", "fake_channel_wise_quantize_abs_max", "fake_quantize_abs_max")


def quantize_weights_with_current_scale(program) -> None:
    """Makes the weight quantize ops of a test ``program`` from
    ``paddleslim.quant.quant_aware(for_test=True)`` compute each weight's scale
    from the weight as it is.

    Built with ``is_test=True``, they reuse the scale that the training program
    stored at its last step, before the optimizer moved the weights: the test
    program then quantizes with stale scales (all zero before the first step),
    while ``convert`` and the exported model use the current ones. Per-channel
    weights in both formats and per-tensor weights in the older format are
    fixed; per-tensor ``quantize_linear`` weights keep the stale scale.
    """
    block = program.global_block()
    for op in block.ops:
        if op.type in _WEIGHT_QUANT_OPS and block._find_var_recursive(op.input("X")[0]).persistable:
            if op.type == "quantize_linear" and op.attr("quant_axis") < 0:
                # per-tensor quantize_linear in training mode is a moving-average
                # observer with state this program lacks: left as PaddleSlim built it
                continue
            op._set_attr("is_test", False)
            if op.type == "quantize_linear" and "OutScale" not in op.output_names:
                op.desc.set_output("OutScale", op.input("Scale"))  # where the computed scale goes
    program._sync_with_cpp()


def set_quantization_range(path: str) -> None:
    """:func:`set_program_quantization_range` on the saved model at ``path``."""

    def rewrite(block):
        set_program_quantization_range(block.program)
        return {}

    _rewrite_saved_model(path, rewrite)


@contextlib.contextmanager
def test_subgraphs_for_test():
    """Makes ``IrGraph.all_sub_graphs()`` inherit the graph's ``for_test``.

    ``paddleslim.quant.quant_aware(program, for_test=True)`` builds its graph with
    ``for_test=True`` but takes the sub-graphs it rewrites from
    ``all_sub_graphs()``, whose ``for_test`` defaults to False; with an
    ``act_preprocess_func`` the pass then looks for gradients a test program does
    not have (``Cannot find the target node ...@GRAD``).
    """
    from paddle.base.framework import IrGraph

    original = IrGraph.all_sub_graphs

    def all_sub_graphs(self, for_test=None):
        return original(self, for_test=self._for_test if for_test is None else for_test)

    IrGraph.all_sub_graphs = all_sub_graphs
    try:
        yield
    finally:
        IrGraph.all_sub_graphs = original


@contextlib.contextmanager
def freeze_pass_knows_preprocessed_inputs():
    """Lets ``QuantizationFreezePass`` (run by ``paddleslim.quant.convert``) find
    the scale of an activation that a preprocess function (PACT) fed to its
    fake-quantize op.

    ``quant_aware`` records "preprocess output -> original variable" in its own
    graph's ``out_node_mapping_table``; ``convert`` builds a new graph without that
    table, so the legacy-format freeze pass files the scale under the PACT
    output's name and then looks it up under the original one
    (``KeyError: 'flatten_0.tmp_0'``). The fake-quantize op's output,
    ``<original>.quantized``, still names the original: the table is rebuilt from it.
    """
    from paddle.static.quantization import QuantizationFreezePass

    original = QuantizationFreezePass.apply

    def apply(self, graph):
        table = getattr(graph, "out_node_mapping_table", {})
        for op_node in graph.all_op_nodes():
            if op_node.name() in self._fake_quant_op_names:
                source, quantized = op_node.input("X")[0], op_node.output("Out")[0]
                if quantized.endswith(".quantized") and quantized[: -len(".quantized")] != source:
                    table.setdefault(source, quantized[: -len(".quantized")])
        graph.out_node_mapping_table = table
        return original(self, graph)

    QuantizationFreezePass.apply = apply
    try:
        yield
    finally:
        QuantizationFreezePass.apply = original


def pact_layer_class(pact_config) -> type:
    """A :class:`paddle_kure.nn.PACT` class that PaddleSlim's ``QAT(act_preprocess=...)``
    can build with no arguments, configured by ``pact_config`` (a ``PACTConfig``).

    PaddleSlim's own PACT starts alpha at 100 with a learning-rate multiplier of
    1000: on normalized data it clips nothing. This one is two-sided, because a
    quantized layer's input may be signed (the first layer's is).
    """
    from ..nn.pact import PACT

    class QuantInputPACT(PACT):
        def __init__(self):
            super().__init__(init=pact_config.init, signed=True, percentile=pact_config.percentile,
                             l2_coeff=pact_config.l2_coeff, learning_rate=pact_config.learning_rate)

    return QuantInputPACT


def allow_input_gradients(program) -> list:
    """Marks the data inputs of a legacy ``program`` ``stop_gradient=False``; call it
    before ``minimize`` when PACT preprocesses them: PaddleSlim's preprocess insertion
    links their gradient variables, and without them the first training step fails
    (``Tensor holds no memory``). Returns their names."""
    names = []
    for var in program.global_block().vars.values():
        if var.is_data:
            var.stop_gradient = False
            names.append(var.name)
    return names


def check_input_gradients(program) -> None:
    """Raises a ValueError naming the data inputs that need :func:`allow_input_gradients`."""
    frozen = [v.name for v in program.global_block().vars.values() if v.is_data and v.stop_gradient]
    if frozen:
        raise ValueError(
            f"data inputs {frozen} have stop_gradient=True, so PACT on them would fail in training: "
            "call paddle_kure.quant.static.allow_input_gradients(program) before minimize"
        )

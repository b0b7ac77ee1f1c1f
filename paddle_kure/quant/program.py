"""An existing Paddle inference model as a trainable legacy Program: loading it,
seeing which ops quantization-aware training will quantize, distilling it.

What :mod:`paddle_kure.apps.compress` builds on; everything here needs legacy
static mode (``paddle.pir_utils.OldIrGuard()`` and ``paddle.enable_static()``).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Optional

__all__ = [
    "DISTILL_LOSSES",
    "QuantizedOp",
    "dequantize_stored_weights",
    "distillation_loss",
    "load_inference_program",
    "mark_not_quantized",
    "quantization_plan",
    "resolve_model_files",
    "unquantize_inputs",
]

# Distillation losses (PaddleSlim's names) and what each computes.
DISTILL_LOSSES = {
    "l2": "mean squared difference of the student's and the teacher's node",
    "soft_label": "cross entropy of the student's softmax against the teacher's softmax",
}
# PaddleSlim's transform pass leaves these alone when both inputs are activations.
_WEIGHTLESS_SKIPPED = ("mul", "matmul")


def resolve_model_files(model_dir: str, model_filename: Optional[str] = None,
                        params_filename: Optional[str] = None) -> tuple:
    """The ``(.pdmodel, .pdiparams)`` paths of the inference model in ``model_dir``.

    ``model_filename`` None: the one ``*.pdmodel`` file there. ``params_filename``
    None: the ``.pdiparams`` file of the same name.

    Raises:
        FileNotFoundError: no such folder or file, naming what is there.
        ValueError: several candidate model files, or a PIR model (``.json``) only.
    """
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"model_dir {model_dir!r} is not a folder")
    if model_filename is None:
        found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(model_dir, "*.pdmodel")))
        if len(found) != 1:
            pir = sorted(os.path.basename(p) for p in glob.glob(os.path.join(model_dir, "*.json")))
            if not found and pir:
                raise ValueError(f"{model_dir} holds a PIR model ({', '.join(pir)}); PaddleSlim's passes need a "
                                 f"legacy .pdmodel: save it with paddle.jit.save under paddle.pir_utils.OldIrGuard() "
                                 f"(paddle_kure.quant.legacy.save_legacy_inference_model)")
            raise (ValueError if found else FileNotFoundError)(
                f"{model_dir}: expected exactly one *.pdmodel file, found {found or 'none'}; set Global.model_filename")
        model_filename = found[0]
    if params_filename is None:
        params_filename = model_filename[:-len(".pdmodel")] + ".pdiparams" if model_filename.endswith(".pdmodel") \
            else model_filename + ".pdiparams"
    paths = tuple(os.path.join(model_dir, name) for name in (model_filename, params_filename))
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"inference model files not found: {missing} (in {model_dir}: "
                                f"{sorted(os.listdir(model_dir))})")
    return paths


def load_inference_program(model_path: str, params_path: str, executor, scope, trainable: bool = False):
    """Loads an inference model into ``scope``: ``(program, feed_names, fetch_names)``.

    With ``trainable``, its persistable float variables become Parameters, its
    ops leave test mode (PaddleSlim's ``recover_inference_program``) and its feed
    and fetch ops go, so that an optimizer can train it and more inputs can be fed.
    """
    import paddle
    from paddle.base import unique_name

    from .compat import import_paddleslim

    prefix = model_path[:-len(".pdmodel")] if model_path.endswith(".pdmodel") else None
    with paddle.static.scope_guard(scope):
        if prefix is not None and params_path == prefix + ".pdiparams":
            program, feed_names, fetch_vars = paddle.static.load_inference_model(prefix, executor)
        else:  # files not named after one prefix: Paddle's older call
            program, feed_names, fetch_vars = paddle.static.load_inference_model(
                os.path.dirname(model_path) or ".", executor, model_filename=os.path.basename(model_path),
                params_filename=os.path.basename(params_path))
        fetch_names = [var.name for var in fetch_vars]
        if trainable:
            import_paddleslim()
            from paddleslim.common.recover_program import recover_inference_program

            # A throwaway startup program: the parameters' initializers must never
            # run, they would overwrite the loaded values.
            program = recover_inference_program(program, paddle.static.Program())
            block = program.global_block()
            for op in block.ops:  # saved for inference, dropout lost the mask its gradient needs
                if op.type == "dropout" and "Mask" not in op.output_names:
                    mask = block.create_var(name=op.output("Out")[0] + ".mask", dtype="uint8",
                                            shape=block.var(op.input("X")[0]).shape, stop_gradient=True)
                    op.desc.set_output("Mask", [mask.name])
            # Operators on Variables name their outputs with the program's own generator,
            # which restarts at tmp_0 on a loaded program: the saved model's names.
            program._name_generator = unique_name.UniqueNameGenerator("trainable_")
            # The executor adds feed ops for what is fed, distillation targets included.
            for index in reversed([i for i, op in enumerate(block.ops) if op.type == "feed"]):
                block._remove_op(index)
    return program, list(feed_names), fetch_names


@dataclass
class QuantizedOp:
    """One op of a quantizable type and what quantization-aware training does to it.

    Attributes:
        index: position in the program's global block.
        type: op type.
        weight: the persistable (weight) input, '' when both inputs are activations.
        inputs: its activation inputs.
        quantized: whether it is quantized.
        reason: why not (or 'quantized').
    """

    index: int
    type: str
    weight: str
    inputs: list
    quantized: bool
    reason: str


def _pattern_hit(op, patterns):
    """The first pattern in the op's name scope or in one of its variable names."""
    scope = op.attr("op_namescope") if op.has_attr("op_namescope") else ""
    names = [scope] + list(op.input_arg_names) + list(op.output_arg_names)
    return next((p for p in patterns if any(p in name for name in names)), None)


def quantization_plan(program, quantize_op_types, not_quant_pattern=()) -> list:
    """Which ops of ``program`` PaddleSlim's ``quant_aware`` quantizes with these
    settings, after :func:`mark_not_quantized`; changes nothing."""
    block = program.global_block()
    plan = []
    for index, op in enumerate(block.ops):
        if op.type not in quantize_op_types:
            continue
        names = [n for n in op.input_arg_names if block.has_var(n)]
        weights = [n for n in names if block.var(n).persistable]
        activations = [n for n in names if not block.var(n).persistable]
        hit = _pattern_hit(op, not_quant_pattern)
        if hit is not None:
            reason = f"not_quant_pattern {hit!r}"
        elif not weights and op.type in _WEIGHTLESS_SKIPPED:
            reason = f"{op.type} of two activations (PaddleSlim leaves it in float)"
        else:
            reason = "quantized"
        plan.append(QuantizedOp(index, op.type, weights[0] if weights else "", activations, reason == "quantized",
                                reason))
    return plan


def mark_not_quantized(program, not_quant_pattern) -> list:
    """Makes PaddleSlim skip every op whose name scope or variable names contain a
    pattern of ``not_quant_pattern``; returns the indexes of the marked ops.

    PaddleSlim matches the patterns against an op's name scope only, and a saved
    inference model keeps no name scopes (they read '/'): here the matched pattern
    is appended to the op's name scope, where PaddleSlim finds it.
    """
    marked = []
    for index, op in enumerate(program.global_block().ops):
        hit = _pattern_hit(op, not_quant_pattern)
        if hit is not None:
            scope = op.attr("op_namescope") if op.has_attr("op_namescope") else ""
            if hit not in scope:
                op._set_attr("op_namescope", f"{scope}{hit}/")
            marked.append(index)
    return marked


def distillation_loss(program, pairs, losses, alphas):
    """Builds ``sum_k alpha_k * loss_k(student node k, teacher node k)`` in ``program``
    (call inside its ``program_guard``). The teacher's values come in as data
    variables, one per pair, that the caller feeds.

    Args:
        pairs (list[str]): the student's node names (the teacher's data variables are
            ``distill_teacher_<k>``).
        losses (list[str]): a :data:`DISTILL_LOSSES` key per pair.
        alphas (list[float]): a weight per pair.

    Returns:
        tuple: ``(loss, teacher_feed_names)``.
    """
    import paddle
    import paddle.nn.functional as F

    block = program.global_block()
    total, feeds = None, []
    for k, (name, loss_type, alpha) in enumerate(zip(pairs, losses, alphas)):
        student = block.var(name)
        teacher = paddle.static.data(f"distill_teacher_{k}", student.shape, student.dtype)
        feeds.append(teacher.name)
        if loss_type == "l2":
            term = paddle.mean(paddle.square(student - teacher))
        elif loss_type == "soft_label":
            term = paddle.mean(F.cross_entropy(student, F.softmax(teacher, axis=-1), soft_label=True))
        else:
            raise ValueError(f"distillation loss must be one of {list(DISTILL_LOSSES)}, got {loss_type!r}")
        term = term * float(alpha)
        total = term if total is None else total + term
    return total, feeds


def unquantize_inputs(path: str, op_outputs) -> int:
    """In the saved model at ``path``, feeds the ops that write one of ``op_outputs``
    their activations unquantized, and removes the quantize/dequantize pairs nobody
    reads any more; returns how many inputs were changed.

    PaddleSlim's ``convert`` turns the output-scale observer in front of an op that
    ``not_quant_pattern`` kept in float into a quantize/dequantize pair feeding it:
    the exported op would see int8-rounded inputs that training never gave it.
    """
    from .compat import _rewrite_saved_model

    op_outputs = set(op_outputs)
    changed = [0]

    def rewrite(block):
        producer = {name: op for op in block.ops for name in op.output_arg_names}
        for op in block.ops:
            if not op_outputs & set(op.output_arg_names):
                continue
            for name in list(op.input_arg_names):
                dequantize = producer.get(name)
                quantize = producer.get(dequantize.input("X")[0]) if dequantize is not None \
                    and dequantize.type == "dequantize_linear" else None
                if quantize is not None and quantize.type == "quantize_linear":
                    op._rename_input(name, quantize.input("X")[0])
                    changed[0] += 1
        while True:  # pairs whose output nobody reads
            read = {name for op in block.ops for name in op.input_arg_names}
            orphans = [i for i, op in enumerate(block.ops) if op.type in ("quantize_linear", "dequantize_linear")
                       and not read & set(op.output_arg_names)]
            if not orphans:
                return {}
            for index in reversed(orphans):
                block._remove_op(index)

    _rewrite_saved_model(path, rewrite)
    return changed[0]


def dequantize_stored_weights(path: str) -> list:
    """Stores every int8 weight of the saved model at ``path`` as the float32 values
    it dequantizes to (``q * scale / (2^(b-1) - 1)``, per channel along ``quant_axis``
    or per tensor) and removes its ``dequantize_linear`` op; returns the weight names.

    The values stay on the int8 grid, so the model computes what it computed. Why:
    oneDNN's INT8 pass (``quant_dequant_onednn_pass``) mishandles per-channel
    ``matmul_v2`` weights; given float weights, oneDNN takes each output channel's
    abs-max as its scale itself, which recovers the same grid.
    """
    import numpy as np
    import paddle

    from .compat import _rewrite_saved_model

    names = []

    def rewrite(block):
        scope = paddle.static.global_scope()
        place = paddle.CPUPlace()
        for op in list(block.ops):
            if op.type != "dequantize_linear" or not block.var(op.input("X")[0]).persistable:
                continue
            weight, out = op.input("X")[0], op.output("Y")[0]
            values = np.array(scope.find_var(weight).get_tensor()).astype("float32")
            scale = np.array(scope.find_var(op.input("Scale")[0]).get_tensor()).astype("float32")
            qmax = 2 ** (op.attr("bit_length") - 1) - 1
            if scale.size > 1:
                shape = [1] * values.ndim
                shape[op.attr("quant_axis")] = scale.size
                scale = scale.reshape(shape)
            scope.find_var(weight).get_tensor().set(values * scale / qmax, place)
            for user in block.ops:
                if out in user.input_arg_names:
                    user._rename_input(out, weight)
            block._remove_op(list(block.ops).index(op))
            names.append(weight)
        return {}

    _rewrite_saved_model(path, rewrite)
    return names

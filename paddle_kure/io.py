"""Loaders of a model's tensors: ``.pdparams`` state dicts, Paddle inference models
and the bundled all-MiniLM-L6-v2, as ``{name: numpy array}``."""
from __future__ import annotations

import glob
import os

import numpy as np

__all__ = ["INFERENCE_SUFFIXES", "MINILM", "load_named_arrays"]

MINILM = "minilm"
# the files of a Paddle inference model (paddle.jit.save / paddle.static.save_inference_model)
INFERENCE_SUFFIXES = (".pdmodel", ".json", ".pdiparams", ".pdiparams.info")


def _flatten(state, prefix=""):
    """Array entries of a (possibly nested) state dict, with dotted names."""
    out = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, np.ndarray) or hasattr(value, "numpy"):
            out[name] = value.numpy() if hasattr(value, "numpy") else value
    return out


def _inference_prefix(path):
    """The path prefix of a Paddle inference model given as prefix, model file,
    params file or a folder holding one model; None if ``path`` is none of these."""
    for suffix in INFERENCE_SUFFIXES:
        if path.endswith(suffix):
            path = path[:-len(suffix)]
            break
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "*.pdiparams")))
        if len(found) != 1:
            raise ValueError(f"{path} is a folder with {len(found)} .pdiparams files; "
                             "name the model (path prefix or .pdmodel/.json file)")
        path = found[0][:-len(".pdiparams")]
    has_program = os.path.isfile(path + ".pdmodel") or os.path.isfile(path + ".json")
    return path if has_program and os.path.isfile(path + ".pdiparams") else None


def _load_inference_params(prefix):
    """Persistable tensors of an inference model, in order of first use by its program."""
    import paddle

    legacy = os.path.isfile(prefix + ".pdmodel")
    was_dygraph = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        scope = paddle.static.Scope()
        guard = paddle.pir_utils.OldIrGuard() if legacy else paddle.pir_utils.IrGuard()
        with guard, paddle.static.scope_guard(scope):
            program, _, _ = paddle.static.load_inference_model(prefix, paddle.static.Executor(paddle.CPUPlace()))
            block, names = program.global_block(), []
            for op in block.ops:
                if legacy:
                    used = [n for n in op.input_arg_names
                            if block.has_var(n) and block.var(n).persistable and n not in ("feed", "fetch")]
                else:
                    defining = [v.get_defining_op() for v in op.operands_source()]
                    used = [d.attrs()["parameter_name"] for d in defining
                            if d is not None and d.name() == "builtin.parameter"]
                names.extend(n for n in used if n not in names)
            return {n: np.array(scope.find_var(n).get_tensor()) for n in names}
    finally:
        if was_dygraph:
            paddle.disable_static()


def load_named_arrays(model):
    """Reads a model's tensors as ``({name: numpy array}, description)``.

    Args:
        model (str): ``"minilm"`` (the bundled all-MiniLM-L6-v2, see
            :mod:`paddle_kure.models.minilm`), a ``.pdparams`` state dict (nested dicts
            give dotted names; non-tensor entries are skipped), or a Paddle inference
            model: its path prefix, its ``.pdmodel``/``.json``/``.pdiparams`` file, or a
            folder holding one. Inference models name tensors by variable
            (``linear_0.w_0``), in the order the program first uses them.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the path is not a model this reads, or holds no tensor.
    """
    if not isinstance(model, str) or not model:
        raise TypeError(f"load_named_arrays: expected a path or 'minilm', got {model!r}")
    if model == MINILM:
        from paddle_kure.models import load_minilm

        bert, _ = load_minilm()
        return {n: p.numpy() for n, p in bert.named_parameters()}, "all-MiniLM-L6-v2"
    if model.endswith(".pdparams"):
        if not os.path.isfile(model):
            raise FileNotFoundError(f"{model} does not exist")
        import paddle

        state = paddle.load(model, return_numpy=True)
        arrays = _flatten(state) if isinstance(state, dict) else {}
        if not arrays:
            raise ValueError(f"{model} holds no tensor (expected a state dict saved by paddle.save)")
        return arrays, os.path.basename(model)
    prefix = _inference_prefix(model)
    if prefix is None:
        stem = next((model[:-len(s)] for s in INFERENCE_SUFFIXES if model.endswith(s)), model)
        if not os.path.exists(model) and not glob.glob(glob.escape(stem) + ".*"):
            raise FileNotFoundError(f"{model} does not exist (expected 'minilm', a .pdparams file or a Paddle "
                                    "inference model: path prefix, .pdmodel/.json or .pdiparams)")
        raise ValueError(f"{model} is not a model paddle-kure analyze reads: expected 'minilm', a .pdparams "
                         "state dict, or a Paddle inference model (PREFIX.pdmodel or PREFIX.json with "
                         "PREFIX.pdiparams)")
    arrays = _load_inference_params(prefix)
    if not arrays:
        raise ValueError(f"{prefix}: the inference model has no parameters")
    return arrays, os.path.basename(prefix)

"""Python entry points of paddle_kure's fused C++/CUDA operators (``csrc/``).

Both functions work in dygraph, PIR static graphs, legacy static Programs and
under ``paddle.jit.to_static``; the compiled library is loaded on first use
(and must be loaded in any process that runs a saved model using ``kurtosis``:
``import paddle_kure`` does it).
"""
from __future__ import annotations

import glob
import importlib.util
import os

import paddle
from paddle import _C_ops
from paddle.base.layer_helper import LayerHelper
from paddle.framework import in_dynamic_or_pir_mode
from paddle.jit.marker import unified

__all__ = ["kurtosis", "kurtosis_decay_grad", "load_library"]

_FLOAT_DTYPES = ("float32", "float64")
_GPU_ONLY_DTYPES = ("float16", "bfloat16")
_library_path = None
_kernels = None  # the library as a Python module: direct dygraph calls


def load_library() -> str:
    """Registers the custom operators with Paddle (once) and returns the library path."""
    global _library_path
    if _library_path is None:
        here = os.path.dirname(os.path.abspath(__file__))
        found = sorted(glob.glob(os.path.join(here, "_kure_ops*.so")))
        if not found:
            raise ImportError(
                f"paddle_kure's compiled operators were not found in {here}. "
                "Build them with `pip install --no-build-isolation -e .` "
                "(or `make venv`) in the source tree."
            )
        # imported by paddle itself already (paddle_kure/__init__.py silences its ccache warning)
        from paddle.utils.cpp_extension import load_op_meta_info_and_register_op
        load_op_meta_info_and_register_op(found[0])
        _library_path = found[0]
    return _library_path


def _dygraph_kernels():
    """The same library imported as a Python module (csrc/kurtosis_python.cc):
    its functions skip Paddle's custom-operator dispatch."""
    global _kernels
    if _kernels is None:
        spec = importlib.util.spec_from_file_location("paddle_kure._kure_ops", load_library())
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _kernels = module
    return _kernels


def _dtype_name(x) -> str:
    return str(x.dtype).split(".")[-1].lower()


def _check_input(x, op_name: str) -> None:
    if not isinstance(x, (paddle.Tensor, paddle.static.Variable, paddle.pir.Value)):
        raise TypeError(f"{op_name}: expected a paddle Tensor, got {type(x).__name__}")
    dtype = x.dtype
    # Identity tests first: this check runs on every regularizer call, and the
    # name-based one below costs more than the kernel on small tensors.
    if dtype is not paddle.float32 and dtype is not paddle.float64:
        dtype = _dtype_name(x)
        if dtype in _GPU_ONLY_DTYPES:
            # In a static graph the place is known only when it runs; the kernel checks then.
            on_cpu = paddle.in_dynamic_mode() and not x.place.is_gpu_place()
            supported = paddle.is_compiled_with_cuda() and not on_cpu
        else:
            supported = dtype in _FLOAT_DTYPES
        if not supported:
            raise TypeError(
                f"{op_name}: input dtype {dtype} is not supported; use float32 or float64 "
                "(float16/bfloat16 on GPU)"
            )
    # Static shapes may hold -1 for unknown sizes: only a known 0 is an error.
    if 0 in x.shape:
        raise ValueError(f"{op_name}: input tensor is empty (shape {list(x.shape)})")


@unified
def kurtosis(x, name=None):
    r"""Kurtosis of all elements of ``x``: :math:`K = m_4 / m_2^2` with population
    central moments :math:`m_k = \frac{1}{n}\sum_i (x_i - \mu)^k`.

    Uniform data gives 1.8, normal 3, Laplace 6 (``scipy.stats.kurtosis(x,
    fisher=False)`` is the same statistic). Moments are accumulated in float64
    with a pairwise update, so a large mean does not cost precision. The result is
    a 0-D tensor of ``x``'s dtype and is differentiable:
    :math:`\partial K/\partial x_i = \frac{4}{n m_2^2}((x_i-\mu)^3 - m_3 - K m_2 (x_i-\mu))`.

    A constant tensor, or one of a single element, has no kurtosis: the result is
    defined as 0 (no real tensor has K < 1) with a zero gradient. NaN or Inf in
    ``x`` make the result NaN.

    Args:
        x (Tensor): float32 or float64 tensor of any shape (float16/bfloat16 on GPU).
        name (str, optional): unused, for API consistency.

    Returns:
        Tensor: 0-D kurtosis.

    Raises:
        TypeError: for integer or other unsupported dtypes.
        ValueError: for an empty tensor.

    Examples:
        .. code-block:: python

            >>> import paddle
            >>> import paddle_kure
            >>> x = paddle.uniform([100000], min=-1.0, max=1.0)
            >>> k = paddle_kure.kurtosis(x)  # about 1.8
    """
    _check_input(x, "kurtosis")
    load_library()
    if in_dynamic_or_pir_mode():
        out, _stats = _C_ops._run_custom_op("kurtosis", x)
        return out
    helper = LayerHelper("kurtosis", **locals())
    out = helper.create_variable_for_type_inference(dtype=x.dtype)
    stats = helper.create_variable_for_type_inference(dtype="float64", stop_gradient=True)
    helper.append_op(type="kurtosis", inputs={"X": x}, outputs={"Out": out, "Stats": stats})
    return out


def kurtosis_decay_grad(x, coeff: float, target: float = 1.8, l2_coeff: float = 0.0, block=None):
    r"""The fused KURE gradient term
    :math:`coeff \cdot \partial/\partial x\, (K(x) - target)^2 + l2\_coeff \cdot x`,
    computed in one pass for the moments and one for the output.

    This is what :class:`paddle_kure.KurtosisDecay` adds to a parameter's
    gradient. It is not differentiable (it is a gradient already).

    Args:
        x (Tensor): float32 or float64 tensor (float16/bfloat16 on GPU).
        coeff (float): weight of the kurtosis term.
        target (float): target kurtosis, 1.8 for a uniform distribution.
        l2_coeff (float): weight of an L2 term added to the result.
        block (Block, optional): legacy static graph block to append to; the
            current block when None.

    Returns:
        Tensor of ``x``'s shape and dtype.
    """
    _check_input(x, "kurtosis_decay_grad")
    if paddle.in_dynamic_mode():
        return (_kernels or _dygraph_kernels()).kurtosis_decay(x, coeff, target, l2_coeff)
    load_library()
    attrs = (float(coeff), float(target), float(l2_coeff))
    if in_dynamic_or_pir_mode():
        return _C_ops._run_custom_op("kurtosis_decay", x, *attrs)[0]
    block = block if block is not None else paddle.static.default_main_program().current_block()
    out = block.create_var(dtype=x.dtype, shape=x.shape, stop_gradient=True)
    block.append_op(
        type="kurtosis_decay",
        inputs={"X": x},
        outputs={"Out": out},
        attrs=dict(zip(("coeff", "target", "l2_coeff"), attrs)),
    )
    return out


def _accumulate_kurtosis_decay(x, grad, coeff: float, target: float, l2_coeff: float) -> None:
    """grad += kurtosis_decay_grad(x, ...) in place (dygraph), without a new tensor on CPU."""
    load_library()
    attrs = (float(coeff), float(target), float(l2_coeff))
    # grad.detach() shares grad's memory; Paddle refuses in-place writes to a tensor
    # that is itself marked as needing gradients.
    target_grad = grad.detach()
    if x.place.is_cpu_place() and x.is_contiguous() and grad.is_contiguous():
        _C_ops._run_custom_op("kurtosis_decay_accumulate", x, target_grad, *attrs)
    else:
        target_grad.add_(kurtosis_decay_grad(x, *attrs))

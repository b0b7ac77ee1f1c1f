"""What paddle_kure runs on: the Paddle check done at import, and build_info().

paddle_kure does not depend on a Paddle distribution by name, so that it
installs beside either `paddlepaddle` (CPU) or `paddlepaddle-gpu` (CUDA); it
checks at import that one of them is there and new enough instead.
"""
from __future__ import annotations

import ctypes
import re

# paddle_kure's version (pyproject.toml's); the package exports it as __version__.
VERSION = "0.1.0"

MIN_PADDLE = (3, 0)
_INSTALL_HINT = (
    "install PaddlePaddle first: `pip install paddlepaddle` (CPU) or `paddlepaddle-gpu` "
    "(CUDA, from Paddle's index; see the README section \"GPU\"), then build paddle_kure "
    "against it with `pip install --no-build-isolation .`"
)


def _version_tuple(version: str) -> tuple:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def check_paddle() -> None:
    """Raises ImportError, saying what to install, when Paddle is missing or older than 3.0."""
    try:
        import paddle
    except ImportError as err:
        raise ImportError(f"paddle_kure needs PaddlePaddle >= 3.0, which is not importable ({err}): "
                          + _INSTALL_HINT) from err
    version = getattr(paddle, "__version__", "")
    # Source builds of Paddle report 0.0.0: trust them.
    if version != "0.0.0" and _version_tuple(version) < MIN_PADDLE:
        raise ImportError(f"paddle_kure needs PaddlePaddle >= 3.0, found {version} "
                          f"({paddle.__file__}): " + _INSTALL_HINT)


def build_info() -> dict:
    """How this paddle_kure was built and what it runs on.

    Returns:
        dict: ``version`` (paddle_kure's), ``library`` (path of the compiled
        operators), ``cuda_kernels`` (True when the CUDA kernels are compiled
        in), ``cuda_runtime`` (the CUDA version they were compiled with, or
        None), ``paddle`` (the running Paddle's version), ``paddle_with_cuda``
        (whether that Paddle is a CUDA build) and ``gpus`` (CUDA devices it sees).

    Examples:
        .. code-block:: python

            >>> import paddle_kure
            >>> paddle_kure.build_info()["cuda_kernels"]  # False on a CPU build
    """
    import paddle

    from .ops import load_library

    library = load_library()
    # kurtosis_op.cu exports this C symbol; CPU-only builds do not compile it.
    runtime = getattr(ctypes.CDLL(library), "paddle_kure_cuda_runtime_version", None)
    cuda_runtime = None
    if runtime is not None:
        number = runtime()
        cuda_runtime = f"{number // 1000}.{number % 1000 // 10}"
    with_cuda = paddle.is_compiled_with_cuda()
    return {
        "version": VERSION,
        "library": library,
        "cuda_kernels": runtime is not None,
        "cuda_runtime": cuda_runtime,
        "paddle": paddle.__version__,
        "paddle_with_cuda": with_cuda,
        "gpus": paddle.device.cuda.device_count() if with_cuda else 0,
    }

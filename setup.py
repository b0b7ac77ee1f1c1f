"""Builds paddle_kure's custom operators (csrc/) into paddle_kure/_kure_ops.so.

Metadata lives in pyproject.toml. The operators are compiled against the Paddle
installed in this environment, `paddlepaddle` or `paddlepaddle-gpu`: with a
CUDA build of Paddle the CUDA kernels are compiled too. Build without
isolation so that Paddle is visible: `pip install --no-build-isolation .`.
"""
import os
import shutil

from setuptools import setup

try:
    import paddle
except ImportError as err:
    raise SystemExit(
        f"paddle_kure builds its operators against the installed PaddlePaddle, and none is importable ({err}).\n"
        "Install `paddlepaddle` (CPU) or `paddlepaddle-gpu` (CUDA) first, then build without isolation:\n"
        "    pip install --no-build-isolation .\n"
        "(an isolated build cannot see the installed Paddle; see the README section \"GPU\")."
    ) from err
from paddle.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_SOURCES = ["csrc/kurtosis_op.cc", "csrc/kurtosis_python.cc"]
CUDA_SOURCES = ["csrc/kurtosis_op.cu"]


class BuildOps(BuildExtension.with_options(no_python_abi_suffix=True)):
    """Paddle's BuildExtension, minus the leftovers it puts beside the library:
    object files under <build_lib>/build, a generated stub module and its
    source-hash file; paddle_kure/ops.py loads the library itself."""

    def run(self):
        super().run()
        for ext in self.extensions:
            lib_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
            shutil.rmtree(os.path.join(self.build_lib, "build"), ignore_errors=True)
            for leftover in (ext.name.split(".")[-1] + ".py", "version.txt"):
                path = os.path.join(lib_dir, leftover)
                if os.path.exists(path):
                    os.remove(path)


def visible_gpu_archs():
    """'8.0;9.0'-style list of the GPUs this machine has, for Paddle's
    PADDLE_CUDA_ARCH_LIST; empty without GPUs (nvcc's default arch, JIT from PTX)."""
    capabilities = set()
    for i in range(paddle.device.cuda.device_count()):
        major, minor = paddle.device.cuda.get_device_capability(i)
        capabilities.add(f"{major}.{minor}")
    return ";".join(sorted(capabilities))


def cuda_toolkit_root():
    """The CUDA toolkit Paddle will compile with (its own CUDA_HOME lookup), or
    None when that is not a toolkit: `which nvcc` finds a wrapper script's
    directory, not the toolkit, unless CUDA_HOME is set."""
    from paddle.utils.cpp_extension.extension_utils import find_cuda_home

    root = find_cuda_home()
    has_toolkit = root and os.path.exists(os.path.join(root, "include", "cuda_runtime.h"))
    return root if has_toolkit else None


if paddle.is_compiled_with_cuda():
    if cuda_toolkit_root() is None:
        raise SystemExit(
            "Paddle is a CUDA build, so paddle_kure compiles CUDA kernels, but no CUDA toolkit was found "
            f"(CUDA_HOME={os.environ.get('CUDA_HOME')!r}, nvcc on PATH: {shutil.which('nvcc')!r}).\n"
            "Install the CUDA toolkit matching Paddle's CUDA version and set CUDA_HOME to its root, e.g.\n"
            "    export CUDA_HOME=/usr/local/cuda"
        )
    # Compile for the GPUs present unless the user chose (Paddle reads this variable).
    if not os.environ.get("PADDLE_CUDA_ARCH_LIST") and visible_gpu_archs():
        os.environ["PADDLE_CUDA_ARCH_LIST"] = visible_gpu_archs()
    ext = CUDAExtension(
        CPU_SOURCES + CUDA_SOURCES,
        name="paddle_kure._kure_ops",
        extra_compile_args={"cxx": ["-O3", "-DPADDLE_KURE_WITH_CUDA"], "nvcc": ["-O3"]},
    )
else:
    ext = CppExtension(
        CPU_SOURCES,
        name="paddle_kure._kure_ops",
        extra_compile_args={"cxx": ["-O3"]},
    )

setup(ext_modules=[ext], cmdclass={"build_ext": BuildOps})

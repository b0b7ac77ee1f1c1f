"""Builds paddle_kure's custom operators (csrc/) into paddle_kure/_kure_ops.so.

Metadata lives in pyproject.toml. Paddle must be importable at build time
(pyproject's build-system requires it; or use --no-build-isolation).
"""
import os
import shutil

import paddle
from paddle.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_SOURCES = ["csrc/kurtosis_op.cc"]
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


if paddle.is_compiled_with_cuda():
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

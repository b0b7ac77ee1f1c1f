"""Compiles the CUDA sources with nvcc where there is no GPU (`make check-cuda`).

- csrc/*.cu against Paddle's headers: the CPU build of Paddle cannot link CUDA
  kernels, but nvcc can still compile them to nowhere, which catches type
  errors in the kernels and in their Paddle wrappers;
- tests/cuda/*.cu, the standalone test programs, without Paddle (they include
  csrc/kurtosis_cuda.cuh only).

Skips, saying so, when nvcc is not installed.
"""
import glob
import os
import shutil
import subprocess
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = ["-std=c++17", "-O0", f"-I{ROOT}/csrc"]
PADDLE_FLAGS = ["-DPADDLE_WITH_CUDA", "-DEIGEN_USE_GPU", "-DPADDLE_NO_PYTHON",
                "--expt-relaxed-constexpr"]


def compile_to_nowhere(nvcc: str, src: str, flags: list) -> bool:
    result = subprocess.run([nvcc, "-c", src, "-o", os.devnull, *COMMON, *flags],
                            capture_output=True, text=True)
    rel = os.path.relpath(src, ROOT)
    if result.returncode != 0:
        print(result.stdout + result.stderr)
        print(f"check-cuda: FAILED on {rel}")
        return False
    print(f"check-cuda: {rel} compiles with {nvcc}")
    return True


def main() -> int:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("check-cuda: SKIPPED, nvcc not found: the CUDA kernels were not compiled")
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from paddle.utils.cpp_extension.extension_utils import find_paddle_includes
    paddle_includes = [f"-I{d}" for d in find_paddle_includes(use_cuda=False)]
    ok = all(compile_to_nowhere(nvcc, src, PADDLE_FLAGS + paddle_includes)
             for src in sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cu"))))
    ok = all(compile_to_nowhere(nvcc, src, [])
             for src in sorted(glob.glob(os.path.join(ROOT, "tests", "cuda", "*.cu")))) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Compiles the CUDA sources with nvcc where there is no GPU (`make check-cuda`).

- csrc/*.cu against Paddle's headers: the CPU build of Paddle cannot link CUDA
  kernels, but nvcc can still compile them to nowhere, which catches type
  errors in the kernels and in their Paddle wrappers;
- tests/cuda/*.cu, the standalone test programs, without Paddle (they include
  csrc/kurtosis_cuda.cuh only): built into build/ and run with --quick, which
  checks the kernels' moment math on the host and, where a GPU is present,
  runs a subset of the GPU checks (`make test-gpu` runs them all).

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


def build_and_run(nvcc: str, src: str) -> bool:
    rel = os.path.relpath(src, ROOT)
    binary = os.path.join(ROOT, "build", os.path.splitext(os.path.basename(src))[0])
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    built = subprocess.run([nvcc, src, "-o", binary, *COMMON], capture_output=True, text=True)
    if built.returncode != 0:
        print(built.stdout + built.stderr)
        print(f"check-cuda: FAILED to build {rel}")
        return False
    ran = subprocess.run([binary, "--quick"], capture_output=True, text=True)
    print(ran.stdout.strip() if ran.returncode == 0 else ran.stdout + ran.stderr)
    print(f"check-cuda: {rel} built with {nvcc}, --quick run {'passed' if ran.returncode == 0 else 'FAILED'}")
    return ran.returncode == 0


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
    ok = all(build_and_run(nvcc, src)
             for src in sorted(glob.glob(os.path.join(ROOT, "tests", "cuda", "*.cu")))) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Type-checks csrc/*.cu with nvcc against Paddle's headers (`make check-cuda`).

The CPU build of Paddle cannot link CUDA kernels, but nvcc can still compile
them to nowhere, which catches type errors in the kernels. Skips, saying so,
when nvcc is not installed.
"""
import glob
import os
import shutil
import subprocess
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["-DPADDLE_WITH_CUDA", "-DEIGEN_USE_GPU", "-DPADDLE_NO_PYTHON", "-std=c++17",
         "--expt-relaxed-constexpr", "-O0"]


def main() -> int:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("check-cuda: SKIPPED, nvcc not found: the CUDA kernels were not type-checked")
        return 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from paddle.utils.cpp_extension.extension_utils import find_paddle_includes
    includes = [f"-I{d}" for d in find_paddle_includes(use_cuda=False)] + [f"-I{ROOT}/csrc"]
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "*.cu")))
    for src in sources:
        cmd = [nvcc, "-c", src, "-o", os.devnull, *FLAGS, *includes]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stdout + result.stderr)
            print(f"check-cuda: FAILED on {os.path.relpath(src, ROOT)}")
            return 1
        print(f"check-cuda: {os.path.relpath(src, ROOT)} type-checks with {nvcc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

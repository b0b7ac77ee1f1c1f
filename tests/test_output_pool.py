"""csrc/output_pool.h, the pool of large CPU outputs, built and run without Paddle."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_output_pool_standalone(tmp_path):
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler")
    binary = tmp_path / "test_output_pool"
    subprocess.run([compiler, "-std=c++17", "-O1", "-pthread", f"-I{ROOT}/csrc",
                    os.path.join(ROOT, "tests", "cpp", "test_output_pool.cc"), "-o", str(binary)],
                   check=True, capture_output=True, text=True)
    result = subprocess.run([str(binary)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "all checks passed" in result.stdout

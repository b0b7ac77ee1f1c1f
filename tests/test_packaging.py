"""The wheel holds the compiled operators and nothing of the build's leftovers, and works on its own."""
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", ROOT, "-w", str(out)],
        check=True, capture_output=True, text=True,
    )
    (path,) = out.glob("paddle_kure-*.whl")
    return path


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "paddle_kure/_kure_ops.so" in names
    assert "paddle_kure/regularizer.py" in names
    leftovers = [n for n in names if n.endswith((".o", "_kure_ops.py", "version.txt")) or "/build/" in n]
    assert leftovers == []
    entry_points = zipfile.ZipFile(wheel).read("paddle_kure-0.1.0.dist-info/entry_points.txt").decode()
    assert "paddle-kure = paddle_kure.cli:main" in entry_points


def test_unpacked_wheel_runs_the_operator(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "import numpy as np, paddle, scipy.stats, paddle_kure;"
        "assert paddle_kure.__file__.startswith(%r);"
        "x = np.random.default_rng(0).normal(size=1000);"
        "k = float(paddle_kure.kurtosis(paddle.to_tensor(x)));"
        "assert abs(k - scipy.stats.kurtosis(x, fisher=False)) < 1e-9, k" % str(tmp_path)
    )
    # Run outside the source tree so the unpacked wheel, not the checkout, is imported.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})

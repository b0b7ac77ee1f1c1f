"""The wheel holds the compiled operators and nothing of the build's leftovers, works on its own,
and installs beside either Paddle distribution."""
import os
import shutil
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
        "assert abs(k - scipy.stats.kurtosis(x, fisher=False)) < 1e-9, k;"
        # the regularizer term through the library's direct dygraph entry (the same file as a module)
        "w = paddle.to_tensor(x); d = paddle_kure.kurtosis_decay_grad(w, 0.5, 1.8, 0.0);"
        "from paddle_kure import ops; assert ops._kernels.__file__.startswith(%r), ops._kernels.__file__;"
        "w.stop_gradient = False; paddle_kure.kurtosis(w).backward();"  # d = 0.5 * 2 (K - 1.8) dK/dx
        "np.testing.assert_allclose(d.numpy(), (k - 1.8) * w.grad.numpy(), rtol=1e-6)"  # float32 attributes
        % (str(tmp_path), str(tmp_path))
    )
    # Run outside the source tree so the unpacked wheel, not the checkout, is imported.
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})


# ---- installing beside paddlepaddle-gpu (no GPU Paddle can be installed here:
# stand-in distributions that carry only their metadata take its place)

def _metadata_requirements(wheel):
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read("paddle_kure-0.1.0.dist-info/METADATA").decode()
    return [Requirement(line.split(":", 1)[1].strip())
            for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


def _stand_in_wheel(directory, name, version):
    """A wheel of distribution `name` holding nothing but its metadata."""
    import base64
    import hashlib

    info = f"{name.replace('-', '_')}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: paddle_kure tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = ""
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(text.encode())}\n"
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    path = os.path.join(directory, f"{name.replace('-', '_')}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as zf:
        for name_in_zip, text in files.items():
            zf.writestr(name_in_zip, text)
    return path


def test_metadata_names_no_paddle_distribution(wheel):
    requirements = _metadata_requirements(wheel)
    unconditional = {r.name for r in requirements if r.marker is None}
    assert not unconditional & {"paddlepaddle", "paddlepaddle-gpu"}
    assert "paddleslim" in unconditional
    by_extra = {(r.name, str(r.marker)) for r in requirements if r.marker is not None}
    assert ("paddlepaddle-gpu", 'extra == "gpu"') in by_extra
    assert ("paddlepaddle", 'extra == "cpu"') in by_extra


def test_pip_keeps_an_installed_paddlepaddle_gpu(wheel, tmp_path):
    """pip's resolver, in an environment that holds (a stand-in of) paddlepaddle-gpu
    3.3.1, installs paddle_kure without pulling the CPU paddlepaddle over it, also
    with the `gpu` extra; the `cpu` extra would pull paddlepaddle (so the check can fail)."""
    import json

    index = tmp_path / "index"
    index.mkdir()
    shutil.copy(wheel, index)
    for req in _metadata_requirements(wheel):
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        _stand_in_wheel(index, req.name, pinned[0] if pinned else "1.0")
    for paddle_dist in ("paddlepaddle", "paddlepaddle-gpu"):
        _stand_in_wheel(index, paddle_dist, "3.3.1")

    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    # Without PYTHONPATH: a checkout on it (with its .egg-info) would count as installed.
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pip = [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "--disable-pip-version-check"]
    local = ["--no-index", "--find-links", str(index)]
    subprocess.run(pip + ["install", "-q", *local, "paddlepaddle-gpu==3.3.1"], check=True, env=clean)

    def would_install(target):
        report = tmp_path / "report.json"
        subprocess.run(pip + ["install", "-q", "--dry-run", "--report", str(report), *local, target],
                       check=True, capture_output=True, text=True, env=clean)
        return {item["metadata"]["name"].lower().replace("_", "-")
                for item in json.loads(report.read_text())["install"]}

    for target in ("paddle_kure", "paddle_kure[gpu]"):
        planned = would_install(target)
        assert "paddle-kure" in planned and "paddleslim" in planned, " ".join(sorted(planned))
        assert "paddlepaddle" not in planned and "paddlepaddle-gpu" not in planned, (target, planned)
    assert "paddlepaddle" in would_install("paddle_kure[cpu]")


def _import_paddle_kure(code_before, tmp_path, *python_flags):
    """Runs `import paddle_kure` from this checkout in a fresh interpreter; returns (rc, stderr)."""
    code = f"import sys; sys.path.insert(0, {ROOT!r}); {code_before}; import paddle_kure"
    result = subprocess.run([sys.executable, *python_flags, "-c", code], cwd=tmp_path,
                            capture_output=True, text=True)
    return result.returncode, result.stderr


def test_import_says_paddle_is_missing(tmp_path):
    # -S: without site-packages, so no Paddle is importable at all.
    rc, err = _import_paddle_kure("pass", tmp_path, "-S")
    assert rc != 0
    assert "ImportError: paddle_kure needs PaddlePaddle >= 3.0, which is not importable" in err
    assert "paddlepaddle-gpu" in err and "--no-build-isolation" in err


def test_import_says_paddle_is_too_old(tmp_path):
    old = tmp_path / "old" / "paddle"
    old.mkdir(parents=True)
    (old / "__init__.py").write_text("__version__ = '2.6.2'\n")
    rc, err = _import_paddle_kure(f"sys.path.insert(0, {str(old.parent)!r})", tmp_path)
    assert rc != 0
    assert "paddle_kure needs PaddlePaddle >= 3.0, found 2.6.2" in err


def test_build_info_on_this_build():
    import paddle

    import paddle_kure

    info = paddle_kure.build_info()
    assert info["version"] == paddle_kure.__version__
    assert os.path.isfile(info["library"]) and info["library"] == paddle_kure.load_library()
    assert info["paddle"] == paddle.__version__
    assert info["paddle_with_cuda"] == paddle.is_compiled_with_cuda()
    # The CUDA kernels are compiled exactly when Paddle is a CUDA build (setup.py's rule).
    assert info["cuda_kernels"] == paddle.is_compiled_with_cuda()
    assert (info["cuda_runtime"] is None) == (not info["cuda_kernels"])

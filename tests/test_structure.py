"""The package's shape: a silent import, a core that never imports the application wing, short files."""
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "paddle_kure")
MAX_LINES = 450
# the application wing and the command line built on it; everything else is the core
WING = ("apps", "commands", "cli.py")


def _python_files():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, PACKAGE), path


def _imported_modules(path, relative_name):
    """Absolute names of every module ``path`` imports, at any depth (function bodies too)."""
    package = ["paddle_kure", *relative_name[:-len(".py")].split(os.sep)][:-1]
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_import_prints_nothing():
    result = subprocess.run([sys.executable, "-c", "import paddle_kure"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")


def test_core_never_imports_the_wing_plotting_or_itself_from_inside():
    offenders = []
    for relative, path in _python_files():
        if relative.split(os.sep)[0] in WING:
            continue
        for module in _imported_modules(path, relative):
            if module.startswith(("paddle_kure.apps", "paddle_kure.commands", "paddle_kure.cli", "matplotlib")):
                offenders.append(f"{relative} imports {module}")
            if module == "paddle_kure" and relative != "__init__.py":
                offenders.append(f"{relative} imports the package itself (an import cycle through __init__)")
    assert offenders == []


def test_importing_the_core_loads_no_wing_and_no_plotting():
    code = ("import sys, paddle_kure, paddle_kure.quant, paddle_kure.prune, paddle_kure.train, paddle_kure.io, "
            "paddle_kure.robustness, paddle_kure.models, paddle_kure.data;"
            "print(sorted(m for m in sys.modules if m.startswith(('paddle_kure.apps', 'matplotlib'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_file_is_longer_than_the_limit():
    long_files = {relative: n for relative, path in _python_files()
                  if (n := sum(1 for _ in open(path, encoding="utf-8"))) > MAX_LINES}
    assert long_files == {}

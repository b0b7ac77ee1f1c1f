"""Imports a repository script (tools/, experiments/) by path, for testing its helpers."""
import importlib.util
import os

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def load_script(relative_path: str):
    name = os.path.splitext(os.path.basename(relative_path))[0]
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relative_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""Mutation testing of paddle_kure's core (``make mutate``): are the tests able to catch small bugs?

Python: mutmut (pinned in requirements-mutate.txt) plants one small change at a time
(``+`` -> ``-``, ``<`` -> ``<=``, a constant + 1, an argument dropped, ...) in the
modules of ``TARGETS`` and runs that target's test files against each change; a
change no test notices "survives". Each target runs in its own scratch copy under
``build/mutate/<target>`` (the source tree is never modified), so that only its
own test files run.

C++: ``CPP_MUTANTS`` are textual patches of ``csrc/`` (gradient terms, moment
normalization, the L2 term), each applied to a scratch copy, rebuilt with
``setup.py build_ext --inplace`` and tested with ``CPP_TESTS``. A patch whose
pattern no longer matches the source is reported "not applied".

Results per target are kept in ``build/mutate/results/<target>.json``; the report
``docs/results/mutation.md`` is written from all of them, with every surviving
mutant and the reason it survives (``tools/mutation_survivors.py``).

    python tools/mutate.py                          # everything (about 30 min on 2 cores)
    python tools/mutate.py --only prune,nn --no-cpp # a subset; the report keeps the other targets' last results
    python tools/mutate.py --report-only            # rewrite the report from the stored results
"""
from __future__ import annotations

import argparse
import ast
import datetime
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutate"
RESULTS = WORK / "results"
REPORT = ROOT / "docs" / "results" / "mutation.md"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_survivors import SURVIVORS  # noqa: E402


@dataclass(frozen=True)
class Target:
    """Source files to mutate (path -> None for the whole file, or the names of the
    top-level functions/classes to mutate) and the test files that judge them."""

    sources: dict
    tests: tuple
    deselect: tuple = ()  # test ids mutmut cannot run (with the reason beside them in TARGETS)


# The one place to edit when modules move or tests are added.
TARGETS = {
    "regularizer": Target({"paddle_kure/regularizer.py": None}, ("tests/test_regularizer.py",)),
    "ops": Target({"paddle_kure/ops.py": None}, ("tests/test_kurtosis_op.py", "tests/test_regularizer.py")),
    # the selection engine (ParamFilter) also chooses the pruner's parameters
    "selection": Target({"paddle_kure/selection.py": None, "paddle_kure/param_filter.py": None},
                        ("tests/test_selection.py", "tests/test_pruner.py")),
    "outliers": Target(
        {"paddle_kure/outliers.py": ("_defined", "outliers_mean_std", "outliers_log_mad", "_log_mad_threshold")},
        ("tests/test_analysis.py", "tests/test_selection.py"),
    ),
    # the argument and config checks behind every "Owner.key must be ..." error
    "validate": Target({"paddle_kure/_validate.py": None}, ("tests/test_validate.py", "tests/test_config.py")),
    "losses": Target({"paddle_kure/losses.py": None}, ("tests/test_selection.py",)),
    # to_static reads forward's signature, which mutmut's trampoline turns into (*args, **kwargs)
    "nn": Target({"paddle_kure/nn/pact.py": None, "paddle_kure/nn/quantizers.py": None},
                 ("tests/test_pact.py", "tests/test_quantizers.py", "tests/test_transformer.py"),
                 deselect=("tests/test_pact.py::test_uncalibrated_layer_refuses_to_be_traced",)),
    "prune": Target({"paddle_kure/prune/config.py": None, "paddle_kure/prune/pruner.py": None,
                     "paddle_kure/prune/schedules.py": None},
                    ("tests/test_pruner.py", "tests/test_prune_schedules.py")),
    # the quantizer and scale search (the sweep driver around them is left out)
    "robustness": Target({"paddle_kure/robustness.py": (
        "quantize_array", "channel_axis", "_reduce_axes", "abs_max_scale", "mse_scale", "_check_method",
        "_check_fractions", "weight_scales", "quantized_weights", "scale_ratio")}, ("tests/test_robustness.py",)),
    "quant": Target({"paddle_kure/quant/config.py": None}, ("tests/test_config.py",)),
    # where the bits reach PaddleSlim: the QAT tests (test_lowbit.py gives weights and activations different bits)
    "quant_bits": Target({"paddle_kure/quant/static.py": ("_slim_config",),
                          "paddle_kure/quant/dygraph.py": ("prepare_qat",)},
                         ("tests/test_qat_static.py", "tests/test_qat_dygraph.py", "tests/test_lowbit.py")),
}

# Statements left alone: the text of error messages and warnings (the conditions that raise are mutated).
UNMUTATED_STATEMENTS = (r"^\s*raise\s", r"^\s*warnings\.warn\(")

CPP_TESTS = ("tests/test_kurtosis_op.py", "tests/test_regularizer.py")


@dataclass(frozen=True)
class CppMutant:
    name: str
    path: str
    pattern: str  # a regular expression, whitespace-tolerant; its first match is replaced
    replacement: str
    what: str


CPP_MUTANTS = (
    CppMutant("grad_cubic_doubled", "csrc/kurtosis_moments.h", r"\bcubic\s*=\s*scale\s*;", "cubic = 2.0 * scale;",
              "dK/dx: the (x - mu)^3 term doubled"),
    CppMutant("grad_linear_without_k", "csrc/kurtosis_moments.h",
              r"(\blinear\s*=\s*-\s*scale\s*\*\s*)s\.kurtosis\s*\*\s*", r"\1",
              "dK/dx: the K m2 (x - mu) term without K"),
    CppMutant("grad_constant_dropped", "csrc/kurtosis_moments.h", r"\bconstant\s*=\s*-\s*scale\s*\*\s*s\.m3\s*;",
              "constant = 0.0;", "dK/dx: the -m3 term dropped"),
    CppMutant("grad_scale_2_not_4", "csrc/kurtosis_moments.h", r"factor\s*\*\s*4\.0\s*\*\s*inv_unit\b",
              "factor * 2.0 * inv_unit", "dK/dx: 2 / (n m2^2) instead of 4 / (n m2^2)"),
    CppMutant("m2_sample_variance", "csrc/kurtosis_moments.h", r"\bm\.M2\s*/\s*m\.n\b", "m.M2 / (m.n - 1.0)",
              "moment normalization: m2 = M2 / (n - 1)"),
    CppMutant("m3_unnormalized", "csrc/kurtosis_moments.h", r"\bm\.M3\s*/\s*m\.n\b", "m.M3",
              "moment normalization: m3 = M3 (no / n)"),
    CppMutant("kurtosis_one_m2", "csrc/kurtosis_moments.h",
              r"\(\(\s*m\.M4\s*/\s*m\.n\s*\)\s*/\s*s\.m2\s*\)\s*/\s*s\.m2", "(m.M4 / m.n) / s.m2",
              "moment normalization: K = m4 / m2"),
    CppMutant("merge_m4_cross_term", "csrc/kurtosis_moments.h", r"\b6\.0\s*\*\s*d_n\s*\*\s*d_n\b", "4.0 * d_n * d_n",
              "pairwise merge of M4: wrong cross-term coefficient (tensors over one block)"),
    # the decay passes l2 to every output path (double, float polynomial, vector and tail loops)
    CppMutant("l2_term_dropped", "csrc/kurtosis_op.cc",
              r"(scaled_grad_range\(x,\s*out,\s*r\.begin,\s*r\.end,\s*grad,\s*s,\s*)l2(\s*,\s*accumulate\))",
              r"\g<1>0.0\2", "L2 term: l2_coeff * x left out"),
    CppMutant("l2_gets_coeff", "csrc/kurtosis_op.cc",
              r"(cpu_kurtosis_decay\([^;]*\bcoeff\s*,\s*target\s*,\s*)l2_coeff\b",
              r"\1coeff", "L2 term: multiplied by coeff instead of l2_coeff"),
    CppMutant("decay_factor_not_doubled", "csrc/kurtosis_op.cc",
              r"2\.0\s*\*\s*coeff\s*\*\s*\(\s*s\.kurtosis\s*-\s*target\s*\)", "coeff * (s.kurtosis - target)",
              "d/dx (K - T)^2 without the factor 2"),
    CppMutant("decay_ignores_target", "csrc/kurtosis_op.cc", r"\(\s*s\.kurtosis\s*-\s*target\s*\)",
              "(s.kurtosis - 1.8)", "kurtosis_decay ignores its target"),
    CppMutant("degenerate_guard_dropped", "csrc/kurtosis_moments.h",
              r"\bm\.n\s*<\s*2\.0\s*\|\|\s*s\.m2\s*==\s*0\.0", "m.n < 2.0",
              "a constant tensor is no longer degenerate (0/0)"),
)

# mutmut's exit codes: 1 and 3 = a test failed; timeouts and crashes also count as killed.
KILLED, SURVIVED, NO_TESTS = "killed", "survived", "no tests"
STATUS_BY_EXIT_CODE = {1: KILLED, 3: KILLED, 0: SURVIVED, 5: NO_TESTS, 33: NO_TESTS, 36: "timeout", 24: "timeout",
                       -24: "timeout", 152: "timeout", 255: "timeout", -11: "crashed", -9: "crashed"}
CAUGHT = (KILLED, "timeout", "crashed")


def _env(deps):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    if deps:
        env["PYTHONPATH"] = deps
    return env


def _copy_tree(dest, extra=()):
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("paddle_kure", "tests", "configs") + tuple(extra):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def _fence_other_functions(path, keep):
    """Puts every top-level function/class of ``path`` not named in ``keep`` inside
    a ``# pragma: no mutate start/end`` block; returns the names of ``keep`` not found."""
    source = path.read_text()
    nodes = [n for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    lines = source.splitlines()
    for node in sorted((n for n in nodes if n.name not in keep), key=lambda n: n.lineno, reverse=True):
        first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        lines.insert(node.end_lineno, "# pragma: no mutate end")
        lines.insert(first, "# pragma: no mutate start")
    path.write_text("\n".join(lines) + "\n")
    return sorted(set(keep) - {n.name for n in nodes})


def _setup_cfg(target):
    tests = "".join(f"\n    {t}" for t in target.tests)
    only = "".join(f"\n    {s}" for s in target.sources)
    return ("[mutmut]\nsource_paths = paddle_kure\nalso_copy =\n    configs\n"
            f"only_mutate ={only}\npytest_add_cli_args_test_selection ={tests}\n"
            "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -q\n"
            + "".join(f"    --deselect\n    {test}\n" for test in target.deselect)
            + "do_not_mutate_patterns =" + "".join(f"\n    {p}" for p in UNMUTATED_STATEMENTS) + "\n")


def _finished(scratch, target):
    """Whether a previous run left a verdict for every mutant of ``target`` in ``scratch``."""
    metas = [scratch / "mutants" / (path + ".meta") for path in target.sources]
    return all(m.exists() for m in metas) and all(
        code is not None for m in metas for code in json.loads(m.read_text())["exit_code_by_key"].values())


def run_python_target(name, target, jobs, deps, reuse=False):
    scratch = WORK / name
    if reuse and _finished(scratch, target):
        return _collect(name, target, scratch, rc=0)
    _copy_tree(scratch)
    missing = {}
    for path, keep in target.sources.items():
        if not (scratch / path).exists():
            missing[path] = "file not found"
        elif keep is not None:
            absent = _fence_other_functions(scratch / path, keep)
            if absent:
                missing[path] = f"no top-level {', '.join(absent)}"
    (scratch / "setup.cfg").write_text(_setup_cfg(target))
    started = time.time()
    with open(scratch / "mutmut.log", "w") as log:
        rc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)], cwd=scratch,
                            env=_env(deps), stdout=log, stderr=subprocess.STDOUT).returncode
    (scratch / "seconds.txt").write_text(str(round(time.time() - started)))
    return _collect(name, target, scratch, rc, missing)


def _collect(name, target, scratch, rc, missing=None):
    mutants = []
    for path in target.sources:
        meta = scratch / "mutants" / (path + ".meta")
        if not meta.exists():
            continue
        for key, code in sorted(json.loads(meta.read_text())["exit_code_by_key"].items()):
            status = STATUS_BY_EXIT_CODE.get(code, "not checked" if code is None else f"exit code {code}")
            mutants.append({"name": key, "file": path, "status": status})
    error = None
    if rc != 0:  # e.g. the unmutated tests failed: no mutant was judged
        tail = (scratch / "mutmut.log").read_text(errors="replace").replace("\r", "\n").strip().splitlines()[-3:]
        error = f"mutmut exited with {rc}: " + " / ".join(tail)
    functions = {}
    for path in target.sources:
        mutated = scratch / "mutants" / path
        if mutated.exists():
            source = mutated.read_text()
            lines = source.splitlines()
            functions.update((node.name, "\n".join(lines[node.lineno - 1:node.end_lineno]))
                             for node in ast.walk(ast.parse(source))
                             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))
    for mutant in mutants:
        if mutant["status"] in (SURVIVED, NO_TESTS):
            mutant["diff"] = _mutant_diff(functions, mutant["name"].rpartition(".")[2])
    return {"error": error, "target": name, "kind": "python",
            "sources": {k: v and list(v) for k, v in target.sources.items()}, "tests": list(target.tests),
            "mutmut_exit_code": rc, "seconds": int((scratch / "seconds.txt").read_text()), "missing": missing or {},
            "mutants": mutants}


def _mutant_diff(functions, mutant_function):
    """The changed lines between mutmut's copy of the original function and the mutant."""
    original = re.sub(r"__mutmut_\d+$", "__mutmut_orig", mutant_function)
    if mutant_function not in functions or original not in functions:
        return "(source not found)"
    before = functions[original].replace(original, mutant_function).splitlines()
    return "\n".join(line for line in difflib.unified_diff(before, functions[mutant_function].splitlines(),
                                                           lineterm="", n=0)
                     if line[:1] in "+-" and not line.startswith(("+++", "---")))


def _build_and_test(scratch):
    library = list((scratch / "paddle_kure").glob("_kure_ops*.so"))
    for lib in library:
        lib.unlink()  # a failed build must not test the previous library
    # setuptools would link the previous object files: they look newer than the .cc when only the header changed
    shutil.rmtree(scratch / "build", ignore_errors=True)
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=scratch, env=_env(None),
                           capture_output=True, text=True)
    if build.returncode != 0:
        return "build failed", build.stdout[-2000:] + build.stderr[-2000:]
    test = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *CPP_TESTS],
                          cwd=scratch, env=dict(_env(None), PYTHONPATH=str(scratch)), capture_output=True, text=True)
    tail = (test.stdout + test.stderr).strip().splitlines()[-1:] or [""]
    return (KILLED if test.returncode == 1 else SURVIVED if test.returncode == 0 else f"pytest exit {test.returncode}",
            tail[0])


def run_cpp():
    scratch = WORK / "csrc"
    _copy_tree(scratch, extra=("csrc", "setup.py", "pyproject.toml"))
    started = time.time()
    baseline, detail = _build_and_test(scratch)
    mutants = []
    if baseline != SURVIVED:
        return {"target": "csrc", "kind": "cpp", "error": f"unmutated build/tests: {baseline}: {detail}", "mutants": []}
    for mutant in CPP_MUTANTS:
        path = scratch / mutant.path
        original = path.read_text()
        patched, count = re.subn(mutant.pattern, mutant.replacement, original, count=1)
        row = {"name": mutant.name, "file": mutant.path, "what": mutant.what}
        if count == 0:
            row.update(status="not applied", detail="pattern not found")
        else:
            row["diff"] = "\n".join(line for line in difflib.unified_diff(original.splitlines(), patched.splitlines(),
                                                                         lineterm="", n=0)
                                    if line[:1] in "+-" and not line.startswith(("+++", "---")))
            path.write_text(patched)
            try:
                status, detail = _build_and_test(scratch)
            finally:
                path.write_text(original)
            row.update(status=status, detail=detail)
        print(f"  csrc {mutant.name}: {row['status']}", flush=True)
        mutants.append(row)
    _build_and_test(scratch)  # leave the scratch library unmutated
    return {"target": "csrc", "kind": "cpp", "tests": list(CPP_TESTS), "seconds": round(time.time() - started),
            "mutants": mutants}


def _source_paths(name):
    return sorted({m.path for m in CPP_MUTANTS}) if name == "csrc" else list(TARGETS[name].sources)


def _sources_digest(name):
    """A digest of the files a target mutates: the report marks results whose sources changed since."""
    digest = hashlib.sha256()
    for path in _source_paths(name):
        file = ROOT / path
        digest.update(path.encode() + b"\0" + (file.read_bytes() if file.exists() else b"missing") + b"\0")
    return digest.hexdigest()[:16]


def _git_head():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return head.stdout.strip() or "unknown"


def _reason(mutant):
    """Why a survivor survives; a caught mutant has none (a stale name in SURVIVORS may now point at it)."""
    return "" if mutant["status"] in CAUGHT else SURVIVORS.get(mutant["name"], "")


def _score(mutants):
    """(caught, counted): equivalent and not-applied mutants are not counted."""
    counted = [m for m in mutants if m["status"] not in ("not applied", "build failed")
               and not _reason(m).startswith("equivalent")]
    return sum(m["status"] in CAUGHT for m in counted), len(counted)


def write_report(results):
    lines = [
        "# Mutation testing of the core",
        "",
        "Written by `tools/mutate.py` (`make mutate`): mutmut 3.8.1 plants one small change at a time in the "
        "modules below and runs the listed test files; a mutant is *caught* when a test fails (or times out, or "
        "crashes). `raise` and `warnings.warn` statements (message texts) are not mutated; the conditions "
        "around them are. C++ mutants are textual patches of `csrc/`, each rebuilt and tested. Score = caught / "
        "(mutants - equivalent ones). Reasons for survivors: `tools/mutation_survivors.py`. The run column "
        "gives when each target last ran, its wall time on the machine that ran it and the commit it ran on.",
        "",
        "| target | mutated | tests | mutants | caught | equivalent | score | run |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        mutants = result["mutants"]
        caught, counted = _score(mutants)
        equivalent = sum(_reason(m).startswith("equivalent") for m in mutants)
        if result["kind"] == "cpp":
            sources = "csrc/ (patches)"
        else:
            sources = ", ".join(f"`{p}`" + (f" ({', '.join(f)})" if f else "") for p, f in result["sources"].items())
        tests = ", ".join(f"`{Path(t).name}`" for t in result.get("tests", []))
        score = f"{100 * caught / counted:.1f}%" if counted and not result.get("error") else "-"
        lines.append(f"| {result['target']} | {sources} | {tests} | {len(mutants)} | {caught} | {equivalent} | "
                     f"{score} | {result.get('when', '')}, {result.get('seconds', '?')} s, "
                     f"{result.get('commit', 'commit not recorded')} |")
    done = {result["target"] for result in results}
    lines += [f"| {name} | " + ", ".join(f"`{p}`" for p in TARGETS[name].sources) + " | "
              + ", ".join(f"`{Path(t).name}`" for t in TARGETS[name].tests) + " | | | | - | not run |"
              for name in TARGETS if name not in done]
    stale = [r["target"] for r in results if r.get("sources_digest") != _sources_digest(r["target"])]
    if stale:
        lines += ["", "Measured on older sources (the mutated files changed since, or the run predates the "
                  f"digest): {', '.join(stale)}; `make mutate MUTATE_ARGS=\"--only {','.join(stale)}\"` "
                  "measures them again."]
    for result in results:
        notes = []
        if result.get("error"):
            notes.append(f"- error: {result['error']}")
        for path, why in result.get("missing", {}).items():
            notes.append(f"- `{path}`: {why} (edit `TARGETS` in tools/mutate.py)")
        if result["kind"] == "cpp":
            for m in result["mutants"]:
                reason = f": {_reason(m) or 'NOT YET EXPLAINED'}" if m["status"] == SURVIVED else ""
                diff = "\n".join("    " + line for line in m.get("diff", "").splitlines())
                notes.append(f"- `{m['name']}` ({m['file']}, {m['what']}): **{m['status']}**{reason}\n\n{diff}\n")
        else:
            for m in result["mutants"]:
                if m["status"] in CAUGHT or result.get("error"):
                    continue
                reason = _reason(m) or "NOT YET EXPLAINED"
                diff = "\n".join("    " + line for line in m.get("diff", "").splitlines())
                notes.append(f"- `{m['name']}` ({m['status']}): {reason}\n\n{diff}\n")
        if notes:
            lines += ["", f"## {result['target']}", ""] + notes
    REPORT.write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {REPORT.relative_to(ROOT)}")


def _stored_results():
    order = list(TARGETS) + ["csrc"]
    found = {p.stem: json.loads(p.read_text()) for p in RESULTS.glob("*.json")} if RESULTS.exists() else {}
    return [found[name] for name in order if name in found]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated targets (of {', '.join(TARGETS)}, csrc)")
    parser.add_argument("--no-cpp", action="store_true", help="skip the C++ mutants")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--deps", default=None,
                        help="extra PYTHONPATH holding mutmut, when it is not installed in this interpreter")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the stored results")
    parser.add_argument("--reuse", action="store_true",
                        help="collect a target's finished mutmut run in build/mutate instead of running it again")
    args = parser.parse_args(argv)
    names = list(TARGETS) + ([] if args.no_cpp else ["csrc"])
    if args.only:
        names = [n.strip() for n in args.only.split(",")]
        unknown = [n for n in names if n not in TARGETS and n != "csrc"]
        if unknown:
            parser.error(f"unknown targets {unknown}; choose from {', '.join(TARGETS)}, csrc")
    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for name in names:
            print(f"mutating {name} ...", flush=True)
            result = run_cpp() if name == "csrc" else run_python_target(name, TARGETS[name], args.jobs, args.deps,
                                                                       args.reuse)
            result["when"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            result["sources_digest"] = _sources_digest(name)
            result["commit"] = _git_head()
            caught, counted = _score(result["mutants"])
            print(f"  {name}: {caught} of {counted} caught in {result.get('seconds', '?')} s", flush=True)
            (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    write_report(_stored_results())


if __name__ == "__main__":
    main()

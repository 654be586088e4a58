"""The package's shape (SPEC §1, issue 14): no import cycle among kmedssl's modules, none at all (function-level
imports included) among the ``kmedssl`` command's modules, and the command's benchmarks are package code that
runs without the source checkout's ``benchmarks/`` folder."""

import ast
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_free

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kmedssl"


def module_name(path):
    """``kmedssl/cli/bench.py`` -> ``kmedssl.cli.bench``; ``kmedssl/cli/__init__.py`` -> ``kmedssl.cli``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_names(tree, module, module_level_only):
    """Dotted names ``module``'s source imports (``from a import b`` gives ``a.b``; relative ones resolved);
    with ``module_level_only``, only the imports that run when the module is imported (not in a def)."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    names, stack = [], [tree]
    while stack:
        node = stack.pop()
        if module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names += [f"{base}.{alias.name}" for alias in node.names]
        stack.extend(ast.iter_child_nodes(node))
    return names


def import_graph(module_level_only, within="kmedssl"):
    """``{module: {kmedssl modules it imports}}`` for the modules under ``within``. An import names the
    longest kmedssl module that prefixes it (``from kmedssl.cli.common import use_backend`` ->
    ``kmedssl.cli.common``); the parent packages Python also initialises are not edges."""
    graph = {}
    for module, path in MODULES.items():
        if module != within and not module.startswith(within + "."):
            continue
        targets = set()
        for name in imported_names(ast.parse(path.read_text()), module, module_level_only):
            parts = name.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in MODULES:
                    break
            else:
                continue
            if candidate != module and (candidate == within or candidate.startswith(within + ".")):
                targets.add(candidate)
        graph[module] = targets
    return graph


def find_cycle(graph):
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_checker_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    graph = import_graph(module_level_only=False, within="kmedssl.cli")
    assert {"kmedssl.cli.common", "kmedssl.cli.pretrain", "kmedssl.cli.bench"} <= graph["kmedssl.cli"]
    assert graph["kmedssl.cli.__main__"] == {"kmedssl.cli"}


def test_no_import_cycle_among_module_level_imports():
    cycle = find_cycle(import_graph(module_level_only=True))
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


def test_the_command_modules_import_no_cycle_even_inside_functions():
    cycle = find_cycle(import_graph(module_level_only=False, within="kmedssl.cli"))
    assert cycle is None, "import cycle in kmedssl/cli/: " + " -> ".join(cycle)


def test_importing_the_command_imports_no_backend():
    code = "import sys, kmedssl.cli; print(sorted({'keras', 'torch', 'tensorflow', 'jax'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "KERAS_BACKEND": "torch"})
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_package_code_reads_nothing_under_benchmarks():
    """No path into the source checkout's benchmarks/ folder, and no script run by path, in kmedssl/
    (docstrings may name the benchmarks/ wrapper scripts)."""
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert node.value != "benchmarks" and "benchmarks/" not in node.value, f"{module}: {node.value!r}"
        assert "runpy" not in imported_names(tree, module, module_level_only=False), module


def test_bench_help_works_from_an_installed_copy_without_benchmarks(tmp_path):
    """``kmedssl bench train/kernels --help`` from a copy of the packages alone, as ``pip install .`` leaves
    them (no benchmarks/, no recipes/, not run from the checkout)."""
    site = tmp_path / "site-packages"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(PACKAGE, site / "kmedssl", ignore=ignore)
    shutil.copytree(ROOT / "kernels" / "kmedssl_kernels", site / "kmedssl_kernels", ignore=ignore)
    env = {**os.environ, "PYTHONPATH": str(site), "KERAS_BACKEND": "torch"}
    for command in ("train", "kernels"):
        code = ("import sys, kmedssl.cli; assert kmedssl.cli.__file__.startswith(sys.argv[1]), kmedssl.cli.__file__; "
                f"sys.argv = ['kmedssl', 'bench', {command!r}, '--help']; kmedssl.cli.main()")
        done = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True,
                              cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert f"kmedssl bench {command} [OPTIONS]" in done.stdout and "Example:" in done.stdout

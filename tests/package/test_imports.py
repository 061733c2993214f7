"""ppcls/ has no import cycle, and every module imports on its own.

The graph is read from the source (ast), with the imports inside functions counted too: a
cycle hidden behind a lazy import is still a cycle (weights -> arch -> backbone -> weights
was one). Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, so those are
edges too, except for the packages the importing module itself sits in (already running).
"""

import ast
import os
import subprocess
import sys

from conftest import ROOT

PACKAGE = "ppcls"


def package_modules():
    """``{module name: file}`` for every .py under ppcls/."""
    modules = {}
    for folder, dirs, files in os.walk(os.path.join(ROOT, PACKAGE)):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for name in files:
            if not name.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), ROOT)[: -len(".py")]
            parts = rel.split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = os.path.join(folder, name)
    return modules


def _ancestors(module):
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_graph(modules):
    """``{module: {modules it imports}}`` within ppcls, lazy imports included."""
    graph = {}
    for module, path in modules.items():
        is_package = path.endswith("__init__.py")
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's own package upwards
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets.add(source)
                # "from pkg import name": name may itself be a module
                targets.update(f"{source}.{alias.name}" for alias in node.names)
        edges = set()
        for target in targets:
            if target not in modules:
                continue
            edges.update(({target} | _ancestors(target)) - _ancestors(module) - {module})
        graph[module] = {e for e in edges if e in modules}
    return graph


def find_cycle(graph):
    """One cycle as a list ``[a, b, ..., a]``, or None."""
    state = {}  # 1: on the current path, 2: done
    path = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_lazy_cycle():
    # the check itself must be able to fail: the old weights <-> arch cycle, lazy import included
    graph = {"p.weights": {"p.arch"}, "p.arch": {"p.arch.backbone"}, "p.arch.backbone": {"p.weights"}}
    assert find_cycle(graph) == ["p.arch", "p.arch.backbone", "p.weights", "p.arch"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_ppcls_import_graph_has_no_cycle():
    modules = package_modules()
    assert len(modules) > 30 and "ppcls.utils.weights" in modules and "ppcls.ops.fast_cpu" in modules
    graph = import_graph(modules)
    # the graph sees lazy imports (inside functions): the backbone's import of weights is one
    assert "ppcls.utils.weights" in graph["ppcls.arch.backbone.mobilenext"]
    assert not any(m.startswith("ppcls.arch") for m in graph["ppcls.utils.weights"])
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# Each module in a clean interpreter: a forked child of a process that has imported the
# third-party libraries (paddle takes seconds) but no ppcls module, so every child starts
# from an empty ppcls import state, as a fresh `python -c "import X"` does.
IMPORT_EACH = r"""
import importlib, os, sys, traceback
import numpy, paddle, yaml, PIL.Image  # noqa: F401  (shared, third-party only)
assert not any(m == "ppcls" or m.startswith("ppcls.") for m in sys.modules)
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(name)
print("FAILED:" + ",".join(failed))
"""


def test_every_module_imports_on_its_own():
    modules = sorted(m for m in package_modules() if not m.endswith("__main__"))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, *modules], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = proc.stdout.strip().splitlines()[-1]
    assert failed == "FAILED:", f"{failed}\n{proc.stderr[-3000:]}"

"""The modules of ``weakalign.e2e`` import each other without a cycle.

Shared helpers live where every user can import them downward (``metrics``, ``checkpoints``);
the trainer reaches a model only through its interface. The module-level graph (what runs when
a module loads; not function bodies, not ``if TYPE_CHECKING:``) must be acyclic. Function-local
imports are mostly there to keep start-up light, but they can hide a circle too (the trainer and
EM-Network once imported each other that way), so the graph with them must be acyclic as well,
except for the few upward edges of :data:`LAZY_UPWARD`.
"""

import ast
from pathlib import Path

import weakalign.e2e

PACKAGE = "weakalign.e2e"

#: Function-local imports that point up the layering on purpose, and why.
LAZY_UPWARD = {
    ("model", "emnet"): "build_model picks EMNetModel (a subclass of E2EModel) for `emnet: true`",
    ("emnet_plots", "emnet"): "the emnet-plot command loads a run's teacher; EMNetModel.plot_extras draws its curves",
}


def _runtime_nodes(body):
    """Statements executed when the module loads: not function bodies, not ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _runtime_nodes(node.orelse)
            continue
        yield node
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _runtime_nodes(getattr(node, field, []) or [])


def module_level_imports(path: Path, modules: set[str], package: str = PACKAGE, *,
                         function_local: bool = False) -> set[str]:
    """The sibling modules (names in ``modules``) that ``path`` imports when it loads
    (``function_local``: anywhere in the file)."""
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree) if function_local else _runtime_nodes(tree.body):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module
            elif node.level == 0 and node.module and (node.module + ".").startswith(package + "."):
                base = node.module[len(package) + 1:] or None
            else:
                continue                                   # another package (``..pipeline``) or stdlib
            if base is None:                               # ``from . import x``
                found |= {a.name for a in node.names if a.name in modules}
            else:
                found.add(base.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(package + "."):
                    found.add(alias.name[len(package) + 1:].split(".")[0])
    return (found & modules) - {path.stem}


def import_graph(package_dir: Path, package: str = PACKAGE, *, function_local: bool = False) -> dict[str, set[str]]:
    files = {p.stem: p for p in sorted(package_dir.glob("*.py")) if p.stem != "__init__"}
    return {name: module_level_imports(path, set(files), package, function_local=function_local)
            for name, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (or a self-import),
    as a path ``[a, b, ..., a]``."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, comp) for comp in components]


def _cycle_in(graph, comp: set[str]) -> list[str]:
    """A closed path through ``comp`` (strongly connected), starting at its first module."""
    start = min(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:                                           # breadth-first: the shortest way back to start
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"{comp} is not strongly connected")


def test_e2e_modules_import_each_other_without_a_cycle():
    graph = import_graph(Path(weakalign.e2e.__file__).parent)
    assert {"train", "model", "emnet", "metrics", "checkpoints"} <= set(graph)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among weakalign.e2e modules: " + "; ".join(" -> ".join(c) for c in cycles)


def test_function_local_imports_hide_no_cycle_either():
    graph = import_graph(Path(weakalign.e2e.__file__).parent, function_local=True)
    for (a, b), why in LAZY_UPWARD.items():
        assert b in graph[a], f"{a} no longer imports {b} ({why}): drop it from LAZY_UPWARD"
        graph[a] = graph[a] - {b}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles through function-local imports: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_trainer_knows_no_auxiliary_method():
    graph = import_graph(Path(weakalign.e2e.__file__).parent)
    assert "emnet" not in graph["train"] and "emnet_plots" not in graph["train"]
    assert not graph["metrics"] & {"train", "model", "emnet"}
    assert not graph["checkpoints"] & {"train", "model", "emnet"}
    assert "train" not in graph["emnet"]
    source = (Path(weakalign.e2e.__file__).parent / "train.py").read_text()
    assert "emnet" not in source.lower(), "train.py must reach EM-Network only through the model interface"


def test_a_cycle_is_found_and_listed(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n\ndef g():\n    from .c import h\n")
    (pkg / "b.py").write_text("import os\nfrom pkg.c import h\nf = 1\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import f\n"
                              "try:\n    from . import a\nexcept ImportError:\n    a = None\nh = 2\n")
    (pkg / "d.py").write_text("from .a import g\ndef k():\n    from .d import k\n")
    graph = import_graph(pkg, package="pkg")
    assert graph == {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_graph(pkg, package="pkg", function_local=True) == {"a": {"b", "c"}, "b": {"c"}, "c": {"a", "b"},
                                                                     "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"x": {"x"}, "y": set()}) == [["x", "x"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []

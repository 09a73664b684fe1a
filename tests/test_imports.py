"""weakalign's modules import each other without a cycle, function-local imports included.

The module-level graph (what runs when a module loads; not function bodies, not
``if TYPE_CHECKING:``) must be acyclic, and so must the graph with the imports inside
functions: those are there to keep start-up light, but they can hide a circle (the trainer and
EM-Network once imported each other that way; the GMM shard and the fMLLR, LDA and tree modules
did, through helpers both used). Shared helpers live where every user imports them downward.
Modules are named as installed (``weakalign.kaldi_steps.shard``), across the four packages.
"""

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_modules(repo: Path = REPO) -> dict[str, Path]:
    """Every module of the installed ``weakalign`` (``pyproject.toml``'s package-dir), by dotted name;
    a package is its ``__init__.py``."""
    setuptools = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    return modules_under(repo, setuptools["package-dir"])


def modules_under(root: Path, package_dir: dict[str, str]) -> dict[str, Path]:
    found = {}
    for package, folder in package_dir.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


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


def _known(target: str, known) -> str | None:
    """``target`` or its nearest enclosing module that is one of ``known``."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(name: str, path: Path, known, *, function_local: bool = False) -> set[str]:
    """The modules of ``known`` that module ``name`` (at ``path``) imports when it loads
    (``function_local``: anywhere in the file)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree) if function_local else _runtime_nodes(tree.body):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:                       # ``from pkg import module``
                module = _known(f"{target}.{alias.name}", known)
                if module and module != _known(target, known):
                    found.add(module)
                elif _known(target, known):
                    found.add(_known(target, known))
        elif isinstance(node, ast.Import):
            found |= {m for m in (_known(alias.name, known) for alias in node.names) if m}
    return found - {name}


def import_graph(modules: dict[str, Path], *, function_local: bool = False) -> dict[str, set[str]]:
    return {name: imports_of(name, path, modules, function_local=function_local) for name, path in modules.items()}


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


def _said(cycles) -> str:
    return "; ".join(" -> ".join(c) for c in cycles)


def test_the_whole_package_is_read():
    modules = package_modules()
    assert {"weakalign.e2e.train", "weakalign.kaldi_steps.shard", "weakalign.kaldi_steps.hybrid.stage",
            "weakalign.pipeline.corpora.an4", "weakalign.align.loader"} <= set(modules)
    graph = import_graph(modules, function_local=True)
    assert {"weakalign.kaldi_steps.diag_gmm", "weakalign.pipeline.acoustic_features"} <= graph[
        "weakalign.kaldi_steps.shard"]
    assert "weakalign.kaldi_steps.shard" in graph["weakalign.kaldi_steps.hybrid.stage"]  # ``from ..shard import``


def test_modules_import_each_other_without_a_cycle():
    cycles = find_cycles(import_graph(package_modules()))
    assert not cycles, "import cycles among weakalign's modules: " + _said(cycles)


def test_function_local_imports_hide_no_cycle_either():
    cycles = find_cycles(import_graph(package_modules(), function_local=True))
    assert not cycles, "import cycles through function-local imports: " + _said(cycles)


def test_a_cycle_is_found_and_listed(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n\ndef g():\n    from .c import h\n")
    (pkg / "b.py").write_text("import os\nfrom pkg.c import h\nf = 1\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import f\n"
                              "try:\n    from . import a\nexcept ImportError:\n    a = None\nh = 2\n")
    (pkg / "d.py").write_text("from .a import g\ndef k():\n    from .d import k\n")
    (pkg / "sub" / "e.py").write_text("from .. import d\nfrom ..b import f\n")
    modules = modules_under(tmp_path, {"pkg": "pkg"})
    graph = {k.removeprefix("pkg."): {m.removeprefix("pkg.") for m in v} for k, v in import_graph(modules).items()}
    assert graph == {"pkg": set(), "a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "sub": set(), "sub.e": {"d", "b"}}
    local = import_graph(modules, function_local=True)
    assert local["pkg.a"] == {"pkg.b", "pkg.c"} and local["pkg.c"] == {"pkg.a", "pkg.b"}
    assert find_cycles(import_graph(modules)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    assert find_cycles({"x": {"x"}, "y": set()}) == [["x", "x"]]
    assert find_cycles({"x": {"y"}, "y": set()}) == []

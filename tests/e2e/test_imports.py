"""The trainer reaches a model only through its interface (``forward(batch) -> (loss, stats)``,
a validation step, an export view): it imports no auxiliary method's module, and the helpers
every model shares (``metrics``, ``checkpoints``) import no model. That weakalign has no import
cycle at all is ``tests/test_imports.py``'s.
"""

from tests.test_imports import import_graph, package_modules

E2E = "weakalign.e2e."


def _e2e_graph() -> dict[str, set[str]]:
    graph = import_graph(package_modules(), function_local=True)
    return {name.removeprefix(E2E): {m.removeprefix(E2E) for m in deps if m.startswith(E2E)}
            for name, deps in graph.items() if name.startswith(E2E)}


def test_the_trainer_knows_no_auxiliary_method():
    from pathlib import Path

    import weakalign.e2e

    graph = _e2e_graph()
    assert {"train", "model", "emnet", "build", "metrics", "checkpoints"} <= set(graph)
    assert not graph["train"] & {"emnet", "emnet_plots", "emnet_figures"}
    assert not graph["metrics"] & {"train", "model", "emnet", "build"}
    assert not graph["checkpoints"] & {"train", "model", "emnet", "build"}
    assert not graph["model"] & {"emnet", "build", "train"}, "the base model knows no model built on it"
    assert "train" not in graph["emnet"]
    source = (Path(weakalign.e2e.__file__).parent / "train.py").read_text()
    assert "emnet" not in source.lower(), "train.py must reach EM-Network only through the model interface"

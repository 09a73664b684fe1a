"""What ``pip install .`` (a wheel, not the editable checkout) puts in ``weakalign``.

``pyproject.toml`` maps each top-level folder to a package (``package-dir``) and lists the
packages by hand: a sub-package missing from ``packages`` works in the editable checkout and is
absent from a wheel (``weakalign.pipeline.corpora`` was: ``weakalign prepare`` failed there).
"""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {}
    for package, folder in setuptools["package-dir"].items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            inside = init.parent.relative_to(REPO / folder).parts
            folders[".".join((package, *inside))] = init.parent
    missing = sorted(set(folders) - set(setuptools["packages"]))
    assert not missing, f"packages missing from pyproject.toml's [tool.setuptools] packages: {missing}"

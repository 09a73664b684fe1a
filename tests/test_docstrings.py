"""The runnable examples in docstrings (lhotse style) run and stay correct."""

import doctest
import importlib
import pkgutil

import pytest

import weakalign

PACKAGES = ("weakalign.pipeline", "weakalign.kaldi_steps", "weakalign.align", "weakalign.e2e")


def all_modules():
    names = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        names.append(pkg_name)
        # walk_packages: the sub-packages' modules too (kaldi_steps.hybrid, pipeline.corpora).
        names.extend(info.name for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."))
    return sorted(names)


@pytest.mark.parametrize("name", all_modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"

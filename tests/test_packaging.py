"""What ``pip install .`` (a wheel, not the editable checkout) puts in ``weakalign``.

``pyproject.toml`` maps each top-level folder to a package (``package-dir``) and lists the
packages by hand: a folder missing from ``packages`` works in the editable checkout and is absent
from a wheel (``weakalign.pipeline.corpora`` was, so ``weakalign prepare`` failed there; and the
E2E configs of ``conf/``, which ``weakalign train`` reads beside the code).
"""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def installed_folders() -> dict[str, str]:
    """Each folder pyproject's ``package-dir`` installs, and where it lands in a wheel."""
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {folder: package.replace(".", "/") for package, folder in package_dir.items()}


@pytest.mark.timeout(180)
def test_the_wheel_holds_every_module_and_config_of_the_checkout(tmp_path):
    """Built from a copy of the tracked files (a build writes into its source tree): every
    tracked ``.py`` and ``.yaml`` of the installed folders is in the wheel, where the code looks for it."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"
    for name in tracked:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((REPO / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("weakalign-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    installed = installed_folders()
    wanted = {installed[name.split("/")[0]] + name[name.index("/"):] for name in tracked
              if name.split("/")[0] in installed and name.endswith((".py", ".yaml"))}
    assert "weakalign/pipeline/corpora/an4.py" in wanted and "weakalign/conf/an4/defaults.yaml" in wanted
    assert not wanted - shipped, f"missing from the wheel: {sorted(wanted - shipped)}"

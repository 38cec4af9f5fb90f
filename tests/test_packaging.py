"""Packaging: one version everywhere, the license, and a wheel that carries every sub-package and the shipped model."""

import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

import keras_diffusion as kd

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_version_is_the_changelogs_newest_heading_and_the_projects():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    newest = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M).group(1)
    assert project["version"] == kd.__version__ == newest


def test_the_license_is_the_apache_license_the_project_declares():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License\n                           Version 2.0")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built (no network, no build isolation) from a copy of the sources, as `pip install .` builds it."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "keras_diffusion", source / "keras_diffusion", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (path,) = out.glob("keras_diffusion-*.whl")
    return path


def test_the_wheel_holds_every_module_and_the_shipped_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "keras_diffusion").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert "keras_diffusion/models/pretrained/mnist.keras" in names
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)

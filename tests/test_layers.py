"""The import-direction rule of docs/layers.md holds for the package, and its check can fail."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.layers import ROOT, Layers, check, load_config, main

TABLE = {"contract": ["pkg.base"], "gateware": ["pkg.hw"], "applications": ["pkg", "pkg.app"]}


def test_the_package_imports_only_downwards(capsys):
    assert main([]) == 0, capsys.readouterr().out
    assert "every import points down" in capsys.readouterr().out


def test_every_module_of_the_package_belongs_to_a_layer():
    package_dirs, layers = load_config(ROOT / "pyproject.toml")
    assert {"spikeforge", "spikeforge.hw", "spikeforge.sw", "spikeforge.sim", "spikeforge.cli",
            "spikeforge.sw.train"} <= set(package_dirs)
    assert layers.names == ["contract", "gateware", "simulation", "applications"]
    assert layers.names[layers.rank("spikeforge.sw.golden")] == "contract"
    assert layers.names[layers.rank("spikeforge.sw.export")] == "applications"
    assert layers.names[layers.rank("spikeforge.hw.layer")] == "gateware"


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"pkg": tmp_path / "pkg", "pkg.hw": tmp_path / "hw", "pkg.app": tmp_path / "app"}


BASE = {"pkg/__init__.py": "", "pkg/base.py": "X = 1\n", "hw/__init__.py": "",
        "hw/core.py": "from pkg.base import X\n", "app/__init__.py": "",
        "app/tool.py": "from pkg.hw.core import X\n"}


def test_downward_imports_pass(tmp_path):
    assert check(_tree(tmp_path, BASE), Layers(TABLE), tmp_path) == []


@pytest.mark.parametrize("upward", [
    "from pkg.app.tool import X\n",                          # module level
    "def f():\n    from pkg.app import tool\n",              # inside a function
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.app.tool\n",
    "from ..app import tool\n",                               # relative
])
def test_an_upward_import_is_reported(tmp_path, upward):
    files = dict(BASE, **{"hw/core.py": BASE["hw/core.py"] + upward})
    (violation,) = check(_tree(tmp_path, files), Layers(TABLE), tmp_path)
    assert (violation.importer, violation.imported) == ("pkg.hw.core", "pkg.app.tool")
    assert str(violation).endswith(
        "pkg.hw.core (gateware) imports pkg.app.tool (applications), a higher layer")


def test_a_module_outside_every_layer_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^pkg belongs to no layer"):
        check(_tree(tmp_path, BASE), Layers({"contract": ["pkg.base"], "apps": ["pkg.app"]}),
              tmp_path)


def test_make_lint_fails_on_an_upward_import_in_a_copy_of_the_project(tmp_path):
    """The real check on a copy of the real tree, with one deliberately added upward import."""
    for name in ("hw", "sw", "sim", "spikeforge", "constraints", "tools"):
        shutil.copytree(ROOT / name, tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    script = [sys.executable, str(tmp_path / "tools" / "layers.py"),
              str(tmp_path / "pyproject.toml")]
    clean = subprocess.run(script, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout
    golden = tmp_path / "sw" / "golden.py"
    golden.write_text(golden.read_text() + "\nfrom spikeforge.hw.layer import LayerEngine\n")
    broken = subprocess.run(script, capture_output=True, text=True)
    assert broken.returncode == 1
    assert ("spikeforge.sw.golden (contract) imports spikeforge.hw.layer (gateware), a higher "
            "layer") in broken.stdout

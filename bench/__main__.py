"""Run every benchmark module (``bench/bench_*.py``) in turn, or those named on the command line.

    python -m bench                  # all of them
    python -m bench golden array     # bench_golden.py and bench_array.py only
    python -m bench conv --grid --seeds 0   # arguments after the names go to each module

The names end at the first argument that starts with ``-``; that argument and the rest are
passed on to every named module's ``main``.
"""

import importlib
import pkgutil
import sys
import time

import bench


def main(argv: list[str]) -> int:
    modules = pkgutil.iter_modules(bench.__path__)
    names = sorted(m.name for m in modules if m.name.startswith("bench_"))
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    argv, rest = argv[:split], argv[split:]
    wanted = [f"bench_{a.removeprefix('bench_')}" for a in argv] or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}")
        return 2
    for name in wanted:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        module.main(list(rest))
        print(f"({name} took {time.perf_counter() - start:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

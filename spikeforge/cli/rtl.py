"""``spikeforge rtl EXPORT_DIR``: Verilog of the network accelerator, elaborated from an export.

Writes ``<out>/<name>.v`` and ``<out>/<name>.json`` (ports, field offsets and the elaboration
parameters, see :mod:`spikeforge.hw.rtl`) with :func:`spikeforge.sw.rtl.write_rtl`. Weight ROM
contents come from the export folder, verified on load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spikeforge.sw.export import ExportError
from spikeforge.sw.rtl import write_rtl

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export_dir", type=Path, help="folder written by `spikeforge export`")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: EXPORT_DIR/../rtl)")
    parser.add_argument("--name", default="spikeforge_accel", help="Verilog module name")
    parser.add_argument("--lanes", type=int, default=None,
                        help="lanes per layer (default: the export's)")
    parser.add_argument("--taps", action="store_true",
                        help="add the testbench observation ports")


def run(args: argparse.Namespace) -> int:
    try:
        files = write_rtl(args.export_dir, args.out, name=args.name, lanes=args.lanes,
                          taps=args.taps)
    except (ExportError, ValueError) as error:
        print(f"spikeforge rtl: error: {error}", file=sys.stderr)
        return 1
    params = files.parameters
    print(f"wrote {files.verilog} and {files.metadata}: {params['n_layers']} layers, "
          f"{params['n_inputs']} inputs, {params['n_outputs']} outputs, T={params['timesteps']}, "
          f"P={params['lanes']}")
    return 0

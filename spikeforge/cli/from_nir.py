"""``spikeforge from-nir GRAPH.nir --out EXPORT_DIR``: a NIR graph as a spikeforge export.

::

    spikeforge from-nir model.nir --out out/imported
    spikeforge from-nir model.nir --out out/imported -T 8 --encoder direct --w-bits 4 --lanes 4
    spikeforge from-nir snntorch.nir --out out/imported --reset subtract   # NIR drops it

:func:`spikeforge.sw.nir.from_nir` does the work (docs/nir.md: which nodes, how a leak, a reset
and ``>``/``>=`` are read, how float weights are quantized); every default it takes (T, the
encoder, widths) and every layer's import (exact, or quantized with its error) is printed.
:func:`spikeforge.sw.export.export_network` writes the folder, which is then loaded back with
:func:`spikeforge.sw.export.load_network`.

Every layer's ``reset`` and ``compare`` go into the manifest (schema 2), snnTorch's zero reset
and ``>`` included; the accelerator runs them. Exit status 0, or 1 with
``spikeforge from-nir: error: <message>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spikeforge.sw.data import PIXEL_BITS
from spikeforge.sw.export import ExportError, export_network, hardware_support, load_network
from spikeforge.sw.golden import ContractError
from spikeforge.sw.nir import (
    DEFAULT_ENCODER,
    DEFAULT_LANES,
    DEFAULT_LEAK_TOLERANCE,
    DEFAULT_TIMESTEPS,
    DIALECTS,
    NirError,
    from_nir,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", type=Path, metavar="GRAPH.nir", help="NIR graph (HDF5 file)")
    parser.add_argument("--out", required=True, type=Path, metavar="EXPORT_DIR",
                        help="export folder to write (replaced only if it holds an export)")
    parser.add_argument("-T", "--timesteps", type=int, default=None, metavar="N",
                        help="timesteps (default: the graph's spikeforge metadata, else "
                             f"{DEFAULT_TIMESTEPS})")
    parser.add_argument("--encoder", choices=("rate", "radix", "direct"), default=None,
                        help="how integer pixels become the graph's input frames (default: "
                             f"metadata, else {DEFAULT_ENCODER})")
    parser.add_argument("--pixel-bits", type=int, default=None, metavar="B",
                        help="pixel width of the encoder (default: metadata, else "
                             f"{PIXEL_BITS})")
    parser.add_argument("--w-bits", type=int, default=None, metavar="B",
                        help="weight width of every layer (default: the fewest bits holding "
                             "integer weights exactly, 8 for float weights)")
    parser.add_argument("--v-bits", type=int, default=None, metavar="V",
                        help="membrane width of every layer (default: the smallest >= 16 in "
                             "which no membrane saturates, at most 32)")
    parser.add_argument("--lanes", type=int, default=DEFAULT_LANES, metavar="P",
                        help=f"parallel lanes of the neuron array (default: {DEFAULT_LANES})")
    parser.add_argument("--dialect", choices=DIALECTS, default="auto",
                        help="how LIF nodes' tau and r are read (default: auto, see "
                             "docs/nir.md)")
    parser.add_argument("--reset", choices=("subtract", "zero"), default=None,
                        help="force the reset of IF/LIF nodes (NIR does not record it)")
    parser.add_argument("--compare", choices=(">=", ">"), default=None,
                        help="force the threshold comparison of IF/LIF nodes")
    parser.add_argument("--leak-tolerance", type=float, default=DEFAULT_LEAK_TOLERANCE,
                        metavar="E", help="largest |decay - 2**-k| a LIF may have to import "
                                          f"as a shift k (default: {DEFAULT_LEAK_TOLERANCE:g})")


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"spikeforge from-nir: error: {message}", file=sys.stderr)
        return 1

    if args.lanes < 1:
        return fail(f"--lanes must be at least 1, not {args.lanes}")
    try:
        network, report = from_nir(
            args.graph, timesteps=args.timesteps, encoder=args.encoder,
            pixel_bits=args.pixel_bits, w_bits=args.w_bits, v_bits=args.v_bits,
            dialect=args.dialect, reset=args.reset, compare=args.compare,
            leak_tolerance=args.leak_tolerance)
    except NirError as error:
        return fail(str(error))
    print(f"imported {args.graph}: {report.lines()[0]}")
    for line in report.lines()[1:]:
        print(line)
    reasons = hardware_support(network)
    if reasons:
        print(f"spikeforge from-nir: note: this network cannot run on the current hardware "
              f"({'; '.join(reasons)}); `spikeforge eval` runs it on the golden model",
              file=sys.stderr, flush=True)
    metadata = {"source": "nir", "graph": args.graph.name, "exact": report.exact,
                "defaults": list(report.assumed)}
    try:
        folder = export_network(network, args.out, lanes=args.lanes, metadata=metadata,
                                scales=report.scales)
        loaded = load_network(folder)
    except (ExportError, ContractError) as error:
        return fail(str(error))
    print(f"exported {len(loaded.layers)} layer(s), T={loaded.timesteps}, "
          f"encoder={loaded.encoder.kind.value}, lanes={args.lanes} -> {folder}")
    return 0

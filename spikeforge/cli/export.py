"""``spikeforge export``: write the export folder the gateware is built from.

::

    spikeforge export CHECKPOINT --out DIR --lanes P
    spikeforge export EXPORT_DIR --out DIR --lanes P      # re-pack an export for another P

:func:`spikeforge.sw.export.load_source` reads the source (a checkpoint through
``spikeforge.sw.train.integer_network``, or an export folder, verified, with its metadata
and scales kept); :func:`spikeforge.sw.export.export_network` writes the folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spikeforge.sw.export import (
    ExportError,
    export_network,
    hardware_support,
    load_manifest,
    load_source,
)
from spikeforge.sw.golden import ContractError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="CHECKPOINT_OR_EXPORT", type=Path,
                        help="training checkpoint, or an existing export folder")
    parser.add_argument("--out", type=Path, metavar="DIR", default=None,
                        help="export folder to write, replaced only if it holds an export "
                             "(default: beside the source, SOURCE-export for a checkpoint, "
                             "SOURCE-lanesP for an export folder)")
    parser.add_argument("--lanes", required=True, type=int, metavar="P",
                        help="parallel lanes of the neuron array (ROM word = P * w_bits bits)")


def run(args: argparse.Namespace) -> int:
    """Export; print the folder and its ROM shapes. Returns 0, or 1 with a message on stderr.

    A network the current hardware cannot run (:func:`spikeforge.sw.export.hardware_support`)
    is still exported, with a one-line note on stderr as soon as the source is read.
    """
    try:
        network, metadata, scales = load_source(args.source)
        reasons = hardware_support(network)
        if reasons:
            print(f"spikeforge export: note: this network cannot run on the current hardware "
                  f"({'; '.join(reasons)}); `spikeforge sim`, `rtl` and `synth` will refuse "
                  "it, `spikeforge eval` runs it on the golden model", file=sys.stderr,
                  flush=True)
        source = args.source
        out = args.out or source.parent / (f"{source.name}-lanes{args.lanes}" if source.is_dir()
                                           else f"{source.stem}-export")
        folder = export_network(network, out, lanes=args.lanes, metadata=metadata,
                                scales=scales)
        manifest = load_manifest(folder)
    except (ExportError, ContractError) as error:
        print(f"spikeforge export: error: {error}", file=sys.stderr)
        return 1
    print(f"exported {len(manifest.layers)} layer(s), T={manifest.timesteps}, "
          f"encoder={manifest.encoder.kind.value}, lanes={manifest.lanes} -> {folder}")
    for k, layer in enumerate(manifest.layers):
        rom = (f"ROM {layer.rom_depth} x {layer.rom_width} bits" if layer.rom_files
               else "no ROM")
        kind = "" if layer.kind == "dense" else f"{layer.kind} "
        print(f"  layer{k} {kind}{layer.name!r}: {layer.fan_in} -> {layer.fan_out}, {rom}")
    return 0

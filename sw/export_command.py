"""``spikeforge export``: write the export folder the gateware is built from.

::

    spikeforge export CHECKPOINT --out DIR --lanes P
    spikeforge export NETWORK.json --from-json --out DIR --lanes P
    spikeforge export EXPORT_DIR --out DIR --lanes P      # re-pack an export for another P

A checkpoint is turned into the integer network by ``sw.train.integer_network``; a JSON network is
the form :func:`sw.export.network_to_json` writes; a folder holding ``manifest.json`` is loaded
(and verified) with its metadata and scales kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="CHECKPOINT_OR_NETWORK", type=Path,
                        help="training checkpoint, network JSON (with --from-json), or an "
                             "existing export folder")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="export folder to write (replaced only if it holds an export)")
    parser.add_argument("--lanes", required=True, type=int, metavar="P",
                        help="parallel lanes of the neuron array (ROM word = P * w_bits bits)")
    parser.add_argument("--from-json", action="store_true",
                        help="the source is a JSON network (sw.export.network_to_json form)")


def _load_source(args):
    """``(network, metadata, scales)`` from the command's source argument."""
    from sw.export import MANIFEST_NAME, ExportError, load_manifest, network_from_json

    source: Path = args.source
    if source.is_dir():
        if not (source / MANIFEST_NAME).exists():
            raise ExportError(f"{source} is a folder without {MANIFEST_NAME}")
        manifest = load_manifest(source)
        return manifest.network, dict(manifest.metadata), manifest.scales
    if args.from_json:
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except OSError as error:
            raise ExportError(f"{source}: cannot be read ({error.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ExportError(f"{source}: not valid JSON ({error})") from None
        return network_from_json(data), {"source": "json"}, None
    if not source.exists():
        raise ExportError(f"{source}: checkpoint is missing")
    try:
        from sw.train import integer_network
    except ImportError as error:
        raise ExportError(f"exporting a checkpoint needs sw.train.integer_network, which is not "
                          f"available ({error}); pass a network JSON with --from-json") from None
    return integer_network(source), {"source": "checkpoint", "checkpoint": source.name}, None


def run(args: argparse.Namespace) -> int:
    """Export; print the folder and its ROM shapes. Returns 0, or 1 with a message on stderr."""
    from sw.export import ExportError, export_network, load_manifest
    from sw.golden import ContractError

    try:
        network, metadata, scales = _load_source(args)
        folder = export_network(network, args.out, lanes=args.lanes, metadata=metadata,
                                scales=scales)
        manifest = load_manifest(folder)
    except (ExportError, ContractError) as error:
        print(f"spikeforge export: error: {error}", file=sys.stderr)
        return 1
    print(f"exported {len(manifest.layers)} layer(s), T={manifest.timesteps}, "
          f"encoder={manifest.encoder.kind.value}, lanes={manifest.lanes} -> {folder}")
    for k, layer in enumerate(manifest.layers):
        print(f"  layer{k} {layer.name!r}: {layer.fan_in} -> {layer.fan_out}, "
              f"ROM {layer.rom_depth} x {layer.rom_width} bits")
    return 0

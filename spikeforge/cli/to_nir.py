"""``spikeforge to-nir EXPORT_DIR --out GRAPH.nir``: an export as a NIR graph.

::

    spikeforge to-nir out/export --out out/model.nir

The export is loaded and verified (:func:`spikeforge.sw.export.load_manifest`);
:func:`spikeforge.sw.nir.to_nir` builds the graph (integer-valued weights, the exact spikeforge
fields and the manifest's scales in node metadata; docs/nir.md says how snnTorch and sinabs read
it) and :func:`spikeforge.sw.nir.write_graph` writes it. Exit status 0, or 1 with
``spikeforge to-nir: error: <message>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spikeforge.sw.export import ExportError, load_manifest
from spikeforge.sw.nir import NirError, to_nir, write_graph

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export_dir", type=Path, metavar="EXPORT_DIR",
                        help="folder written by `spikeforge export` or `from-nir`")
    parser.add_argument("--out", required=True, type=Path, metavar="GRAPH.nir",
                        help="NIR file to write (HDF5)")


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"spikeforge to-nir: error: {message}", file=sys.stderr)
        return 1

    if args.out.is_dir():
        return fail(f"{args.out} is a folder; --out names the .nir file to write")
    try:
        manifest = load_manifest(args.export_dir)
        graph = to_nir(manifest.network, scales=manifest.scales)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_graph(graph, args.out)
    except (ExportError, NirError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"cannot write {args.out}: {error}")
    print(f"wrote {len(graph.nodes)} NIR nodes ({len(manifest.network.layers)} layer(s), "
          f"T={manifest.timesteps}, encoder={manifest.encoder.kind.value}) -> {args.out}")
    return 0

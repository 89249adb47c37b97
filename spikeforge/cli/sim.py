"""``spikeforge sim EXPORT_DIR``: the exported network on the RTL in Verilator, over a test set.

Prints accuracy, agreement with the golden model (predictions, scores, counters, every spike
and membrane of the traced images), cycles per inference against the cycle model, synaptic
operations and utilization, and writes a spike raster of the first image as the RTL produced it
(:func:`spikeforge.sw.simulate.simulate_export` does the work).

``--weights spram`` simulates the UP5K bitstream's SPRAM weight store: the board top (UART,
link bridge, accelerator) with the weight store in SPRAM, empty at start, the weights loaded
over the link by the host client as ``spikeforge run`` does on the board, then every image
classified through the link.

Exit status: 0 the RTL agrees with the golden model; 2 it does not; 1 a bad dataset or export.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from spikeforge.sw.data import DatasetError, load_dataset
from spikeforge.sw.export import ExportError
from spikeforge.sw.simulate import DEFAULT_CLOCK_MHZ, WEIGHT_STORES, print_summary, simulate_export

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export_dir", type=Path, help="folder written by `spikeforge export`")
    parser.add_argument("--dataset", default="digits", help="dataset name (default: digits)")
    parser.add_argument("--data-root", default=None, help="folder of a local dataset (mnist)")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--trace", type=int, default=50,
                        help="compare every spike and membrane of the first N images (50)")
    parser.add_argument("--lanes", type=int, default=None,
                        help="lanes per layer (default: the export's)")
    parser.add_argument("--clock-mhz", type=float, default=DEFAULT_CLOCK_MHZ,
                        help="clock for the inferences-per-second figure "
                             f"(default {DEFAULT_CLOCK_MHZ:g})")
    parser.add_argument("--weights", choices=WEIGHT_STORES, default="rom",
                        help="where the weights live: rom (the bitstream's ROMs, the default) "
                             "or spram (the UP5K build: loaded over the link by the host "
                             "client before the first image, as on the board)")
    parser.add_argument("--raster", type=Path, default=None,
                        help="spike raster PNG of the first image (default: beside the export, "
                             "EXPORT-raster-DATASET-SPLIT.png)")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        pixels, labels = load_dataset(args.dataset, root=args.data_root, split=args.split)
    except DatasetError as error:
        print(f"spikeforge sim: error: {error}", file=sys.stderr)
        return 1
    if args.limit is not None:
        pixels, labels = pixels[:args.limit], labels[:args.limit]
    folder = args.export_dir.resolve()
    raster = args.raster or folder.parent / f"{folder.name}-raster-{Path(args.dataset).name}-" \
                                            f"{args.split}.png"
    try:
        summary = simulate_export(args.export_dir, pixels=pixels, labels=labels,
                                  trace=args.trace, lanes=args.lanes, clock_mhz=args.clock_mhz,
                                  raster=raster, console=console, weights=args.weights)
    except (ExportError, ValueError, RuntimeError) as error:
        print(f"spikeforge sim: error: {error}", file=sys.stderr)
        return 1
    print_summary(summary, console, f"{args.export_dir} on the RTL ({args.dataset} {args.split})")
    print(f"spike raster of image 0: {raster}")  # not wrapped: a path to copy
    return 0 if summary.mismatches == 0 else 2

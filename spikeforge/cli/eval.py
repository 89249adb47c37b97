"""``spikeforge eval EXPORT_DIR --dataset D``: an export on the integer golden model.

::

    spikeforge eval out/export --dataset digits
    spikeforge eval out/conv --dataset mnist5k --split test --out out/eval-conv
    spikeforge eval out/export --dataset mnist --data-root ~/mnist

Prints golden-model accuracy, synaptic operations per image and per layer and spikes per layer
(per image, mean) as tables, and writes ``confusion.png`` and ``eval.json`` into ``--out``
(default: beside the export, :func:`spikeforge.sw.evaluate.default_out_dir`; the folder is
printed). No RTL: every export the golden model runs works, dense or convolutional, whatever
encoder. The work is :func:`spikeforge.sw.evaluate.evaluate_export`.

Exit status 0, or 1 with ``spikeforge eval: error: <message>`` (an unknown dataset, a missing
or damaged export, images whose size does not match the network).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from spikeforge.sw.data import DATASETS, DatasetError, load_dataset
from spikeforge.sw.evaluate import (
    EvalError,
    default_out_dir,
    evaluate_export,
    print_report,
    save_report,
)
from spikeforge.sw.export import ExportError, load_manifest

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export_dir", type=Path, metavar="EXPORT_DIR",
                        help="folder written by `spikeforge export`")
    parser.add_argument("--dataset", required=True,
                        help=f"dataset name ({', '.join(DATASETS)}) or a folder of MNIST IDX "
                             "files")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help="folder of a local dataset (mnist IDX files)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder for confusion.png and eval.json (default: beside the "
                             "export, EXPORT_DIR-eval-DATASET-SPLIT-KEY)")


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"spikeforge eval: error: {message}", file=sys.stderr)
        return 1

    if args.limit is not None and args.limit < 1:
        return fail(f"--limit must be positive, not {args.limit}")
    try:
        load_manifest(args.export_dir)  # a bad export is named before the data is read
        pixels, labels = load_dataset(args.dataset, root=args.data_root, split=args.split)
        if args.limit is not None:
            pixels, labels = pixels[:args.limit], labels[:args.limit]
        report = evaluate_export(args.export_dir, pixels, labels)
        out = args.out if args.out is not None else default_out_dir(
            args.export_dir, args.dataset, args.split, args.data_root)
        title = f"{args.export_dir} on the golden model ({args.dataset} {args.split})"
        png, summary = save_report(report, out, title=f"{args.dataset} {args.split}: "
                                                      f"{report.accuracy:.2%}")
    except (DatasetError, ExportError, EvalError) as error:
        return fail(str(error))
    except OSError as error:
        return fail(f"cannot write the report: {error}")
    console = Console()
    print_report(report, console, title)
    console.print(f"confusion matrix: {png}")
    console.print(f"numbers: {summary}")
    return 0

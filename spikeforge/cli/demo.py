"""``spikeforge demo`` (``make demo``): train, export, run on the RTL, report.

:func:`spikeforge.sw.demo.run_demo` does the steps (showing their progress); this prints the
report: the RTL run's table, the network's layers and the trainer's accuracies.

Exit status: 0 the RTL agrees with the golden model (or ``--no-sim``); 2 it does not; 1 a
training or export error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spikeforge.sw.data import DatasetError
from spikeforge.sw.demo import DEMO_LANES, run_demo
from spikeforge.sw.export import ExportError
from spikeforge.sw.golden import ContractError
from spikeforge.sw.simulate import print_summary
from spikeforge.sw.train import CheckpointError, ConfigError, QuantizationError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--lanes", type=int, default=DEMO_LANES,
                        help=f"lanes per layer ({DEMO_LANES})")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs override")
    parser.add_argument("--trace", type=int, default=50,
                        help="images compared spike by spike and membrane by membrane (50)")
    parser.add_argument("--retrain", action="store_true", help="train even if a checkpoint exists")
    parser.add_argument("--no-sim", action="store_true", help="stop after export (for synth)")
    parser.add_argument("--arch", default="mlp", choices=["mlp", "conv"],
                        help="the network: mlp (64-128-10) or conv (the convolutional preset, "
                             "c8k3p1-p2-c16k3p1-p2-f10) (mlp)")


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        result = run_demo(args.out, lanes=args.lanes, epochs=args.epochs, trace=args.trace,
                          retrain=args.retrain, sim=not args.no_sim, console=console,
                          arch=args.arch)
    except (ConfigError, CheckpointError, DatasetError, QuantizationError, ExportError,
            ContractError) as error:
        print(f"spikeforge demo: error: {error}", file=sys.stderr)
        return 1
    summary = result.summary
    if summary is None:
        console.print(f"integer golden-model accuracy on the {result.test_images} test "
                      f"images: {result.golden_accuracy:.2%}")
        return 0

    console.rule("4. report")
    print_summary(summary, console, "spikeforge demo: digits test set on the RTL")
    table = Table(title="network")
    table.add_column("layer")
    for column in ("fan-in", "fan-out", "w_bits", "v_bits", "theta", "mode"):
        table.add_column(column, justify="right")
    for layer in result.network.layers:
        if layer.kind == "sumpool":   # no neurons: folded into the next layer's addresses
            table.add_row(layer.name, str(layer.fan_in), str(layer.fan_out), "", "", "",
                          f"sum pool {layer.kernel[0]}x{layer.kernel[1]}")
            continue
        mode = layer.fire_mode.value if layer.fires else "membrane"
        table.add_row(layer.name, str(layer.fan_in), str(layer.fan_out), str(layer.w_bits),
                      str(layer.v_bits), ",".join(map(str, layer.theta.tolist())), mode)
    console.print(table)
    for key, label in (("test_float_ann", "float ANN"), ("test_float_snn", "float SNN"),
                       ("test_int", "integer golden model")):
        if key in result.metrics:
            console.print(f"trainer's {label} test accuracy: {result.metrics[key]:.2%}")
    console.print(f"training: {result.train_seconds:.0f} s; spike raster: {result.raster}")
    if summary.mismatches:
        console.print("[red]the RTL differs from the golden model: see the mismatches above[/red]")
        return 2
    return 0

"""``spikeforge demo`` (``make demo``): the main job on the embedded default.

1. train the default network on the digits data (``sw.train``, ATIF-u, T = 4, 4-bit weights,
   rate-coded input, which the hardware encoder implements);
2. export it: weight ROMs (hex, coe, mif) and the manifest, verified on load;
3. run every test image through the exported network on the RTL in Verilator and compare
   predictions, scores, counters, cycle counts and (for the first images) every spike and
   membrane with the golden model;
4. print one table and write a spike raster of the first image.

A finished step is not redone: an existing checkpoint is reused unless ``--retrain``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

#: Lanes per layer engine of the demo accelerator.
DEMO_LANES = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    parser.add_argument("--lanes", type=int, default=DEMO_LANES, help="lanes per layer (8)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs override")
    parser.add_argument("--trace", type=int, default=50,
                        help="images compared spike by spike and membrane by membrane (50)")
    parser.add_argument("--retrain", action="store_true", help="train even if a checkpoint exists")
    parser.add_argument("--no-sim", action="store_true", help="stop after export (for synth)")


def demo_config(epochs: int | None = None):
    from sw.train import TrainConfig

    config = TrainConfig(encoder="rate")
    if epochs is not None:
        config.epochs = epochs
    return config


def run(args: argparse.Namespace) -> int:
    from sim.network_command import print_summary, simulate_export
    from sw.data import load_dataset
    from sw.export import export_network
    from sw.train import integer_network, load_checkpoint, train

    console = Console()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    config = demo_config(args.epochs)

    console.rule("1. train")
    start = time.perf_counter()
    if checkpoint.exists() and not args.retrain:
        console.print(f"reusing {checkpoint} (--retrain to train again)")
    else:
        console.print(f"method {config.method}, T={config.timesteps}, {config.w_bits}-bit weights, "
                      f"{config.encoder} encoder, up to {config.epochs} epochs")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                      console=console) as bar:
            tasks: dict[str, int] = {}

            def progress(record: dict) -> None:
                phase = record["phase"]
                if phase not in tasks:
                    tasks[phase] = bar.add_task(f"{phase} epochs", total=record["epochs"],
                                                status="")
                bar.update(tasks[phase], completed=record["epoch"],
                           status=f"loss {record['train_loss']:.4f}  "
                                  f"val acc {record['val_acc']:.2%}")

            train(config, out=checkpoint, progress=progress)
    train_seconds = time.perf_counter() - start
    network = integer_network(checkpoint)
    meta = load_checkpoint(checkpoint)

    console.rule("2. export")
    export_dir = export_network(network, out / "export", lanes=args.lanes,
                                metadata={"source": "spikeforge demo", "method": config.method})
    console.print(f"wrote {export_dir}")

    pixels, labels = load_dataset("digits", split="test")
    if args.no_sim:
        golden_accuracy = (network.predict(pixels) == labels).double().mean().item()
        console.print(f"integer golden-model accuracy on the {len(labels)} test images: "
                      f"{golden_accuracy:.2%}")
        return 0

    console.rule("3. simulate on the RTL")
    summary = simulate_export(export_dir, pixels=pixels, labels=labels, trace=args.trace,
                              raster=out / "raster.png", console=console)

    console.rule("4. report")
    print_summary(summary, console, "spikeforge demo: digits test set on the RTL")
    table = Table(title="network")
    table.add_column("layer")
    for column in ("fan-in", "fan-out", "w_bits", "v_bits", "theta", "mode"):
        table.add_column(column, justify="right")
    for layer in network.layers:
        mode = layer.fire_mode.value if layer.fires else "membrane"
        table.add_row(layer.name, str(layer.fan_in), str(layer.fan_out), str(layer.w_bits),
                      str(layer.v_bits), ",".join(map(str, layer.theta.tolist())), mode)
    console.print(table)
    for key, label in (("test_float_ann", "float ANN"), ("test_float_snn", "float SNN"),
                       ("test_int", "integer golden model")):
        if key in meta.metrics:
            console.print(f"trainer's {label} test accuracy: {meta.metrics[key]:.2%}")
    console.print(f"training: {train_seconds:.0f} s; spike raster: {out / 'raster.png'}")
    if summary.mismatches:
        console.print("[red]the RTL differs from the golden model: see the mismatches above[/red]")
        return 2
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))

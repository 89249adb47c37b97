"""``spikeforge sim EXPORT_DIR``: the exported network on the RTL in Verilator, over a test set.

Prints accuracy, agreement with the golden model (predictions, scores, counters, every spike
and membrane of the traced images), cycles per inference against the cycle model, synaptic
operations and utilization, and writes a spike raster of the first image as the RTL produced it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

#: Clock the throughput figures assume: the ULX3S (ECP5) build of the demo network at 8 lanes
#: closes timing at 100 MHz (docs/synthesis.md); pass --clock-mhz for another board.
DEFAULT_CLOCK_MHZ = 100.0


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
                        help="clock for the inferences-per-second figure (default 48)")
    parser.add_argument("--raster", type=Path, default=None,
                        help="spike raster PNG of the first image (default: EXPORT_DIR/../"
                             "raster.png)")


@dataclass
class SimSummary:
    images: int
    traced: int
    rtl_accuracy: float
    golden_accuracy: float
    agreement: float
    mismatches: int
    cycles_mean: float
    cycles_min: int
    cycles_max: int
    synops_mean: float
    utilization: float
    images_per_wall_second: float
    cycles_per_wall_second: float
    lanes: int
    clock_mhz: float

    @property
    def inferences_per_second(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles_mean

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("images (traced in full)", f"{self.images} ({self.traced})"),
            ("RTL accuracy", f"{self.rtl_accuracy:.2%}"),
            ("golden-model accuracy", f"{self.golden_accuracy:.2%}"),
            ("RTL = golden (predictions)", f"{self.agreement:.2%}"),
            ("mismatches (any field)", str(self.mismatches)),
            ("cycles / inference (mean, min..max)",
             f"{self.cycles_mean:,.0f} ({self.cycles_min:,}..{self.cycles_max:,})"),
            ("cycle model exact", "yes" if self.mismatches == 0 else "see mismatches"),
            ("synaptic operations / inference", f"{self.synops_mean:,.0f}"),
            (f"utilization = SynOps / (P={self.lanes} x cycles)", f"{self.utilization:.3f}"),
            (f"inferences / s at {self.clock_mhz:g} MHz", f"{self.inferences_per_second:,.0f}"),
            ("Verilator: images / wall s", f"{self.images_per_wall_second:,.1f}"),
            ("Verilator: simulated cycles / wall s", f"{self.cycles_per_wall_second:,.0f}"),
        ]


def simulate_export(export_dir, *, pixels: torch.Tensor, labels: torch.Tensor, trace: int = 50,
                    lanes: int | None = None, clock_mhz: float = DEFAULT_CLOCK_MHZ,
                    raster: Path | None = None, console: Console | None = None) -> SimSummary:
    """Run ``pixels`` through the exported network on the RTL; compare; return the summary."""
    from sim.network_check import build_accelerator, compare, simulate
    from sw.export import load_manifest
    from sw.plots import spike_raster

    console = console or Console()
    manifest = load_manifest(export_dir)
    network, lanes = manifest.network, lanes or manifest.lanes
    trace = min(trace, len(pixels))
    with console.status("elaborating and building the accelerator with Verilator "
                        "(cached after the first time)"):
        built = build_accelerator(network, lanes, taps=True)
    with Progress(TextColumn("simulating on the RTL"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("sim", total=len(pixels))
        report = simulate(network, lanes, pixels, trace=max(trace, 1 if raster else 0),
                          built=built, progress=lambda done: bar.update(task, completed=done))
    comparison = compare(network, lanes, pixels, report)
    if comparison.mismatches:
        console.print(f"[red]{comparison.summary()}[/red]")
    results = report["results"]
    golden = torch.tensor(comparison.golden_predictions)
    predictions = torch.tensor([r["prediction"] for r in results])
    cycles = torch.tensor([r["cycles"] for r in results], dtype=torch.float64)
    synops = torch.tensor([sum(r["synops"]) for r in results], dtype=torch.float64)
    if raster is not None and "layers" in results[0]:
        first = results[0]
        frames = _frames(first["input"], network.n_inputs)
        layers = [_frames(layer["spikes"], lay.fan_out)
                  for layer, lay in zip(first["layers"], network.layers, strict=True)]
        membranes = None
        if not network.layers[-1].fires:
            membranes = torch.tensor(first["layers"][-1]["membranes"])
        spike_raster(frames, layers, raster, layer_names=[lay.name for lay in network.layers],
                     title=f"RTL spikes, image 0 (label {int(labels[0])}, "
                           f"predicted {first['prediction']})", readout_membranes=membranes)
    wall = report["wall_seconds"]
    return SimSummary(
        images=len(results), traced=comparison.traced,
        rtl_accuracy=(predictions == labels).double().mean().item(),
        golden_accuracy=(golden == labels).double().mean().item(),
        agreement=(predictions == golden).double().mean().item(),
        mismatches=len(comparison.mismatches),
        cycles_mean=cycles.mean().item(), cycles_min=int(cycles.min()),
        cycles_max=int(cycles.max()), synops_mean=synops.mean().item(),
        utilization=(synops.sum() / (lanes * cycles.sum())).item(),
        images_per_wall_second=len(results) / wall,
        cycles_per_wall_second=cycles.sum().item() / wall,
        lanes=lanes, clock_mhz=clock_mhz)


def _frames(steps: list[list[int]], width: int) -> torch.Tensor:
    frames = torch.zeros((len(steps), width), dtype=torch.int64)
    for t, addresses in enumerate(steps):
        frames[t, addresses] = 1
    return frames


def print_summary(summary: SimSummary, console: Console, title: str) -> None:
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in summary.rows():
        table.add_row(name, value)
    console.print(table)


def run(args: argparse.Namespace) -> int:
    from sw.data import DatasetError, load_dataset
    from sw.export import ExportError

    console = Console()
    try:
        pixels, labels = load_dataset(args.dataset, root=args.data_root, split=args.split)
    except DatasetError as error:
        print(f"spikeforge sim: error: {error}", file=sys.stderr)
        return 1
    if args.limit is not None:
        pixels, labels = pixels[:args.limit], labels[:args.limit]
    raster = args.raster or args.export_dir.resolve().parent / "raster.png"
    try:
        summary = simulate_export(args.export_dir, pixels=pixels, labels=labels,
                                  trace=args.trace, lanes=args.lanes, clock_mhz=args.clock_mhz,
                                  raster=raster, console=console)
    except ExportError as error:
        print(f"spikeforge sim: error: {error}", file=sys.stderr)
        return 1
    print_summary(summary, console, f"{args.export_dir} on the RTL ({args.dataset} {args.split})")
    console.print(f"spike raster of image 0: {raster}")
    return 0 if summary.mismatches == 0 else 2

"""An exported network on the RTL in Verilator, over a test set, as one call.

:func:`simulate_export` builds the accelerator of an export folder (cached after the first
time), runs every image through it, compares predictions, scores, counters, cycle counts and
(for the first ``trace`` images) every spike and membrane with the golden model, and returns a
:class:`SimSummary`. ``spikeforge sim`` and ``spikeforge demo`` print it with
:func:`print_summary`; a notebook reads its fields::

    import spikeforge as sf
    from spikeforge.sw.data import load_dataset
    pixels, labels = load_dataset("digits", split="test")
    summary = sf.simulate("out/export", pixels=pixels, labels=labels, progress=False)
    summary.agreement, summary.cycles_mean
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from spikeforge.hw.layer import check_lanes
from spikeforge.sim.network_check import build_accelerator, compare, simulate
from spikeforge.sw.export import load_manifest, require_hardware_support
from spikeforge.sw.plots import spike_raster

__all__ = ["DEFAULT_CLOCK_MHZ", "SimSummary", "simulate_export", "print_summary"]

#: Clock the throughput figures assume: the ULX3S (ECP5) build of the demo network at 8 lanes
#: closes timing at 100 MHz (docs/synthesis.md); pass ``clock_mhz`` for another board.
DEFAULT_CLOCK_MHZ = 100.0


@dataclass
class SimSummary:
    """What one :func:`simulate_export` run measured; ``mismatches == 0`` means the RTL did
    exactly what the golden and cycle models say (``mismatch_report`` lists the first ones)."""

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
    mismatch_report: str = ""

    @property
    def inferences_per_second(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles_mean

    def rows(self) -> list[tuple[str, str]]:
        """``(quantity, formatted value)`` pairs, in the order the table shows them."""
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
                    raster: Path | None = None, progress: bool = True,
                    console: Console | None = None) -> SimSummary:
    """Run ``pixels`` (``int[N, n_inputs]``) through the network of ``export_dir`` on the RTL.

    The export is loaded and verified with :func:`spikeforge.sw.export.load_manifest` (an
    :class:`~spikeforge.sw.export.ExportError` if it is damaged); ``lanes`` overrides the
    export's lane count. Every image's prediction, scores, counters and cycle count are
    compared with the golden and cycle models, the first ``trace`` images spike by spike and
    membrane by membrane; ``labels`` (``int[N]``) give the accuracies. With ``raster`` a spike
    raster of image 0, as the RTL produced it, is written there (PNG). ``clock_mhz`` only scales
    :attr:`SimSummary.inferences_per_second`. ``progress`` shows a build status and a progress
    bar on ``console`` (a new one by default). A mismatch is not an exception: it is counted in
    the returned :class:`SimSummary`. An export the hardware cannot run (the direct encoder,
    convolution or pooling layers) is refused with an
    :class:`~spikeforge.sw.export.UnsupportedNetworkError` before anything is built.
    """
    console = console or Console()
    manifest = load_manifest(export_dir)
    require_hardware_support(manifest.network, str(export_dir))
    network = manifest.network
    lanes = manifest.lanes if lanes is None else lanes  # 0 is refused, not read as 'default'
    check_lanes(lanes)
    pixels = torch.as_tensor(pixels)
    if pixels.dim() != 2:
        raise ValueError(f"images must be int[N, {network.n_inputs}], not shape "
                         f"{tuple(pixels.shape)}")
    if pixels.shape[1] != network.n_inputs:  # checked before any build: the RTL would wait
        raise ValueError(f"the images have {pixels.shape[1]} pixels each but the network of "
                         f"{export_dir} takes {network.n_inputs} inputs")
    if len(pixels) != len(labels):
        raise ValueError(f"{len(pixels)} images but {len(labels)} labels")
    trace = min(trace, len(pixels))
    sim_trace = max(trace, 1 if raster else 0)
    if progress:
        with console.status("elaborating and building the accelerator with Verilator "
                            "(cached after the first time)"):
            built = build_accelerator(network, lanes, taps=True)
        with Progress(TextColumn("simulating on the RTL"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("sim", total=len(pixels))
            report = simulate(network, lanes, pixels, trace=sim_trace, built=built,
                              progress=lambda done: bar.update(task, completed=done))
    else:
        report = simulate(network, lanes, pixels, trace=sim_trace,
                          built=build_accelerator(network, lanes, taps=True))
    comparison = compare(network, lanes, pixels, report)
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
        lanes=lanes, clock_mhz=clock_mhz,
        mismatch_report=comparison.summary() if comparison.mismatches else "")


def _frames(steps: list[list[int]], width: int) -> torch.Tensor:
    frames = torch.zeros((len(steps), width), dtype=torch.int64)
    for t, addresses in enumerate(steps):
        frames[t, addresses] = 1
    return frames


def print_summary(summary: SimSummary, console: Console, title: str) -> None:
    """Print the mismatches (if any, in red) and the summary as one table titled ``title``."""
    if summary.mismatch_report:
        console.print(summary.mismatch_report, style="red", markup=False, highlight=False)
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for name, value in summary.rows():
        table.add_row(name, value)
    console.print(table)

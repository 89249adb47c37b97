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

``weights="spram"`` simulates the UP5K bitstream's weight store instead of ROMs: the board top
(UART, link bridge, accelerator) with the weight store in SPRAM, empty at start, the weights
loaded over the link by the host client as ``spikeforge run`` loads them on the board
(:func:`simulate_link`, testbench :mod:`spikeforge.sw.tb_spram`), then every image classified
through the link.
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from spikeforge.hw.layer import check_lanes
from spikeforge.sim.network_check import build_accelerator, compare, simulate
from spikeforge.sw.export import load_manifest, require_hardware_support
from spikeforge.sw.golden import Network
from spikeforge.sw.interface import MAX_WORDS
from spikeforge.sw.plots import spike_raster

__all__ = ["DEFAULT_CLOCK_MHZ", "WEIGHT_STORES", "LINK_DIVISOR", "SimSummary",
           "simulate_export", "LinkBuild", "build_link", "simulate_link",
           "link_op_budget_cycles", "print_summary"]

#: Clock the throughput figures assume: the ULX3S (ECP5) build of the demo network at 8 lanes
#: closes timing at 100 MHz (docs/synthesis.md); pass ``clock_mhz`` for another board.
DEFAULT_CLOCK_MHZ = 100.0
#: Where the weights live: ``rom`` (the bitstream's ROMs) or ``spram`` (loaded over the link).
WEIGHT_STORES = ("rom", "spram")
#: Clock cycles per UART bit of the simulated link, and the clock period. The board runs the
#: baud rate of ``constraints/BOARD.toml``; the simulation sends the same frames at clock / 8, as
#: the board test does, so that a weight load takes seconds of simulation, not minutes.
LINK_DIVISOR = 8
LINK_CLOCK_NS = 10
#: The device's inter-byte timeout in the simulation: six byte times.
LINK_TIMEOUT_BYTES = 6
#: Attempts of one transaction by the testbench's client (``LinkClient(retries=2)``), and one
#: second of its timeouts in byte times of the simulated line (far more than the device's
#: inter-byte timeout, as on a real link).
LINK_ATTEMPTS = 3
LINK_CLIENT_SECOND_BYTES = 200


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
    #: ``rom``, or ``spram``: the layers the board reports in SPRAM (``W_INFO``) started empty,
    #: and ``loaded_layers`` (``weight_words`` 32-bit words) went over the link before the
    #: first image
    weights: str = "rom"
    spram_layers: tuple[int, ...] = ()
    loaded_layers: tuple[int, ...] = ()
    weight_words: int = 0

    @property
    def inferences_per_second(self) -> float:
        return self.clock_mhz * 1e6 / self.cycles_mean

    def rows(self) -> list[tuple[str, str]]:
        """``(quantity, formatted value)`` pairs, in the order the table shows them."""
        weights = []
        if self.weights == "spram":
            layers = ", ".join(map(str, self.spram_layers))
            loaded = (f"loaded over the link ({self.weight_words:,} words)"
                      if self.loaded_layers else "NOT loaded")
            weights = [(f"weights of layer {layers}", f"SPRAM, {loaded}")]
        return [
            *weights,
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
                    console: Console | None = None, weights: str = "rom") -> SimSummary:
    """Run ``pixels`` (``int[N, n_inputs]``) through the network of ``export_dir`` on the RTL.

    The export is loaded and verified with :func:`spikeforge.sw.export.load_manifest` (an
    :class:`~spikeforge.sw.export.ExportError` if it is damaged); ``lanes`` overrides the
    export's lane count. Every image's prediction, scores, counters and cycle count are
    compared with the golden and cycle models, the first ``trace`` images spike by spike and
    membrane by membrane; ``labels`` (``int[N]``) give the accuracies. With ``raster`` a spike
    raster of image 0, as the RTL produced it, is written there (PNG). ``clock_mhz`` only scales
    :attr:`SimSummary.inferences_per_second`. ``progress`` shows a build status and a progress
    bar on ``console`` (a new one by default). A mismatch is not an exception: it is counted in
    the returned :class:`SimSummary`. An export the hardware cannot run (a stride-2
    convolution, say: :func:`spikeforge.sw.export.hardware_support`) is refused with an
    :class:`~spikeforge.sw.export.UnsupportedNetworkError` before anything is built.

    ``weights`` is where the weights live: ``"rom"`` (the bitstream's ROMs, the accelerator
    alone) or ``"spram"``: the board top (UART, link bridge, accelerator) with the weight store
    in SPRAM, as the UP5K bitstream has it when its memory plan needs SPRAM
    (``spikeforge synth --board icebreaker``), empty at start and loaded over the link by the
    host client before the first image, as ``spikeforge run`` does on the board; every image
    then goes through the link (:func:`simulate_link`). The comparison is the same.
    """
    if weights not in WEIGHT_STORES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_STORES)}, not {weights!r}")
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
    spram = weights == "spram"
    if spram and importlib.util.find_spec("cocotbext") is None:
        raise RuntimeError("weights='spram' drives the board's UART with cocotbext-uart, which "
                           "is not installed: pip install 'cocotbext-uart>=0.1.4,<0.2' (it is "
                           "in spikeforge's test extra)")

    def make():
        if spram:
            return build_link(network, lanes)
        return build_accelerator(network, lanes, taps=True)

    def run(built, report_progress=None):
        if spram:
            return simulate_link(export_dir, network, lanes, pixels, trace=sim_trace,
                                 built=built, progress=report_progress)
        return simulate(network, lanes, pixels, trace=sim_trace, built=built,
                        progress=report_progress)

    if progress:
        what = ("the board top (UART, link, accelerator with its weights in SPRAM)" if spram
                else "the accelerator")
        with console.status(f"elaborating and building {what} with Verilator (cached after "
                            "the first time)"):
            built = make()
        title = ("loading the SPRAM weights over the link, then simulating" if spram
                 else "simulating on the RTL")
        with Progress(TextColumn(title), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("sim", total=len(pixels))
            report = run(built, lambda done: bar.update(task, completed=done))
    else:
        report = run(make())
    comparison = compare(network, lanes, pixels, report)
    results = report["results"]
    golden = torch.tensor(comparison.golden_predictions)
    predictions = torch.tensor([r["prediction"] for r in results])
    cycles = torch.tensor([r["cycles"] for r in results], dtype=torch.float64)
    synops = torch.tensor([sum(r["synops"]) for r in results], dtype=torch.float64)
    if raster is not None and "layers" in results[0]:
        first = results[0]
        frames = _frames(first["input"], network.n_inputs)
        # the traced layers are the neuron layers (pooling has no neurons in the hardware)
        neurons = [lay for lay in network.layers if lay.kind != "sumpool"]
        layers = [_frames(layer["spikes"], lay.fan_out)
                  for layer, lay in zip(first["layers"], neurons, strict=True)]
        membranes = None
        if not network.layers[-1].fires:
            membranes = torch.tensor(first["layers"][-1]["membranes"])
        spike_raster(frames, layers, raster, layer_names=[lay.name for lay in neurons],
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
        mismatch_report=comparison.summary() if comparison.mismatches else "",
        weights=weights, spram_layers=tuple(report.get("spram_layers", ())),
        loaded_layers=tuple(report.get("loaded", ())),
        weight_words=int(report.get("weight_chunks", 0)))


def link_op_budget_cycles(byte_cycles: int, compute_cycles: int, timeout_cycles: int, *,
                          attempts: int = LINK_ATTEMPTS,
                          client_timeout_bytes: int | None = None) -> int:
    """The longest one link transaction can take, every retry included: per attempt the
    longest request and reply frames (a full WRITE_BLOCK), the client's reply timeout and the
    accelerator's worst case (cycle model), plus the device's own frame timeout."""
    frame = 9 + 4 * MAX_WORDS
    wait = LINK_CLIENT_SECOND_BYTES if client_timeout_bytes is None else client_timeout_bytes
    return attempts * ((2 * frame + wait) * byte_cycles + compute_cycles) + timeout_cycles


@dataclass(frozen=True)
class LinkBuild:
    """A built board top for :func:`simulate_link`: the simulator build and the port metadata
    of the accelerator's taps (watched inside the design)."""

    build: object
    tap_ports: dict
    divisor: int = LINK_DIVISOR


def build_link(network: Network, lanes: int, *, divisor: int = LINK_DIVISOR,
               spram: bool = True) -> LinkBuild:
    """Elaborate and build :class:`spikeforge.hw.boards.LinkTop` around the accelerator of
    ``network`` at ``lanes`` lanes with its weight store in SPRAM (``spram_layers`` = every
    layer: the store is in SPRAM as a whole; ``spram=False``: in ROM, as on the ULX3S) and its
    taps on, its UART at ``divisor`` clocks a bit (Verilator, or ``$SPIKEFORGE_SIM``; cached by
    the Verilog's hash)."""
    from spikeforge.hw.accelerator import NetworkAccelerator
    from spikeforge.hw.boards import LinkTop
    from spikeforge.hw.rtl import port_metadata
    from spikeforge.sim.runner import build

    accelerator = NetworkAccelerator(network, lanes, taps=True,
                                     spram_layers=range(len(network.layers)) if spram else ())
    byte_cycles = 10 * divisor
    top = LinkTop(accelerator, divisor=divisor, timeout_cycles=LINK_TIMEOUT_BYTES * byte_cycles)
    taps = {name: info for name, info in port_metadata(accelerator).items()
            if name.startswith(("input_spikes__", "layer"))}
    return LinkBuild(build(top, "link_spram" if spram else "link_rom"), taps, divisor)


def simulate_link(export_dir, network: Network, lanes: int, pixels, *, trace: int = 0,
                  load_weights: bool = True, built: LinkBuild | None = None,
                  progress: Callable[[int], None] | None = None, stream: bool = False,
                  divisor: int = LINK_DIVISOR, clock_ns: float = LINK_CLOCK_NS) -> dict:
    """Classify ``pixels`` on the board top in simulation, the SPRAM weights loaded first.

    The design is :func:`build_link`'s (``built``, or built here); the host is the real client
    in the testbench :mod:`spikeforge.sw.tb_spram`: it connects, loads the weights of the
    export in ``export_dir`` (``network`` is that export's network) into the SPRAM layers over
    the link unless ``load_weights`` is false (then SPRAM stays empty: what a board computes
    when the host skips the load), classifies every image and reads its counters, tracing the
    first ``trace`` images at the accelerator's taps. ``progress(done)`` is called from a
    watcher thread as images complete. Returns the testbench's report, in
    :func:`spikeforge.sim.network_check.simulate`'s format (for
    :func:`~spikeforge.sim.network_check.compare`) with ``spram_layers`` (the layers the
    board reports in SPRAM), ``loaded`` and ``weight_chunks``.

    ``stream`` classifies the images as ``spikeforge run`` does on a board whose pixels fit
    STREAM tokens (:meth:`spikeforge.sw.link.LinkClient.classify_stream`): the results then
    have no counters, and the report has ``stream_sim_ns``, the simulated time the stream took.
    ``divisor`` (clocks a UART bit) and ``clock_ns`` set the line and the clock: by default
    clock / 8 at 100 MHz; a board's own (``spikeforge.hw.boards.BoardTop``) give the time a
    board takes. Every host call has a budget of simulated time; one that runs past it fails the run
    (:class:`spikeforge.sim.runner.TestFailure`).
    """
    from spikeforge.sim.network_model import worst_case_network_cycles
    from spikeforge.sim.runner import run_tests, watch_progress

    built = built or build_link(network, lanes, divisor=divisor)
    if built.divisor != divisor:
        raise ValueError(f"The built board top's UART divides by {built.divisor}, not {divisor}")
    pixels = torch.as_tensor(pixels, dtype=torch.int64)
    byte_cycles = 10 * divisor
    timeout_cycles = LINK_TIMEOUT_BYTES * byte_cycles
    with tempfile.TemporaryDirectory(prefix="spikeforge-link-") as tmp:
        counter = Path(tmp) / "progress"
        params = {
            "images": pixels.tolist(), "trace": int(trace),
            "export_dir": str(Path(export_dir).resolve()), "lanes": lanes,
            "load_weights": bool(load_weights), "divisor": divisor,
            "clock_ns": clock_ns, "timeout_cycles": timeout_cycles, "stream": bool(stream),
            "client_second_bytes": LINK_CLIENT_SECOND_BYTES,
            "op_budget_cycles": link_op_budget_cycles(
                byte_cycles, math.ceil(worst_case_network_cycles(network, lanes)),
                timeout_cycles),
            "tap_ports": built.tap_ports, "progress": str(counter)}
        with watch_progress(counter, progress):
            report = run_tests(built.build, "spikeforge.sw.tb_spram", params=params)
    if progress:
        progress(len(pixels))
    return report


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

"""Run a network on the RTL and compare everything it did with the golden and cycle models.

:func:`simulate` builds the accelerator (Verilator or Icarus, cached by the Verilog's hash), runs
the cocotb testbench :mod:`spikeforge.sim.tb_network` over a batch of images, and returns the raw
report.
:func:`compare` is the scoreboard: predictions, scores, every counter, the exact cycle count,
and for traced images every spike and every end-of-timestep membrane of every layer.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spikeforge.sim.network_model import network_timing, worst_case_network_cycles
from spikeforge.sw.golden import Network, Trace

__all__ = ["Mismatch", "Comparison", "build_accelerator", "simulate", "compare"]


@dataclass
class Mismatch:
    image: int
    what: str
    expected: object
    observed: object

    def __str__(self) -> str:
        return (f"image {self.image}: {self.what}: expected {self.expected}, "
                f"observed {self.observed}")


@dataclass
class Comparison:
    images: int
    traced: int
    mismatches: list[Mismatch] = field(default_factory=list)
    cycles: list[int] = field(default_factory=list)
    predictions: list[int] = field(default_factory=list)
    golden_predictions: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def summary(self, limit: int = 12) -> str:
        lines = [f"{len(self.mismatches)} mismatch(es) over {self.images} images "
                 f"({self.traced} traced)"]
        lines += [f"  {m}" for m in self.mismatches[:limit]]
        return "\n".join(lines)


def build_accelerator(network: Network, lanes: int, *, taps: bool = True, name: str = "accel",
                      sim: str | None = None, x: str | None = None):
    """Elaborate and build the accelerator for ``sim`` (default ``$SPIKEFORGE_SIM``, else
    Verilator); returns a :class:`spikeforge.sim.runner.Build`."""
    from spikeforge.hw.accelerator import NetworkAccelerator
    from spikeforge.sim.runner import build

    return build(NetworkAccelerator(network, lanes, taps=taps), name, sim=sim, x=x)


def simulate(network: Network, lanes: int, pixels, *, trace: int = 0,
             writes: Sequence[tuple[int, int, int]] = (), dropped: Sequence[int] = (),
             read: Sequence[int] = (), taps: bool = True,
             progress: Callable[[int], None] | None = None, built=None,
             sim: str | None = None, x: str | None = None, idle: bool = False,
             backpressure: bool = False, seed: int = 0) -> dict:
    """Classify ``pixels`` (``int[N, n_inputs]``) on the RTL; return the testbench's report.

    ``writes`` are ``(image, address, value)`` register writes issued before that image;
    ``dropped`` lists images the design must refuse (they may hold out-of-range pixels);
    ``read`` lists registers read once before the first image (``report["registers"]``).
    ``progress(done)`` is called from a watcher thread as images complete. ``sim`` and ``x``
    choose the simulator and Verilator's X mode (:func:`spikeforge.sim.runner.build`).
    ``idle`` inserts idle cycles into the pixel stream and ``backpressure`` into the result
    stream (patterns from ``seed``); neither is counted, so every figure stays exact. Every
    image has a cycle budget, twice the cycle model's worst case plus the readout; a design
    that hangs fails with the state it was in.
    """
    from spikeforge.sim.runner import run_tests, watch_progress

    pixels = torch.as_tensor(pixels, dtype=torch.int64)
    built = built or build_accelerator(network, lanes, taps=taps or trace > 0, sim=sim, x=x)
    budget = 2 * worst_case_network_cycles(network, lanes) + 4 * network.n_outputs + 256
    if idle or backpressure:
        budget *= 3  # the stalled streams run at a third of full speed at worst
    with tempfile.TemporaryDirectory(prefix="spikeforge-job-") as tmp:
        counter = Path(tmp) / "progress"
        job = {"images": pixels.tolist(), "trace": trace, "writes": [list(w) for w in writes],
               "dropped": list(dropped), "read": [int(a) for a in read],
               "budget_cycles": budget, "idle": idle, "backpressure": backpressure,
               "seed": seed, "progress": str(counter)}
        start = time.perf_counter()
        with watch_progress(counter, progress):
            report = run_tests(built, "spikeforge.sim.tb_network", params=job)
        if progress:
            progress(len(pixels))
        report["total_wall_seconds"] = time.perf_counter() - start
    return report


def _addresses(frame: torch.Tensor) -> list[int]:
    return frame.nonzero().flatten().tolist()


def compare(network: Network, lanes: int, pixels, report: dict, *,
            networks: Sequence[Network] | None = None) -> Comparison:
    """The scoreboard. ``networks[i]`` is the golden network in force for image ``i`` (to follow
    run-time register writes); by default ``network`` for every image."""
    pixels = torch.as_tensor(pixels, dtype=torch.int64)
    results = report["results"]
    networks = list(networks) if networks is not None else [network] * len(pixels)
    comparison = Comparison(len(results), sum("layers" in r for r in results))
    if len(results) != len(pixels):
        comparison.mismatches.append(Mismatch(-1, "number of results", len(pixels), len(results)))
        return comparison
    # One batched golden run per distinct network; dropped images are checked by the caller
    # (the golden model refuses their pixels too).
    expected: dict[int, tuple[Trace, list, int]] = {}
    for net in {id(n): n for n in networks}.values():
        images = [i for i, r in enumerate(results) if networks[i] is net and "dropped" not in r]
        if images:
            trace = net.trace(pixels[images])
            timings = network_timing(net, lanes, trace, pixels[images])
            for b, i in enumerate(images):
                expected[i] = (trace, timings, b)
    for i, observed in enumerate(results):
        if i not in expected:
            continue
        net = networks[i]
        trace, timings, b = expected[i]
        timing = timings[b]
        # A pooling layer is folded into the next layer's addresses: its register block
        # reads 0 (no synaptic operations, spikes or cycles of its own).
        neuron = [layer.kind != "sumpool" for layer in net.layers]
        layer_cycles = iter(timing.layers)
        expect = {
            "prediction": int(trace.prediction[b]),
            "scores": trace.output[b].tolist(),
            "cycles": timing.cycles,
            "layer_cycles": [next(layer_cycles) if n else 0 for n in neuron],
            "synops": [int(layer.synops[b]) for layer in trace.layers],
            "spikes": [int(layer.spikes[b].sum()) if n else 0
                       for layer, n in zip(trace.layers, neuron, strict=True)],
            "status": 0,
        }
        for key, value in expect.items():
            if observed[key] != value:
                comparison.mismatches.append(Mismatch(i, key, value, observed[key]))
        comparison.cycles.append(observed["cycles"])
        comparison.predictions.append(observed["prediction"])
        comparison.golden_predictions.append(expect["prediction"])
        if "layers" not in observed:
            continue
        frames = trace.inputs[b]
        want_input = [_addresses(frames[t]) for t in range(net.timesteps)]
        if observed["input"] != want_input:
            comparison.mismatches.append(Mismatch(i, "input spikes", want_input, observed["input"]))
        traced = [(k, t) for k, t in enumerate(trace.layers) if neuron[k]]
        for (k, layer_trace), seen in zip(traced, observed["layers"], strict=True):
            spikes = layer_trace.spikes[b]
            want = [_addresses(spikes[t]) for t in range(net.timesteps)]
            # a convolution emits a step's spikes position by position: compare as sets
            if [sorted(step) for step in seen["spikes"]] != want:
                comparison.mismatches.append(Mismatch(i, f"layer {k} spikes", want, seen["spikes"]))
            membranes = layer_trace.membranes[b].tolist()
            if seen["membranes"] != membranes:
                comparison.mismatches.append(
                    Mismatch(i, f"layer {k} membranes", membranes, seen["membranes"]))
    return comparison


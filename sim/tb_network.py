"""cocotb testbench of :class:`spikeforge.hw.accelerator.NetworkAccelerator`: the whole network
on the RTL.

The pytest side (or ``spikeforge sim``) hands a job to :func:`spikeforge.sim.runner.run_tests`
as the run's parameters (:func:`spikeforge.sim.network_check.simulate`); the testbench
classifies every image of the job, records what the design's ports show, and writes a report
that :mod:`spikeforge.sim.network_check` compares with the golden model and the cycle model.
The testbench itself knows nothing about the expected values: driver and monitors here, model
and checker there. The bus models are the shared ones of :mod:`spikeforge.sim.harness`.

Job (:func:`spikeforge.sim.harness.tb_params`)::

    {"images": [[pixel, ...], ...],       one list of n_inputs integers per image
     "trace": N,                          record every spike and membrane of the first N images
     "writes": [[image, addr, value]],    register writes issued just before image `image`
     "read": [addr, ...],                 registers to read once, before the first image
     "dropped": [image, ...],             images the design must refuse (a pixel too large):
                                          the testbench waits, expects no result, reads and
                                          clears STATUS
     "idle": false, "backpressure": false, idle cycles on the pixel stream, back-pressure on
                                          the result stream (loading pixels and reading results
                                          are not counted: every figure stays exact)
     "seed": S,                           of the stall patterns
     "progress": path,                    where the number of images done is written
     "budget_cycles": N}                  cycles an image may take from its first pixel to its
                                          last result (a bound from the cycle model,
                                          spikeforge.sim.network_model.worst_case_network_cycles);
                                          past it the test fails with the state it was in

Every wait is bounded in simulated clock cycles, never in wall-clock time.

Report (``params["report"]``): one entry per image with ``scores``, ``prediction``,
``cycles``, per-layer ``synops`` and ``spikes`` counters, and for traced images ``input`` /
``layers`` (spike addresses per timestep, end-of-timestep membranes); ``wall_seconds`` (for the
simulation speed ``spikeforge sim`` prints; no test asserts it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cocotb
from cocotb.triggers import FallingEdge
from cocotb.utils import get_sim_time

from spikeforge.sim.harness import (
    BudgetExceeded,
    ClockReset,
    Port,
    RegisterBus,
    StreamSink,
    StreamSource,
    port_metadata,
    random_pauses,
    state_of,
    tb_params,
)
from spikeforge.sw.interface import SPEC

__all__ = ["NetworkTB", "SpikeTap", "MembraneTap", "BudgetExceeded"]

_PERIOD_NS = 10
#: Cycles an image may take when the job gives no budget.
_DEFAULT_BUDGET = 10_000_000
#: Stall insertion of the ``idle`` and ``backpressure`` options.
IDLE_PROBABILITY, BACKPRESSURE_PROBABILITY = 0.4, 0.5


def _signed32(value: int) -> int:
    return value - (1 << 32) if value & (1 << 31) else value


class SpikeTap:
    """One spike tap (a stream without ``ready``): its beats as address lists per timestep."""

    def __init__(self, dut, clk, meta: dict, prefix: str):
        self.sink = StreamSink(dut, clk, prefix, active=False)
        self.port = Port(None, meta["ports"][f"{prefix}__payload"])

    def take(self) -> list[list[int]]:
        steps, current = [], []
        unpack = self.port.unpack
        while not self.sink.empty():
            word = self.sink.recv_nowait()
            if unpack(word, "eot"):
                steps.append(current)
                current = []
            else:
                current.append(unpack(word, "addr"))
        return steps


class MembraneTap:
    """One neuron layer's membrane tap: its end-of-timestep membranes as ``[T][fan_out]``.

    Group ``g`` of a layer of output shape ``(C, OH, OW)`` and ``Gc`` channel groups holds
    channels ``(g % Gc) * P + lane`` at position ``g // Gc`` (``hw/core_layout.py``; a dense
    layer is ``OH = OW = 1``): each value goes to its C-major index."""

    def __init__(self, dut, clk, meta: dict, prefix: str, lanes: int, layer: dict,
                 timesteps: int):
        self.sink = StreamSink(dut, clk, prefix, active=False)
        self.port = Port(None, meta["ports"][f"{prefix}__payload"])
        self.lanes, self.fan_out, self.timesteps = lanes, layer["fan_out"], timesteps
        self.channels, oh, ow = layer["out_shape"]
        self.positions, self.channel_groups = oh * ow, layer["channel_groups"]

    def take(self) -> list[list[int | None]]:
        values: list[list[int | None]] = [[None] * self.fan_out for _ in range(self.timesteps)]
        unpack = self.port.unpack
        while not self.sink.empty():
            word = self.sink.recv_nowait()
            t, g = unpack(word, "timestep"), unpack(word, "group")
            position, group = divmod(g, self.channel_groups)
            for lane, v in enumerate(unpack(word, "v")):
                c = group * self.lanes + lane
                if c < self.channels and t < self.timesteps:
                    values[t][c * self.positions + position] = v
        return values


class NetworkTB:
    """Clock, reset, register access and image classification on the accelerator's ports.

    ``read_register``, ``write_register``, ``classify`` and ``read_counters`` mirror
    :class:`spikeforge.sw.link.LinkClient` (async here), so host-side code reads the same
    against the board and against this simulation. Addresses come from the spec
    (:mod:`spikeforge.sw.interface`).
    """

    def __init__(self, dut, *, idle: bool = False, backpressure: bool = False,
                 stall_seed: object = 0):
        self.dut = dut
        self.meta = port_metadata()
        self.params = self.meta["parameters"]
        self.clock = ClockReset(dut, _PERIOD_NS)
        self.clk = self.clock.clk
        self.budget = _DEFAULT_BUDGET
        self.image = -1             # the image being classified, for failure messages
        self.received = 0           # result beats of that image so far
        self.bus = RegisterBus(dut, self.clk, "bus")
        self.pixels = StreamSource(dut, self.clk, "pixels")
        self.results = StreamSink(dut, self.clk, "results")
        if idle:
            self.pixels.set_pause_generator(random_pauses(f"{stall_seed}/idle",
                                                          IDLE_PROBABILITY))
        if backpressure:
            self.results.set_pause_generator(random_pauses(f"{stall_seed}/backpressure",
                                                           BACKPRESSURE_PROBABILITY))
        self.spike_taps: list[SpikeTap] = []
        self.membrane_taps: list[MembraneTap] = []
        if "input_spikes__valid" in self.meta["ports"]:
            self.spike_taps.append(SpikeTap(dut, self.clk, self.meta, "input_spikes"))
            for layer in self.params["layers"]:     # neuron layers; pooling has no tap
                k = layer["index"]
                self.spike_taps.append(SpikeTap(dut, self.clk, self.meta, f"layer{k}_spikes"))
                self.membrane_taps.append(MembraneTap(
                    dut, self.clk, self.meta, f"layer{k}_membranes", self.params["lanes"],
                    layer, self.params["timesteps"]))

    def trace(self, on: bool) -> None:
        """Record the taps, or let the simulator run free."""
        for tap in [*self.spike_taps, *self.membrane_taps]:
            tap.sink.active = on

    async def reset(self) -> None:
        await self.clock.reset()

    async def write_register(self, address: int, value: int) -> None:
        await self.bus.write(address, value)

    async def read_register(self, address: int) -> int:
        return await self.bus.read(address)

    def state(self) -> str:
        """Where the design is, for a budget that ran out: phase, layer, busy, results."""
        return (f"image {self.image}: {state_of(self.dut, ['phase'])} (the accelerator's "
                f"_Phase) {state_of(self.dut, ['busy', 'pixels__ready', 'results__valid'])}, "
                f"{self.pixels.sent} pixels taken, {len(self.pixels.queue)} left, "
                f"{self.received} result beats received")

    async def send_pixels(self, pixels) -> None:
        """Stream one image into ``pixels`` (waiting at most :attr:`budget` cycles)."""
        self.pixels.send_nowait(pixels)
        await self.clock.within(self.pixels.wait(), self.budget, "sending the pixels",
                                self.state)

    async def classify(self, pixels) -> tuple[list[int], int]:
        """Stream one image in and collect its results: ``(scores, prediction)``."""
        self.received = 0
        await self.send_pixels(pixels)
        values = []
        while True:
            what = "waiting for the first result" if not values else "waiting for a result"
            word = await self.clock.within(self.results.recv(), self.budget, what, self.state)
            values.append(_signed32(word & 0xFFFF_FFFF))
            self.received = len(values)
            if (word >> 32) & 1:
                break
        await FallingEdge(self.clk)  # the last beat's transfer
        return values[:-1], values[-1]

    async def send_refused(self, pixels, wait_cycles: int = 64) -> dict:
        """Stream an image the design must drop; report whether any result appeared."""
        dut = self.dut
        before = self.results.count()
        await self.send_pixels(pixels)
        busy = 0
        for _ in range(wait_cycles):
            busy |= dut.busy.value == 1
            await FallingEdge(self.clk)
        produced = self.results.count() != before
        self.results.clear()
        status = await self.read_register(SPEC.address("STATUS"))
        await self.write_register(SPEC.address("STATUS"), status)
        return {"dropped": not produced and not busy, "status": status,
                "status_after_clear": await self.read_register(SPEC.address("STATUS"))}

    async def read_counters(self) -> dict:
        layers = range(self.params["n_layers"])
        address = SPEC.address
        return {
            "cycles": await self.read_register(address("CYCLES")),
            "status": await self.read_register(address("STATUS")),
            "synops": [await self.read_register(address("SYNOPS", k)) for k in layers],
            "spikes": [await self.read_register(address("SPIKES", k)) for k in layers],
            "layer_cycles": [await self.read_register(address("LAYER_CYCLES", k))
                             for k in layers],
        }


@cocotb.test()
async def run_job(dut):
    """Classify every image of the job, tracing the first ``trace`` of them."""
    job = tb_params()
    tb = NetworkTB(dut, idle=bool(job.get("idle")), backpressure=bool(job.get("backpressure")),
                   stall_seed=job.get("seed", 0))
    tb.budget = int(job.get("budget_cycles") or _DEFAULT_BUDGET)
    await tb.reset()
    writes: dict[int, list[tuple[int, int]]] = {}
    for image, addr, value in job.get("writes", []):
        writes.setdefault(image, []).append((addr, value))
    n_trace = job.get("trace", 0) if tb.spike_taps else 0
    dropped = set(job.get("dropped", []))
    progress = job.get("progress")
    registers = {str(addr): await tb.read_register(addr) for addr in job.get("read", [])}
    results = []
    start = time.perf_counter()
    for index, pixels in enumerate(job["images"]):
        tb.image = index
        for addr, value in writes.get(index, []):
            await tb.write_register(addr, value)
        if index in dropped:
            results.append(await tb.send_refused(pixels))
            continue
        tb.trace(index < n_trace)
        scores, prediction = await tb.classify(pixels)
        tb.trace(False)
        entry = {"scores": scores, "prediction": prediction, **await tb.read_counters()}
        if index < n_trace:
            taps = [tap.take() for tap in tb.spike_taps]
            entry["input"] = taps[0]
            entry["layers"] = [{"spikes": spikes, "membranes": tap.take()}
                               for spikes, tap in zip(taps[1:], tb.membrane_taps, strict=True)]
        results.append(entry)
        if progress:
            Path(progress).write_text(f"{index + 1}\n")
    report = {"results": results, "registers": registers,
              "wall_seconds": time.perf_counter() - start, "sim_time_ns": get_sim_time(unit="ns")}
    Path(job["report"]).write_text(json.dumps(report))

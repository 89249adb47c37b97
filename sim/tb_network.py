"""cocotb testbench of :class:`spikeforge.hw.accelerator.NetworkAccelerator`: the whole network
on the RTL.

The pytest side (or ``spikeforge sim``) writes a job file and launches this module through
:func:`spikeforge.sim.runner.run_tests`; the testbench classifies every image of the job,
records what the design's ports show, and writes a report that
:mod:`spikeforge.sim.network_check` compares with the golden model and the cycle model. The
testbench itself knows nothing about the expected values: driver and monitors here, model and
checker there.

Job (``$SPIKEFORGE_NET_JOB``, JSON)::

    {"images": [[pixel, ...], ...],       one list of n_inputs integers per image
     "trace": N,                          record every spike and membrane of the first N images
     "writes": [[image, addr, value]],    register writes issued just before image `image`
     "read": [addr, ...],                 registers to read once, before the first image
     "dropped": [image, ...],             images the design must refuse (a pixel too large):
                                          the testbench waits, expects no result, reads and
                                          clears STATUS
     "budget_cycles": N}                  cycles an image may take from its first pixel to its
                                          last result (a bound from the cycle model,
                                          spikeforge.sim.network_model.worst_case_network_cycles);
                                          past it the test fails with the state it was in

Every wait is bounded in simulated clock cycles, never in wall-clock time.

Report (``$SPIKEFORGE_TB_REPORT``): one entry per image with ``scores``, ``prediction``,
``cycles``, per-layer ``synops`` and ``spikes`` counters, and for traced images ``input`` /
``layers`` (spike addresses per timestep, end-of-timestep membranes).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, FallingEdge, RisingEdge, with_timeout
from cocotb.utils import get_sim_time

from spikeforge.sim.tb_layer import Port
from spikeforge.sw.interface import SPEC

__all__ = ["NetworkTB", "SpikeTap", "MembraneTap", "BudgetExceeded"]

_PERIOD_NS = 10
#: Cycles an image may take when the job gives no budget.
_DEFAULT_BUDGET = 10_000_000


class BudgetExceeded(AssertionError):
    """A wait ran past its cycle budget; the message says where the design was."""


def _signed32(value: int) -> int:
    return value - (1 << 32) if value & (1 << 31) else value


class SpikeTap:
    """Collects one spike tap into ``steps``: a list of address lists, one per timestep."""

    def __init__(self, dut, meta: dict, prefix: str):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.payload = Port(getattr(dut, f"{prefix}__payload"), meta["ports"][f"{prefix}__payload"])
        self.steps: list[list[int]] = [[]]

    def sample(self) -> None:
        if int(self.valid.value):
            word = int(self.payload.handle.value)
            if self.payload.unpack(word, "eot"):
                self.steps.append([])
            else:
                self.steps[-1].append(self.payload.unpack(word, "addr"))

    def take(self) -> list[list[int]]:
        steps, self.steps = self.steps[:-1], [[]]
        return steps


class MembraneTap:
    """Collects one engine's end-of-timestep membranes into ``[T][fan_out]``."""

    def __init__(self, dut, meta: dict, prefix: str, lanes: int, fan_out: int, timesteps: int):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.payload = Port(getattr(dut, f"{prefix}__payload"), meta["ports"][f"{prefix}__payload"])
        self.lanes, self.fan_out, self.timesteps = lanes, fan_out, timesteps
        self.clear()

    def clear(self) -> None:
        self.values: list[list[int | None]] = [[None] * self.fan_out
                                               for _ in range(self.timesteps)]

    def sample(self) -> None:
        if int(self.valid.value):
            word = int(self.payload.handle.value)
            t = self.payload.unpack(word, "timestep")
            g = self.payload.unpack(word, "group")
            for lane, v in enumerate(self.payload.unpack(word, "v")):
                i = g * self.lanes + lane
                if i < self.fan_out and t < self.timesteps:
                    self.values[t][i] = v

    def take(self) -> list[list[int | None]]:
        values = self.values
        self.clear()
        return values


class NetworkTB:
    """Clock, reset, register access and image classification on the accelerator's ports.

    ``read_register``, ``write_register``, ``classify`` and ``read_counters`` mirror
    :class:`spikeforge.sw.link.LinkClient` (async here), so host-side code reads the same
    against the board and against this simulation. Addresses come from the spec
    (:mod:`spikeforge.sw.interface`).
    """

    def __init__(self, dut):
        self.dut = dut
        self.meta = json.loads(Path(os.environ["SPIKEFORGE_TB_META"]).read_text())
        self.params = self.meta["parameters"]
        self.clk = dut.clk
        self.budget = _DEFAULT_BUDGET
        self.image = -1             # the image being classified, for failure messages
        self.received = 0           # result beats of that image so far
        Clock(dut.clk, _PERIOD_NS, unit="ns").start()
        dut.rst.value = 1
        dut.pixels__valid.value = 0
        dut.results__ready.value = 0
        dut.bus__w_en.value = 0
        dut.bus__r_en.value = 0
        self.tracing = False
        self._trace_on = Event()
        self.spike_taps: list[SpikeTap] = []
        self.membrane_taps: list[MembraneTap] = []
        if "input_spikes__valid" in self.meta["ports"]:
            self.spike_taps.append(SpikeTap(dut, self.meta, "input_spikes"))
            for k, layer in enumerate(self.params["layers"]):
                self.spike_taps.append(SpikeTap(dut, self.meta, f"layer{k}_spikes"))
                self.membrane_taps.append(MembraneTap(
                    dut, self.meta, f"layer{k}_membranes", self.params["lanes"],
                    layer["fan_out"], self.params["timesteps"]))
            cocotb.start_soon(self._monitor())

    def trace(self, on: bool) -> None:
        """Record the taps (per-cycle Python, slow) or let Verilator run free."""
        self.tracing = on
        if on:
            self._trace_on.set()

    async def _monitor(self) -> None:
        # Sampled at the falling edge: a tap shown here transfers at the next rising edge.
        while True:
            if not self.tracing:
                self._trace_on.clear()
                await self._trace_on.wait()
            await FallingEdge(self.clk)
            for tap in self.spike_taps:
                tap.sample()
            for tap in self.membrane_taps:
                tap.sample()

    async def reset(self) -> None:
        self.dut.rst.value = 1
        for _ in range(2):
            await FallingEdge(self.clk)
        self.dut.rst.value = 0
        await FallingEdge(self.clk)

    async def write_register(self, address: int, value: int) -> None:
        self.dut.bus__addr.value = address
        self.dut.bus__w_data.value = value & 0xFFFF_FFFF
        self.dut.bus__w_en.value = 1
        await FallingEdge(self.clk)
        self.dut.bus__w_en.value = 0

    async def read_register(self, address: int) -> int:
        self.dut.bus__addr.value = address
        self.dut.bus__r_en.value = 1
        await FallingEdge(self.clk)
        self.dut.bus__r_en.value = 0
        return int(self.dut.bus__r_data.value)

    def state(self) -> str:
        """Where the design is, for a budget that ran out: phase, layer, busy, results."""
        dut = self.dut

        def read(name: str) -> str:
            try:
                value = getattr(dut, name).value
            except AttributeError:
                return "?"
            return str(int(value)) if value.is_resolvable else str(value)

        return (f"image {self.image}: phase={read('phase')} (0 LOAD, 1 ENCODE, 2 DRAIN, 3 START, "
                f"4 RUN, 5 READOUT) layer_k={read('layer_k')} busy={read('busy')} "
                f"pixels ready={read('pixels__ready')} results valid={read('results__valid')}, "
                f"{self.received} result beats received")

    async def _bounded(self, trigger, cycles: int, what: str):
        try:
            return await with_timeout(trigger, cycles * _PERIOD_NS, "ns")
        except TimeoutError as exc:  # cocotb's SimTimeoutError is a TimeoutError
            raise BudgetExceeded(f"{what}: no progress within {cycles} cycles; "
                                 f"{self.state()}") from exc

    async def send_pixels(self, pixels) -> None:
        """Drive one image into ``pixels``, one beat per cycle while the design is ready
        (waiting at most :attr:`budget` cycles in all)."""
        dut = self.dut
        waited = 0
        for j, pixel in enumerate(pixels):
            dut.pixels__payload.value = int(pixel)
            dut.pixels__valid.value = 1
            while True:
                ready = int(dut.pixels__ready.value)
                await FallingEdge(self.clk)
                if ready:
                    break
                waited += 1
                if waited > self.budget:
                    raise BudgetExceeded(f"pixel {j} not taken within {self.budget} cycles; "
                                         f"{self.state()}")
        dut.pixels__valid.value = 0

    async def classify(self, pixels) -> tuple[list[int], int]:
        """Stream one image in and collect its results: ``(scores, prediction)``."""
        dut = self.dut
        self.received = 0
        await self.send_pixels(pixels)
        dut.results__ready.value = 1
        if not int(dut.results__valid.value):
            # no Python in between: the simulator runs free, up to the image's budget
            await self._bounded(RisingEdge(dut.results__valid), self.budget,
                                "waiting for the first result")
            await FallingEdge(self.clk)
        values = []
        idle = 0
        while True:
            if int(dut.results__valid.value):
                idle = 0
                word = int(dut.results__payload.value)
                values.append(_signed32(word & 0xFFFF_FFFF))
                self.received = len(values)
                if (word >> 32) & 1:
                    await FallingEdge(self.clk)
                    break
            else:
                idle += 1
                if idle > self.budget:
                    raise BudgetExceeded(f"results stopped for {self.budget} cycles before the "
                                         f"prediction; {self.state()}")
            await FallingEdge(self.clk)
        dut.results__ready.value = 0
        return values[:-1], values[-1]

    async def send_refused(self, pixels, wait_cycles: int = 64) -> dict:
        """Stream an image the design must drop; report whether any result appeared."""
        dut = self.dut
        await self.send_pixels(pixels)
        produced = busy = 0
        for _ in range(wait_cycles):
            produced |= int(dut.results__valid.value)
            busy |= int(dut.busy.value)
            await FallingEdge(self.clk)
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
    job = json.loads(Path(os.environ["SPIKEFORGE_NET_JOB"]).read_text())
    tb = NetworkTB(dut)
    tb.budget = int(job.get("budget_cycles") or _DEFAULT_BUDGET)
    await tb.reset()
    writes: dict[int, list[tuple[int, int]]] = {}
    for image, addr, value in job.get("writes", []):
        writes.setdefault(image, []).append((addr, value))
    n_trace = job.get("trace", 0) if tb.spike_taps else 0
    dropped = set(job.get("dropped", []))
    progress = os.environ.get("SPIKEFORGE_PROGRESS")
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
    Path(os.environ["SPIKEFORGE_TB_REPORT"]).write_text(json.dumps(report))

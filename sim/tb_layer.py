"""cocotb testbench of :class:`spikeforge.hw.layer.LayerEngine` on Verilator.

Driver -> DUT -> monitors -> scoreboard, the scoreboard's model being the golden model
(:mod:`spikeforge.sw.golden`) and the cycle model (:mod:`spikeforge.sim.cycle_model`). Every
inference is compared in full: every output spike of every timestep (as an ordered address
list), every membrane at the end of every timestep (from the engine's membrane port), the busy
cycles the testbench counts, and the engine's ``cycles``, ``synops`` and ``spikes`` counters.

All bus models act at the falling clock edge: inputs change there and outputs are sampled there,
half a cycle away from the rising edge at which the design registers them. The engine's
``ready`` depends only on its registers, so the value read at the falling edge is the one the
next rising edge sees.

The pytest launchers (``tests/test_layer_rtl.py``) build the design with
:mod:`spikeforge.sim.runner` and pass the run's settings through the environment:

``SPIKEFORGE_TB_META``    the build's port metadata JSON (:mod:`spikeforge.hw.rtl`)
``SPIKEFORGE_TB_CONFIG``  the :class:`spikeforge.sim.layer_cases.EngineConfig` as JSON
``SPIKEFORGE_SEED``       random seed of the regression (printed; set it to replay a run)
``SPIKEFORGE_CASES``      number of random cases, or ``SPIKEFORGE_CASE`` for a single one
``SPIKEFORGE_TB_PLAN``    the random regression's precomputed cases
                          (:func:`spikeforge.sim.layer_cases.regression_plan`)
``SPIKEFORGE_TB_REPORT``  where the testbench writes its JSON report
``SPIKEFORGE_TB_BUDGET``  cycles one inference may take before the testbench gives up with the
                          state it was in (from :func:`spikeforge.sim.cycle_model.worst_case_cycles`
                          of the build, with room for stalls); 1,000,000 when unset

Every wait is counted in clock cycles of simulated time, never in wall-clock time: a loaded
machine runs slower, not differently.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge
from cocotb.utils import get_sim_time

from spikeforge.sw.interface import SPEC

# torch, the golden model and Amaranth are imported inside the tests that need them: the random
# regression runs from a precomputed plan, and importing torch in the simulator process costs
# several seconds per run. The register offsets come from the spec, which is pure Python.

__all__ = ["Port", "SpikeDriver", "SpikeMonitor", "MembraneMonitor", "LayerTB", "Observation",
           "Scoreboard"]


_PERIOD_NS = 10
#: Cycles an inference may take when ``$SPIKEFORGE_TB_BUDGET`` is not set.
_DEFAULT_BUDGET = 1_000_000

#: Offset of a per-layer register on the engine's ``cfg`` bus: ``reg("THETA", t)``.
reg = SPEC.layer_offset
#: Bits of the engine's STATUS register.
BAD_ADDR, BUSY_WRITE = (SPEC.layer_reg("STATUS").field(name).mask
                        for name in ("bad_addr", "busy_write"))


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


class Port:
    """A packed Verilog port with named fields, described by the build's metadata."""

    def __init__(self, handle, info: dict):
        self.handle = handle
        self.info = info

    def pack(self, **values) -> int:
        word = 0
        for name, value in values.items():
            f = self.info["fields"][name]
            word |= (int(value) & ((1 << f["width"]) - 1)) << f["offset"]
        return word

    def unpack(self, word: int, name: str):
        f = self.info["fields"][name]
        raw = (word >> f["offset"]) & ((1 << f["width"]) - 1)
        if "elements" in f:
            e = f["elements"]
            mask = (1 << e["width"]) - 1
            values = [(raw >> (k * e["width"])) & mask for k in range(e["count"])]
            return [_signed(v, e["width"]) if e["signed"] else v for v in values]
        return _signed(raw, f["width"]) if f["signed"] else raw


class SpikeDriver:
    """Drives a spike stream: ``send(beats)`` queues ``(addr, eot)`` beats.

    ``valid_probability < 1`` inserts random idle cycles (a producer that stalls).
    """

    def __init__(self, dut, clk, meta: dict, prefix: str = "inputs"):
        self.clk = clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = Port(getattr(dut, f"{prefix}__payload"), meta["ports"][f"{prefix}__payload"])
        self.queue: deque[tuple[int, int]] = deque()
        self.valid_probability = 1.0
        self.rng = random.Random(0)
        self.sent = 0
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send(self, beats) -> None:
        self.queue.extend(beats)

    def idle(self) -> bool:
        return not self.queue

    async def _run(self) -> None:
        presenting = taken = False
        while True:
            await FallingEdge(self.clk)
            if taken:
                self.queue.popleft()
                self.sent += 1
            presenting = bool(self.queue) and (self.valid_probability >= 1.0
                                               or self.rng.random() < self.valid_probability)
            if presenting:
                addr, eot = self.queue[0]
                self.payload.handle.value = self.payload.pack(addr=addr, eot=eot)
            self.valid.value = int(presenting)
            taken = presenting and bool(int(self.ready.value))


class SpikeMonitor:
    """Collects a spike stream into per-timestep address lists (the marker closes a list).

    ``ready_probability < 1`` applies random backpressure.
    """

    def __init__(self, dut, clk, meta: dict, prefix: str = "outputs"):
        self.clk = clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = Port(getattr(dut, f"{prefix}__payload"), meta["ports"][f"{prefix}__payload"])
        self.ready_probability = 1.0
        self.rng = random.Random(1)
        self.steps: list[list[int]] = []
        self.current: list[int] = []
        self.ready.value = 1
        self._task = cocotb.start_soon(self._run())

    def clear(self) -> None:
        self.steps, self.current = [], []

    async def _run(self) -> None:
        while True:
            await FallingEdge(self.clk)
            # ready set here and valid read here both hold until the next rising edge
            ready = self.ready_probability >= 1.0 or self.rng.random() < self.ready_probability
            self.ready.value = int(ready)
            if ready and int(self.valid.value):
                word = int(self.payload.handle.value)
                if self.payload.unpack(word, "eot"):
                    self.steps.append(self.current)
                    self.current = []
                else:
                    self.current.append(self.payload.unpack(word, "addr"))


class MembraneMonitor:
    """Collects the membrane port: ``v[t][g * lanes + lane]`` for every beat."""

    def __init__(self, dut, clk, meta: dict, prefix: str = "membranes"):
        self.clk = clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.payload = Port(getattr(dut, f"{prefix}__payload"), meta["ports"][f"{prefix}__payload"])
        self.lanes = self.payload.info["fields"]["v"]["elements"]["count"]
        self.beats: list[tuple[int, int, list[int]]] = []
        self._task = cocotb.start_soon(self._run())

    def clear(self) -> None:
        self.beats = []

    def membranes(self, timesteps: int, fan_out: int) -> list[list[int | None]]:
        out: list[list[int | None]] = [[None] * fan_out for _ in range(timesteps)]
        for t, g, values in self.beats:
            for lane, value in enumerate(values):
                i = g * self.lanes + lane
                if t < timesteps and i < fan_out:
                    out[t][i] = value
        return out

    async def _run(self) -> None:
        while True:
            await FallingEdge(self.clk)
            if int(self.valid.value):
                word = int(self.payload.handle.value)
                self.beats.append((self.payload.unpack(word, "timestep"),
                                   self.payload.unpack(word, "group"),
                                   self.payload.unpack(word, "v")))


@dataclass
class Observation:
    """What one inference did, as seen from the design's ports."""

    spikes: list[list[int]]
    membranes: list[list[int | None]]
    busy_cycles: int
    counters: dict[str, int] = field(default_factory=dict)
    bad_addr: int = 0


class LayerTB:
    """Clock, reset, register access, memory loading and inference runs of one engine."""

    def __init__(self, dut):
        self.dut = dut
        self.meta = json.loads(Path(os.environ["SPIKEFORGE_TB_META"]).read_text())
        self.params = self.meta["parameters"]
        self.lanes = self.params["lanes"]
        self.groups = self.params["groups"]
        self.clk = dut.clk
        self.budget = int(os.environ.get("SPIKEFORGE_TB_BUDGET") or _DEFAULT_BUDGET)
        Clock(dut.clk, _PERIOD_NS, unit="ns").start()
        dut.rst.value = 1
        dut.start.value = 0
        dut.cfg__w_en.value = 0
        dut.cfg__r_en.value = 0
        if self.params["loadable"]:
            dut.weight_load__en.value = 0
            dut.bias_load__en.value = 0
        self.driver = SpikeDriver(dut, self.clk, self.meta)
        self.monitor = SpikeMonitor(dut, self.clk, self.meta)
        self.membrane_monitor = MembraneMonitor(dut, self.clk, self.meta)

    async def reset(self) -> None:
        self.dut.rst.value = 1
        for _ in range(2):
            await FallingEdge(self.clk)
        self.dut.rst.value = 0
        await FallingEdge(self.clk)

    async def write_reg(self, addr: int, value: int) -> None:
        self.dut.cfg__addr.value = addr
        self.dut.cfg__w_data.value = value & 0xFFFF_FFFF
        self.dut.cfg__w_en.value = 1
        await FallingEdge(self.clk)
        self.dut.cfg__w_en.value = 0

    async def read_reg(self, addr: int, signed: bool = False) -> int:
        self.dut.cfg__addr.value = addr
        self.dut.cfg__r_en.value = 1
        await FallingEdge(self.clk)
        self.dut.cfg__r_en.value = 0
        value = int(self.dut.cfg__r_data.value)
        return _signed(value, 32) if signed else value

    async def load_words(self, weight_words, bias_words) -> None:
        """Write the weight and bias memories (loadable variant only)."""
        for prefix, words in (("weight_load", weight_words), ("bias_load", bias_words)):
            port = getattr(self.dut, f"{prefix}__addr")
            en, data = getattr(self.dut, f"{prefix}__en"), getattr(self.dut, f"{prefix}__data")
            for addr, word in enumerate(words):
                port.value = addr
                data.value = word
                en.value = 1
                await FallingEdge(self.clk)
            en.value = 0

    async def load_layer(self, layer) -> None:
        """Write ``layer``'s weights and biases (a :class:`spikeforge.sw.golden.DenseLayer`)."""
        from spikeforge.hw.layer import pack_bias
        from spikeforge.hw.rom import pack_weights

        p = self.params
        await self.load_words(pack_weights(layer.weight, self.lanes, p["w_bits"]),
                              pack_bias(layer.bias, self.lanes, p["v_bits"]))

    async def program(self, layer) -> None:
        """Write the run-time registers: leak shift, v_init, fire mode and every threshold."""
        from spikeforge.sim.layer_cases import register_writes

        for addr, value in register_writes(layer):
            await self.write_reg(addr, value)

    def state(self) -> str:
        """What the engine and the bus models are doing, for a budget that ran out."""
        dut = self.dut

        def bit(handle) -> str:
            return str(handle.value) if not handle.value.is_resolvable else str(int(handle.value))

        return (f"busy={bit(dut.busy)} cycles counter={bit(dut.cycles)} "
                f"inputs valid={bit(self.driver.valid)} ready={bit(self.driver.ready)}, "
                f"{self.driver.sent} beats sent, {len(self.driver.queue)} left; "
                f"outputs valid={bit(self.monitor.valid)}, {len(self.monitor.steps)} output "
                f"timesteps closed ({len(self.monitor.current)} spikes in the open one); "
                f"{len(self.membrane_monitor.beats)} membrane beats")

    async def wait_idle(self, budget: int | None = None, what: str = "inference") -> int:
        """Wait (at falling edges) until ``busy`` is low; return the cycles it was high.

        Fails with :meth:`state` after ``budget`` cycles (default :attr:`budget`)."""
        budget = budget or self.budget
        busy_cycles = 0
        while int(self.dut.busy.value):
            busy_cycles += 1
            if busy_cycles > budget:
                raise TimeoutError(f"{what} still busy after its budget of {budget} cycles: "
                                   f"{self.state()}")
            await FallingEdge(self.clk)
        return busy_cycles

    async def infer(self, beats, *, budget: int | None = None) -> Observation:
        """Strobe ``start``, stream ``beats`` in, and collect until ``busy`` falls (at most
        ``budget`` cycles, default :attr:`budget`)."""
        dut = self.dut
        self.monitor.clear()
        self.membrane_monitor.clear()
        dut.start.value = 1
        await FallingEdge(self.clk)  # the rising edge just passed sampled start: cycle 0 ended
        dut.start.value = 0
        self.driver.send(beats)
        busy_cycles = await self.wait_idle(budget)
        counters = {name: int(getattr(dut, name).value) for name in ("cycles", "synops", "spikes")}
        counters["reg_cycles"] = await self.read_reg(reg("CYCLES"))
        counters["reg_synops"] = await self.read_reg(reg("SYNOPS"))
        counters["reg_spikes"] = await self.read_reg(reg("SPIKES"))
        status = await self.read_reg(reg("STATUS"))
        timesteps = self.params["timesteps"]
        return Observation(self.monitor.steps, self.membrane_monitor.membranes(
            timesteps, self.params["fan_out"]), busy_cycles, counters,
            int(bool(status & BAD_ADDR)))


class Scoreboard:
    """Compares observations with expectations: the golden model's trace and the cycle model
    (:func:`spikeforge.sim.layer_cases.expectation`, computed here or ahead of the simulation)."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        self.cases = 0
        self.saturations = 0
        self.cycles = 0
        self.failures: list[str] = []

    def check(self, label: str, layer, spikes_in, obs: Observation, *,
              check_cycles: bool = True, bad: list[int] | None = None) -> list[str]:
        """Compare with the golden model run here (needs torch)."""
        from spikeforge.sim.layer_cases import expectation

        return self.compare(label, expectation(layer, spikes_in, self.lanes, bad), obs,
                            check_cycles=check_cycles)

    def compare(self, label: str, expect: dict, obs: Observation, *,
                check_cycles: bool = True) -> list[str]:
        errors = []
        want_spikes = expect["spikes"]
        if obs.spikes != want_spikes:
            pairs = enumerate(zip(obs.spikes, want_spikes, strict=False))
            t = next((t for t, (a, b) in pairs if a != b), min(len(obs.spikes), len(want_spikes)))
            errors.append(f"spikes differ first at timestep {t}: rtl "
                          f"{obs.spikes[t] if t < len(obs.spikes) else 'missing'} golden "
                          f"{want_spikes[t] if t < len(want_spikes) else 'missing'}")
        want_v = expect["membranes"]
        if obs.membranes != want_v:
            for t, (a, b) in enumerate(zip(obs.membranes, want_v, strict=False)):
                if a != b:
                    i = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
                    errors.append(f"membrane differs first at timestep {t} neuron {i}: rtl "
                                  f"{a[i]} golden {b[i]}")
                    break
        c = obs.counters
        for name, value in (("synops", expect["synops"]), ("spikes", expect["spike_count"])):
            for key in (name, f"reg_{name}"):
                if c[key] != value:
                    errors.append(f"counter {key} = {c[key]}, expected {value}")
        if c["cycles"] != obs.busy_cycles or c["reg_cycles"] != obs.busy_cycles:
            errors.append(f"cycles counter {c['cycles']} (register {c['reg_cycles']}) but busy "
                          f"was high for {obs.busy_cycles} cycles")
        if check_cycles and obs.busy_cycles != expect["cycles"]:
            errors.append(f"cycles {obs.busy_cycles}, cycle model predicts {expect['cycles']}")
        self.cases += 1
        self.cycles += obs.busy_cycles
        self.saturations += bool(expect["saturating"])
        errors = [f"{label}: {e}" for e in errors]
        self.failures += errors
        return errors


# ---- the tests ------------------------------------------------------------------------------

_REPORT: dict = {"tests": {}, "failures": []}


def _report(name: str, **values) -> None:
    _REPORT["tests"][name] = values
    path = os.environ.get("SPIKEFORGE_TB_REPORT")
    if path:
        Path(path).write_text(json.dumps(_REPORT, indent=1))


def _config():
    from spikeforge.sim.layer_cases import EngineConfig

    return EngineConfig(**json.loads(os.environ["SPIKEFORGE_TB_CONFIG"]))


def _replay(config_name: str, seed: int, index: int | None = None) -> str:
    select = f"SPIKEFORGE_CASE={index} " if index is not None else ""
    return (f"SPIKEFORGE_SEED={seed} {select}.venv/bin/pytest tests/test_layer_rtl.py "
            f"-m 'not slow' -k '{config_name}'")


@cocotb.test()
async def random_regression(dut):
    """Random layers and spike trains on one build, each compared in full.

    The cases and their expectations come precomputed from ``$SPIKEFORGE_TB_PLAN``
    (:func:`spikeforge.sim.layer_cases.regression_plan`), so this test needs neither torch nor
    the golden model in the simulator process.
    """
    plan = json.loads(Path(os.environ["SPIKEFORGE_TB_PLAN"]).read_text())
    seed = plan["seed"]
    tb = LayerTB(dut)
    began, began_ns = time.perf_counter(), get_sim_time(unit="ns")
    await tb.reset()
    board = Scoreboard(tb.lanes)
    for case in plan["cases"]:
        await tb.load_words(case["weight_words"], case["bias_words"])
        for addr, value in case["writes"]:
            await tb.write_reg(addr, value)
        obs = await tb.infer([tuple(beat) for beat in case["beats"]])
        errors = board.compare(case["label"], case["expect"], obs)
        if errors:
            _REPORT["failures"] += errors
            _REPORT["replay"] = _replay(plan["config"], seed, case["index"])
            break
    _report("random_regression", cases=board.cases, saturating_cases=board.saturations,
            cycles=board.cycles, seed=seed, run_s=time.perf_counter() - began,
            sim_cycles=int(get_sim_time(unit="ns") - began_ns) // _PERIOD_NS)
    assert not board.failures, "\n".join(board.failures)


@cocotb.test()
async def rom_contents(dut):
    """The ROM variant: the reset contents and registers run the layer they were built from,
    then reprogrammed thresholds and leak shift change the next inference exactly."""
    import torch

    from spikeforge.sim.layer_cases import Case

    config = _config()
    seed = int(os.environ["SPIKEFORGE_SEED"])
    layer = config.rom_layer()
    tb = LayerTB(dut)
    await tb.reset()
    board = Scoreboard(tb.lanes)
    rng = random.Random(f"{seed}/{config.name}/rom")
    gen = torch.Generator().manual_seed(rng.getrandbits(62))
    trains = [(torch.rand((layer.timesteps, layer.fan_in), generator=gen) < 0.4).long()
              for _ in range(4)]
    if config.rom_seed == 2:
        trains[0] = torch.tensor([[1], [0], [1], [0]])
    for k, s_in in enumerate(trains):
        case = Case(layer, s_in, "rom", k)
        obs = await tb.infer(case.beats())
        board.check(f"rom reset values, train {k}", layer, s_in, obs)
        if config.rom_seed == 2 and k == 0:
            train = [int(0 in step) for step in obs.spikes]
            if train != [0, 1, 0, 1]:
                board.failures.append(f"seed 002 example: output train {train}, "
                                      "expected 0,1,0,1 (= 10)")
    # run-time reprogramming, no reset in between
    for k in range(3):
        theta = torch.tensor([rng.randint(1, (1 << (layer.v_bits - 1)) - 1)
                              for _ in range(layer.timesteps)])
        new = layer.with_(theta=theta, leak_shift=rng.randint(0, min(3, layer.v_bits)))
        await tb.program(new)
        case = Case(new, trains[k], "reprogrammed", k)
        obs = await tb.infer(case.beats())
        board.check(f"reprogrammed {k}", new, trains[k], obs)
    _report("rom_contents", cases=board.cases, seed=seed)
    _REPORT["failures"] += board.failures
    if board.failures:
        _REPORT["replay"] = _replay(config.name, seed)
    assert not board.failures, "\n".join(board.failures)


@cocotb.test()
async def directed(dut):
    """Directed cases on a loadable build: seed 002, empty timesteps, every neuron firing every
    step, thresholds and leak reprogrammed between inferences, bad input addresses, writes while
    busy, stalls and backpressure."""
    import torch

    from spikeforge.sim.layer_cases import Case, random_case
    from spikeforge.sw.golden import DenseLayer, FireMode

    torch.set_num_threads(1)  # pytest-xdist already runs one simulation per core
    config = _config()
    seed = int(os.environ["SPIKEFORGE_SEED"])
    tb = LayerTB(dut)
    await tb.reset()
    board = Scoreboard(tb.lanes)
    p = tb.params
    m, n, steps = p["fan_in"], p["fan_out"], p["timesteps"]
    base = random_case(config, seed, 10_000, style="plain")
    layer = base.layer.with_(fire_mode=FireMode.THRESHOLD, fires=True)

    # 1. every input timestep empty: only bias and leak act
    empty = torch.zeros((steps, m), dtype=torch.int64)
    await tb.load_layer(layer)
    await tb.program(layer)
    board.check("all timesteps empty", layer, empty, await tb.infer(Case(layer, empty, "", 0)
                                                                    .beats()))

    # 2. every neuron fires every step
    v_high = (1 << (p["v_bits"] - 1)) - 1
    hot = layer.with_(weight=layer.weight.clamp(min=0), bias=torch.full((n,), v_high),
                      theta=torch.ones(steps, dtype=torch.int64), leak_shift=0)
    await tb.load_layer(hot)
    await tb.program(hot)
    obs = await tb.infer(Case(hot, base.spikes_in, "", 0).beats())
    board.check("every neuron fires every step", hot, base.spikes_in, obs)
    if obs.spikes != [list(range(n))] * steps:
        board.failures.append("every neuron fires: not every neuron fired at every step")

    # 3. thresholds and leak reprogrammed between two inferences, no reset, same weights
    await tb.load_layer(layer)
    await tb.program(layer)
    board.check("before reprogramming", layer, base.spikes_in,
                await tb.infer(base.beats()))
    rng = random.Random(f"{seed}/{config.name}/reprogram")
    changed = layer.with_(theta=torch.tensor([rng.randint(1, max(1, v_high // 4))
                                              for _ in range(steps)]),
                          leak_shift=rng.randint(0, min(4, p["v_bits"])))
    for t in range(steps):
        await tb.write_reg(reg("THETA", t), int(changed.theta[t]))
    await tb.write_reg(reg("LEAK_SHIFT"), changed.leak_shift)
    for t in range(steps):
        got = await tb.read_reg(reg("THETA", t), signed=True)
        if got != int(changed.theta[t]):
            board.failures.append(f"THETA[{t}] reads {got}, wrote {int(changed.theta[t])}")
    board.check("after reprogramming", changed, base.spikes_in, await tb.infer(base.beats()))

    # 4. input addresses beyond fan-in: dropped, flag set, cost one cycle each
    beats, bad = [], []
    for t in range(steps):
        row = base.spikes_in[t].nonzero().flatten().tolist()
        extra = [m + rng.randint(0, 5) for _ in range(rng.randint(0, 2))] + [(1 << 16) - 1]
        mixed = [(j, 0) for j in row] + [(j, 0) for j in extra]
        rng.shuffle(mixed)
        beats += [*mixed, (0, 1)]
        bad.append(len(extra))
    obs = await tb.infer(beats)
    board.check("bad addresses", changed, base.spikes_in, obs, bad=bad)
    if obs.bad_addr != 1:
        board.failures.append("bad addresses: STATUS.bad_addr not set")
    await tb.write_reg(reg("STATUS"), BAD_ADDR)
    if await tb.read_reg(reg("STATUS")) & BAD_ADDR:
        board.failures.append("bad addresses: STATUS.bad_addr did not clear on write 1")
    obs = await tb.infer(base.beats())
    board.check("after bad addresses", changed, base.spikes_in, obs)
    if obs.bad_addr:
        board.failures.append("bad_addr set by an inference without bad addresses")

    # 5. a register write while busy is ignored and flagged
    tb.dut.start.value = 1
    await FallingEdge(tb.clk)
    tb.dut.start.value = 0
    await tb.write_reg(reg("THETA", 0), 12345)
    tb.driver.send(base.beats())
    await tb.wait_idle(what="inference with a write while busy")
    if await tb.read_reg(reg("THETA", 0), signed=True) != int(changed.theta[0]):
        board.failures.append("a THETA write while busy was not ignored")
    if not (await tb.read_reg(reg("STATUS"))) & BUSY_WRITE:
        board.failures.append("a write while busy did not set STATUS.busy_write")

    # 6. producer stalls and consumer backpressure: same spikes and membranes, more cycles
    tb.driver.valid_probability = 0.6
    tb.monitor.ready_probability = 0.5
    obs = await tb.infer(base.beats())
    board.check("stalls and backpressure", changed, base.spikes_in, obs, check_cycles=False)
    tb.driver.valid_probability = tb.monitor.ready_probability = 1.0

    # 7. seed 002's worked example on the first lane (other weights zero)
    if m >= 1:
        weight = torch.zeros((n, m), dtype=torch.int64)
        weight[0, 0] = 2
        radix = DenseLayer(weight=weight, bias=torch.zeros(n, dtype=torch.int64),
                           theta=torch.ones(steps, dtype=torch.int64), leak_shift=1,
                           fire_mode=FireMode.RADIX, w_bits=p["w_bits"], v_bits=p["v_bits"])
        if steps >= 4 and p["w_bits"] >= 3 and p["v_bits"] >= 4:
            s_in = torch.zeros((steps, m), dtype=torch.int64)
            s_in[:4, 0] = torch.tensor([1, 0, 1, 0])
            await tb.load_layer(radix)
            await tb.program(radix)
            obs = await tb.infer(Case(radix, s_in, "", 0).beats())
            board.check("seed 002 example", radix, s_in, obs)
            train = [int(0 in step) for step in obs.spikes[:4]]
            if train != [0, 1, 0, 1]:
                board.failures.append(f"seed 002 example: output train {train}, expected 0,1,0,1")

    _report("directed", cases=board.cases, seed=seed)
    _REPORT["failures"] += board.failures
    if board.failures:
        _REPORT["replay"] = _replay(config.name, seed)
    assert not board.failures, "\n".join(board.failures)

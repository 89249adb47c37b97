"""cocotb testbench of :class:`spikeforge.hw.layer.LayerEngine`.

Driver -> DUT -> monitors -> scoreboard, the scoreboard's model being the golden model
(:mod:`spikeforge.sw.golden`) and the cycle model (:mod:`spikeforge.sim.cycle_model`),
evaluated ahead of the simulation by :mod:`spikeforge.sim.layer_cases` in the pytest process:
every case arrives with its expectation, so this process loads neither torch nor the golden
model. Every inference is compared in full: every output spike of every timestep (as an ordered
address list), every membrane at the end of every timestep (from the engine's membrane port),
the busy cycles the testbench counts against the cycle model, and the engine's ``cycles``,
``synops`` and ``spikes`` counters (ports and registers).

The bus models are the shared ones of :mod:`spikeforge.sim.harness`. One cocotb test is one
scenario; every scenario runs with and without idle cycles on the input stream and
back-pressure on the output stream (``idle``, ``backpressure``: the cocotbext-axi
``TestFactory`` pattern, here ``cocotb.parametrize``). Under stalls the cycle count may only
grow; everything else must stay exactly as without them.

Parameters (:func:`spikeforge.sim.harness.tb_params`, written by ``tests/test_layer_rtl.py``
through :func:`spikeforge.sim.runner.run_tests`):

``config``         the :class:`spikeforge.sim.layer_cases.EngineConfig` (its ``name``)
``seed``           the run's seed (of the stall patterns; the cases name their own)
``budget_cycles``  cycles one inference may take before the test fails with the state it was
                   in (:func:`spikeforge.sim.cycle_model.worst_case_cycles` of the build, with
                   room for stalls)
``plan``           the random cases (:func:`spikeforge.sim.layer_cases.regression_plan`)
``stalled_cases``  how many of them ``random_regression_under_stalls`` runs
``scenarios``      the directed scenarios' layers, inputs and expectations
                   (:func:`spikeforge.sim.layer_cases.directed_plan`, ``rom_plan``)

Every wait is counted in clock cycles of simulated time, never in wall-clock time: a loaded
machine runs slower, not differently.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import cocotb
from cocotb.triggers import FallingEdge

from spikeforge.sim.harness import (
    BudgetExceeded,
    ClockReset,
    Port,
    RegisterBus,
    Report,
    StreamSink,
    StreamSource,
    WritePort,
    port_metadata,
    random_pauses,
    state_of,
    tb_params,
)
from spikeforge.sw.interface import SPEC

__all__ = ["LayerTB", "Observation", "Scoreboard"]


_PERIOD_NS = 10
#: Cycles an inference may take when the parameters give no budget.
_DEFAULT_BUDGET = 1_000_000
#: Stall insertion of the ``idle`` and ``backpressure`` variants: the input stream's ``valid``
#: is held low on 40 % of the cycles, the output stream's ``ready`` on 50 %.
IDLE_PROBABILITY, BACKPRESSURE_PROBABILITY = 0.4, 0.5

#: Offset of a per-layer register on the engine's ``cfg`` bus: ``reg("THETA", t)``.
reg = SPEC.layer_offset
#: Bits of the engine's STATUS register.
BAD_ADDR, BUSY_WRITE = (SPEC.layer_reg("STATUS").field(name).mask
                        for name in ("bad_addr", "busy_write"))


@dataclass
class Observation:
    """What one inference did, as seen from the design's ports."""

    spikes: list[list[int]]
    membranes: list[list[int | None]]
    busy_cycles: int
    counters: dict[str, int] = field(default_factory=dict)
    bad_addr: int = 0


class LayerTB:
    """One engine: clock and reset, the ``cfg`` register bus, the load ports, the input spike
    stream (source), the output spike stream (sink) and the membrane port (monitor)."""

    def __init__(self, dut, *, idle: bool = False, backpressure: bool = False,
                 stall_seed: object = 0):
        self.dut = dut
        self.params = tb_params()
        self.meta = port_metadata()
        self.design = self.meta["parameters"]
        self.lanes = self.design["lanes"]
        self.budget = int(self.params.get("budget_cycles") or _DEFAULT_BUDGET)
        self.clock = ClockReset(dut, _PERIOD_NS)
        self.clk = self.clock.clk
        dut.start.value = 0
        self.cfg = RegisterBus(dut, self.clk, "cfg")
        self.weight_load = self.bias_load = None
        if self.design["loadable"]:
            self.weight_load = WritePort(dut, self.clk, "weight_load")
            self.bias_load = WritePort(dut, self.clk, "bias_load")
        ports = self.meta["ports"]
        self.spike_port = Port(None, ports["inputs__payload"])
        self.membrane_port = Port(None, ports["membranes__payload"])
        self.inputs = StreamSource(dut, self.clk, "inputs")
        self.outputs = StreamSink(dut, self.clk, "outputs")
        self.membranes = StreamSink(dut, self.clk, "membranes")
        self.stalled = idle or backpressure
        if idle:
            self.inputs.set_pause_generator(random_pauses(f"{stall_seed}/idle",
                                                          IDLE_PROBABILITY))
        if backpressure:
            self.outputs.set_pause_generator(random_pauses(f"{stall_seed}/backpressure",
                                                           BACKPRESSURE_PROBABILITY))

    async def reset(self) -> None:
        await self.clock.reset()

    async def write_reg(self, addr: int, value: int) -> None:
        await self.cfg.write(addr, value)

    async def read_reg(self, addr: int, signed: bool = False) -> int:
        return await self.cfg.read(addr, signed=signed)

    async def load(self, case: dict) -> None:
        """A case's weight and bias words (loadable variant), then its register writes."""
        if "weight_words" in case:
            await self.weight_load.write(case["weight_words"])
            await self.bias_load.write(case["bias_words"])
        for addr, value in case.get("writes", []):
            await self.write_reg(addr, value)

    def state(self) -> str:
        """What the engine and the bus models are doing, for a budget that ran out."""
        return (f"{state_of(self.dut, ['busy', 'cycles'])} "
                f"inputs {state_of(self.dut, ['inputs__valid', 'inputs__ready'])}, "
                f"{self.inputs.sent} beats sent, {len(self.inputs.queue)} left; outputs "
                f"{state_of(self.dut, ['outputs__valid', 'outputs__ready'])}, "
                f"{self.outputs.count()} beats taken; {self.membranes.count()} membrane beats")

    async def start(self) -> None:
        """Strobe ``start`` for one cycle (ends at the falling edge after the rising edge that
        sampled it: cycle 0 of the inference has ended)."""
        self.outputs.clear()
        self.membranes.clear()
        self.dut.start.value = 1
        await FallingEdge(self.clk)
        self.dut.start.value = 0

    async def wait_idle(self, budget: int | None = None, what: str = "inference") -> int:
        """Wait (at falling edges) until ``busy`` is low; return the cycles it was high.

        Fails with :meth:`state` after ``budget`` cycles (default :attr:`budget`)."""
        budget = budget or self.budget
        busy, began = self.dut.busy, self.clock.now()
        # No Python per cycle while busy: wake when it falls, then at the next falling edge of
        # the clock. The cycles it was high are the falling edges between.
        while busy.value == 1:
            left = budget - (self.clock.now() - began)
            try:
                await self.clock.within(FallingEdge(busy), max(1, left), what, self.state)
            except BudgetExceeded as exc:
                raise BudgetExceeded(f"{what} still busy after its budget of {budget} cycles: "
                                     f"{self.state()}") from exc
            await FallingEdge(self.clk)
        return self.clock.now() - began

    def beats(self, beats) -> list[int]:
        pack = self.spike_port.pack
        return [pack(addr=addr, eot=eot) for addr, eot in beats]

    async def collect(self, busy_cycles: int) -> Observation:
        """Decode the monitors and read the counters after an inference."""
        dut, unpack = self.dut, self.spike_port.unpack
        steps, current = [], []
        for word in self.outputs.queue:
            if unpack(word, "eot"):
                steps.append(current)
                current = []
            else:
                current.append(unpack(word, "addr"))
        timesteps, fan_out = self.design["timesteps"], self.design["fan_out"]
        membranes: list[list[int | None]] = [[None] * fan_out for _ in range(timesteps)]
        m = self.membrane_port
        for word in self.membranes.queue:
            t, g = m.unpack(word, "timestep"), m.unpack(word, "group")
            for lane, value in enumerate(m.unpack(word, "v")):
                i = g * self.lanes + lane
                if t < timesteps and i < fan_out:
                    membranes[t][i] = value
        counters = {name: int(getattr(dut, name).value) for name in ("cycles", "synops", "spikes")}
        for name in ("CYCLES", "SYNOPS", "SPIKES"):
            counters[f"reg_{name.lower()}"] = await self.read_reg(reg(name))
        status = await self.read_reg(reg("STATUS"))
        return Observation(steps, membranes, busy_cycles, counters, int(bool(status & BAD_ADDR)))

    async def infer(self, beats, *, budget: int | None = None) -> Observation:
        """Strobe ``start``, stream ``beats`` (``(addr, eot)`` pairs) in, and collect until
        ``busy`` falls (at most ``budget`` cycles, default :attr:`budget`)."""
        await self.start()
        self.inputs.send_nowait(self.beats(beats))
        return await self.collect(await self.wait_idle(budget))


class Scoreboard:
    """Compares observations with the expectations of :func:`spikeforge.sim.layer_cases.expectation`
    (golden model and cycle model, computed ahead of the simulation)."""

    def __init__(self, lanes: int, *, stalled: bool = False):
        self.lanes = lanes
        #: under stalls the cycle count may only grow
        self.stalled = stalled
        self.cases = 0
        self.saturations = 0
        self.cycles = 0
        self.failures: list[str] = []

    def compare(self, label: str, expect: dict, obs: Observation) -> list[str]:
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
        if self.stalled:
            if obs.busy_cycles < expect["cycles"]:
                errors.append(f"cycles {obs.busy_cycles} under stalls, fewer than the cycle "
                              f"model's {expect['cycles']} without")
        elif obs.busy_cycles != expect["cycles"]:
            errors.append(f"cycles {obs.busy_cycles}, cycle model predicts {expect['cycles']}")
        if "bad_addr" in expect and obs.bad_addr != expect["bad_addr"]:
            errors.append(f"STATUS.bad_addr {obs.bad_addr}, expected {expect['bad_addr']}")
        self.cases += 1
        self.cycles += obs.busy_cycles
        self.saturations += bool(expect["saturating"])
        errors = [f"{label}: {e}" for e in errors]
        self.failures += errors
        return errors

    def check(self, ok: bool, message: str) -> None:
        """A scenario's own check (a register, a flag)."""
        if not ok:
            self.failures.append(message)


# ---- the tests ------------------------------------------------------------------------------

_REPORT: Report | None = None


def report() -> Report:
    global _REPORT
    if _REPORT is None:
        _REPORT = Report(tb_params().get("report"))
    return _REPORT


def _legacy_plan() -> dict:
    # bench/bench_array.py still hands the plan over as $SPIKEFORGE_TB_PLAN (a file path).
    return json.loads(Path(os.environ["SPIKEFORGE_TB_PLAN"]).read_text())


def _finish(name: str, board: Scoreboard, **values) -> None:
    report().test(name, cases=board.cases, **values)
    if board.failures:
        report().fail(board.failures)
    assert not board.failures, "\n".join(board.failures)


async def _run_cases(tb: LayerTB, board: Scoreboard, cases: list[dict], test: str) -> None:
    for case in cases:
        await tb.load(case)
        obs = await tb.infer(case["beats"])
        errors = board.compare(case["label"], case["expect"], obs)
        if errors:
            report().fail(errors, case={"seed": case["seed"], "index": case["index"],
                                        "test": test})
            board.failures.clear()  # reported with the case
            raise AssertionError("\n".join(errors))


@cocotb.test()
async def random_regression(dut):
    """The random cases of the plan on one build, each compared in full, cycle-exact."""
    params = tb_params()
    plan = params.get("plan") or _legacy_plan()
    tb = LayerTB(dut)
    began, began_cycles = time.perf_counter(), tb.clock.now()
    await tb.reset()
    board = Scoreboard(tb.lanes)
    try:
        await _run_cases(tb, board, plan["cases"], "random_regression")
    finally:
        report().test("random_regression", cases=board.cases, saturating_cases=board.saturations,
                      cycles=board.cycles, run_s=time.perf_counter() - began,
                      sim_cycles=tb.clock.now() - began_cycles)


@cocotb.test()
@cocotb.parametrize((("idle", "backpressure"), [(True, False), (False, True), (True, True)]))
async def random_regression_under_stalls(dut, idle, backpressure):
    """The first ``stalled_cases`` random cases again, with idle cycles on the input stream
    and/or back-pressure on the output stream: the same spikes, membranes and counters."""
    params = tb_params()
    name = f"random_regression_under_stalls/idle={idle}/backpressure={backpressure}"
    tb = LayerTB(dut, idle=idle, backpressure=backpressure, stall_seed=f"{params['seed']}/{name}")
    await tb.reset()
    board = Scoreboard(tb.lanes, stalled=True)
    try:
        await _run_cases(tb, board, params["plan"]["cases"][:params.get("stalled_cases", 16)],
                         name)
    finally:
        report().test(name, cases=board.cases, cycles=board.cycles)


def scenario_test(function):
    """A directed scenario: one cocotb test per scenario, each with and without idle cycles and
    back-pressure; ``function(tb, board, data)`` gets its precomputed ``scenarios[name]``."""

    async def test(dut, idle, backpressure):
        params = tb_params()
        name = f"{function.__name__}/idle={idle}/backpressure={backpressure}"
        tb = LayerTB(dut, idle=idle, backpressure=backpressure,
                     stall_seed=f"{params['seed']}/{name}")
        await tb.reset()
        board = Scoreboard(tb.lanes, stalled=tb.stalled)
        await function(tb, board, params["scenarios"][function.__name__])
        _finish(name, board)

    test.__doc__ = function.__doc__
    stalls = cocotb.parametrize(idle=[False, True], backpressure=[False, True])
    return cocotb.test(name=function.__name__)(stalls(test))


async def _compare_runs(tb: LayerTB, board: Scoreboard, runs: list[dict]) -> list[Observation]:
    observations = []
    for run in runs:
        await tb.load(run)
        obs = await tb.infer(run["beats"])
        board.compare(run["label"], run["expect"], obs)
        observations.append(obs)
    return observations


@scenario_test
async def empty_timesteps(tb, board, data):
    """Every input timestep empty: only bias and leak act."""
    await _compare_runs(tb, board, data["runs"])


@scenario_test
async def every_neuron_fires(tb, board, data):
    """Bias at the top of the range and threshold 1: every neuron fires at every step."""
    (obs,) = await _compare_runs(tb, board, data["runs"])
    fan_out, steps = tb.design["fan_out"], tb.design["timesteps"]
    board.check(obs.spikes == [list(range(fan_out))] * steps,
                "every neuron fires: not every neuron fired at every step")


@scenario_test
async def reprogrammed_registers(tb, board, data):
    """Thresholds and leak shift written between two inferences (no reset, the same weights)
    change the second one exactly; the thresholds read back as written."""
    before, after = data["runs"]
    await _compare_runs(tb, board, [before])
    for addr, value in after["writes"]:
        await tb.write_reg(addr, value)
    for t, theta in enumerate(data["theta"]):
        got = await tb.read_reg(reg("THETA", t), signed=True)
        board.check(got == theta, f"THETA[{t}] reads {got}, wrote {theta}")
    await _compare_runs(tb, board, [{**after, "writes": []}])


@scenario_test
async def bad_addresses(tb, board, data):
    """Input addresses beyond fan-in are dropped, cost one cycle each and set STATUS.bad_addr,
    which a write of 1 clears; the next clean inference leaves it clear."""
    bad, clean = data["runs"]
    await _compare_runs(tb, board, [bad])
    await tb.write_reg(reg("STATUS"), BAD_ADDR)
    board.check(not await tb.read_reg(reg("STATUS")) & BAD_ADDR,
                "bad addresses: STATUS.bad_addr did not clear on write 1")
    await _compare_runs(tb, board, [clean])


@scenario_test
async def write_while_busy(tb, board, data):
    """A register write while busy is ignored and sets STATUS.busy_write; the inference it
    happened in is unchanged (it starts one cycle later: cycles may only grow)."""
    (run,) = data["runs"]
    await tb.load(run)
    await tb.start()
    await tb.write_reg(reg("THETA", 0), 12345)
    tb.inputs.send_nowait(tb.beats(run["beats"]))
    obs = await tb.collect(await tb.wait_idle(what="inference with a write while busy") + 1)
    stalled, board.stalled = board.stalled, True
    board.compare(run["label"], run["expect"], obs)
    board.stalled = stalled
    theta = await tb.read_reg(reg("THETA", 0), signed=True)
    board.check(theta == data["theta0"], f"a THETA write while busy was not ignored: THETA[0] "
                                         f"reads {theta}, was {data['theta0']}")
    board.check(bool(await tb.read_reg(reg("STATUS")) & BUSY_WRITE),
                "a write while busy did not set STATUS.busy_write")


@scenario_test
async def seed002_example(tb, board, data):
    """Seed 002's worked example on the first lane: weight 2, radix, leak 1, input 1,0,1,0 ->
    output 0,1,0,1 (= 10)."""
    if not data["runs"]:
        return  # the build is too small for it (T < 4 or too narrow)
    (obs,) = await _compare_runs(tb, board, data["runs"])
    train = [int(0 in step) for step in obs.spikes[:4]]
    board.check(train == [0, 1, 0, 1], f"seed 002 example: output train {train}, "
                                       "expected 0,1,0,1")


@scenario_test
async def rom_reset_values(tb, board, data):
    """The ROM variant straight from reset: the contents and register reset values run the
    layer it was built from (no register written)."""
    observations = await _compare_runs(tb, board, data["runs"])
    if data.get("seed002"):
        train = [int(0 in step) for step in observations[0].spikes]
        board.check(train == [0, 1, 0, 1], f"seed 002 example: output train {train}, "
                                           "expected 0,1,0,1 (= 10)")


@scenario_test
async def rom_reprogrammed(tb, board, data):
    """The ROM variant with thresholds and leak shift reprogrammed at run time, several times
    without a reset: each inference follows the registers in force."""
    await _compare_runs(tb, board, data["runs"])


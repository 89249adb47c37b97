"""A stand-in for ``NetworkAccelerator`` that obeys docs/host-interface.md exactly.

It exists so that the UART link, the board tops and the synthesis flow can be built and tested
while the real accelerator is being written: swapping it for the real one is one factory
argument. Its "network" is a trivial rule with a Python twin, :func:`mock_classify`:

    score[k] = (V_INIT[0] + sum of pixel[j] for j % n_outputs == k) >> LEAK_SHIFT[0]
    prediction = argmax(score), ties to the lowest index
    SPIKES[0] = number of k with score[k] >= THETA[0][0];  SYNOPS[0] = number of pixels != 0
    CYCLES = cycles from the last pixel accepted to the prediction accepted

so register writes over the link visibly change results. ``busy`` is high from the last pixel
to the last result, for at least ``busy_cycles`` cycles.

Its registers are a subset of the spec's (:mod:`spikeforge.sw.interface`): the global ``ID``,
``STATUS``, ``CYCLES``, ``N_LAYERS`` and per layer ``LEAK_SHIFT``, ``V_INIT``, ``SYNOPS``,
``SPIKES`` and ``THETA[t]``, at the addresses of the register map it is given. Reading any other
address returns 0 and sets ``STATUS.bad_address``; so does writing one that is not mapped.
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from spikeforge.hw.link import RegisterBusSignature, ResultLayout
from spikeforge.sw.interface import SPEC, RegisterMap

__all__ = ["MockAccelerator", "mock_classify", "MockRegisters", "MOCK_GLOBAL", "MOCK_LAYER"]

#: The spec's registers the mock has: global ones, and per-layer ones (of every layer).
MOCK_GLOBAL = ("ID", "STATUS", "CYCLES", "N_LAYERS")
MOCK_LAYER = ("LEAK_SHIFT", "V_INIT", "SYNOPS", "SPIKES", "THETA")


class MockRegisters:
    """Reset values of the mock's registers, and the Python model's view of them."""

    def __init__(self, n_layers: int = 2, timesteps: int = 4):
        self.leak_shift = [0] * n_layers
        self.v_init = [0] * n_layers
        self.theta = [[16] * timesteps for _ in range(n_layers)]


def mock_classify(pixels: Sequence[int], n_outputs: int,
                  regs: MockRegisters) -> tuple[list[int], int]:
    """Python twin of the mock's rule: (scores, prediction)."""
    sums = [regs.v_init[0]] * n_outputs
    for j, p in enumerate(pixels):
        sums[j % n_outputs] += int(p)
    scores = [s >> regs.leak_shift[0] for s in sums]
    best = max(range(n_outputs), key=lambda k: (scores[k], -k))
    return scores, best


class MockAccelerator(wiring.Component):
    """Mock network accelerator with the members of docs/host-interface.md.

    Parameters
    ----------
    n_inputs, n_outputs, pixel_bits : int
    n_layers, timesteps : int
        Shape of the register file (LEAK_SHIFT/V_INIT/SYNOPS/SPIKES/THETA per layer).
    busy_cycles : int
        Minimum cycles ``busy`` stays high after the last pixel.
    spec : spikeforge.sw.interface.RegisterMap
        Where the registers are (default: the spec).
    """

    def __init__(self, *, n_inputs: int = 16, n_outputs: int = 4, pixel_bits: int = 8,
                 n_layers: int = 2, timesteps: int = 4, busy_cycles: int = 20,
                 spec: RegisterMap = SPEC):
        if n_outputs < 1 or n_inputs < 1:
            raise ValueError("n_inputs and n_outputs must be positive")
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.pixel_bits = pixel_bits
        self.n_layers = n_layers
        self.timesteps = timesteps
        self.busy_cycles = busy_cycles
        self.spec = spec
        super().__init__({
            "pixels": In(stream.Signature(16)),
            "results": Out(stream.Signature(ResultLayout)),
            "bus": In(RegisterBusSignature()),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        # Here, not at the top: spikeforge.hw.layer imports torch, and the Python twin
        # (mock_classify, MockRegisters) runs inside cocotb testbenches through the link model,
        # where importing torch costs seconds per run.
        from spikeforge.hw.layer import select

        m = Module()
        n_in, n_out, n_layers, steps = self.n_inputs, self.n_outputs, self.n_layers, self.timesteps
        defaults = MockRegisters(n_layers, steps)

        spec = self.spec
        status_reg = spec.global_reg("STATUS")
        status = Signal(max(f.offset + f.width for f in status_reg.fields))
        bad_pixel, bad_address, busy_write = (status[status_reg.field(name).bits] for name in
                                              ("bad_pixel", "bad_address", "busy_write"))
        status_mask = sum(f.mask for f in status_reg.fields)
        cycles = Signal(32)
        leak = [Signal(5, name=f"leak{k}", init=defaults.leak_shift[k]) for k in range(n_layers)]
        v_init = [Signal(signed(32), name=f"v_init{k}", init=defaults.v_init[k])
                  for k in range(n_layers)]
        synops = [Signal(32, name=f"synops{k}") for k in range(n_layers)]
        spikes = [Signal(32, name=f"spikes{k}") for k in range(n_layers)]
        theta = [[Signal(32, name=f"theta{k}_{t}", init=defaults.theta[k][t]) for t in range(steps)]
                 for k in range(n_layers)]

        # ---- registers -----------------------------------------------------------------------
        bus = self.bus
        r_data = Signal(32)
        m.d.comb += bus.r_data.eq(r_data)
        address = spec.address
        readable = {address("ID"): spec.id_magic, address("STATUS"): status,
                    address("CYCLES"): cycles, address("N_LAYERS"): n_layers}
        writable = {}
        for k in range(n_layers):
            per_layer = {address("LEAK_SHIFT", k): leak[k], address("V_INIT", k): v_init[k]}
            per_layer.update({address("THETA", k, t): theta[k][t] for t in range(steps)})
            readable.update(per_layer)
            readable.update({address("SYNOPS", k): synops[k], address("SPIKES", k): spikes[k]})
            writable.update(per_layer)
        with m.If(bus.r_en):
            with m.Switch(bus.addr):
                for where, value in readable.items():
                    with m.Case(where):
                        m.d.sync += r_data.eq(value)
                with m.Default():
                    m.d.sync += [r_data.eq(0), bad_address.eq(1)]
        with m.If(bus.w_en):
            with m.If(self.busy):
                m.d.sync += busy_write.eq(1)
            with m.Else():
                with m.Switch(bus.addr):
                    with m.Case(address("STATUS")):  # write 1 to clear
                        m.d.sync += status.eq(status & ~(bus.w_data & status_mask))
                    for where, target in writable.items():
                        with m.Case(where):
                            m.d.sync += target.eq(bus.w_data)
                    with m.Case(*[a for a in readable
                                  if a not in writable and a != address("STATUS")]):
                        pass  # read-only: writes are ignored
                    with m.Default():
                        m.d.sync += bad_address.eq(1)

        # ---- the "network" -------------------------------------------------------------------
        # a list read through `select`, never an Array read (X after reset on Icarus)
        acc = [Signal(signed(32), name=f"acc{k}") for k in range(n_out)]
        lane = Signal(range(n_out))
        index = Signal(range(n_in))
        bad = Signal()
        nonzero = Signal(32)
        timer = Signal(range(self.busy_cycles + 1))
        out = Signal(range(n_out + 1))
        best = Signal(range(n_out))
        best_score = Signal(signed(32))
        fired = Signal(range(n_out + 1))
        hit = Signal()
        better = Signal()
        total = Signal(signed(32))
        score = Signal(signed(32))
        with m.FSM() as fsm:
            with m.State("LOAD"):
                with m.If(self.pixels.valid):
                    for k in range(n_out):
                        with m.If(lane == k):
                            m.d.sync += acc[k].eq(acc[k] + self.pixels.payload)
                    m.d.sync += [
                        lane.eq(Mux(lane == n_out - 1, 0, lane + 1)),
                        index.eq(index + 1),
                        nonzero.eq(nonzero + (self.pixels.payload != 0)),
                    ]
                    with m.If(self.pixels.payload >> self.pixel_bits != 0):
                        m.d.sync += bad.eq(1)
                    with m.If(index == n_in - 1):
                        m.d.sync += [index.eq(0), lane.eq(0), timer.eq(self.busy_cycles),
                                     cycles.eq(0)]
                        m.next = "WORK"
            with m.State("WORK"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(bad):
                    m.d.sync += [bad_pixel.eq(1), bad.eq(0), nonzero.eq(0)]
                    m.d.sync += [acc[k].eq(0) for k in range(n_out)]
                    m.next = "LOAD"
                with m.Else():
                    m.d.sync += [out.eq(0), fired.eq(0)]
                    m.next = "SUM"
            # Two pipeline stages per score (add, then shift) keep the mock's paths short.
            with m.State("SUM"):
                m.d.sync += [cycles.eq(cycles + 1), total.eq(select(acc, out) + v_init[0])]
                m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.sync += [cycles.eq(cycles + 1), score.eq(total >> leak[0])]
                m.next = "COMPARE"
            with m.State("COMPARE"):
                m.d.sync += [cycles.eq(cycles + 1), hit.eq(score >= theta[0][0]),
                             better.eq((out == 0) | (score > best_score))]
                m.next = "EMIT"
            with m.State("EMIT"):
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(self.results.ready):
                    with m.If(better):
                        m.d.sync += [best.eq(out), best_score.eq(score)]
                    m.d.sync += [out.eq(out + 1), fired.eq(fired + hit)]
                    with m.If(out == n_out - 1):
                        m.next = "PREDICT"
                    with m.Else():
                        m.next = "SUM"
            with m.State("PREDICT"):
                with m.If(self.results.ready):
                    m.d.sync += [synops[0].eq(nonzero), spikes[0].eq(fired), nonzero.eq(0),
                                 cycles.eq(cycles + 1)]
                    m.d.sync += [acc[k].eq(0) for k in range(n_out)]
                    m.next = "LOAD"
        # The outputs decode the state with comparisons (continuous assigns), not with comb
        # assignments inside the states: those are an `always @*` block that Icarus leaves X
        # after reset (the state register holds its initial value, so nothing triggers it).
        loading, emit, predict = fsm.ongoing("LOAD"), fsm.ongoing("EMIT"), fsm.ongoing("PREDICT")
        m.d.comb += [
            self.pixels.ready.eq(loading),
            self.busy.eq(~loading),
            self.results.valid.eq(emit | predict),
            self.results.payload.value.eq(Mux(predict, best, Mux(emit, score, 0))),
            self.results.payload.last.eq(predict),
        ]
        return m

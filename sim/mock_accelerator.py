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
"""

from __future__ import annotations

from collections.abc import Sequence

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.link import RegisterBusSignature, ResultLayout
from sw.link import ID_MAGIC

__all__ = ["MockAccelerator", "mock_classify", "MockRegisters"]


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
    """

    def __init__(self, *, n_inputs: int = 16, n_outputs: int = 4, pixel_bits: int = 8,
                 n_layers: int = 2, timesteps: int = 4, busy_cycles: int = 20):
        if n_outputs < 1 or n_inputs < 1:
            raise ValueError("n_inputs and n_outputs must be positive")
        self.n_inputs = n_inputs
        self.n_outputs = n_outputs
        self.pixel_bits = pixel_bits
        self.n_layers = n_layers
        self.timesteps = timesteps
        self.busy_cycles = busy_cycles
        super().__init__({
            "pixels": In(stream.Signature(16)),
            "results": Out(stream.Signature(ResultLayout)),
            "bus": In(RegisterBusSignature()),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n_in, n_out, n_layers, steps = self.n_inputs, self.n_outputs, self.n_layers, self.timesteps
        defaults = MockRegisters(n_layers, steps)

        status = Signal(3)  # bad_pixel, bad_address, busy_write
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
        readable = {0x0000: ID_MAGIC, 0x0001: status, 0x0002: cycles, 0x0003: n_layers}
        writable = {}
        for k in range(n_layers):
            base = 0x0100 + 0x100 * k
            readable.update({base: leak[k], base + 1: v_init[k], base + 2: synops[k],
                             base + 3: spikes[k]})
            writable.update({base: leak[k], base + 1: v_init[k]})
            for t in range(steps):
                readable[base + 0x10 + t] = theta[k][t]
                writable[base + 0x10 + t] = theta[k][t]
        with m.If(bus.r_en):
            with m.Switch(bus.addr):
                for address, value in readable.items():
                    with m.Case(address):
                        m.d.sync += r_data.eq(value)
                with m.Default():
                    m.d.sync += [r_data.eq(0), status[1].eq(1)]
        with m.If(bus.w_en):
            with m.If(self.busy):
                m.d.sync += status[2].eq(1)
            with m.Else():
                with m.Switch(bus.addr):
                    with m.Case(0x0001):
                        m.d.sync += status.eq(status & ~bus.w_data[:3])
                    for address, target in writable.items():
                        with m.Case(address):
                            m.d.sync += target.eq(bus.w_data)
                    with m.Case(*[a for a in readable if a not in writable and a != 0x0001]):
                        pass  # read-only: writes are ignored
                    with m.Default():
                        m.d.sync += status[1].eq(1)

        # ---- the "network" -------------------------------------------------------------------
        acc = Array(Signal(signed(32), name=f"acc{k}") for k in range(n_out))
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
        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += self.pixels.ready.eq(1)
                with m.If(self.pixels.valid):
                    m.d.sync += [
                        acc[lane].eq(acc[lane] + self.pixels.payload),
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
                m.d.comb += self.busy.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(bad):
                    m.d.sync += [status[0].eq(1), bad.eq(0), nonzero.eq(0)]
                    m.d.sync += [acc[k].eq(0) for k in range(n_out)]
                    m.next = "LOAD"
                with m.Else():
                    m.d.sync += [out.eq(0), fired.eq(0)]
                    m.next = "SUM"
            # Two pipeline stages per score (add, then shift) keep the mock's paths short.
            with m.State("SUM"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [cycles.eq(cycles + 1), total.eq(acc[out] + v_init[0])]
                m.next = "SHIFT"
            with m.State("SHIFT"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [cycles.eq(cycles + 1), score.eq(total >> leak[0])]
                m.next = "COMPARE"
            with m.State("COMPARE"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [cycles.eq(cycles + 1), hit.eq(score >= theta[0][0]),
                             better.eq((out == 0) | (score > best_score))]
                m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += [self.busy.eq(1), self.results.valid.eq(1),
                             self.results.payload.value.eq(score)]
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
                m.d.comb += [self.busy.eq(1), self.results.valid.eq(1),
                             self.results.payload.value.eq(best), self.results.payload.last.eq(1)]
                with m.If(self.results.ready):
                    m.d.sync += [synops[0].eq(nonzero), spikes[0].eq(fired), nonzero.eq(0),
                                 cycles.eq(cycles + 1)]
                    m.d.sync += [acc[k].eq(0) for k in range(n_out)]
                    m.next = "LOAD"
        return m

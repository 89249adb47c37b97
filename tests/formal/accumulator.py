"""(b) The per-timestep current accumulator cannot wrap.

The layer engine keeps each neuron's current of a timestep in a ``current_bits(fan_in, w_bits)``
wide signed word of an accumulator bank and adds one weight per input spike:
``acc_sum = wb_data + weight_in``, written back at the accumulator's width (hw/layer.py). The
harness runs exactly that arithmetic, at that width, next to an exact (wide) sum: any sequence
of at most ``fan_in`` additions of ``w_bits`` weights (each input spikes at most once per
timestep, docs/contract.md), with a clear between timesteps whenever the solver likes. The
accumulator must equal the exact sum at every step; the proof is by induction, so it holds after
any number of timesteps.
"""

from __future__ import annotations

from functools import partial

from amaranth.hdl import Assume, Signal, signed

from spikeforge.hw.layer import current_bits
from tests.formal.harness import Harness
from tests.formal.prove import Check

__all__ = ["AccumulatorHarness", "CHECKS"]


class AccumulatorHarness(Harness):
    """``width_delta`` shrinks the accumulator below ``current_bits`` (a mutant)."""

    def __init__(self, *, fan_in, w_bits, width_delta=0, reach=None):
        super().__init__(reach=reach)
        self.fan_in, self.w_bits, self.width_delta = fan_in, w_bits, width_delta

    def elaborate_harness(self, m):
        n, wb = self.fan_in, self.w_bits
        cb = current_bits(n, wb) + self.width_delta
        self.w_min, self.w_max = -(1 << (wb - 1)), (1 << (wb - 1)) - 1
        add = Signal()              # an input spike reaches the neuron this cycle
        weight = Signal(signed(wb))  # its weight: any w_bits value
        clear = Signal()            # the timestep closes: the fire unit zeroes the word
        self.acc = acc = Signal(signed(cb))
        self.exact = exact = Signal(signed(cb + 8))
        self.count = count = Signal(range(n + 1))
        # At most fan_in events per timestep (each input spikes at most once).
        m.d.comb += Assume(~add | (count < n))
        with m.If(clear):
            m.d.sync += [acc.eq(0), exact.eq(0), count.eq(0)]
        with m.Elif(add):
            m.d.sync += [acc.eq(acc + weight),  # the engine's acc_sum, truncated to the word
                         exact.eq(exact + weight), count.eq(count + 1)]
        return [add, weight, clear]

    def properties(self):
        acc, exact, count = self.acc, self.exact, self.count
        return [
            acc == exact,
            # strengthening for the induction: the exact sum's bounds after `count` events
            exact >= count * self.w_min, exact <= count * self.w_max,
        ]

    def reachable(self):
        return {
            "lowest": self.exact == self.fan_in * self.w_min,
            "highest": self.exact == self.fan_in * self.w_max,
        }


def _build(**kwargs):
    return AccumulatorHarness(**kwargs).build()


_SIZES = [(3, 2), (4, 3), (5, 4), (8, 8)]

CHECKS = [
    *[Check(name=f"accumulator.fan_in{n}_w{wb}", kind="proof",
            build=partial(_build, fan_in=n, w_bits=wb), depth=4, induction=True,
            what=f"current_bits({n}, {wb}) = {current_bits(n, wb)} holds every sum")
      for n, wb in _SIZES],
    *[Check(name=f"accumulator.reach_{r}_fan_in4_w3", kind="reach",
            build=partial(_build, fan_in=4, w_bits=3, reach=r), depth=6, expect="fail",
            what=f"reachable: the {r} sum of 4 weights")
      for r in ("lowest", "highest")],
    *[Check(name=f"accumulator.mutant_narrow_fan_in{n}_w{wb}", kind="mutant",
            build=partial(_build, fan_in=n, w_bits=wb, width_delta=-1), depth=n + 2,
            expect="fail", what=f"an accumulator of current_bits({n}, {wb}) - 1 bits")
      for n, wb in _SIZES[:3]],
]

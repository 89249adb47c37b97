"""(a) The neuron datapath equals the contract, for every input.

The harness chains the real :class:`~spikeforge.hw.neuron.NeuronLeak`,
:class:`~spikeforge.hw.neuron.NeuronIntegrate` and :class:`~spikeforge.hw.neuron.NeuronFire` as
the layer engine's fire unit does (or takes the composed
:class:`~spikeforge.hw.neuron.NeuronDatapath`), gives them free inputs in the documented ranges
and asserts that every output equals a reference written from docs/contract.md, steps 1-4, in
its own terms: the leak is floor division by ``2**leak_shift`` (``//``), the sum is exact in a
wide signal, ``sat`` clamps once, the radix digit is ``V mod 2`` (``%``), a soft reset subtracts
``theta * s``. The design is combinational, so one step is the whole proof (for all inputs).
"""

from __future__ import annotations

from functools import partial

from amaranth.hdl import Assume, Module, Mux, Signal, signed

from spikeforge.hw.neuron import (
    FireMode,
    NeuronDatapath,
    NeuronFire,
    NeuronIntegrate,
    NeuronLeak,
)
from tests.formal.harness import Harness, component_inputs
from tests.formal.prove import Check

__all__ = ["NeuronHarness", "CHECKS"]


class _Stages(NeuronDatapath):
    """The three stage components chained like the fire unit's stages L, C and F (whose
    registers do not change the function); the classes are parameters, so a mutant can replace
    one stage."""

    def __init__(self, v_bits, current_bits, *, leak=NeuronLeak, integrate=NeuronIntegrate,
                 fire=NeuronFire):
        super().__init__(v_bits, current_bits)
        self.stage_classes = leak, integrate, fire


# ---- mutants ---------------------------------------------------------------------------------

class _WrappingIntegrate(NeuronIntegrate):
    """Mutant: no saturation, the sum wraps to ``v_bits``."""

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.v_sat.eq(self.base + self.drive)
        return m


class _LogicalLeak(NeuronLeak):
    """Mutant: a logical (unsigned) shift instead of the arithmetic one."""

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [
            self.base.eq(Mux(self.first, self.v_init,
                             self.v.as_unsigned() >> self.leak_shift)),
            self.drive.eq(self.bias + self.current),
        ]
        return m


class _NarrowDriveLeak(NeuronLeak):
    """Mutant: ``bias + current`` kept at the current's width (the carry is lost)."""

    def elaborate(self, platform):
        m = Module()
        drive = Signal(signed(max(self._v_bits, self._current_bits)))
        m.d.comb += [
            self.base.eq(Mux(self.first, self.v_init, self.v >> self.leak_shift)),
            drive.eq(self.bias + self.current), self.drive.eq(drive),
        ]
        return m


class _RadixNoReset(NeuronFire):
    """Mutant: a radix neuron that keeps its digit (no ``V - s``)."""

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.v_next.eq(self.v_sat)
        with m.If(self.fires):
            with m.If(self.fire_mode == FireMode.RADIX):
                m.d.comb += self.spike.eq(self.v_sat[0])
            with m.Elif(self.reached):
                m.d.comb += [self.spike.eq(1), self.v_next.eq(self.v_sat - self.theta)]
        return m


class _CompareUnclampedDatapath(NeuronDatapath):
    """Mutant: the threshold compare on ``theta + greater`` itself, without the clamp's bounds
    (:func:`threshold_bar`; wrong for ``V > theta`` at ``theta = 2**(v_bits-1) - 1``: the
    clamped membrane cannot exceed it)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        integrate = m.submodules.integrate
        m.d.comb += integrate.bar.eq(self.theta + self.greater)
        return m


# ---- the harness -----------------------------------------------------------------------------

class NeuronHarness(Harness):
    """``dut`` is ``"datapath"`` (the composed :class:`NeuronDatapath`), a mutant subclass of
    it, or ``"stages"`` (the three stage components, each replaceable by a mutant through
    ``leak``, ``integrate``, ``fire``). ``compare`` is the reference's comparison: ``">="`` is
    the contract's default; ``">"`` is a broken reference that the proof must reject."""

    def __init__(self, *, v_bits=6, current_bits=8, dut="stages", compare=">=", reach=None,
                 **stages):
        super().__init__(reach=reach)
        self.v_bits, self.current_bits = v_bits, current_bits
        self.dut, self.compare, self.stages = dut, compare, stages

    def elaborate_harness(self, m):
        vb, cb = self.v_bits, self.current_bits
        if self.dut == "datapath":
            dut = NeuronDatapath(vb, cb)
        elif isinstance(self.dut, type):        # a mutant of the composed datapath
            dut = self.dut(vb, cb)
        else:
            dut = _Stages(vb, cb, **self.stages)
        m.submodules.dut = self.d = d = dut
        low, high = -(1 << (vb - 1)), (1 << (vb - 1)) - 1

        # The documented input ranges (docs/contract.md, Numbers): theta >= 1, leak_shift in
        # 0..v_bits; every other input is any value of its width.
        m.d.comb += [Assume(d.theta >= 1), Assume(d.leak_shift <= vb)]

        # 1. Leak: floor division by 2**leak_shift, no leak at t = 0.
        wide = signed(vb + cb + 4)
        base = Signal(wide)
        with m.Switch(d.leak_shift):
            for k in range(vb + 1):
                with m.Case(k):
                    m.d.comb += base.eq(d.v // (1 << k))
        with m.If(d.first):
            m.d.comb += base.eq(d.v_init)
        # 2. Integrate: the exact sum, one clamp.
        total = Signal(wide)
        v_sat = Signal(wide)
        m.d.comb += [
            total.eq(base + d.bias + d.current),
            v_sat.eq(Mux(total > high, high, Mux(total < low, low, total))),
        ]
        # 3. Fire, 4. soft reset.
        spike = Signal()
        v_next = Signal(wide)
        # compare ">=" or ">" by the greater input; the mutant reference swaps them
        default, strict = (v_sat >= d.theta), (v_sat > d.theta)
        if self.compare != ">=":
            default, strict = strict, default
        over = Mux(d.greater, strict, default)
        with m.If(~d.fires):
            m.d.comb += [spike.eq(0), v_next.eq(v_sat)]
        with m.Elif(d.fire_mode == FireMode.RADIX):
            m.d.comb += [spike.eq(v_sat % 2), v_next.eq(v_sat - spike)]
        with m.Else():
            m.d.comb += [spike.eq(over),
                         v_next.eq(Mux(spike & d.zero_reset, 0, v_sat - d.theta * spike))]
        self.ref = dict(total=total, v_sat=v_sat, spike=spike, v_next=v_next, low=low,
                        high=high)
        return component_inputs(d)

    def properties(self):
        d, r = self.d, self.ref
        return [
            d.spike == r["spike"],
            d.v_next == r["v_next"],
            d.saturated == ((r["total"] > r["high"]) | (r["total"] < r["low"])),
            # "No reset can leave the v_bits range" (docs/contract.md step 4).
            (r["v_next"] >= r["low"]) & (r["v_next"] <= r["high"]),
        ]

    def reachable(self):
        d, r = self.d, self.ref
        threshold = d.fires & (d.fire_mode == FireMode.THRESHOLD)
        return {
            "threshold_fire": threshold & d.spike & ~d.first & (d.leak_shift == 1),
            "threshold_at_theta": threshold & d.spike & (r["v_sat"] == d.theta),
            "radix_negative": d.fires & (d.fire_mode == FireMode.RADIX) & d.spike
                              & (r["v_sat"] < 0),
            "saturate_high": d.saturated & (r["total"] > r["high"]),
            "saturate_low": d.saturated & (r["total"] < r["low"]),
        }


def _check(name, kind, what, expect="pass", **kwargs):
    # Combinational: one step covers every input, and the (empty) induction step is proven.
    return Check(name=f"neuron.{name}", kind=kind, build=partial(_build, **kwargs), depth=1,
                 induction=kind == "proof", expect=expect, what=what)


def _build(**kwargs):
    return NeuronHarness(**kwargs).build()


CHECKS = [
    *[_check(f"stages_v6_c{cb}", "proof", f"leak/integrate/fire = contract, v_bits 6, "
             f"current {cb} bits", current_bits=cb) for cb in (6, 7, 8)],
    _check("datapath_v6_c8", "proof", "NeuronDatapath = contract, v_bits 6, current 8 bits",
           dut="datapath"),
    _check("stages_v4_c3", "proof", "current narrower than v_bits (v 4, current 3)",
           v_bits=4, current_bits=3),
    *[_check(f"reach_{name}", "reach", f"reachable: {name}", expect="fail", reach=name)
      for name in ("threshold_fire", "threshold_at_theta", "radix_negative", "saturate_high",
                   "saturate_low")],
    _check("mutant_no_saturation", "mutant", "NeuronIntegrate without the clamp", "fail",
           integrate=_WrappingIntegrate),
    _check("mutant_logical_shift", "mutant", "leak by logical shift", "fail",
           leak=_LogicalLeak),
    _check("mutant_narrow_drive", "mutant", "bias + current without its carry bit", "fail",
           leak=_NarrowDriveLeak),
    _check("mutant_radix_no_reset", "mutant", "radix fire without V - s", "fail",
           fire=_RadixNoReset),
    _check("mutant_compare_unclamped", "mutant", "threshold compare without the clamp's bounds",
           "fail", dut=_CompareUnclampedDatapath),
    _check("mutant_reference_gt", "mutant", "reference compares V > theta", "fail",
           compare=">"),
]

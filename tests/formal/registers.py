"""(d) Register writes while busy are ignored.

The layer engine's decoder (generated from the spec, hw/layer.py) must not change a
configuration register while an inference runs: such a write sets the sticky ``busy_write``
status bit instead. The harness builds a tiny real :class:`LayerEngine` with every input free
(register writes of any address and data in any cycle, ``start`` at any time, any input
stream) and keeps a copy of the registers one cycle back. It asserts: after a cycle in which
the engine was busy, every register (``THETA[t]``, ``LEAK_SHIFT``, ``V_INIT``, ``FIRE``) holds
its value; and a write that arrived then, to any address but ``STATUS`` (write 1 to clear), has
set ``busy_write``. Unbounded (the property is about one transition).
"""

from __future__ import annotations

from functools import partial

from amaranth.hdl import Cat, Mux, Signal

from spikeforge.hw.layer import LayerEngine
from spikeforge.sw.interface import SPEC
from tests.formal.harness import Harness, Internals, component_inputs
from tests.formal.prove import Check
from tests.formal.queue import small_engine

__all__ = ["RegisterHarness", "CHECKS"]


def _registers(inner: Internals, timesteps: int) -> list[Signal]:
    # the layer program's registers of layer 0 (hw/program.py)
    names = [f"l0_theta{t}" for t in range(timesteps)] + ["l0_leak", "l0_v_init", "l0_radix",
                                                         "l0_fires"]
    return [inner.driven(name) for name in names]


class _WritesWhileBusy(LayerEngine):
    """Mutant: a decoder that also takes LEAK_SHIFT writes while busy."""

    def elaborate(self, platform):
        inner = Internals(super().elaborate(platform), platform)
        leak_shift, cfg = inner.driven("l0_leak"), self.cfg
        write = cfg.w_en & self.busy & (cfg.addr == SPEC.layer_offset("LEAK_SHIFT"))
        inner.owner(leak_shift).add_statements("sync", leak_shift.eq(
            Mux(write, cfg.w_data[:len(leak_shift)], leak_shift)))
        return inner.fragment


class _SilentWhileBusy(LayerEngine):
    """Mutant: a decoder that ignores writes while busy but never sets busy_write."""

    def elaborate(self, platform):
        inner = Internals(super().elaborate(platform), platform)
        busy_write = inner.driven("l0_busy_write")
        inner.owner(busy_write).add_statements("sync", busy_write.eq(0))
        return inner.fragment


class RegisterHarness(Harness):
    def __init__(self, *, engine_cls=LayerEngine, reach=None):
        super().__init__(reach=reach)
        self.engine_cls = engine_cls

    def elaborate_harness(self, m):
        self.engine = engine = small_engine(self.engine_cls)
        inner = Internals(engine)
        m.submodules.engine = inner.fragment
        self.regs = Cat(*_registers(inner, engine.timesteps))
        cfg = engine.cfg
        self.past_regs = Signal(len(self.regs))
        self.past_busy = Signal()
        self.past_write = Signal()   # a write to an address other than STATUS
        self.past_valid = Signal()
        m.d.sync += [
            self.past_regs.eq(self.regs), self.past_busy.eq(engine.busy),
            self.past_write.eq(cfg.w_en & (cfg.addr != SPEC.layer_offset("STATUS"))),
            self.past_valid.eq(1),
        ]
        return component_inputs(engine)

    def properties(self):
        held = ~self.past_busy | (self.regs == self.past_regs)
        flagged = ~(self.past_busy & self.past_write) | self.engine.busy_write
        return [held, flagged]

    def reachable(self):
        return {
            "write_while_busy": self.past_busy & self.past_write,
            "write_while_idle_changes": self.past_valid & ~self.past_busy
                                        & (self.regs != self.past_regs),
        }


def _build(**kwargs):
    return RegisterHarness(**kwargs).build()


CHECKS = [
    Check(name="registers.busy_writes_ignored", kind="proof", build=_build, depth=2,
          induction=True, what="while busy no register changes; a write sets busy_write"),
    *[Check(name=f"registers.reach_{r}", kind="reach", build=partial(_build, reach=r),
            depth=8, expect="fail", what=f"reachable: {r.replace('_', ' ')}")
      for r in ("write_while_busy", "write_while_idle_changes")],
    Check(name="registers.mutant_writes_while_busy", kind="mutant",
          build=partial(_build, engine_cls=_WritesWhileBusy), depth=8, expect="fail",
          what="a decoder that takes LEAK_SHIFT writes while busy"),
    Check(name="registers.mutant_no_busy_write_flag", kind="mutant",
          build=partial(_build, engine_cls=_SilentWhileBusy), depth=8, expect="fail",
          what="a decoder that never sets busy_write"),
]

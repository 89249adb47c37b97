"""The fire unit (FU) of the core array: one pass's accumulators in, its spikes out.

After a ``start`` the :class:`FireUnit` closes pass ``(step, layer)``: it walks the layer's
``G_k`` neuron groups, group ``g = (oy * OW + ox) * Gc + gc`` holding channels
``gc*P .. gc*P + P-1`` at ``(oy, ox)``, and then one marker item, through five stages:

- **R** reads the membranes (``neuron_base[k] + g``), the biases (``bias_base[k] + gc``) and the
  accumulator word ``g`` of its bank;
- **L** leaks (``v_init`` at step 0, else ``v >> leak_shift``) and adds bias and current, and
  zeroes the accumulator word;
- **C** sums exactly and saturates to the layer's ``v_bits``, and compares the sum with the
  layer's ``theta[t]`` beside the clamp;
- **F** fires and resets (the compare's result, fire mode, reset), puts the
  spike mask into the serializer and the new membranes on ``membranes``, which write them back;
- **S** (:class:`spikeforge.hw.serializer.SpikeSerializer`) emits the spikes, lowest channel
  first, then the marker.

L, C and F never stall: R issues a group only while fewer than the serializer's queue depth are
on their way (docs/microarchitecture.md, "Fire unit"). The layer's run-time values come from the
layer program (``registers``), selected by the pass's layer and step.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.hw.core_layout import CoreLayout
from spikeforge.hw.layer import select
from spikeforge.hw.neuron import (
    NeuronFire,
    NeuronIntegrate,
    NeuronLeak,
    bar_bits,
    drive_bits,
    threshold_bar_select,
    threshold_bounds,
)
from spikeforge.hw.program import FireRegistersSignature
from spikeforge.hw.serializer import SpikeSerializer

__all__ = ["FireUnit", "membrane_beat_layout", "S_QUEUE"]

#: Groups the serializer can hold back: the depth from the fire unit's read to its serializer.
S_QUEUE = 4


def membrane_beat_layout(layout: CoreLayout) -> data.StructLayout:
    """One group's end-of-step membranes: layer, timestep, group within the layer, ``P`` values."""
    T = layout.layers[0].timesteps
    return data.StructLayout({
        "layer": unsigned(max(1, ceil_log2(len(layout.layers)))),
        "timestep": unsigned(max(1, ceil_log2(T))),
        "group": unsigned(max(1, ceil_log2(max(layout.groups)))),
        "v": data.ArrayLayout(signed(layout.v_bits), layout.lanes),
    })


def _read_port(addr_range: int, data_bits: int) -> wiring.Signature:
    return wiring.Signature({"addr": Out(range(max(2, addr_range))), "en": Out(1),
                             "data": In(data_bits)})


class FireUnit(wiring.Component):
    """The FU of a core of ``layout`` (see the module docstring).

    Members
    -------
    start : In(1)
        Strobe (only while not ``busy``): close the next pass.
    bank : In(1)
        The accumulator bank of the pass, taken with ``start``.
    clear : In(1)
        Strobe: a new inference (pass (0, 0) next, the serializer empty).
    busy : Out(1)
        From ``start`` to the cycle the pass's marker leaves ``events``.
    layer, step : Out
        The pass being closed, or the next one.
    registers : In(FireRegistersSignature)
        The layer program's values of ``layer`` and ``step``.
    vmem_read, bias_read, acc_read : Out(addr, en; In data)
        Stage R's reads; ``acc_read`` reads the pass's accumulator bank, and its ``banks``
        (``Out(2)``) is that bank one-hot while ``busy``, from flip-flops.
    acc_clear : Out(addr, banks)
        Stage L zeroes the word it took: ``banks`` is the bank one-hot in that cycle (a
        flip-flop), else 0.
    membranes : Out, ``valid`` and ``payload`` (:func:`membrane_beat_layout`)
        One beat per group: its new membranes; ``word`` is where they belong in ``vmem``.
    events : Out(stream.Signature(...))
        The serializer's events; ``valid`` never waits for ``ready``, which must be high
        whenever the pass's spikes have nowhere else to go.
    """

    def __init__(self, layout: CoreLayout):
        self._layout = layout
        P, L = layout.lanes, len(layout.maps)
        T = layout.layers[0].timesteps
        self._cbase_bits = max(1, ceil_log2(max(x.channel_groups for x in layout.maps) * P + 1))
        self._serializer = SpikeSerializer(P, c_bits=layout.c_bits, y_bits=layout.y_bits,
                                           x_bits=layout.x_bits, cbase_bits=self._cbase_bits,
                                           depth=S_QUEUE)
        super().__init__({
            "start": In(1),
            "bank": In(1),
            "clear": In(1),
            "busy": Out(1),
            "layer": Out(range(max(2, L))),
            "step": Out(range(max(2, T))),
            "registers": In(FireRegistersSignature(L, T, layout.v_bits)),
            "vmem_read": Out(_read_port(layout.total_groups, P * layout.v_bits)),
            "bias_read": Out(_read_port(layout.total_bias_words, P * layout.v_bits)),
            "acc_read": Out(wiring.Signature({
                **_read_port(max(layout.groups), P * layout.current_bits).members,
                "banks": Out(2)})),
            "acc_clear": Out(wiring.Signature({"addr": Out(range(max(2, max(layout.groups)))),
                                               "banks": Out(2)})),
            "membranes": Out(wiring.Signature({
                "valid": Out(1), "word": Out(range(layout.total_groups + 1)),
                "payload": Out(membrane_beat_layout(layout))})),
            "events": Out(self._serializer.signature.members["events"].signature),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        lay = self._layout
        maps, layers, L, P = lay.maps, lay.layers, len(lay.maps), lay.lanes
        T = layers[0].timesteps
        VB, CB = lay.v_bits, lay.current_bits
        G_max = max(lay.groups)
        v_lanes = data.ArrayLayout(signed(VB), P)
        c_lanes = data.ArrayLayout(signed(CB), P)
        d_lanes = data.ArrayLayout(signed(drive_bits(VB, CB)), P)
        regs = self.registers
        fu_k, fu_t = self.layer, self.step
        m.d.comb += [regs.layer.eq(fu_k), regs.step.eq(fu_t)]

        # ---- R: the walk over the layer's groups, then the marker item -------------------------
        # the layer's sizes, registered: the layer changes in cycle e (a pass's marker leaves
        # S), and R reads the next pass's first group in e + 2 at the earliest
        groups = Signal(range(G_max + 1), init=lay.groups[0])
        gc_top = Signal(range(max(2, *(x.channel_groups for x in maps))),
                        init=maps[0].channel_groups - 1)
        ox_top = Signal(range(max(2, *(x.out_shape[2] for x in maps))),
                        init=maps[0].out_shape[2] - 1)
        m.d.sync += [groups.eq(select(lay.groups, fu_k)),
                     gc_top.eq(select([x.channel_groups - 1 for x in maps], fu_k)),
                     ox_top.eq(select([x.out_shape[2] - 1 for x in maps], fu_k))]
        g = Signal(range(G_max + 2))            # next item to read; item G_k is the marker
        word = Signal(range(lay.total_groups + 1))      # neuron_base[k] + g
        bias = Signal(range(lay.total_bias_words + 1))  # bias_base[k] + gc
        gc = Signal(range(max(2, *(x.channel_groups for x in maps))))
        cbase = Signal(self._cbase_bits)        # gc * P
        at_y, at_x = Signal(lay.y_bits), Signal(lay.x_bits)

        def stage(name):
            return SimpleNamespace(
                valid=Signal(name=f"{name}_valid"), g=Signal(range(G_max + 1), name=f"{name}_g"),
                cbase=Signal.like(cbase, name=f"{name}_cbase"),
                oy=Signal(lay.y_bits, name=f"{name}_oy"), ox=Signal(lay.x_bits, name=f"{name}_ox"),
                last=Signal(name=f"{name}_last"), eot=Signal(name=f"{name}_eot"))

        def copy(dst, src):
            return [dst.valid.eq(src.valid), dst.g.eq(src.g), dst.cbase.eq(src.cbase),
                    dst.oy.eq(src.oy), dst.ox.eq(src.ox), dst.last.eq(src.last),
                    dst.eot.eq(src.eot)]

        st_l, st_c, st_d = stage("l"), stage("c"), stage("d")
        pending = Signal(range(S_QUEUE + 1))    # groups issued by R, not yet in stage S
        m.submodules.serializer = serializer = self._serializer
        owns = Signal(2)                        # the pass's bank, one-hot, while busy
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), owns.eq(Mux(self.bank, 0b10, 0b01)), g.eq(0),
                         word.eq(select(lay.neuron_base, fu_k)),
                         bias.eq(select(lay.bias_base, fu_k)), gc.eq(0), cbase.eq(0),
                         at_y.eq(0), at_x.eq(0)]
        advance = Signal()
        m.d.comb += advance.eq(self.busy & (g <= groups) & (pending < S_QUEUE))
        read = advance & (g < groups)
        m.d.comb += [
            self.vmem_read.addr.eq(word), self.vmem_read.en.eq(read),
            self.bias_read.addr.eq(bias), self.bias_read.en.eq(read),
            self.acc_read.addr.eq(g), self.acc_read.en.eq(read), self.acc_read.banks.eq(owns),
        ]
        m.d.sync += st_l.valid.eq(advance)
        with m.If(advance):
            m.d.sync += [
                st_l.g.eq(g), st_l.cbase.eq(cbase), st_l.oy.eq(at_y), st_l.ox.eq(at_x),
                st_l.last.eq(gc == gc_top), st_l.eot.eq(g == groups),
                g.eq(g + 1), word.eq(word + 1),
            ]
            with m.If(gc != gc_top):
                m.d.sync += [gc.eq(gc + 1), cbase.eq(cbase + P), bias.eq(bias + 1)]
            with m.Else():
                m.d.sync += [gc.eq(0), cbase.eq(0), bias.eq(bias - gc_top)]
                with m.If(at_x != ox_top):
                    m.d.sync += at_x.eq(at_x + 1)
                with m.Else():
                    m.d.sync += [at_x.eq(0), at_y.eq(at_y + 1)]
        m.d.sync += copy(st_c, st_l) + copy(st_d, st_c)
        # stage L clears the word R read: registered beside st_l, one-hot by bank
        m.d.sync += self.acc_clear.banks.eq(Mux(read, owns, 0))
        m.d.comb += self.acc_clear.addr.eq(st_l.g)

        # ---- L, C, F: leak and drive, exact sum and saturation, fire and reset -----------------
        v_old = data.View(v_lanes, self.vmem_read.data)
        bias_in = data.View(v_lanes, self.bias_read.data)
        current = data.View(c_lanes, self.acc_read.data)
        c_leaked, c_drive, d_sat = Signal(v_lanes), Signal(d_lanes), Signal(v_lanes)
        v_new = Signal(v_lanes)
        d_reached = Signal(P)                   # stage C's threshold compare, registered
        fired = Signal(P)
        last_lanes = Signal(range(P + 1))
        # per-layer values of the fire unit, registered: the layer changes only between passes
        m.d.sync += last_lanes.eq(select([x.last_lanes for x in maps], fu_k))
        if lay.mixed_v_bits:
            # a narrower layer saturates to its own range (registered per layer)
            v_low, v_high = Signal(signed(VB)), Signal(signed(VB))
            m.d.sync += [v_low.eq(select([-(1 << (x.v_bits - 1)) for x in layers], fu_k)),
                         v_high.eq(select([(1 << (x.v_bits - 1)) - 1 for x in layers], fu_k))]
        else:
            v_low, v_high = -(1 << (VB - 1)), (1 << (VB - 1)) - 1
        # the least exact sum that fires, per pass. The layer and step change when a pass's
        # marker leaves S (cycle e); the next pass's first group reaches stage C in cycle e + 4
        # at the earliest (start e + 1, R e + 2, L e + 3), and the program's theta is valid from
        # e + 2, so theta + greater and the two compares with the layer's range (e + 3) and
        # their selection (e + 4) each get a register: in time, with no cycle to spare (a stale
        # bar fails the random network regressions). The compares take theta itself, not the
        # sum: one carry chain a cycle (on the ECP5 a 32-lane build's critical path)
        raised = Signal(signed(VB + 1))         # theta + greater
        above, below = Signal(), Signal()
        bar = Signal(signed(bar_bits(VB, CB)))
        m.d.sync += [raised.eq(regs.theta + regs.greater),
                     Cat(above, below).eq(Cat(*threshold_bounds(regs.theta, regs.greater,
                                                                v_low, v_high))),
                     bar.eq(threshold_bar_select(raised, above, below, VB, CB))]
        for lane in range(P):
            leak, fire = NeuronLeak(VB, CB), NeuronFire(VB)
            integrate = NeuronIntegrate(VB, CB, variable_range=lay.mixed_v_bits)
            if lay.mixed_v_bits:
                m.d.comb += [integrate.low.eq(v_low), integrate.high.eq(v_high)]
            m.submodules[f"leak{lane}"] = leak
            m.submodules[f"integrate{lane}"] = integrate
            m.submodules[f"fire{lane}"] = fire
            m.d.comb += [
                leak.v.eq(v_old[lane]), leak.first.eq(fu_t == 0),
                leak.v_init.eq(regs.v_init), leak.leak_shift.eq(regs.leak_shift),
                leak.bias.eq(bias_in[lane]), leak.current.eq(current[lane]),
                integrate.base.eq(c_leaked[lane]), integrate.drive.eq(c_drive[lane]),
                integrate.bar.eq(bar),
                fire.v_sat.eq(d_sat[lane]), fire.theta.eq(regs.theta),
                fire.reached.eq(d_reached[lane]),
                fire.fire_mode.eq(regs.fire_mode), fire.fires.eq(regs.fires),
                fire.zero_reset.eq(regs.zero_reset),
                v_new[lane].eq(fire.v_next),
            ]
            m.d.sync += [c_leaked[lane].eq(leak.base), c_drive[lane].eq(leak.drive),
                         d_sat[lane].eq(integrate.v_sat), d_reached[lane].eq(integrate.reached)]
            exists = ~st_d.last | (last_lanes > lane)
            m.d.comb += fired[lane].eq(fire.spike & exists)

        # ---- S: one event per cycle, lowest channel first --------------------------------------
        wiring.connect(m, serializer.events, wiring.flipped(self.events))
        m.d.comb += [
            serializer.group.valid.eq(st_d.valid),
            serializer.group.payload.mask.eq(fired),
            serializer.group.payload.cbase.eq(st_d.cbase),
            serializer.group.payload.oy.eq(st_d.oy),
            serializer.group.payload.ox.eq(st_d.ox),
            serializer.group.payload.eot.eq(st_d.eot),
            serializer.clear.eq(self.clear),
        ]
        m.d.sync += pending.eq(pending + advance - serializer.taken)
        with m.If(self.events.valid & self.events.ready & self.events.payload.eot):
            m.d.sync += [self.busy.eq(0), owns.eq(0), fu_k.eq(Mux(fu_k == L - 1, 0, fu_k + 1))]
            with m.If(fu_k == L - 1):
                m.d.sync += fu_t.eq(Mux(fu_t == T - 1, 0, fu_t + 1))

        # ---- the membrane port: the group just closed, registered --------------------------
        d_word = Signal(range(lay.total_groups + 1))
        m.d.sync += [d_word.eq(select(lay.neuron_base, fu_k) + st_c.g),
                     self.membranes.valid.eq(st_d.valid & ~st_d.eot)]
        with m.If(st_d.valid & ~st_d.eot):
            m.d.sync += [
                self.membranes.payload.layer.eq(fu_k),
                self.membranes.payload.timestep.eq(fu_t),
                self.membranes.payload.group.eq(st_d.g),
                self.membranes.payload.v.eq(v_new),
                self.membranes.word.eq(d_word),
            ]

        with m.If(self.clear):
            m.d.sync += [self.busy.eq(0), owns.eq(0), self.acc_clear.banks.eq(0),
                         fu_t.eq(0), fu_k.eq(0), st_l.valid.eq(0),
                         st_c.valid.eq(0), st_d.valid.eq(0), pending.eq(0)]
        return m

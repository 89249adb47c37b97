"""Stage S of the fire unit: a group's spike mask in, one event per cycle out.

:class:`SpikeSerializer` takes the group that leaves stage F in every cycle it has one (no
ready: stages L, C and F never stall) and emits its spikes, lowest lane first, as events
``(c, y, x)``, then a group's marker as one ``eot`` event. A group with ``k`` spikes holds
the output for ``max(1, k)`` transfers. While the output is busy, arriving groups wait in a
queue of ``depth`` entries; the fire unit issues a group only while fewer than ``depth`` are on
their way (its ``pending`` count, which ``taken`` decrements), so the queue never overflows
(proven in ``tests/formal/queue.py``) and no stall reaches back to the memories' read ports
(docs/microarchitecture.md, "Fire unit").
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SpikeSerializer", "group_layout", "lowest_set_bit"]


def lowest_set_bit(bits):
    """``(index, any, several)`` of the bit vector ``bits``: the index of its lowest set bit
    (undefined when none is set), whether any bit is set, and whether more than one is. A balanced
    tree: ``log2(len(bits))`` levels of logic, not a chain as long as the vector (at 64 lanes
    a chain was the ECP5's critical path)."""
    n = len(bits)
    if n == 1:
        return Const(0, 1), bits[0], Const(0, 1)
    half = 1 << ((n - 1).bit_length() - 1)      # the largest power of two below n
    lo_index, lo_any, lo_several = lowest_set_bit(bits[:half])
    hi_index, hi_any, hi_several = lowest_set_bit(bits[half:])
    width = (half - 1).bit_length()             # bits of an index below half
    high = Cat(hi_index[:width], Const(0, width - min(width, len(hi_index))), Const(1, 1))
    index = Mux(lo_any, lo_index[:max(1, width)], high)
    return index, lo_any | hi_any, lo_several | hi_several | (lo_any & hi_any)


def group_layout(lanes: int, cbase_bits: int, y_bits: int, x_bits: int) -> data.StructLayout:
    """One group leaving stage F: its spike mask, first channel, position, marker flag."""
    return data.StructLayout({"mask": unsigned(lanes), "cbase": unsigned(cbase_bits),
                              "oy": unsigned(y_bits), "ox": unsigned(x_bits),
                              "eot": unsigned(1)})


class SpikeSerializer(wiring.Component):
    """Groups of ``lanes`` spikes in, events out (see the module docstring).

    Members
    -------
    group : In, ``valid`` and ``payload`` (:func:`group_layout`), no ready
        A group from stage F; ``eot`` marks the pass's marker (its mask is ignored).
    taken : Out(1)
        A group entered the output stage this cycle (from the queue or straight from F).
    events : Out(stream.Signature(event layout ``c``, ``y``, ``x``, ``eot``))
        ``c = cbase + lane`` of each spike, lowest lane first; ``valid`` never waits for
        ``ready``.
    clear : In(1)
        Strobe: empty the queue and the output stage.
    """

    def __init__(self, lanes: int, *, c_bits: int, y_bits: int, x_bits: int, cbase_bits: int,
                 depth: int):
        self._lanes, self._depth = lanes, depth
        self._layout = group_layout(lanes, cbase_bits, y_bits, x_bits)
        super().__init__({
            "group": In(wiring.Signature({"valid": Out(1), "payload": Out(self._layout)})),
            "taken": Out(1),
            "events": Out(stream.Signature(data.StructLayout({
                "c": unsigned(c_bits), "y": unsigned(y_bits), "x": unsigned(x_bits),
                "eot": unsigned(1)}))),
            "clear": In(1),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        depth = self._depth
        s = Signal(self._layout)                # the output stage
        count = Signal(range(depth + 1), name="q_count")
        items = [Signal(self._layout, name=f"q{i}") for i in range(depth)]

        # the lowest spike of the mask, and whether another one is left (the stall path)
        lowest, _, several = lowest_set_bit(s.mask)
        out = self.events
        valid = s.eot | (s.mask != 0)
        transfer = valid & out.ready
        free = ~valid | (out.ready & (s.eot | ~several))
        m.d.comb += [
            out.valid.eq(valid),
            out.payload.eot.eq(s.eot),
            out.payload.c.eq(Mux(s.eot, 0, s.cbase + lowest)),
            out.payload.y.eq(Mux(s.eot, 0, s.oy)),
            out.payload.x.eq(Mux(s.eot, 0, s.ox)),
        ]
        with m.If(transfer):
            with m.If(s.eot):
                m.d.sync += s.eot.eq(0)
            with m.Else():
                m.d.sync += s.mask.eq(s.mask & (s.mask - 1))

        # The output stage takes its next group from the queue, else straight from F; F's
        # group goes to the queue when the stage is busy or the queue is not empty.
        arriving = self.group.payload
        incoming = SimpleNamespace(mask=Mux(arriving.eot, 0, arriving.mask),
                                   cbase=arriving.cbase, oy=arriving.oy, ox=arriving.ox,
                                   eot=arriving.eot)
        fields = ("mask", "cbase", "oy", "ox", "eot")
        pop = free & (count != 0)
        direct = free & (count == 0) & self.group.valid
        push = self.group.valid & ~direct
        with m.If(pop):
            m.d.sync += s.eq(items[0])
        with m.Elif(direct):
            m.d.sync += [getattr(s, f).eq(getattr(incoming, f)) for f in fields]
        for i, item in enumerate(items):
            # F's group lands behind the last entry that stays (no subtractor on this path)
            with m.If(push & Mux(pop, count == i + 1, count == i)):
                m.d.sync += [getattr(item, f).eq(getattr(incoming, f)) for f in fields]
            if i + 1 < depth:
                with m.Elif(pop):
                    m.d.sync += item.eq(items[i + 1])
        m.d.sync += count.eq(count + push - pop)
        m.d.comb += self.taken.eq(pop | direct)
        with m.If(self.clear):
            m.d.sync += [s.mask.eq(0), s.eot.eq(0), count.eq(0)]
        return m

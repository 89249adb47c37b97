"""The weight store as block-RAM ROM, one memory per lane.

:class:`WeightRom` holds the words of ``docs/rom-layout.md`` (``P`` lanes of ``W`` bits) with
the read port of :class:`spikeforge.hw.spram.WeightStore` (data one cycle after ``read_addr``
while ``read_en``). Each lane's ``W``-bit column is a memory of its own, so the synthesizer can
choose a deep and narrow block shape (an ECP5 ``DP16KD`` as 4096 x 4 holds a 4-bit lane of
up to 4,096 words in one block) instead of one ``P * W``-bit memory split by depth, whose
per-bit output multiplexer after the block's slow clock-to-output was the 32-lane ECP5 build's
critical path (docs/synthesis.md). The bits stored and the cycle behaviour are the same.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["WeightRom"]


class WeightRom(wiring.Component):
    """``depth`` words of ``lanes`` fields of ``lane_bits`` bits, initialised to ``init``.

    Members
    -------
    read_addr, read_en : In
        ``read_data`` takes word ``read_addr`` at the clock edge where ``read_en`` is high.
    read_data : Out(lanes * lane_bits)
    write_addr, write_data, write_en : In
        Only with ``writable``: write a whole word (every lane) at the clock edge.
    """

    def __init__(self, lanes: int, lane_bits: int, depth: int, init=(), *,
                 writable: bool = False):
        self._lanes, self._lane_bits, self._depth = lanes, lane_bits, depth
        self._init, self._writable = list(init), bool(writable)
        addr = max(1, ceil_log2(depth))
        write = {"write_addr": In(addr), "write_data": In(lanes * lane_bits),
                 "write_en": In(1)} if writable else {}
        super().__init__({"read_addr": In(addr), "read_en": In(1),
                          "read_data": Out(lanes * lane_bits), **write})

    def elaborate(self, platform) -> Module:
        m = Module()
        P, W = self._lanes, self._lane_bits
        mask = (1 << W) - 1
        columns = []
        for lane in range(P):
            column = Memory(shape=unsigned(W), depth=self._depth,
                            init=[(word >> (lane * W)) & mask for word in self._init])
            m.submodules[f"lane{lane}"] = column
            rd = column.read_port()
            m.d.comb += [rd.addr.eq(self.read_addr), rd.en.eq(self.read_en)]
            columns.append(rd.data)
            if self._writable:
                wr = column.write_port()
                m.d.comb += [wr.addr.eq(self.write_addr),
                             wr.data.eq(self.write_data[lane * W:(lane + 1) * W]),
                             wr.en.eq(self.write_en)]
        m.d.comb += self.read_data.eq(Cat(*columns))
        return m

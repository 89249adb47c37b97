"""The serializer's priority encoder (hw/serializer.py ``lowest_set_bit``) against Python's
bit arithmetic: every vector up to 8 bits, random and one-hot vectors up to 64."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from spikeforge.hw.serializer import lowest_set_bit


@pytest.mark.parametrize("width", [1, 2, 3, 5, 7, 8, 13, 32, 33, 64])
def test_lowest_set_bit_is_a_priority_encoder(width):
    vector = Signal(width)
    index, any_set, several = lowest_set_bit(vector)
    m = Module()
    got_index, got_any, got_several = Signal(8), Signal(), Signal()
    m.d.comb += [got_index.eq(index), got_any.eq(any_set), got_several.eq(several)]
    rng = random.Random(width)
    values = range(1 << width) if width <= 8 else \
        [rng.getrandbits(width) for _ in range(200)] + [1 << i for i in range(width)] + [0]

    async def testbench(ctx):
        for x in values:
            ctx.set(vector, x)
            got = ctx.get(got_index) if x else None, ctx.get(got_any), ctx.get(got_several)
            want = (x & -x).bit_length() - 1 if x else None, int(x != 0), int(x.bit_count() > 1)
            assert got == want, f"{width}-bit {x:#x}: got {got}, want {want}"

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()

# amaranth: UnusedElaboratable=no
"""The neuron datapath alone, in Amaranth's simulator, against a naive reference of one step."""

from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from spikeforge.hw.layer import LayerEngine, current_bits
from spikeforge.hw.neuron import FireMode, NeuronDatapath, signed_bits_for


def reference_step(*, v, first, v_init, leak_shift, bias, current, theta, fire_mode, fires,
                   v_bits, greater=0, zero_reset=0):
    """docs/contract.md steps 1-4 for one neuron, in plain Python integers."""
    low, high = -(1 << (v_bits - 1)), (1 << (v_bits - 1)) - 1
    base = v_init if first else v >> leak_shift
    total = base + bias + current
    v_sat = min(high, max(low, total))
    spike = 0
    v_next = v_sat
    if fires:
        if fire_mode is FireMode.RADIX:
            spike = v_sat & 1
            v_next = v_sat - spike
        elif (v_sat > theta) if greater else (v_sat >= theta):
            spike, v_next = 1, 0 if zero_reset else v_sat - theta
    return spike, v_next, int(total != v_sat)


def _vectors(rng: random.Random, v_bits: int, c_bits: int, count: int):
    low, high = -(1 << (v_bits - 1)), (1 << (v_bits - 1)) - 1
    c_low, c_high = -(1 << (c_bits - 1)), (1 << (c_bits - 1)) - 1
    edges = [low, high, 0, -1, 1]
    for _ in range(count):
        def pick(lo, hi):
            return rng.choice(edges) if rng.random() < 0.2 and lo <= 0 <= hi else \
                rng.randint(lo, hi)
        yield dict(
            v=pick(low, high), first=rng.random() < 0.3, v_init=pick(low, high),
            leak_shift=rng.randint(0, v_bits), bias=pick(low, high),
            current=rng.choice([c_low, c_high, rng.randint(c_low, c_high)]),
            theta=rng.choice([1, high, rng.randint(1, high)]),
            fire_mode=rng.choice(list(FireMode)), fires=rng.random() < 0.85,
            greater=int(rng.random() < 0.3), zero_reset=int(rng.random() < 0.3))


@pytest.mark.parametrize("v_bits,c_bits", [(2, 1), (3, 5), (8, 7), (8, 14), (16, 12),
                                           (20, 24), (32, 14), (32, 40)])
def test_datapath_matches_reference(v_bits, c_bits):
    rng = random.Random(v_bits * 100 + c_bits)
    dut = NeuronDatapath(v_bits, c_bits)
    vectors = list(_vectors(rng, v_bits, c_bits, 300))
    seen = {"saturated": 0, "spike": 0}

    async def testbench(ctx):
        for vec in vectors:
            for name, value in vec.items():
                ctx.set(getattr(dut, name), value)
            want = reference_step(**vec, v_bits=v_bits)
            got = (ctx.get(dut.spike), ctx.get(dut.v_next), ctx.get(dut.saturated))
            assert got == want, f"{vec}: datapath {got}, reference {want}"
            seen["saturated"] += got[2]
            seen["spike"] += got[0]

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    assert seen["saturated"] and seen["spike"]


def test_seed002_example_on_one_datapath():
    """Weight 2, input train 1,0,1,0, radix mode, leak 1: output train 0,1,0,1 (= 10)."""
    dut = NeuronDatapath(8, 4)
    train = []

    async def testbench(ctx):
        v = 0
        for t, s_in in enumerate([1, 0, 1, 0]):
            for name, value in dict(v=v, first=t == 0, v_init=0, leak_shift=1, bias=0,
                                    current=2 * s_in, theta=1, fire_mode=FireMode.RADIX,
                                    fires=1).items():
                ctx.set(getattr(dut, name), value)
            train.append(ctx.get(dut.spike))
            v = ctx.get(dut.v_next)

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    assert train == [0, 1, 0, 1]


def test_width_checks():
    with pytest.raises(ValueError, match=r"^Membrane width v_bits must be in 2\.\.32, not 1$"):
        NeuronDatapath(1, 8)
    with pytest.raises(ValueError, match=r"^Current width current_bits must be in 1\.\.64, not 0$"):
        NeuronDatapath(8, 0)
    with pytest.raises(TypeError, match=r"^Membrane width v_bits must be an integer, not '8'$"):
        NeuronDatapath("8", 8)


def test_current_width_is_exact():
    assert signed_bits_for(-8, 7) == 4
    assert signed_bits_for(-9, 7) == 5
    assert signed_bits_for(0, 0) == 1
    # fan-in 10, w_bits 4: -80 .. 70 needs 8 bits; fan-in 1, w_bits 2: -2 .. 1 needs 2
    assert current_bits(10, 4) == 8
    assert current_bits(1, 2) == 2
    assert current_bits(64, 8) == signed_bits_for(-64 * 128, 64 * 127)


def test_engine_parameter_checks():
    base = dict(fan_in=4, fan_out=4, timesteps=2, lanes=2, w_bits=4, v_bits=8)
    with pytest.raises(ValueError, match=r"^Lane count must be in 1\.\.64, not 0$"):
        LayerEngine(**{**base, "lanes": 0})
    with pytest.raises(ValueError, match=r"^Timestep count must be in 1\.\.240, not 241$"):
        LayerEngine(**{**base, "timesteps": 241})
    with pytest.raises(ValueError, match=r"^Weight width w_bits must be in 2\.\.8, not 9$"):
        LayerEngine(**{**base, "w_bits": 9})
    with pytest.raises(ValueError, match=r"^theta must have 2 entries \(one per timestep\), "
                                         r"not 3$"):
        LayerEngine(**base, theta=[1, 2, 3])
    with pytest.raises(ValueError, match=r"^theta\[1\] must be in -128\.\.127, not 200$"):
        LayerEngine(**base, theta=[1, 200])
    with pytest.raises(ValueError, match=r"^weight must have shape \(4, 4\), not \(4, 3\)$"):
        LayerEngine(**base, weight=[[0] * 3] * 4)
    with pytest.raises(ValueError, match=r"^Fan-in must be in 1\.\.16, not 17$"):
        LayerEngine(**{**base, "fan_in": 17, "addr_bits": 4})

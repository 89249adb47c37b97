# amaranth: UnusedElaboratable=no
"""The shared core array in Amaranth's simulator against the golden model and the core's cycle
model: every spike of every layer at every timestep, every end-of-step membrane, the cycles."""

from __future__ import annotations

import os
import random

import pytest
import torch
from amaranth.sim import Simulator

from spikeforge.hw.core import CoreArray
from spikeforge.sim.core_cases import random_conv_network
from spikeforge.sim.core_model import core_timing
from spikeforge.sim.network_cases import random_network
from spikeforge.sw.golden import ConvLayer, DenseLayer, Encoder, Network, SumPoolLayer
from spikeforge.sw.interface import SPEC

SEED = int(os.environ.get("SPIKEFORGE_SEED", "0"))


async def bus_read(ctx, dut, layer, name):
    ctx.set(dut.bus.layer, layer)
    ctx.set(dut.bus.addr, SPEC.layer_offset(name))
    ctx.set(dut.bus.r_en, 1)
    await ctx.tick()
    ctx.set(dut.bus.r_en, 0)
    return ctx.get(dut.bus.r_data)


def run_core(network: Network, frames: torch.Tensor, lanes: int, *, stall_every: int = 0,
             budget: int = 200_000):
    """One inference of ``frames`` (``int[T, n_in]``: spikes, or direct-coded pixels) on the
    core in pysim, in at most ``budget`` cycles."""
    dut = CoreArray(network, lanes)
    maps = dut.layout.maps
    L, T = len(maps), network.timesteps
    _, h, w = maps[0].source_shape
    beats = []      # (c, y, x, eot, value): value is the direct-coded pixel (else 1)
    for t in range(T):
        beats += [(j // (h * w), j // w % h, j % w, 0, int(frames[t, j]))
                  for j in frames[t].nonzero().flatten().tolist()] + [(0, 0, 0, 1, 0)]
    direct = dut.layout.value_bits > 0
    got = {"spikes": {}, "membranes": {}, "cycles": None, "counters": {}}

    async def testbench(ctx):
        ctx.set(dut.outputs.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        sent, steps = 0, [0] * L
        current = [[] for _ in range(L)]
        for cycle in range(1, budget):
            ctx.set(dut.inputs.valid, sent < len(beats))
            if sent < len(beats):
                c, y, x, eot, value = beats[sent]
                ctx.set(dut.inputs.payload, {"c": c, "y": y, "x": x, "eot": eot,
                                             **({"value": value} if direct else {})})
            if ctx.get(dut.fired.valid):
                beat = ctx.get(dut.fired.payload)
                if beat.eot:
                    got.setdefault("ends", []).append(cycle)
                    got["spikes"][beat.layer, steps[beat.layer]] = sorted(current[beat.layer])
                    current[beat.layer] = []
                    steps[beat.layer] += 1
                else:
                    _, oh, ow = maps[beat.layer].out_shape
                    current[beat.layer].append((beat.c * oh + beat.y) * ow + beat.x)
            if ctx.get(dut.membranes.valid):
                beat = ctx.get(dut.membranes.payload)
                got["membranes"][beat.layer, beat.timestep, beat.group] = list(beat.v)
            sent += sent < len(beats) and ctx.get(dut.inputs.ready)
            done = ctx.get(dut.done)
            await ctx.tick()
            if done:
                break
        else:
            raise AssertionError(f"the core did not finish in {budget:,} cycles")
        got["cycles"] = ctx.get(dut.cycles)
        for k in range(L):
            got["counters"][k] = {name: await bus_read(ctx, dut, k, name)
                                  for name in ("SYNOPS", "SPIKES", "CYCLES")}

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return got


def check_against_golden(network: Network, frames: torch.Tensor, lanes: int):
    """Every spike, membrane, counter and pass end of one inference against the golden model
    and the core's cycle model."""
    trace = network.trace_frames(frames[None])
    timing = core_timing(network, lanes, trace)[0]
    # a random network may need more than the default budget (one took 264,850 cycles at one
    # lane): twice the cycle model's count, so a hang still ends the test
    got = run_core(network, frames, lanes, budget=max(200_000, 2 * timing.cycles))
    layout = CoreArray(network, lanes).layout
    for i, x in enumerate(layout.maps):
        layer, lt = x.layer, trace.layers[x.index]
        for t in range(network.timesteps):
            want = lt.spikes[0, t].nonzero().flatten().tolist() if layer.fires else []
            assert got["spikes"][i, t] == want, f"layer {x.index} step {t} spikes"
            v = x.native(lt.membranes[0, t])
            exists = x.native(torch.ones(layer.fan_out, dtype=torch.int64))
            for g in range(x.groups):
                here = slice(g * lanes, (g + 1) * lanes)
                mask = exists[here].bool().tolist()
                assert [a for a, e in zip(got["membranes"][i, t, g], mask, strict=True) if e] \
                    == [a for a, e in zip(v[here].tolist(), mask, strict=True) if e], \
                    f"layer {x.index} step {t} group {g} membranes"
        assert got["counters"][i]["SYNOPS"] == int(lt.synops[0]), f"layer {x.index} synops"
        assert got["counters"][i]["SPIKES"] == (int(lt.spikes[0].sum()) if layer.fires else 0)
    assert got["ends"] == [p.end for p in timing.passes], "pass ends"
    for i in range(len(layout.maps)):
        assert got["counters"][i]["CYCLES"] == timing.layer_cycles(i), f"layer {i} cycles"
    assert got["cycles"] == timing.cycles


def small_network(seed: int, *, widths=(12, 9, 5), timesteps=3, v_bits=(10, 10)):
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for k in range(len(widths) - 1):
        m, n = widths[k], widths[k + 1]
        layers.append(DenseLayer(
            weight=torch.randint(-8, 8, (n, m), generator=gen),
            bias=torch.randint(-3, 4, (n,), generator=gen),
            theta=torch.randint(4, 12, (timesteps,), generator=gen),
            leak_shift=k % 2, w_bits=4, v_bits=v_bits[k], name=f"fc{k}"))
    return Network(layers, timesteps, Encoder("rate", 4))


@pytest.mark.parametrize("lanes", [1, 4, 8])
def test_two_layers(lanes):
    net = small_network(1)
    gen = torch.Generator().manual_seed(2)
    frames = (torch.rand((net.timesteps, net.n_inputs), generator=gen) < 0.5).to(torch.int64)
    check_against_golden(net, frames, lanes)


@pytest.mark.parametrize("case", range(6))
def test_random_networks(case):
    """The layer-engine network regression's random networks (depth 2-4, mixed widths)."""
    seed = SEED * 100 + case
    net, lanes = random_network(seed)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, net.encoder.pixel_max + 1, (1, net.n_inputs), generator=gen)
    frames = net.encode(pixels)[0]
    try:
        check_against_golden(net, frames, rng.choice([lanes, 1, 5]))
    except AssertionError as error:
        raise AssertionError(f"{error} (replay: SPIKEFORGE_SEED={SEED} case {case})") from None


@pytest.mark.parametrize("case", range(10))
def test_random_conv_networks(case):
    """Convolutions (kernel 1..5, padding, channels not a multiple of the lanes), 2x2 sum
    pooling as an address transform, a dense readout: every spike, membrane and cycle."""
    seed = SEED * 100 + case
    net, lanes = random_conv_network(seed)
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, net.encoder.pixel_max + 1, (1, net.n_inputs), generator=gen)
    try:
        check_against_golden(net, net.encode(pixels)[0], lanes)
    except AssertionError as error:
        raise AssertionError(f"{error} (replay: SPIKEFORGE_SEED={SEED} "
                             f"pytest tests/test_core.py -k 'conv and {case}')") from None


@pytest.mark.parametrize("lanes", [1, 3, 8])
def test_direct_input_adds_each_set_bit(lanes):
    """Direct (analog) input: every pixel value 1 .. 15 (one to four set bits), saturating
    hidden membranes, on the same network as the spike tests."""
    net = small_network(3, v_bits=(8, 12))
    net = Network(net.layers, net.timesteps, Encoder("direct", 4))
    pixels = torch.arange(net.n_inputs)[None] % 16
    check_against_golden(net, net.encode(pixels)[0], lanes)
    low, high = -128, 127
    membranes = net.trace(pixels).layers[0].membranes
    assert ((membranes == low) | (membranes == high)).any(), "no saturation hit"


@pytest.mark.parametrize("encoder", ["rate", "direct"])
@pytest.mark.parametrize("padding", [0, 1])
def test_stride_two_convolution(encoder, padding):
    """A 3x3 stride-2 convolution on a 7x6 image (odd and even sizes: a partial last window is
    dropped), three channels over two lanes, then a dense readout."""
    gen = torch.Generator().manual_seed(padding)
    conv = ConvLayer(weight=torch.randint(-7, 8, (3, 2, 3, 3), generator=gen), bias=[1, 0, -1],
                     theta=[6, 9, 7], w_bits=4, v_bits=12, input_shape=(2, 7, 6), stride=2,
                     padding=padding, name="conv")
    fc = DenseLayer(weight=torch.randint(-7, 8, (4, conv.fan_out), generator=gen),
                    bias=[0] * 4, theta=[5, 5, 5], fires=False, w_bits=4, v_bits=12, name="fc")
    net = Network([conv, fc], 3, Encoder(encoder, 4))
    pixels = torch.randint(0, 16, (1, net.n_inputs), generator=gen)
    check_against_golden(net, net.encode(pixels)[0], 2)


def test_descriptor_registers_read_each_layers_geometry():
    """SHAPE_IN, SHAPE_OUT, KERNEL, WEIGHT_BASE and NEURON_BASE read back what each layer is,
    the expectations written out by hand from the layers and docs/rom-layout.md's word counts:
    a padded 3x3 convolution of 3 channels on 2 lanes (Gc = 2), a 2x2 sum pool folded into a
    stride-2 3x3 convolution, a dense readout."""
    gen = torch.Generator().manual_seed(3)
    conv0 = ConvLayer(weight=torch.randint(-7, 8, (3, 2, 3, 3), generator=gen), bias=[0] * 3,
                      theta=[6, 6], w_bits=4, v_bits=10, input_shape=(2, 8, 8), padding=1,
                      name="conv0")
    pool = SumPoolLayer(kernel=2, input_shape=(3, 8, 8), name="pool")
    conv1 = ConvLayer(weight=torch.randint(-7, 8, (4, 3, 3, 3), generator=gen), bias=[0] * 4,
                      theta=[6, 6], w_bits=4, v_bits=10, input_shape=(3, 4, 4), stride=2,
                      name="conv1")
    fc = DenseLayer(weight=torch.randint(-7, 8, (5, 4), generator=gen), bias=[0] * 5,
                    theta=[3, 3], fires=False, w_bits=4, v_bits=10, name="fc")
    dut = CoreArray(Network([conv0, pool, conv1, fc], 2, Encoder("rate", 4)), 2)

    def shape(c, h, w):
        return {"channels": c, "height": h, "width": w}

    expected = [
        {"SHAPE_IN": shape(2, 8, 8), "SHAPE_OUT": shape(3, 8, 8),
         "KERNEL": dict(conv=1, pool_shift=0, stride_shift=0, height=3, width=3, pad_h=1,
                        pad_w=1),
         "WEIGHT_BASE": 0, "NEURON_BASE": 0},
        # 2 * 9 rows x 2 groups of weight words; 8 * 8 positions x 2 groups of membranes
        {"SHAPE_IN": shape(3, 8, 8), "SHAPE_OUT": shape(4, 1, 1),
         "KERNEL": dict(conv=1, pool_shift=1, stride_shift=1, height=3, width=3, pad_h=0,
                        pad_w=0),
         "WEIGHT_BASE": 36, "NEURON_BASE": 128},
        # + 3 * 9 rows x 2 groups; + 1 position x 2 groups
        {"SHAPE_IN": shape(4, 1, 1), "SHAPE_OUT": shape(5, 1, 1),
         "KERNEL": dict(conv=0, pool_shift=0, stride_shift=0, height=1, width=1, pad_h=0,
                        pad_w=0),
         "WEIGHT_BASE": 90, "NEURON_BASE": 130},
    ]
    read = []

    async def bench(ctx):
        for k in range(len(expected)):
            words = {name: await bus_read(ctx, dut, k, name) for name in expected[k]}
            read.append({name: (SPEC.layer_reg(name).unpack(word)
                                if SPEC.layer_reg(name).fields else word)
                         for name, word in words.items()})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert read == expected

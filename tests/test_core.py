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
from spikeforge.sim.core_model import core_timing
from spikeforge.sim.network_cases import random_network
from spikeforge.sw.golden import DenseLayer, Encoder, Network
from spikeforge.sw.interface import SPEC

SEED = int(os.environ.get("SPIKEFORGE_SEED", "0"))


async def bus_read(ctx, dut, layer, name):
    ctx.set(dut.bus.layer, layer)
    ctx.set(dut.bus.addr, SPEC.layer_offset(name))
    ctx.set(dut.bus.r_en, 1)
    await ctx.tick()
    ctx.set(dut.bus.r_en, 0)
    return ctx.get(dut.bus.r_data)


def run_core(network: Network, frames: torch.Tensor, lanes: int, *, stall_every: int = 0):
    """One inference of ``frames`` (``int[T, n_in]``, binary) on the core in pysim."""
    dut = CoreArray(network, lanes)
    L, T = len(network.layers), network.timesteps
    beats = []
    for t in range(T):
        beats += [(j, 0) for j in frames[t].nonzero().flatten().tolist()] + [(0, 1)]
    got = {"spikes": {}, "membranes": {}, "cycles": None, "counters": {}}

    async def testbench(ctx):
        ctx.set(dut.outputs.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        sent, steps = 0, [0] * L
        current = [[] for _ in range(L)]
        for cycle in range(1, 200_000):
            ctx.set(dut.inputs.valid, sent < len(beats))
            if sent < len(beats):
                ctx.set(dut.inputs.payload, {"addr": beats[sent][0], "eot": beats[sent][1]})
            if ctx.get(dut.fired.valid):
                beat = ctx.get(dut.fired.payload)
                if beat.eot:
                    got.setdefault("ends", []).append(cycle)
                    got["spikes"][beat.layer, steps[beat.layer]] = sorted(current[beat.layer])
                    current[beat.layer] = []
                    steps[beat.layer] += 1
                else:
                    current[beat.layer].append(beat.addr)
            if ctx.get(dut.membranes.valid):
                beat = ctx.get(dut.membranes.payload)
                got["membranes"][beat.layer, beat.timestep, beat.group] = list(beat.v)
            sent += sent < len(beats) and ctx.get(dut.inputs.ready)
            done = ctx.get(dut.done)
            await ctx.tick()
            if done:
                break
        else:
            raise AssertionError("the core did not finish")
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
    trace = network.trace_frames(frames[None])
    got = run_core(network, frames, lanes)
    timing = core_timing(network, lanes, trace)[0]
    for k, (layer, lt) in enumerate(zip(network.layers, trace.layers, strict=True)):
        for t in range(network.timesteps):
            want = lt.spikes[0, t].nonzero().flatten().tolist() if layer.fires else []
            assert got["spikes"][k, t] == want, f"layer {k} step {t} spikes"
            v = lt.membranes[0, t].tolist()
            G = -(-layer.fan_out // lanes)
            for g in range(G):
                lanes_here = min(lanes, layer.fan_out - g * lanes)
                assert got["membranes"][k, t, g][:lanes_here] == v[g * lanes:g * lanes
                                                                   + lanes_here], \
                    f"layer {k} step {t} group {g} membranes"
        assert got["counters"][k]["SYNOPS"] == int(lt.synops[0]), f"layer {k} synops"
        assert got["counters"][k]["SPIKES"] == (int(lt.spikes[0].sum()) if layer.fires else 0)
    assert got["ends"] == [p.end for p in timing.passes], "pass ends"
    for k in range(len(network.layers)):
        assert got["counters"][k]["CYCLES"] == timing.layer_cycles(k), f"layer {k} cycles"
    assert got["ends"] == [p.end for p in timing.passes], "pass ends"
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

# amaranth: UnusedElaboratable=no
"""The layer engine in Amaranth's own simulator (no Verilator needed), its Verilog metadata and
the cycle model's formula on hand-worked cases."""

from __future__ import annotations

import json

import pytest
import torch
from amaranth.sim import Simulator

from spikeforge.hw.layer import LayerEngine, Reg, WeightMemory, pack_bias, weight_chunks
from spikeforge.hw.rtl import generate_verilog
from spikeforge.sim.cycle_model import fire_pass_cycles, layer_schedule, schedule
from spikeforge.sim.layer_cases import EngineConfig, random_case, seed002_layer
from spikeforge.sw.interface import SPEC, unpack_w_info


async def write_register(ctx, dut, addr, value):
    ctx.set(dut.cfg.addr, addr)
    ctx.set(dut.cfg.w_data, value)
    ctx.set(dut.cfg.w_en, 1)
    await ctx.tick()
    ctx.set(dut.cfg.w_en, 0)


async def read_register(ctx, dut, addr):
    ctx.set(dut.cfg.addr, addr)
    ctx.set(dut.cfg.r_en, 1)
    await ctx.tick()
    ctx.set(dut.cfg.r_en, 0)
    return ctx.get(dut.cfg.r_data)


def run_pysim(layer, spikes_in, lanes, weight_memory="rom"):
    """One inference on the Amaranth simulator: output spikes, membranes, counters.

    With ``weight_memory="spram"`` the engine starts with empty weights, and the testbench
    loads them through ``W_ADDR``/``W_DATA`` as a host would.
    """
    dut = LayerEngine.from_layer(layer, lanes=lanes, weight_memory=weight_memory)
    beats = []
    for t in range(layer.timesteps):
        beats += [(j, 0) for j in spikes_in[t].nonzero().flatten().tolist()] + [(0, 1)]
    got = {"spikes": [], "membranes": {}, "busy": 0}

    async def testbench(ctx):
        if dut.weight_memory is WeightMemory.SPRAM:
            await write_register(ctx, dut, Reg.W_ADDR, 0)
            for chunk in weight_chunks(layer.weight, lanes, layer.w_bits):
                await write_register(ctx, dut, Reg.W_DATA, chunk)
            got["w_addr"] = await read_register(ctx, dut, Reg.W_ADDR)
            got["status"] = await read_register(ctx, dut, Reg.STATUS)
        ctx.set(dut.outputs.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        current, sent = [], 0
        while True:
            ctx.set(dut.inputs.valid, sent < len(beats))
            if sent < len(beats):
                ctx.set(dut.inputs.payload, {"addr": beats[sent][0], "eot": beats[sent][1]})
            if ctx.get(dut.outputs.valid):
                beat = ctx.get(dut.outputs.payload)
                if beat.eot:
                    got["spikes"].append(current)
                    current = []
                else:
                    current.append(beat.addr)
            if ctx.get(dut.membranes.valid):
                beat = ctx.get(dut.membranes.payload)
                got["membranes"][beat.timestep, beat.group] = list(beat.v)
            sent += sent < len(beats) and ctx.get(dut.inputs.ready)
            busy = ctx.get(dut.busy)
            await ctx.tick()
            got["busy"] += busy
            if busy and not ctx.get(dut.busy):
                break
        got["counters"] = {name: ctx.get(getattr(dut, name))
                           for name in ("cycles", "synops", "spikes")}

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return got


@pytest.mark.parametrize("config", [
    EngineConfig(4, 5, 7, 4, 4, 8), EngineConfig(1, 3, 2, 3, 3, 6),
    EngineConfig(3, 4, 10, 6, 2, 4), EngineConfig(8, 6, 8, 2, 8, 12),
], ids=lambda c: c.name)
def test_engine_matches_golden_in_pysim(config):
    for index in range(3):
        case = random_case(config, 0, index)
        layer, lanes = case.layer, config.lanes
        spikes, _, membranes = layer.run(case.spikes_in[None], trace=True)
        got = run_pysim(layer, case.spikes_in, lanes)
        assert got["spikes"] == [row.nonzero().flatten().tolist() for row in spikes[0]]
        for t in range(layer.timesteps):
            for i in range(layer.fan_out):
                assert got["membranes"][t, i // lanes][i % lanes] == membranes[0, t, i]
        cycles = layer_schedule(layer, case.spikes_in, lanes).cycles
        assert got["busy"] + 1 == got["counters"]["cycles"] + 1 == cycles + 1
        assert got["counters"]["synops"] == int(case.spikes_in.sum()) * layer.fan_out
        assert got["counters"]["spikes"] == int(spikes.sum())


@pytest.mark.parametrize("config", [
    EngineConfig(4, 5, 7, 4, 4, 8), EngineConfig(3, 4, 10, 6, 2, 4),
    EngineConfig(8, 6, 8, 2, 8, 12), EngineConfig(3, 70, 9, 2, 7, 16),
], ids=lambda c: c.name)
def test_spram_engine_loaded_over_registers_matches_golden(config):
    """Weights in (modelled) SPRAM start empty; loaded through W_ADDR/W_DATA the engine must
    give the golden model's spikes, membranes and the cycle model's count."""
    case = random_case(config, 1, 0)
    layer, lanes = case.layer, config.lanes
    spikes, _, membranes = layer.run(case.spikes_in[None], trace=True)
    got = run_pysim(layer, case.spikes_in, lanes, weight_memory="spram")
    groups = -(-layer.fan_out // lanes)
    assert got["w_addr"] == layer.fan_in * groups
    assert got["status"] == 0
    assert got["spikes"] == [row.nonzero().flatten().tolist() for row in spikes[0]]
    for t in range(layer.timesteps):
        for i in range(layer.fan_out):
            assert got["membranes"][t, i // lanes][i % lanes] == membranes[0, t, i]
    assert got["counters"]["cycles"] == layer_schedule(layer, case.spikes_in, lanes).cycles


def test_weight_load_registers():
    """W_INFO describes the memory; a load past the last word sets load_overflow and a load
    while busy is refused like any register write."""
    dut = LayerEngine(fan_in=3, fan_out=5, timesteps=2, lanes=4, w_bits=8, v_bits=8,
                      weight_memory="spram")
    rom = LayerEngine(fan_in=3, fan_out=5, timesteps=2, lanes=4, w_bits=8, v_bits=8)
    overflow = SPEC.layer_reg("STATUS").field("load_overflow").mask
    got = {}

    async def testbench(ctx):
        info = unpack_w_info(await read_register(ctx, dut, Reg.W_INFO))
        got["info"] = (info["in_ram"], info["chunks_per_word"], info["words"])
        await write_register(ctx, dut, Reg.W_ADDR, 5)
        await write_register(ctx, dut, Reg.W_DATA, 1)   # word 5: the last one (3 inputs x 2)
        got["before"] = await read_register(ctx, dut, Reg.STATUS)
        await write_register(ctx, dut, Reg.W_DATA, 2)   # past the end
        got["after"] = await read_register(ctx, dut, Reg.STATUS)
        await write_register(ctx, dut, Reg.STATUS, overflow)
        got["cleared"] = await read_register(ctx, dut, Reg.STATUS)
        await write_register(ctx, dut, Reg.W_ADDR, 1000)
        got["clamped"] = await read_register(ctx, dut, Reg.W_ADDR)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    # 4 lanes x 8 bits = one 32-bit chunk per word; 3 inputs x 2 groups = 6 words
    assert got["info"] == (1, 1, 6)
    assert got["before"] == 0 and got["after"] == overflow and got["cleared"] == 0
    assert got["clamped"] == 6
    assert rom.parameters["weight_memory"] == "rom"
    with pytest.raises(ValueError, match="loadable=True needs weight_memory='rom'"):
        LayerEngine(fan_in=3, fan_out=5, timesteps=2, lanes=4, loadable=True,
                    weight_memory="spram")


def test_weight_chunks_split_words_lowest_first():
    # 5 lanes x 8 bits = 40-bit words -> two chunks each; neuron i's weight in lane i
    weight = torch.tensor([[1], [-1], [3], [4], [-128]])     # fan_out 5, fan_in 1: one word
    low = 0x01 | 0xFF << 8 | 0x03 << 16 | 0x04 << 24
    assert weight_chunks(weight, 5, 8) == [low, 0x80]


def test_seed002_in_pysim():
    got = run_pysim(seed002_layer(), torch.tensor([[1], [0], [1], [0]]), 1)
    assert [int(bool(step)) for step in got["spikes"]] == [0, 1, 0, 1]


def test_fire_pass_and_schedule_by_hand():
    # 10 neurons on 4 lanes: groups hold 4, 4, 2; spikes 0+0, 3 in group 1, none elsewhere
    spikes = [0, 0, 0, 0, 1, 1, 0, 1, 0, 0]
    # five fixed cycles: the fill of stages R, L, C, F and the marker slot
    assert fire_pass_cycles(spikes, 4) == 5 + (1 + 3 + 1)
    # G = 2, one step with 3 events and one empty step, fire passes of 5 cycles each; the first
    # beat is taken after the 2-cycle clear pass, the step into RUN and the input register
    s = schedule(2, [3, 0], [5, 5])
    assert [st.first_beat for st in s.steps] == [4, 12]
    assert [st.marker for st in s.steps] == [10, 12]
    assert [st.handoff for st in s.steps] == [11, 17]  # step 1 waits for the fire unit
    assert s.cycles == 22 and s.step_cycles == [16, 6]


def test_generate_verilog_writes_port_metadata(tmp_path):
    dut = LayerEngine(fan_in=5, fan_out=6, timesteps=3, lanes=4, w_bits=4, v_bits=8,
                      theta=[3, 4, 5])
    path = generate_verilog(dut, tmp_path, "engine")
    meta = json.loads((tmp_path / "engine.json").read_text())
    assert path.read_text().count("module engine(") == 1
    ports = meta["ports"]
    assert ports["inputs__payload"]["fields"]["eot"] == {"offset": 16, "width": 1,
                                                         "signed": False}
    assert ports["inputs__ready"]["direction"] == "output"
    assert ports["membranes__payload"]["fields"]["v"]["elements"] == {
        "count": 4, "width": 8, "signed": True}
    assert meta["parameters"]["groups"] == 2
    assert meta["parameters"]["reset"]["theta"] == [3, 4, 5]
    assert "weight_load__en" not in ports
    with pytest.raises(ValueError, match=r"^Module name must be a Verilog identifier"):
        generate_verilog(dut, tmp_path, "bad name")


def test_bias_words_follow_the_rom_layout():
    assert pack_bias([1, -1, 2], 2, 4) == [0xF1, 0x02]


def test_register_decoder_follows_the_spec():
    """The engine decodes the spec it is given: ``Reg`` is the spec's per-layer block, and with
    W_INFO and THETA moved the engine answers at the new offsets and not at the old ones."""
    assert {r.name: r.value for r in Reg} == {r.name: r.offset for r in SPEC.layer_registers}
    moved = (SPEC.with_register("W_INFO", per_layer=True, offset=0x0F)
             .with_register("THETA", per_layer=True, offset=0x20, count=0xE0))
    got = {}
    for name, spec in (("spec", SPEC), ("moved", moved)):
        dut = LayerEngine(fan_in=3, fan_out=5, timesteps=2, lanes=4, w_bits=8, v_bits=8,
                          theta=[7, 9], spec=spec)

        async def testbench(ctx, dut=dut, name=name):
            got[name] = [await read_register(ctx, dut, offset)
                         for offset in (0x09, 0x0F, 0x10, 0x11, 0x20, 0x21)]

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(testbench)
        sim.run()
    w_info = SPEC.layer_reg("W_INFO").pack(in_ram=0, chunks_per_word=1, words=6)
    assert got["spec"] == [w_info, 0, 7, 9, 0, 0]
    assert got["moved"] == [0, w_info, 0, 0, 7, 9]
    with pytest.raises(ValueError, match="Timestep count must be"):
        LayerEngine(fan_in=3, fan_out=5, timesteps=0xE1, lanes=4, spec=moved)

# amaranth: UnusedElaboratable=no
"""The SPRAM weight store (hw/spram.py) in Amaranth's simulator against a naive model, its SPRAM
model against the primitive's rules, and the yosys mapping onto SB_SPRAM256KA.

Random traffic is drawn from the run's seed (tests/conftest.py prints it in pytest's header);
``SPIKEFORGE_SEED=<seed>`` replays a run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess

import pytest
from amaranth.back import rtlil, verilog
from amaranth.hdl import Fragment
from amaranth.sim import Simulator

from spikeforge.hw.spram import SPRAMModel, WeightStore, spram_count
from spikeforge.sim.toolchain import ensure_tools, have_yowasp

SEED = int(os.environ.get("SPIKEFORGE_SEED", "0"))
CYCLES = 1200


class StoreModel:
    """What :class:`WeightStore` promises, in plain Python: ``step`` is one clock edge and
    returns ``read_data`` after it (None while it holds a word never written)."""

    def __init__(self):
        self.words: dict[int, int] = {}
        self.data: int | None = 0

    def step(self, read_en, read_addr, write_en, write_addr, write_data):
        if read_en and not write_en:
            self.data = self.words.get(read_addr)
        if write_en:
            self.words[write_addr] = write_data
        return self.data


def _traffic(rng: random.Random, width: int, depth: int, cycles: int):
    """Cycles of ``(read_en, read_addr, write_en, write_addr, write_data)``: single writes,
    write-then-read of the same word, runs of back-to-back reads, idle runs, writes while the
    output holds, and reads colliding with writes."""
    written: list[int] = []

    def addr():
        # Both ends of every bank, where a bank or column slip would show first.
        if rng.random() < 0.15:
            edge = rng.choice([0, 16383, 16384, depth - 1])
            return min(edge, depth - 1)
        return rng.randrange(depth)

    def old():
        return rng.choice(written) if written and rng.random() < 0.85 else addr()

    def word():
        return rng.choice([0, (1 << width) - 1, rng.getrandbits(width)])

    out = []
    while len(out) < cycles:
        kind = rng.randrange(7)
        if kind == 0:
            a = addr()
            written.append(a)
            out.append((0, addr(), 1, a, word()))
        elif kind == 1:
            a = addr()
            written.append(a)
            out += [(0, 0, 1, a, word()), (1, a, 0, 0, 0)]
        elif kind == 2:
            out += [(1, old(), 0, addr(), word()) for _ in range(rng.randint(2, 8))]
        elif kind == 3:
            out += [(0, old(), 0, addr(), word()) for _ in range(rng.randint(1, 4))]
        elif kind == 4:
            a = old()
            written.append(a)
            out += [(1, old(), 0, 0, 0), (0, old(), 1, a, word()), (0, a, 0, 0, 0)]
        else:
            a = addr()
            written.append(a)
            out.append((1, a if kind == 5 else old(), 1, a, word()))
    return out[:cycles]


def _run(dut, cycles, check):
    """Drive ``cycles`` through ``dut`` and hand every edge's ``read_data`` to ``check``."""
    seen = []

    async def testbench(ctx):
        for n, cycle in enumerate(cycles):
            read_en, read_addr, write_en, write_addr, write_data = cycle
            ctx.set(dut.read_en, read_en)
            ctx.set(dut.read_addr, read_addr)
            ctx.set(dut.write_en, write_en)
            ctx.set(dut.write_addr, write_addr)
            ctx.set(dut.write_data, write_data)
            await ctx.tick()
            got = ctx.get(dut.read_data)
            check(n, cycle, got)
            seen.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return seen


def _checked(dut, cycles, label):
    model = StoreModel()
    stats = {"reads": 0, "held": 0}

    def check(n, cycle, got):
        want = model.step(*cycle)
        if want is None:  # a word never written: anything, but it must then hold
            model.data = want = got
        assert got == want, (f"{label}, cycle {n} {cycle}: read_data {got:#x}, model {want:#x}; "
                             f"replay with SPIKEFORGE_SEED={SEED}")
        stats["reads" if cycle[0] and not cycle[2] else "held"] += 1

    _run(dut, cycles, check)
    return stats


STORES = [(width, depth, spram)
          for width in (4, 16, 24, 32, 64)
          for depth in (1, 37, 16384, 32768)
          for spram in (False, True)
          if not spram or spram_count(width, depth)[0] * spram_count(width, depth)[1] <= 4]
STORES += [(4, 65536, True), (16, 40000, True), (12, 20000, True), (12, 20000, False)]


@pytest.mark.parametrize("width,depth,spram", STORES,
                         ids=[f"{w}x{d}-{'spram' if s else 'memory'}" for w, d, s in STORES])
def test_random_traffic_matches_model(width, depth, spram):
    rng = random.Random(f"{SEED}-{width}-{depth}-{spram}")
    dut = WeightStore(width, depth, spram=spram)
    label = f"WeightStore({width}, {depth}, spram={spram})"
    stats = _checked(dut, _traffic(rng, width, depth, CYCLES), label)
    assert stats["reads"] > CYCLES // 5 and stats["held"] > CYCLES // 5


@pytest.mark.parametrize("spram", [False, True])
def test_directed_hold_back_to_back_and_read_after_write(spram):
    """32 x 32768 (2 x 2 SPRAMs): the cases the layer engine leans on, spelled out."""
    dut = WeightStore(32, 32768, spram=spram)
    lo, hi = 5, 16384 + 5  # the same word in either bank
    cycles = [
        (0, 0, 1, lo, 0x1111_1111),
        (0, 0, 1, hi, 0x2222_2222),
        (1, lo, 0, 0, 0),                    # read right after writes
        (0, hi, 0, 0, 0),                    # holds ...
        (0, lo, 1, lo, 0x3333_3333),         # ... through a write to the word it holds
        (0, lo, 1, lo + 1, 0x4444_4444),     # ... and to its bank
        (0, lo, 0, 0, 0),
        (1, hi, 0, 0, 0),                    # back-to-back reads, bank 1, 0, 1, 0
        (1, lo, 0, 0, 0),
        (1, hi, 0, 0, 0),
        (1, lo + 1, 0, 0, 0),
        (0, 0, 1, hi, 0x5555_5555),          # the other bank is written: still holds
        (1, lo, 1, lo, 0x6666_6666),         # a read with a write is dropped: still holds
        (1, lo, 0, 0, 0),
    ]
    want = [0, 0, 0x1111_1111, 0x1111_1111, 0x1111_1111, 0x1111_1111, 0x1111_1111,
            0x2222_2222, 0x3333_3333, 0x2222_2222, 0x4444_4444, 0x4444_4444, 0x4444_4444,
            0x6666_6666]
    assert _run(dut, cycles, lambda n, cycle, got: None) == want


def test_spram_model_follows_the_primitive():
    """SPRAMModel against the rules of yosys's SB_SPRAM256KA simulation model."""
    dut = SPRAMModel()
    seen = []

    async def testbench(ctx):
        async def edge(**ports):
            for name, value in ports.items():
                ctx.set(getattr(dut, name), value)
            await ctx.tick()
            for name in ports:
                ctx.set(getattr(dut, name), 0 if name != "poweroff" else 1)
            seen.append(ctx.get(dut.dataout))

        await edge(chipselect=1, wren=1, address=7, datain=0xABCD, maskwren=0b1111)
        await edge(chipselect=1, address=7)                               # read: 0xABCD
        await edge(address=8)                                             # CS low: holds
        await edge(chipselect=1, wren=1, address=7, datain=0x1234, maskwren=0b0101)
        await edge(chipselect=1, address=7)                               # masked: 0xA2C4
        await edge(chipselect=1, wren=1, address=7, datain=0, maskwren=0)  # nothing written
        await edge(chipselect=1, address=7)
        await edge(sleep=1)                                               # 0 while asleep
        await edge(chipselect=1, address=7, standby=1)                    # no read
        await edge(chipselect=1, address=7)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()

    def undefined(word):  # how the model shows an 'x' output: the last word read, inverted
        return ~word & 0xFFFF

    assert seen == [undefined(0), 0xABCD, 0xABCD, undefined(0xABCD), 0xA2C4,
                    undefined(0xA2C4), 0xA2C4, 0, undefined(0xA2C4), 0xA2C4]


def test_refusals():
    with pytest.raises(ValueError, match=r"^A 64 x 32768 weight store needs 8 SB_SPRAM256KA "
                                         r"\(4 wide x 2 deep\); the iCE40UP5K has 4$"):
        WeightStore(64, 32768, spram=True)
    with pytest.raises(ValueError, match=r"^A 16 x 65537 weight store needs 5 SB_SPRAM256KA "
                                         r"\(1 wide x 5 deep\); the iCE40UP5K has 4$"):
        WeightStore(16, 65537, spram=True)
    WeightStore(64, 32768, spram=False)
    with pytest.raises(ValueError, match=r"^Weight store width must be a positive integer, "
                                         r"not 0$"):
        WeightStore(0, 16, spram=True)
    with pytest.raises(ValueError, match=r"^Weight store depth must be a positive integer, "
                                         r"not -4$"):
        WeightStore(8, -4, spram=False)
    with pytest.raises(TypeError, match=r"^Weight store depth must be an integer, not 1\.5$"):
        WeightStore(8, 1.5, spram=False)
    with pytest.raises(TypeError, match=r"^spram must be a bool, not 1$"):
        WeightStore(8, 16, spram=1)


def test_spram_needs_an_ultraplus():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    with pytest.raises(ValueError, match=r"^SB_SPRAM256KA exists only on iCE40 UltraPlus "
                                         r"devices, not 'LFE5U-85F'; use spram=False$"):
        Fragment.get(WeightStore(16, 16, spram=True), ULX3S_85F_Platform())


def test_ports_and_verilog_export():
    dut = WeightStore(24, 20000, spram=True)
    assert (len(dut.read_addr), len(dut.write_addr), len(dut.read_data)) == (15, 15, 24)
    assert dut.spram_blocks == 4 and WeightStore(24, 20000, spram=False).spram_blocks == 0
    # Without a platform the SPRAMs are models, so Verilator can run the export.
    assert "SB_SPRAM256KA" not in verilog.convert(WeightStore(8, 64, spram=True), name="store")


# ---- mapping (yowasp yosys) ------------------------------------------------------------------

def _ice40_cells(store, tmp_path) -> dict[str, int]:
    from amaranth_boards.icebreaker import ICEBreakerPlatform

    ensure_tools()
    (tmp_path / "top.il").write_text(rtlil.convert(store, name="top",
                                                   platform=ICEBreakerPlatform()))
    result = subprocess.run(
        [os.environ["YOSYS"], "-q", "-p",
         "read_rtlil top.il; synth_ice40 -device u -top top; tee -q -o stat.json stat -json"],
        cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((tmp_path / "stat.json").read_text())["design"]["num_cells_by_type"]


@pytest.mark.synth
@pytest.mark.skipif(not have_yowasp(), reason="yowasp synthesis tools not installed "
                                              "(pip install -e '.[synth]')")
@pytest.mark.parametrize("width,depth,blocks", [(32, 16384, 2), (16, 32768, 2)])
def test_maps_onto_spram(width, depth, blocks, tmp_path):
    cells = _ice40_cells(WeightStore(width, depth, spram=True), tmp_path)
    assert cells.get("SB_SPRAM256KA") == blocks
    assert "SB_RAM40_4K" not in cells
    # The holding register, the bank select and `fresh`; no LUT RAM or stray memory.
    assert sum(n for name, n in cells.items() if name.startswith("SB_DFF")) <= width + 2
    print(width, depth, cells)

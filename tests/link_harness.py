"""Amaranth-simulator harness for the link bridge: bytes in, reply bytes out, cycle by cycle.

The bridge is driven through its byte streams (no UART), with a configurable gap between bytes,
against :class:`sim.mock_accelerator.MockAccelerator`; every register write on the bus between
them is recorded. Used by tests/test_link_bridge.py and tests/test_link_model.py.
"""

from __future__ import annotations

import struct

from amaranth import Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hw.link import LinkBridge
from sim.mock_accelerator import MockAccelerator

__all__ = ["BridgeBench", "split_replies"]


class _Top(Elaboratable):
    def __init__(self, accelerator, timeout_cycles):
        self.acc = accelerator
        self.bridge = LinkBridge(n_inputs=accelerator.n_inputs, n_outputs=accelerator.n_outputs,
                                 pixel_bits=accelerator.pixel_bits, timeout_cycles=timeout_cycles)
        self.force_busy = Signal()  # the bridge sees a busy accelerator

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc = self.acc
        m.submodules.bridge = b = self.bridge
        wiring.connect(m, b.bus, self.acc.bus)
        wiring.connect(m, b.pixels, self.acc.pixels)
        wiring.connect(m, self.acc.results, b.results)
        m.d.comb += b.busy.eq(self.acc.busy | self.force_busy)
        return m


def split_replies(data: bytes) -> list[bytes]:
    """Cut a byte string into reply frames using their LEN fields."""
    frames, i = [], 0
    while i < len(data):
        if data[i] != 0x5A or i + 5 > len(data):
            raise AssertionError(f"no reply frame at offset {i}: {data[i:].hex()}")
        (length,) = struct.unpack(">H", data[i + 3:i + 5])
        frames.append(bytes(data[i:i + 7 + length]))
        i += 7 + length
    return frames


class BridgeBench:
    """Run a script of ``bytes``, ``(bytes, gap_cycles)``, ``("idle", cycles)`` and
    ``("busy", 0 or 1)`` steps; collect the tx bytes, and in :attr:`writes` every register
    write, ``(address, value)``, in order."""

    def __init__(self, *, n_inputs=8, n_outputs=3, pixel_bits=8, timeout_cycles=60, gap=2):
        self.accelerator = MockAccelerator(n_inputs=n_inputs, n_outputs=n_outputs,
                                           pixel_bits=pixel_bits, busy_cycles=5)
        self.top = _Top(self.accelerator, timeout_cycles)
        self.timeout_cycles = timeout_cycles
        self.gap = gap
        self.writes: list[tuple[int, int]] = []

    def run(self, steps) -> bytes:
        bridge = self.top.bridge
        out = bytearray()
        self.writes = []
        sim = Simulator(self.top)
        sim.add_clock(1e-8)

        async def collector(ctx):
            ctx.set(bridge.tx.ready, 1)
            async for _, _, valid, payload in ctx.tick().sample(bridge.tx.valid, bridge.tx.payload):
                if valid:
                    out.append(payload)

        async def bus_monitor(ctx):
            bus = bridge.bus
            async for _, _, w_en, addr, w_data in ctx.tick().sample(bus.w_en, bus.addr,
                                                                    bus.w_data):
                if w_en:
                    self.writes.append((addr, w_data))

        async def driver(ctx):
            for step in steps:
                if step[0] == "idle":
                    await ctx.tick().repeat(step[1])
                    continue
                if step[0] == "busy":
                    ctx.set(self.top.force_busy, step[1])
                    continue
                data, gap = step if isinstance(step, tuple) else (step, self.gap)
                for value in data:
                    ctx.set(bridge.rx.payload, value)
                    ctx.set(bridge.rx.valid, 1)
                    await ctx.tick()
                    ctx.set(bridge.rx.valid, 0)
                    if gap:
                        await ctx.tick().repeat(gap)
                # Let the reply (or the timeout and the error reply) come out; a WRITE_BLOCK
                # takes up to 8 cycles a word to execute.
                await ctx.tick().repeat(self.timeout_cycles + 400 + 2 * len(data))

        sim.add_process(collector)
        sim.add_process(bus_monitor)
        sim.add_testbench(driver)
        sim.run()
        return bytes(out)

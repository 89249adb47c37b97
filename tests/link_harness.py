"""Amaranth-simulator harness for the link bridge: bytes in, reply bytes out, cycle by cycle.

The bridge is driven through its byte streams (no UART), with a configurable gap between bytes,
against :class:`spikeforge.sim.mock_accelerator.MockAccelerator`; every register write on the bus
between them is recorded. Used by tests/test_link_bridge.py and tests/test_link_model.py.

:class:`PysimTransport` puts the same bridge, in front of any accelerator, behind the host
client's transport interface, so the real :class:`spikeforge.sw.link.LinkClient` runs against
the gateware in Amaranth's simulator (tests/test_interface.py).
"""

from __future__ import annotations

import struct
from collections import deque

from amaranth import Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from spikeforge.hw.link import LinkBridge
from spikeforge.sim.mock_accelerator import MockAccelerator
from spikeforge.sw.interface import REPLY_HEADER, SPEC, SYNC_REPLY

__all__ = ["BridgeBench", "PysimTransport", "split_replies"]


def _shape(accelerator, name):
    """``n_inputs``/``n_outputs``/``pixel_bits``: an attribute, or a ``parameters`` entry."""
    value = getattr(accelerator, name, None)
    return int(value if value is not None else accelerator.parameters[name])


class _Top(Elaboratable):
    def __init__(self, accelerator, timeout_cycles):
        self.acc = accelerator
        self.bridge = LinkBridge(n_inputs=_shape(accelerator, "n_inputs"),
                                 n_outputs=_shape(accelerator, "n_outputs"),
                                 pixel_bits=_shape(accelerator, "pixel_bits"),
                                 timeout_cycles=timeout_cycles)
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
    frames, i, head = [], 0, struct.calcsize(REPLY_HEADER)
    while i < len(data):
        if data[i] != SYNC_REPLY or i + head > len(data):
            raise AssertionError(f"no reply frame at offset {i}: {data[i:].hex()}")
        length = struct.unpack(REPLY_HEADER, data[i:i + head])[-1]
        frames.append(bytes(data[i:i + head + length + 2]))
        i += head + length + 2
    return frames


class BridgeBench:
    """Run a script of ``bytes``, ``(bytes, gap_cycles)``, ``("idle", cycles)`` and
    ``("busy", 0 or 1)`` steps; collect the tx bytes, and in :attr:`writes` every register
    write, ``(address, value)``, in order."""

    def __init__(self, *, n_inputs=8, n_outputs=3, pixel_bits=8, timeout_cycles=60, gap=2,
                 spec=SPEC):
        self.accelerator = MockAccelerator(n_inputs=n_inputs, n_outputs=n_outputs,
                                           pixel_bits=pixel_bits, busy_cycles=5, spec=spec)
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


class PysimTransport:
    """A :class:`spikeforge.sw.link.Transport` whose far end is :class:`LinkBridge` and
    ``accelerator`` in Amaranth's simulator, fed byte by byte (``gap`` idle cycles between
    bytes, no UART). Simulated time advances only inside :meth:`read`: a client timeout of
    ``t`` seconds waits ``t * cycles_per_second`` cycles. :attr:`writes` records every
    register write on the bus, ``(address, value)``."""

    def __init__(self, accelerator, *, timeout_cycles=60, gap=1, cycles_per_second=20_000):
        self.top = _Top(accelerator, timeout_cycles)
        self.cycles_per_second = cycles_per_second
        self.writes: list[tuple[int, int]] = []
        self._out: deque[int] = deque()
        self._in = bytearray()
        self._cycles = 0
        bridge = self.top.bridge
        self.sim = sim = Simulator(self.top)
        sim.add_clock(1e-8)

        async def driver(ctx):
            while True:
                if not self._out:
                    await ctx.tick()
                    continue
                ctx.set(bridge.rx.payload, self._out.popleft())
                ctx.set(bridge.rx.valid, 1)
                await ctx.tick()
                ctx.set(bridge.rx.valid, 0)
                if gap:
                    await ctx.tick().repeat(gap)

        async def collector(ctx):
            ctx.set(bridge.tx.ready, 1)
            async for _, _, valid, payload, w_en, addr, w_data in ctx.tick().sample(
                    bridge.tx.valid, bridge.tx.payload, bridge.bus.w_en, bridge.bus.addr,
                    bridge.bus.w_data):
                if valid:
                    self._in.append(payload)
                if w_en:
                    self.writes.append((addr, w_data))

        sim.add_testbench(driver, background=True)
        sim.add_process(collector)

    def run(self, cycles: int) -> None:
        """Let ``cycles`` clock cycles pass."""
        self._cycles += cycles
        self.sim.run_until(self._cycles * 1e-8)

    def write(self, data: bytes) -> None:
        self._out.extend(data)

    def read(self, n: int, timeout: float) -> bytes:
        budget = max(1, int(timeout * self.cycles_per_second))
        while len(self._in) < n and budget > 0:
            step = min(budget, 32)
            self.run(step)
            budget -= step
        out = bytes(self._in[:n])
        del self._in[:n]
        return out

    def reset_input(self) -> None:
        self._in.clear()

"""cocotb testbench of the whole link on the serial lines
(:class:`spikeforge.hw.boards.LinkTop`: UART, bridge and the mock accelerator) at a board's
line rate, against the Python model of the bridge.

The host side is :class:`HostUart`, an 8N1 UART whose bit edges are placed at exact multiples of
its own bit time (to the simulator's 1 ps, so that a rate such as 3 Mbaud, 333.33 ns a bit, is
not rounded to whole nanoseconds) and whose receiver finds a start edge on a 16x oversampling
grid, as an FTDI does, and samples each bit at its centre. One test:

``line_rates``
    For each host rate of ``params["rates"]`` (baud): reset the design, send ``frames`` random
    good request frames (:class:`spikeforge.sim.link_campaign.FrameMaker`, among them 64-word
    READs and WRITE_BLOCKs: long byte streams both ways) and compare every reply with
    :class:`spikeforge.sim.link_model.LinkModel`. The report says, per rate, whether every
    reply matched and, if not, the first difference. Every wait is bounded in simulated time.

Parameters (:func:`spikeforge.sim.harness.tb_params`): ``clock_ps`` (the design's clock),
``timeout_cycles`` (the bridge's inter-byte timeout), ``n_inputs``, ``n_outputs``,
``pixel_bits``, ``rates``, ``frames``, ``seed``.
"""

from __future__ import annotations

import math
import random
from collections import deque

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, FallingEdge, Timer, with_timeout
from cocotb.utils import get_sim_time

from spikeforge.sim.harness import Report, tb_params

__all__ = ["HostUart"]


class HostUart:
    """The host's UART on the design's ``rx`` (host -> device) and ``tx`` lines at ``baud``.

    ``send(data)`` drives the bytes back to back; received bytes collect in :attr:`received`
    (a background task), ``framing_errors`` counts stop bits read as 0.
    """

    OVERSAMPLE = 16

    def __init__(self, rx_line, tx_line, baud: float):
        self.rx_line, self.tx_line = rx_line, tx_line
        self.bit_ps = 1e12 / baud
        self.received: deque[int] = deque()
        self.framing_errors = 0
        self._byte = Event()
        rx_line.value = 1
        self._task = cocotb.start_soon(self._receive())

    def stop(self) -> None:
        self._task.cancel()

    async def _until(self, t_ps: float) -> None:
        now = get_sim_time(unit="ps")
        wait = round(t_ps) - now
        if wait > 0:
            await Timer(wait, unit="ps")

    async def send(self, data: bytes) -> None:
        start = get_sim_time(unit="ps")
        bit = 0
        for byte in data:
            for level in (0, *((byte >> i) & 1 for i in range(8)), 1):
                await self._until(start + bit * self.bit_ps)
                self.rx_line.value = level
                bit += 1
        await self._until(start + bit * self.bit_ps)  # the end of the last stop bit

    async def _receive(self) -> None:
        tick = self.bit_ps / self.OVERSAMPLE
        while True:
            await FallingEdge(self.tx_line)
            # the edge is seen at the next tick of the oversampling clock
            seen = math.ceil(get_sim_time(unit="ps") / tick) * tick
            value = 0
            for i in range(1, 10):
                await self._until(seen + (i + 0.5) * self.bit_ps)
                level = int(self.tx_line.value)
                if i <= 8:
                    value |= level << (i - 1)
                elif not level:
                    self.framing_errors += 1
            self.received.append(value)
            self._byte.set()

    async def read(self, n: int, timeout_ps: int) -> bytes:
        """Up to ``n`` received bytes, waiting at most ``timeout_ps`` for each."""
        out = bytearray()
        while len(out) < n:
            if not self.received:
                self._byte.clear()
                try:
                    await with_timeout(self._byte.wait(), timeout_ps, "ps")
                except TimeoutError:
                    break
            while self.received and len(out) < n:
                out.append(self.received.popleft())
        return bytes(out)


@cocotb.test()
async def line_rates(dut):
    """Good frames at each host rate, every reply compared with the model."""
    from spikeforge.sim.link_campaign import FrameMaker
    from spikeforge.sim.link_model import LinkModel, MockBackend

    params = tb_params()
    report = Report(params.get("report"))
    clock_ps = int(params["clock_ps"])
    Clock(dut.clk, clock_ps, unit="ps").start()
    shape = {k: params[k] for k in ("n_inputs", "pixel_bits")}
    rng = random.Random(params["seed"])
    results = []
    for baud in params["rates"]:
        dut.rst.value = 1
        host = HostUart(dut.rx, dut.tx, baud)
        await ClockCycles(dut.clk, 8)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 8)
        model = LinkModel(MockBackend(n_outputs=params["n_outputs"], **shape))
        maker = FrameMaker(rng, n_layers=2, timesteps=4, **shape)
        frames = [maker.read(maker.read_runs[-1][0], 64), maker.block(), *maker.audit()]
        frames += [maker.good() for _ in range(params["frames"])]
        # a reply byte may wait for the timeout; then 64 words; then the accelerator
        byte_ps = 10 * 1e12 / baud
        timeout_ps = int(params["timeout_cycles"] * clock_ps + 4 * byte_ps + 2000 * clock_ps)
        error, sent = None, 0
        for frame in frames:
            model.feed(frame)
            model.quiet()
            expected = model.replies.pop()
            await host.send(frame)
            got = await host.read(len(expected), timeout_ps)
            sent += 1
            if got != expected or host.framing_errors:
                error = (f"frame {sent} {frame[:12].hex()}...: reply {got[:16].hex() or '-'}..., "
                         f"model {expected[:16].hex()}..., {host.framing_errors} framing errors")
                break
        host.stop()
        results.append({"baud": baud, "ok": error is None, "frames": sent, "error": error})
    report.test("line_rates", results=results)

"""The host client's transport inside a cocotb simulation: :class:`CocotbUartTransport`.

A :class:`spikeforge.sw.link.LinkClient` running in a thread started with
:func:`cocotb.task.bridge` talks through it to the cocotbext-uart models on the design's serial
lines: each ``write``/``read`` is handed back to the simulation with :func:`cocotb.task.resume`.
Shared by the board test's testbench (``tests/tb_board.py``) and ``spikeforge sim --weights
spram`` (:mod:`spikeforge.sw.tb_spram`). It lives in the application layer: it serves the host
client. It imports only cocotb, so a testbench that uses it loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cocotb.task import resume
from cocotb.triggers import Timer

if TYPE_CHECKING:
    from cocotbext.uart import UartSink, UartSource

__all__ = ["CocotbUartTransport"]


class CocotbUartTransport:
    """:class:`spikeforge.sw.link.Transport` over cocotbext-uart models, for a client in a
    bridged thread.

    ``time_scale`` maps the client's timeouts (seconds of a real link) onto
    simulated time: ``sim_ns = timeout_s * 1e9 * time_scale``. ``gaps`` (an iterator of
    nanoseconds, or None) puts idle time on the line before each byte written.
    """

    def __init__(self, source: UartSource, sink: UartSink, *, time_scale: float, gaps=None):
        self.source = source
        self.sink = sink
        self.time_scale = time_scale
        self.gaps = gaps

    # Each method runs in the client's thread and blocks it until the simulation is done.
    def write(self, data: bytes) -> None:
        resume(self._write)(bytes(data))

    def read(self, n: int, timeout: float) -> bytes:
        return resume(self._read)(n, max(1, int(timeout * 1e9 * self.time_scale)))

    def reset_input(self) -> None:
        resume(self._reset_input)()

    async def _write(self, data: bytes) -> None:
        if self.gaps is None:
            await self.source.write(data)
            await self.source.wait()
            return
        for byte in data:
            gap = next(self.gaps)
            if gap:
                await Timer(gap, unit="ns")
            await self.source.write(bytes([byte]))
            await self.source.wait()

    async def _read(self, n: int, timeout_ns: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if self.sink.empty():
                await self.sink.wait(timeout=timeout_ns, timeout_unit="ns")
                if self.sink.empty():
                    break
            out += self.sink.read_nowait(min(n - len(out), self.sink.count()))
        return bytes(out)

    async def _reset_input(self) -> None:
        self.sink.clear()

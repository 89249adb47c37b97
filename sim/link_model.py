"""A naive Python model of the link bridge (hw/link.py), byte by byte.

It is the reference the gateware is checked against (tests/test_link_model.py feeds the same
byte scripts to both) and a stand-in device for host-side tests: :class:`PtyDevice` serves it
on a pseudo-terminal, so ``spikeforge run`` can be tested with a real pyserial port.

Time is abstracted to two events: a byte arrives (:meth:`LinkModel.feed`) and the line has been
quiet for the inter-byte timeout (:meth:`LinkModel.quiet`).
"""

from __future__ import annotations

import os
import select
import struct
import threading
from collections.abc import Sequence

from sw.link import (
    ID_MAGIC,
    LINK_VERSION,
    MAX_BLOCK_LEN,
    MAX_WORDS,
    SYNC_REQUEST,
    Command,
    ErrorCode,
    crc16,
    encode_reply,
)

__all__ = ["MockBackend", "LinkModel", "PtyDevice"]


class MockBackend:
    """The mock accelerator's registers and rule (sim/mock_accelerator.py), in Python."""

    def __init__(self, n_inputs=16, n_outputs=4, pixel_bits=8, n_layers=2, timesteps=4):
        from sim.mock_accelerator import MockRegisters

        self.n_inputs, self.n_outputs, self.pixel_bits = n_inputs, n_outputs, pixel_bits
        self.regs = MockRegisters(n_layers, timesteps)
        self.n_layers, self.timesteps = n_layers, timesteps
        self.status = 0
        self.busy = False
        #: Every register write, in order: ``(address, value)``.
        self.writes: list[tuple[int, int]] = []

    def _writable(self):
        out = {}
        for k in range(self.n_layers):
            base = 0x100 + 0x100 * k
            out[base] = ("leak_shift", k, None)
            out[base + 1] = ("v_init", k, None)
            for t in range(self.timesteps):
                out[base + 0x10 + t] = ("theta", k, t)
        return out

    def read(self, address: int) -> int:
        fixed = {0: ID_MAGIC, 1: self.status, 2: 0, 3: self.n_layers}
        if address in fixed:
            return fixed[address]
        entry = self._writable().get(address)
        if entry is None:
            if self._read_only(address):
                return 0
            self.status |= 2
            return 0
        name, k, t = entry
        value = getattr(self.regs, name)[k] if t is None else self.regs.theta[k][t]
        return value & 0xFFFF_FFFF

    def _read_only(self, address: int) -> bool:
        k = (address - 0x100) >> 8
        return address in (0, 2, 3) or (
            address >= 0x100 and k < self.n_layers and (address & 0xFF) in (2, 3))

    def write(self, address: int, value: int) -> None:
        self.writes.append((address, value))
        if address == 1:
            self.status &= ~value
            return
        entry = self._writable().get(address)
        if entry is None:
            if not self._read_only(address):
                self.status |= 2
            return
        name, k, t = entry
        if name == "v_init":
            value = value - (1 << 32) if value >> 31 else value
        elif name == "leak_shift":
            value &= 0x1F
        if t is None:
            getattr(self.regs, name)[k] = value
        else:
            self.regs.theta[k][t] = value

    def classify(self, pixels: Sequence[int]) -> list[int]:
        from sim.mock_accelerator import mock_classify

        scores, best = mock_classify(pixels, self.n_outputs, self.regs)
        return [*scores, best]


class LinkModel:
    """The bridge's receive/execute/reply rules (docs/link-protocol.md) over a backend."""

    def __init__(self, backend):
        self.backend = backend
        self.pixel_bytes = 1 if backend.pixel_bits <= 8 else 2
        self.state = "IDLE"
        self.replies: list[bytes] = []

    def _length_ok(self, cmd, length):
        """Whether ``length`` payload bytes are what ``cmd`` takes; None for an unknown cmd."""
        if cmd == Command.WRITE_BLOCK:
            return length in range(6, MAX_BLOCK_LEN + 1, 4)
        expected = {Command.INFO: 0, Command.READ: 3, Command.WRITE: 6,
                    Command.RUN: self.backend.n_inputs * self.pixel_bytes}.get(cmd)
        return None if expected is None else length == expected

    def _error(self, code, *, discard):
        self.code = code
        if discard:
            self.state = "DISCARD"
        else:
            self.replies.append(encode_reply(self.cmd, code))
            self.state = "IDLE"

    def feed(self, data: bytes | Sequence[int]) -> None:
        """One burst of back-to-back bytes. Bytes that follow a complete frame in the same
        burst arrive while its reply is being sent, and the gateware drops them; so does this."""
        for byte in data:
            replies = len(self.replies)
            self._byte(byte)
            if len(self.replies) > replies:
                return

    def _byte(self, byte: int) -> None:
        state = self.state
        if state == "IDLE":
            self.cmd, self.body = 0, bytearray()
            if byte == SYNC_REQUEST:
                self.state = "CMD"
            else:
                self._error(ErrorCode.SYNC, discard=True)
        elif state == "DISCARD":
            pass
        else:
            self.body.append(byte)
            if state == "CMD":
                self.cmd = byte
                self.state = "LEN_HI"
            elif state == "LEN_HI":
                self.state = "LEN_LO"
            elif state == "LEN_LO":
                length = struct.unpack(">H", self.body[1:3])[0]
                ok = self._length_ok(self.cmd, length)
                if ok is None:
                    self._error(ErrorCode.COMMAND, discard=True)
                elif not ok:
                    self._error(ErrorCode.LENGTH, discard=True)
                else:
                    self.remaining = length
                    self.state = "PAYLOAD" if length else "CRC_HI"
            elif state == "PAYLOAD":
                self.remaining -= 1
                if self.remaining == 0:
                    self.state = "CRC_HI"
            elif state == "CRC_HI":
                self.state = "CRC_LO"
            elif state == "CRC_LO":
                self._execute()

    def quiet(self) -> None:
        """The line has been idle for the inter-byte timeout."""
        if self.state == "DISCARD":
            self.replies.append(encode_reply(self.cmd, self.code))
        elif self.state != "IDLE":
            self.replies.append(encode_reply(self.cmd, ErrorCode.TIMEOUT))
        self.state = "IDLE"

    def _execute(self) -> None:
        self.state = "IDLE"
        if crc16(self.body) != 0:
            self._error(ErrorCode.CRC, discard=True)
            return
        payload = bytes(self.body[3:-2])
        cmd, b = self.cmd, self.backend
        if cmd == Command.RUN:
            if self.pixel_bytes == 1:
                pixels = list(payload)
            else:
                pixels = list(struct.unpack(f">{len(payload) // 2}H", payload))
            if any(p >> b.pixel_bits for p in pixels):
                self._error(ErrorCode.PIXEL, discard=False)
                return
            words = b.classify(pixels)
        elif cmd in (Command.WRITE, Command.WRITE_BLOCK):
            if b.busy:
                self._error(ErrorCode.BUSY, discard=False)
                return
            address, *values = struct.unpack(f">H{(len(payload) - 2) // 4}I", payload)
            for value in values:
                b.write(address, value)
            words = []
        elif cmd == Command.READ:
            address, count = struct.unpack(">HB", payload)
            if not 1 <= count <= MAX_WORDS:
                self._error(ErrorCode.ARGUMENT, discard=False)
                return
            words = [b.read((address + i) & 0xFFFF) for i in range(count)]
        else:  # INFO
            words = [(LINK_VERSION << 24) | (b.pixel_bits << 16) | b.n_inputs,
                     (b.n_outputs << 16) | MAX_WORDS]
        reply = struct.pack(f">{len(words)}I", *[w & 0xFFFF_FFFF for w in words])
        self.replies.append(encode_reply(cmd, ErrorCode.OK, reply))


class PtyDevice:
    """Serve a :class:`LinkModel` on a pseudo-terminal; ``port`` is the path a client opens.

    The inter-byte timeout is ``timeout`` seconds of wall time.
    """

    def __init__(self, model: LinkModel, *, timeout: float = 0.05):
        import tty

        self.model = model
        self.timeout = timeout
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self.master)
        os.close(self._slave)

    def _serve(self):
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], self.timeout)
            if ready:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    return
                self.model.feed(data)
            elif self.model.state != "IDLE":
                self.model.quiet()
            while self.model.replies:
                os.write(self.master, self.model.replies.pop(0))

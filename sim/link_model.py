"""A naive Python model of the link bridge (hw/link.py), byte by byte.

It is the reference the gateware is checked against (tests/test_link_model.py feeds the same
byte scripts to both) and a stand-in device for host-side tests: :class:`PtyDevice` serves it
on a pseudo-terminal, so ``spikeforge run`` can be tested with a real pyserial port.

Time is abstracted to two events: a byte arrives (:meth:`LinkModel.feed`) and the line has been
quiet for the inter-byte timeout (:meth:`LinkModel.quiet`).

Every constant, payload rule and address comes from the spec, :mod:`spikeforge.sw.interface`
(not from the host client, :mod:`spikeforge.sw.link`, which this model is a device for).
"""

from __future__ import annotations

import os
import select
import struct
import threading
from collections.abc import Sequence

from spikeforge.sim.mock_accelerator import MOCK_GLOBAL, MOCK_LAYER, MockRegisters, mock_classify
from spikeforge.sw.interface import (
    COMMANDS,
    MAX_WORDS,
    REQUEST_HEADER,
    SPEC,
    STREAM_RUN_BIT,
    SYNC_REQUEST,
    Command,
    ErrorCode,
    RegisterMap,
    crc16,
    decode_stream_image,
    encode_reply,
    info_words,
    payload_rule,
    pixel_bytes,
    stream_supported,
)

__all__ = ["MockBackend", "LinkModel", "PtyDevice"]

_HEAD = struct.calcsize(REQUEST_HEADER)


class MockBackend:
    """The mock accelerator's registers and rule (sim/mock_accelerator.py), in Python, at the
    addresses of ``spec``."""

    def __init__(self, n_inputs=16, n_outputs=4, pixel_bits=8, n_layers=2, timesteps=4, *,
                 spec: RegisterMap = SPEC):
        self.n_inputs, self.n_outputs, self.pixel_bits = n_inputs, n_outputs, pixel_bits
        self.regs = MockRegisters(n_layers, timesteps)
        self.n_layers, self.timesteps = n_layers, timesteps
        self.spec = spec
        self.status = 0
        #: Forced busy (a test's), as the gateware harness's ``force_busy``.
        self.busy = False
        #: The results of the image a ``STREAM`` left computing, until the next one takes them.
        self.pending: list[int] | None = None
        #: Every register write, in order: ``(address, value)``.
        self.writes: list[tuple[int, int]] = []
        status = spec.global_reg("STATUS")
        self._bad_address = status.field("bad_address").mask
        self._status_mask = sum(f.mask for f in status.fields)

    def _register(self, address: int):
        """``(name, layer, t)`` of a mock register at ``address``, or None."""
        where = self.spec.decode(address)
        if where is None:
            return None
        name, k = where.register.name, where.layer
        if k is None:
            return (name, None, 0) if name in MOCK_GLOBAL else None
        if name not in MOCK_LAYER or k >= self.n_layers or where.index >= self.timesteps:
            return None
        return name, k, where.index

    def read(self, address: int) -> int:
        entry = self._register(address)
        if entry is None:
            self.status |= self._bad_address
            return 0
        name, k, t = entry
        fixed = {"ID": self.spec.id_magic, "STATUS": self.status, "CYCLES": 0,
                 "N_LAYERS": self.n_layers, "SYNOPS": 0, "SPIKES": 0}
        if name in fixed:
            return fixed[name]
        value = self.regs.theta[k][t] if name == "THETA" else getattr(self.regs,
                                                                      name.lower())[k]
        return value & 0xFFFF_FFFF

    def write(self, address: int, value: int) -> None:
        self.writes.append((address, value))
        entry = self._register(address)
        if entry is None:
            self.status |= self._bad_address
            return
        name, k, t = entry
        if name == "STATUS":
            self.status &= ~(value & self._status_mask)
        elif name == "THETA":
            self.regs.theta[k][t] = value
        elif name in ("LEAK_SHIFT", "V_INIT"):
            if name == "V_INIT":
                value = value - (1 << 32) if value >> 31 else value
            else:
                value &= 0x1F
            getattr(self.regs, name.lower())[k] = value
        # other registers are read-only: the write is ignored

    def classify(self, pixels: Sequence[int]) -> list[int]:
        scores, best = mock_classify(pixels, self.n_outputs, self.regs)
        return [*scores, best]


class LinkModel:
    """The bridge's receive/execute/reply rules (docs/link-protocol.md) over a backend."""

    def __init__(self, backend):
        self.backend = backend
        self.pixel_bytes = pixel_bytes(backend.pixel_bits)
        self.state = "IDLE"
        self.replies: list[bytes] = []

    def _length_ok(self, cmd, length):
        """Whether ``length`` payload bytes are what ``cmd`` takes; None for an unknown cmd."""
        if cmd not in COMMANDS or (cmd == Command.STREAM
                                   and not stream_supported(self.backend.pixel_bits)):
            return None
        rule = payload_rule(cmd, n_inputs=self.backend.n_inputs,
                            pixel_bits=self.backend.pixel_bits)
        return rule.accepts(length)

    def _error(self, code, *, discard):
        self.code = code
        if discard:
            self.state = "DISCARD"
        else:
            self.replies.append(encode_reply(self.cmd, code))
            self.state = "IDLE"

    def feed(self, data: bytes | Sequence[int]) -> int:
        """One burst of back-to-back bytes. Bytes that follow a complete frame in the same
        burst arrive while its reply is being sent, and the gateware drops them; so does this.
        Returns how many bytes were taken: all, or those up to the one that completed a frame."""
        for taken, byte in enumerate(data, 1):
            replies = len(self.replies)
            self._byte(byte)
            if len(self.replies) > replies:
                return taken
        return len(data)

    def reset(self) -> None:
        """The bridge is reset (a board reset in the middle of a frame): what it had received
        is forgotten and nothing is sent. The accelerator's registers are not reset."""
        self.state = "IDLE"

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
                length = struct.unpack(REQUEST_HEADER, bytes([SYNC_REQUEST]) + self.body)[-1]
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
        payload = bytes(self.body[_HEAD - 1:-2])
        cmd, b = self.cmd, self.backend
        busy = b.busy or b.pending is not None
        if cmd == Command.RUN:
            spec = COMMANDS[cmd]
            count = spec.unit_count(len(payload), b.pixel_bits)
            pixels = list(struct.unpack(spec.payload_format(count, b.pixel_bits), payload))
            if any(p >> b.pixel_bits for p in pixels):
                self._error(ErrorCode.PIXEL, discard=False)
                return
            if busy:
                self._error(ErrorCode.BUSY, discard=False)
                return
            words = b.classify(pixels)
        elif cmd == Command.STREAM:
            if any(not token >> STREAM_RUN_BIT and token >> b.pixel_bits for token in payload):
                self._error(ErrorCode.PIXEL, discard=False)
                return
            pixels = decode_stream_image(payload)
            if payload and len(pixels) != b.n_inputs:
                self._error(ErrorCode.ARGUMENT, discard=False)
                return
            words = b.pending or []
            b.pending = b.classify(pixels) if payload else None
        elif cmd in (Command.WRITE, Command.WRITE_BLOCK):
            if busy:
                self._error(ErrorCode.BUSY, discard=False)
                return
            spec = COMMANDS[cmd]
            fmt = spec.payload_format(spec.unit_count(len(payload)) if spec.unit else 0)
            address, *values = struct.unpack(fmt, payload)
            for value in values:
                b.write(address, value)
            words = []
        elif cmd == Command.READ:
            address, count = struct.unpack(COMMANDS[cmd].head_format, payload)
            if not 1 <= count <= MAX_WORDS:
                self._error(ErrorCode.ARGUMENT, discard=False)
                return
            words = [b.read((address + i) & 0xFFFF) for i in range(count)]
        else:  # INFO
            words = info_words(pixel_bits=b.pixel_bits, n_inputs=b.n_inputs,
                               n_outputs=b.n_outputs)
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

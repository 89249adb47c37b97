"""Host side of the spikeforge UART link (docs/link-protocol.md).

Three layers, each usable on its own:

* framing: :func:`crc16`, :func:`encode_request`, :func:`encode_reply`, :func:`decode_reply`;
* a byte transport: anything with ``write(data)``, ``read(n, timeout) -> bytes`` (fewer bytes
  on timeout) and ``reset_input()``. :class:`SerialTransport` wraps a pyserial port;
  ``sim/tb_board.py`` has one that drives the cocotb UART models of the board simulation;
* :class:`LinkClient`: register reads and writes (also a block of words to one register),
  ``classify``, counters. The very same class drives the board over a serial port and the board
  top in simulation.

Pure Python: importing this module needs neither Amaranth nor pyserial.
"""

from __future__ import annotations

import enum
import operator
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "SYNC_REQUEST",
    "SYNC_REPLY",
    "LINK_VERSION",
    "MAX_WORDS",
    "MAX_BLOCK_LEN",
    "ID_MAGIC",
    "Command",
    "ErrorCode",
    "LinkError",
    "LinkTimeout",
    "DeviceError",
    "Reply",
    "LinkInfo",
    "Counters",
    "Transport",
    "SerialTransport",
    "LinkClient",
    "crc16",
    "encode_request",
    "encode_reply",
    "encode_block",
    "decode_reply",
    "register_address",
]

SYNC_REQUEST = 0xA5
SYNC_REPLY = 0x5A
LINK_VERSION = 1
#: Most 32-bit words one frame carries: the registers a READ returns, the words of a WRITE_BLOCK
#: (the ``max_read`` field of the INFO reply).
MAX_WORDS = 64
#: Longest WRITE_BLOCK payload: ``addr`` u16 and MAX_WORDS words.
MAX_BLOCK_LEN = 2 + 4 * MAX_WORDS
#: Value of the accelerator's ID register (docs/host-interface.md).
ID_MAGIC = 0x5F0B6E01


class Command(enum.IntEnum):
    INFO = 0x01  # payload: none;                  reply: 2 words (see LinkInfo)
    READ = 0x02  # payload: addr u16, count u8;     reply: count words
    WRITE = 0x03  # payload: addr u16, data u32;    reply: none
    RUN = 0x04  # payload: n_inputs pixels;         reply: n_outputs scores, prediction
    WRITE_BLOCK = 0x05  # payload: addr u16, count words (1..MAX_WORDS); reply: none


class ErrorCode(enum.IntEnum):
    OK = 0x00
    CRC = 0x01  # CRC mismatch
    LENGTH = 0x02  # LEN field does not match the command
    COMMAND = 0x03  # unknown command byte
    TIMEOUT = 0x04  # the line went idle in the middle of a frame
    PIXEL = 0x05  # a pixel above 2**pixel_bits - 1; the image was not run
    BUSY = 0x06  # register write while the accelerator is busy; not written
    ARGUMENT = 0x07  # READ count of 0 or above MAX_WORDS
    SYNC = 0x08  # bytes outside a frame (garbage, or a frame whose SYNC byte was corrupted)


#: Errors of the link itself: the request never reached the accelerator, so it is safe to resend.
RETRYABLE = frozenset(
    {ErrorCode.CRC, ErrorCode.LENGTH, ErrorCode.TIMEOUT, ErrorCode.SYNC, ErrorCode.COMMAND}
)


class LinkError(Exception):
    """The link failed: no reply, a corrupt reply, or an error code from the device."""


class LinkTimeout(LinkError):
    """No (complete) reply arrived in time."""


class DeviceError(LinkError):
    """The device answered with an error code."""

    def __init__(self, command: int, code: int):
        self.command = command
        self.code = code
        try:
            name = ErrorCode(code).name
        except ValueError:
            name = f"0x{code:02x}"
        super().__init__(f"device refused command 0x{command:02x}: error {name}")


def crc16(data: bytes | bytearray | Sequence[int], crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor)."""
    for byte in data:
        crc ^= (byte & 0xFF) << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode_request(command: int, payload: bytes = b"") -> bytes:
    """``SYNC cmd len_hi len_lo payload crc_hi crc_lo``; the CRC covers cmd .. payload."""
    if not 0 <= command <= 0xFF:
        raise ValueError(f"Command must be a byte, not {command!r}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"Payload of {len(payload)} bytes exceeds the 16-bit length field")
    body = bytes([command]) + struct.pack(">H", len(payload)) + bytes(payload)
    return bytes([SYNC_REQUEST]) + body + struct.pack(">H", crc16(body))


def _words32(words: Sequence[int]) -> list[int]:
    """``words`` as a list of ints, each checked to fit an unsigned 32-bit word."""
    out = [operator.index(word) for word in words]
    for i, word in enumerate(out):
        if not 0 <= word <= 0xFFFF_FFFF:
            raise ValueError(f"Word {i} of the block, {word!r}, does not fit 32 bits unsigned")
    return out


def encode_block(address: int, words: Sequence[int]) -> bytes:
    """Payload of a WRITE_BLOCK request: ``addr`` u16, then 1..:data:`MAX_WORDS` u32 words."""
    if not 0 <= address <= 0xFFFF:
        raise ValueError(f"Register address must be 16-bit, not {address!r}")
    words = _words32(words)
    if not 1 <= len(words) <= MAX_WORDS:
        raise ValueError(f"A block holds 1..{MAX_WORDS} words, not {len(words)}")
    return struct.pack(f">H{len(words)}I", address, *words)


def encode_reply(command: int, code: int, payload: bytes = b"") -> bytes:
    """``SYNC cmd code len_hi len_lo payload crc_hi crc_lo`` (what the device sends)."""
    body = bytes([command, code]) + struct.pack(">H", len(payload)) + bytes(payload)
    return bytes([SYNC_REPLY]) + body + struct.pack(">H", crc16(body))


@dataclass(frozen=True)
class Reply:
    command: int
    code: int
    payload: bytes

    def words(self) -> list[int]:
        """The payload as big-endian unsigned 32-bit words."""
        return list(struct.unpack(f">{len(self.payload) // 4}I", self.payload))


def decode_reply(frame: bytes) -> Reply:
    """Parse one complete reply frame; raises :class:`LinkError` naming what is wrong."""
    if len(frame) < 7:
        raise LinkError(f"reply of {len(frame)} bytes is shorter than a header and CRC (7)")
    if frame[0] != SYNC_REPLY:
        raise LinkError(f"reply starts with 0x{frame[0]:02x}, not SYNC 0x{SYNC_REPLY:02x}")
    (length,) = struct.unpack(">H", frame[3:5])
    if len(frame) != 7 + length:
        raise LinkError(f"reply LEN says {length} payload bytes but the frame holds "
                        f"{len(frame) - 7}")
    (crc,) = struct.unpack(">H", frame[-2:])
    if crc16(frame[1:-2]) != crc:
        raise LinkError(f"reply CRC 0x{crc:04x} does not match 0x{crc16(frame[1:-2]):04x}")
    return Reply(frame[1], frame[2], bytes(frame[5:-2]))


def register_address(name: str, layer: int = 0, t: int = 0) -> int:
    """Word address of a register of docs/host-interface.md (``"THETA"``, layer, step ``t``)."""
    fixed = {"ID": 0x0000, "STATUS": 0x0001, "CYCLES": 0x0002, "N_LAYERS": 0x0003,
             "N_INPUTS": 0x0004, "N_OUTPUTS": 0x0005, "TIMESTEPS": 0x0006, "LANES": 0x0007}
    per_layer = {"LEAK_SHIFT": 0x00, "V_INIT": 0x01, "SYNOPS": 0x02, "SPIKES": 0x03,
                 "FIRE": 0x04, "LAYER_CYCLES": 0x05, "LAYER_STATUS": 0x06, "W_ADDR": 0x07,
                 "W_DATA": 0x08, "W_INFO": 0x09, "THETA": 0x10}
    if name in fixed:
        return fixed[name]
    if name not in per_layer:
        raise ValueError(f"Unknown register {name!r}")
    if not 0 <= layer < 0xFF:
        raise ValueError(f"Layer index must be 0..254, not {layer!r}")
    if name == "THETA":
        if not 0 <= t < 0xF0:
            raise ValueError(f"Timestep must be 0..239, not {t!r}")
        return 0x0100 + 0x100 * layer + 0x10 + t
    return 0x0100 + 0x100 * layer + per_layer[name]


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, n: int, timeout: float) -> bytes: ...

    def reset_input(self) -> None: ...


class SerialTransport:
    """:class:`Transport` over a pyserial port (``serial.Serial`` or anything alike)."""

    def __init__(self, port):
        self.port = port

    @classmethod
    def open(cls, device: str, baud: int = 115200) -> SerialTransport:
        import serial  # imported here: pure-protocol users need no pyserial

        # serial_for_url takes device paths and pyserial URLs (socket://, rfc2217://, loop://).
        return cls(serial.serial_for_url(device, baudrate=baud, timeout=1.0))

    def write(self, data: bytes) -> None:
        self.port.write(data)
        self.port.flush()

    def read(self, n: int, timeout: float) -> bytes:
        self.port.timeout = timeout
        return bytes(self.port.read(n))

    def reset_input(self) -> None:
        self.port.reset_input_buffer()

    def close(self) -> None:
        self.port.close()


@dataclass(frozen=True)
class LinkInfo:
    version: int
    pixel_bits: int
    n_inputs: int
    n_outputs: int
    max_read: int

    @property
    def pixel_bytes(self) -> int:
        return 1 if self.pixel_bits <= 8 else 2


@dataclass(frozen=True)
class WeightInfo:
    """A layer's ``W_INFO`` register: whether its weights must be loaded, and their size."""

    in_ram: bool
    chunks_per_word: int
    words: int


@dataclass(frozen=True)
class Counters:
    cycles: int
    status: int
    synops: tuple[int, ...]
    spikes: tuple[int, ...]


def _signed32(value: int) -> int:
    return value - (1 << 32) if value & 0x8000_0000 else value


class LinkClient:
    """Request/response client for the board (or its simulation) over a :class:`Transport`.

    Link-level errors (a corrupted request or reply, a timeout) are retried ``retries`` times;
    errors that are the request's fault (:attr:`ErrorCode.PIXEL`, ``BUSY``, ``ARGUMENT``) raise
    :class:`DeviceError` at once. ``timeout`` (seconds) bounds the wait for each reply byte
    group; it must exceed the device's inter-byte timeout, after which error replies are sent.
    """

    def __init__(self, transport: Transport, *, timeout: float = 1.0, retries: int = 2):
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self._info: LinkInfo | None = None

    # -- framing -------------------------------------------------------------------------------
    def _read_reply(self) -> Reply:
        read = self.transport.read
        # Hunt for SYNC: stray bytes before it are skipped.
        for _ in range(1 << 16):
            first = read(1, self.timeout)
            if not first:
                raise LinkTimeout("no reply from the device")
            if first[0] == SYNC_REPLY:
                break
        else:
            raise LinkError("no reply SYNC byte in 65536 bytes")
        header = read(4, self.timeout)
        if len(header) != 4:
            raise LinkTimeout("reply header truncated")
        (length,) = struct.unpack(">H", header[2:4])
        rest = read(length + 2, self.timeout)
        if len(rest) != length + 2:
            raise LinkTimeout(f"reply truncated: {len(rest)} of {length + 2} bytes")
        return decode_reply(first + header + rest)

    def transact(self, command: int, payload: bytes = b"", *, idempotent: bool = True) -> Reply:
        """Send one request and return its successful reply (retrying link-level failures).

        A request that must not be executed twice (``idempotent=False``: a WRITE_BLOCK into a
        register that stores every write) is resent only when the device answered that the
        frame did not get through (a :data:`RETRYABLE` code). After a lost or corrupt reply it
        may or may not have been executed, so that raises at once.
        """
        frame = encode_request(command, payload)
        last: LinkError | None = None
        for _ in range(self.retries + 1):
            self.transport.reset_input()
            self.transport.write(frame)
            try:
                reply = self._read_reply()
            except LinkError as error:
                if not idempotent:
                    raise
                last = error
                continue
            if reply.code == ErrorCode.OK and reply.command == command:
                return reply
            if reply.code != ErrorCode.OK and reply.code not in RETRYABLE:
                raise DeviceError(reply.command, reply.code)
            if reply.code == ErrorCode.OK and not idempotent:
                raise LinkError(f"reply to command 0x{reply.command:02x}, not 0x{command:02x}; "
                                f"not resent, the request may have been executed")
            last = DeviceError(reply.command, reply.code)
        assert last is not None
        raise last

    # -- commands ------------------------------------------------------------------------------
    def info(self) -> LinkInfo:
        word0, word1 = self.transact(Command.INFO).words()
        self._info = LinkInfo(
            version=word0 >> 24,
            pixel_bits=(word0 >> 16) & 0xFF,
            n_inputs=word0 & 0xFFFF,
            n_outputs=word1 >> 16,
            max_read=word1 & 0xFF,
        )
        return self._info

    def read_registers(self, address: int, count: int) -> list[int]:
        if not 1 <= count <= MAX_WORDS:
            raise ValueError(f"Register count must be 1..{MAX_WORDS}, not {count!r}")
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"Register address must be 16-bit, not {address!r}")
        return self.transact(Command.READ, struct.pack(">HB", address, count)).words()

    def read_register(self, address: int) -> int:
        return self.read_registers(address, 1)[0]

    def write_register(self, address: int, value: int) -> None:
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"Register address must be 16-bit, not {address!r}")
        self.transact(Command.WRITE, struct.pack(">HI", address, value & 0xFFFF_FFFF))

    def write_block(self, address: int, words: Sequence[int]) -> None:
        """Write ``words`` in order, all to the one register ``address`` (a register that takes
        consecutive writes, such as a weight data port): one WRITE_BLOCK frame per
        :data:`MAX_WORDS` words. Every word is checked before anything is sent; no words, no
        frame.

        A frame is not resent after a lost or corrupt reply (its words may have been written):
        the :class:`LinkError` raised then, or the :class:`DeviceError` of a refused frame
        (``BUSY``), carries ``words_written``, the words of the frames before it.
        """
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"Register address must be 16-bit, not {address!r}")
        words = _words32(words)
        for start in range(0, len(words), MAX_WORDS):
            payload = encode_block(address, words[start:start + MAX_WORDS])
            try:
                self.transact(Command.WRITE_BLOCK, payload, idempotent=False)
            except LinkError as error:
                error.words_written = start
                raise

    def classify(self, pixels: Sequence[int]) -> tuple[list[int], int]:
        """Run one image; returns (the scores of every output neuron, the predicted class)."""
        info = self._info or self.info()
        pixels = [int(p) for p in pixels]
        if len(pixels) != info.n_inputs:
            raise ValueError(f"Image has {len(pixels)} pixels, the network takes {info.n_inputs}")
        top = (1 << info.pixel_bits) - 1
        bad = [p for p in pixels if not 0 <= p <= top]
        if bad:
            raise ValueError(f"Pixel {bad[0]} is outside 0..{top} ({info.pixel_bits}-bit pixels)")
        fmt = ">" + ("B" if info.pixel_bytes == 1 else "H") * len(pixels)
        words = self.transact(Command.RUN, struct.pack(fmt, *pixels)).words()
        values = [_signed32(w) for w in words]
        return values[:-1], values[-1]

    def read_counters(self, n_layers: int | None = None) -> Counters:
        status, cycles, layers = self.read_registers(register_address("STATUS"), 3)
        n = layers if n_layers is None else n_layers
        synops, spikes = [], []
        for k in range(n):
            _, _, syn, spk = self.read_registers(register_address("LEAK_SHIFT", k), 4)
            synops.append(syn)
            spikes.append(spk)
        return Counters(cycles=cycles, status=status, synops=tuple(synops), spikes=tuple(spikes))

    def weight_info(self, layer: int) -> WeightInfo:
        """Layer ``layer``'s weight memory, from its ``W_INFO`` register."""
        info = self.read_register(register_address("W_INFO", layer))
        return WeightInfo(in_ram=bool(info & 1), chunks_per_word=(info >> 4) & 0xF,
                          words=info >> 8)

    def load_weights(self, layer: int, chunks: Sequence[int], *,
                     progress: Callable[[int, int], None] | None = None) -> None:
        """Write layer ``layer``'s SPRAM weights: ``chunks`` are the 32-bit words of
        ``hw.layer.weight_chunks`` for the board's lane count, all of them, in order.

        Every frame starts on a weight-word boundary with its own ``W_ADDR`` write, so a frame
        whose reply was lost is sent again whole (``retries`` times) without writing any word
        twice. ``progress(chunks_done, chunks_total)`` is called after each frame.
        """
        info = self.weight_info(layer)
        if not info.in_ram:
            raise ValueError(f"Layer {layer}'s weights are in ROM, not loadable over the link")
        chunks = _words32(chunks)
        if len(chunks) != info.words * info.chunks_per_word:
            raise ValueError(
                f"Layer {layer} takes {info.words} weight words of {info.chunks_per_word} "
                f"chunks ({info.words * info.chunks_per_word} in all), not {len(chunks)}: "
                f"were the chunks made for the board's lane count?")
        per_frame = (MAX_WORDS // info.chunks_per_word) * info.chunks_per_word
        for start in range(0, len(chunks), per_frame):
            for attempt in range(self.retries + 1):
                try:
                    self.write_register(register_address("W_ADDR", layer),
                                        start // info.chunks_per_word)
                    self.write_block(register_address("W_DATA", layer),
                                     chunks[start:start + per_frame])
                    break
                except DeviceError:
                    raise
                except LinkError:
                    if attempt == self.retries:
                        raise
            if progress is not None:
                progress(min(start + per_frame, len(chunks)), len(chunks))
        status = self.read_register(register_address("LAYER_STATUS", layer))
        if status & 4:
            raise LinkError(f"Layer {layer} reports a weight load past its last word")

    def load_network_weights(self, network, lanes: int, *,
                             progress: Callable[[int, int, int], None] | None = None) -> list[int]:
        """Load every layer of ``network`` (a :class:`sw.golden.Network`, the one the board was
        built for) whose weights live in SPRAM; returns those layers' indices.
        ``progress(layer, chunks_done, chunks_total)`` follows each frame."""
        from hw.layer import weight_chunks

        loaded = []
        for k, layer in enumerate(network.layers):
            if not self.weight_info(k).in_ram:
                continue
            report = None if progress is None else (lambda done, total, k=k: progress(k, done,
                                                                                     total))
            self.load_weights(k, weight_chunks(layer.weight, lanes, layer.w_bits),
                              progress=report)
            loaded.append(k)
        return loaded

    def read_threshold(self, layer: int, t: int) -> int:
        return self.read_register(register_address("THETA", layer, t))

    def write_threshold(self, layer: int, t: int, value: int) -> None:
        self.write_register(register_address("THETA", layer, t), value)

    def read_leak_shift(self, layer: int) -> int:
        return self.read_register(register_address("LEAK_SHIFT", layer))

    def write_leak_shift(self, layer: int, value: int) -> None:
        self.write_register(register_address("LEAK_SHIFT", layer), value)

    def identify(self) -> int:
        """Read the ID register; raises :class:`LinkError` if it is not the accelerator's."""
        ident = self.read_register(register_address("ID"))
        if ident != ID_MAGIC:
            raise LinkError(f"ID register reads 0x{ident:08x}, not 0x{ID_MAGIC:08x}")
        return ident

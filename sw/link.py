"""Host side of the spikeforge UART link (docs/link-protocol.md).

Three layers, each usable on its own:

* framing: :func:`crc16`, :func:`encode_request`, :func:`encode_reply`, :func:`decode_reply`;
* a byte transport: anything with ``write(data)``, ``read(n, timeout) -> bytes`` (fewer bytes
  on timeout) and ``reset_input()``. :class:`SerialTransport` wraps a pyserial port;
  ``tests/tb_board.py`` has one that drives the cocotb UART models of the board simulation;
* :class:`LinkClient`: register reads and writes (also a block of words to one register),
  ``classify`` and ``classify_stream``, counters. The very same class drives the board over a
  serial port and the board top in simulation.

Every address, constant, command, error code and frame rule comes from the spec,
:mod:`spikeforge.sw.interface`; the names of the protocol (``Command``, ``ErrorCode``,
``MAX_WORDS``, ``encode_request``, ``register_address`` ...) are re-exported here for users of
the client. A client made with ``spec=`` addresses the registers of that register map.

Pure Python: importing this module needs neither Amaranth nor pyserial.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from spikeforge.sw.interface import (
    BAUD,
    COMMANDS,
    DESCRIPTOR_REGISTERS,
    ID_MAGIC,
    LINK_VERSION,
    MAX_BLOCK_LEN,
    MAX_WORDS,
    REPLY_HEADER,
    RETRYABLE,
    SPEC,
    STREAM_MAX_PIXEL_BITS,
    SYNC_REPLY,
    SYNC_REQUEST,
    Command,
    ErrorCode,
    RegisterMap,
    check_words32,
    crc16,
    decode_info,
    encode_block,
    encode_reply,
    encode_request,
    encode_stream_image,
    pixel_bytes,
    stream_supported,
)

__all__ = [
    "BAUD",
    "SYNC_REQUEST",
    "SYNC_REPLY",
    "LINK_VERSION",
    "MAX_WORDS",
    "MAX_BLOCK_LEN",
    "ID_MAGIC",
    "RETRYABLE",
    "Command",
    "ErrorCode",
    "LinkError",
    "LinkTimeout",
    "DeviceError",
    "Reply",
    "LinkInfo",
    "WeightInfo",
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


@dataclass(frozen=True)
class Reply:
    command: int
    code: int
    payload: bytes

    def words(self) -> list[int]:
        """The payload as big-endian unsigned 32-bit words."""
        return list(struct.unpack(f">{len(self.payload) // 4}I", self.payload))


#: Bytes of a reply's header (SYNC to LEN), and of its header and CRC.
_REPLY_HEAD = struct.calcsize(REPLY_HEADER)
_REPLY_OVERHEAD = _REPLY_HEAD + 2


def decode_reply(frame: bytes) -> Reply:
    """Parse one complete reply frame; raises :class:`LinkError` naming what is wrong."""
    if len(frame) < _REPLY_OVERHEAD:
        raise LinkError(f"reply of {len(frame)} bytes is shorter than a header and CRC "
                        f"({_REPLY_OVERHEAD})")
    if frame[0] != SYNC_REPLY:
        raise LinkError(f"reply starts with 0x{frame[0]:02x}, not SYNC 0x{SYNC_REPLY:02x}")
    _, command, code, length = struct.unpack(REPLY_HEADER, frame[:_REPLY_HEAD])
    if len(frame) != _REPLY_OVERHEAD + length:
        raise LinkError(f"reply LEN says {length} payload bytes but the frame holds "
                        f"{len(frame) - _REPLY_OVERHEAD}")
    (crc,) = struct.unpack(">H", frame[-2:])
    if crc16(frame[1:-2]) != crc:
        raise LinkError(f"reply CRC 0x{crc:04x} does not match 0x{crc16(frame[1:-2]):04x}")
    return Reply(command, code, bytes(frame[_REPLY_HEAD:-2]))


def register_address(name: str, layer: int | None = None, t: int | None = None) -> int:
    """Word address of a register of docs/host-interface.md: ``register_address("STATUS")``,
    ``register_address("LEAK_SHIFT", layer)``, ``register_address("THETA", layer, t)``.

    Per-layer registers whose name a global one also has are ``LAYER_CYCLES`` and
    ``LAYER_STATUS``. :meth:`spikeforge.sw.interface.RegisterMap.address` of the spec."""
    return SPEC.address(name, layer, t)


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def read(self, n: int, timeout: float) -> bytes: ...

    def reset_input(self) -> None: ...


class SerialTransport:
    """:class:`Transport` over a pyserial port (``serial.Serial`` or anything alike)."""

    def __init__(self, port):
        self.port = port

    @classmethod
    def open(cls, device: str, baud: int = BAUD) -> SerialTransport:
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
        return pixel_bytes(self.pixel_bits)


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


_READ = COMMANDS[Command.READ].head_format
_WRITE = COMMANDS[Command.WRITE].head_format


def _signed32(value: int) -> int:
    return value - (1 << 32) if value & 0x8000_0000 else value


class LinkClient:
    """Request/response client for the board (or its simulation) over a :class:`Transport`.

    Link-level errors (a corrupted request or reply, a timeout) are retried ``retries`` times;
    errors that are the request's fault (:attr:`ErrorCode.PIXEL`, ``BUSY``, ``ARGUMENT``) raise
    :class:`DeviceError` at once. ``timeout`` (seconds) bounds the wait for each reply byte
    group; it must exceed the device's inter-byte timeout, after which error replies are sent.
    ``spec`` is the register map of the device (:data:`spikeforge.sw.interface.SPEC`).
    """

    def __init__(self, transport: Transport, *, timeout: float = 1.0, retries: int = 2,
                 spec: RegisterMap = SPEC):
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.spec = spec
        self._info: LinkInfo | None = None

    def address(self, name: str, layer: int | None = None, t: int | None = None) -> int:
        """Word address of register ``name`` in this client's register map."""
        return self.spec.address(name, layer, t)

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
        header = read(_REPLY_HEAD - 1, self.timeout)
        if len(header) != _REPLY_HEAD - 1:
            raise LinkTimeout("reply header truncated")
        length = struct.unpack(REPLY_HEADER, first + header)[-1]
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
        self._info = LinkInfo(**decode_info(self.transact(Command.INFO).words()))
        return self._info

    def read_registers(self, address: int, count: int) -> list[int]:
        if not 1 <= count <= MAX_WORDS:
            raise ValueError(f"Register count must be 1..{MAX_WORDS}, not {count!r}")
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"Register address must be 16-bit, not {address!r}")
        return self.transact(Command.READ, struct.pack(_READ, address, count)).words()

    def read_register(self, address: int) -> int:
        return self.read_registers(address, 1)[0]

    def write_register(self, address: int, value: int) -> None:
        if not 0 <= address <= 0xFFFF:
            raise ValueError(f"Register address must be 16-bit, not {address!r}")
        self.transact(Command.WRITE, struct.pack(_WRITE, address, value & 0xFFFF_FFFF))

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
        words = check_words32(words)
        for start in range(0, len(words), MAX_WORDS):
            payload = encode_block(address, words[start:start + MAX_WORDS])
            try:
                self.transact(Command.WRITE_BLOCK, payload, idempotent=False)
            except LinkError as error:
                error.words_written = start
                raise

    def _image(self, pixels: Sequence[int]) -> list[int]:
        """``pixels`` as ints, checked against the device's image size and pixel width."""
        info = self._info or self.info()
        pixels = [int(p) for p in pixels]
        if len(pixels) != info.n_inputs:
            raise ValueError(f"Image has {len(pixels)} pixels, the network takes {info.n_inputs}")
        top = (1 << info.pixel_bits) - 1
        bad = [p for p in pixels if not 0 <= p <= top]
        if bad:
            raise ValueError(f"Pixel {bad[0]} is outside 0..{top} ({info.pixel_bits}-bit pixels)")
        return pixels

    @staticmethod
    def _results(reply: Reply) -> tuple[list[int], int]:
        values = [_signed32(w) for w in reply.words()]
        return values[:-1], values[-1]

    def classify(self, pixels: Sequence[int]) -> tuple[list[int], int]:
        """Run one image; returns (the scores of every output neuron, the predicted class)."""
        pixels = self._image(pixels)
        fmt = COMMANDS[Command.RUN].payload_format(len(pixels), self._info.pixel_bits)
        return self._results(self.transact(Command.RUN, struct.pack(fmt, *pixels)))

    def classify_stream(self, images: Iterable[Sequence[int]]
                        ) -> Iterator[tuple[list[int], int]]:
        """Classify ``images`` in order, yielding ``(scores, prediction)`` for each, with one
        ``STREAM`` exchange per image: a request carries the image in zero-run tokens, its reply
        the previous image's results, so the device computes one image while the line carries
        the next; an empty ``STREAM`` at the end flushes the last. Needs ``pixel_bits <= 7``.

        An exchange is resent only when the device answered that the frame did not get through;
        after a lost or corrupt reply the image may have gone in and the previous results are
        gone, so that raises :class:`LinkError` at once, with ``images_done`` (the results
        yielded so far). A STREAM image an earlier host left in the device is flushed first;
        one left by a caller that stops iterating early is flushed when the generator closes,
        and a bad image (``ValueError``) is raised after the results of the image before it.
        """
        info = self._info or self.info()
        if not stream_supported(info.pixel_bits):
            raise ValueError(f"STREAM needs pixels of at most {STREAM_MAX_PIXEL_BITS} bits; this "
                             f"device takes {info.pixel_bits}: use classify")
        done, pending = 0, False
        try:
            self.transact(Command.STREAM)  # no image: takes (and drops) any left in the device
            for pixels in images:
                try:
                    payload = encode_stream_image(self._image(pixels), info.pixel_bits)
                except ValueError:  # a bad image: the one before it still gets its results
                    if pending:
                        pending = False
                        yield self._flush_stream()
                        done += 1
                    raise
                reply = self.transact(Command.STREAM, payload, idempotent=False)
                if pending:
                    if not reply.payload:
                        raise LinkError("a STREAM reply without the pending image's results")
                    yield self._results(reply)
                    done += 1
                elif reply.payload:
                    raise LinkError("a STREAM reply with results where none were pending")
                pending = True
            if pending:
                pending = False
                yield self._flush_stream()
                done += 1
        except LinkError as error:
            error.images_done = done
            raise
        except GeneratorExit:  # the caller stopped early: leave the device free for writes
            if pending:
                self.transact(Command.STREAM)
            raise

    def _flush_stream(self) -> tuple[list[int], int]:
        """The pending STREAM image's results, taken with an empty STREAM (not resent)."""
        return self._results(self.transact(Command.STREAM, idempotent=False))

    def read_many(self, addresses: Sequence[int]) -> list[int]:
        """The registers at ``addresses``, in that order: one READ per run of consecutive
        addresses (at most :data:`MAX_WORDS` each), so no unmapped word is read."""
        values: dict[int, int] = {}
        pending = sorted(set(addresses))
        while pending:
            start, count = pending[0], 1
            while (count < len(pending) and count < MAX_WORDS
                   and pending[count] == start + count):
                count += 1
            values.update(zip(pending[:count], self.read_registers(start, count), strict=True))
            pending = pending[count:]
        return [values[a] for a in addresses]

    def read_counters(self, n_layers: int | None = None) -> Counters:
        """STATUS, CYCLES and every layer's SYNOPS and SPIKES (``n_layers`` layers; read from
        N_LAYERS if None)."""
        address = self.address
        if n_layers is None:
            status, cycles, n_layers = self.read_many(
                [address("STATUS"), address("CYCLES"), address("N_LAYERS")])
        else:
            status, cycles = self.read_many([address("STATUS"), address("CYCLES")])
        per_layer = self.read_many([address(name, k) for k in range(n_layers)
                                    for name in ("SYNOPS", "SPIKES")])
        return Counters(cycles=cycles, status=status, synops=tuple(per_layer[0::2]),
                        spikes=tuple(per_layer[1::2]))

    def weight_info(self, layer: int) -> WeightInfo:
        """Layer ``layer``'s weight memory, from its ``W_INFO`` register."""
        info = self.spec.layer_reg("W_INFO").unpack(
            self.read_register(self.address("W_INFO", layer)))
        return WeightInfo(in_ram=bool(info["in_ram"]), chunks_per_word=info["chunks_per_word"],
                          words=info["words"])

    def read_descriptor(self, layer: int) -> dict[str, int]:
        """Layer ``layer``'s descriptor registers (``SHAPE_IN`` .. ``NEURON_BASE``), by name,
        as words: its geometry on the core array, fixed when the bitstream was built."""
        names = DESCRIPTOR_REGISTERS
        return dict(zip(names, self.read_many([self.address(n, layer) for n in names]),
                        strict=True))

    def check_network(self, network) -> None:
        """Check that the board runs ``network`` (a :class:`spikeforge.sw.golden.Network`, say
        an export's): as many neuron layers, each with the descriptor the core array gives it
        at the board's lane count. Raises :class:`LinkError` naming the first layer and
        register that differ, with both sides' fields."""
        from spikeforge.hw.core_layout import core_layout

        n_layers, lanes = self.read_many([self.address("N_LAYERS"), self.address("LANES")])
        expected = core_layout(network, lanes).descriptors(self.spec)
        if n_layers != len(expected):
            raise LinkError(f"the board runs {n_layers} neuron layers, the network has "
                            f"{len(expected)}: it was built from another network")
        for k, want in enumerate(expected):
            got = self.read_descriptor(k)
            for name in DESCRIPTOR_REGISTERS:
                if got[name] != want[name]:
                    register = self.spec.layer_reg(name)

                    def show(word, register=register):
                        if not register.fields:
                            return str(word)
                        return " ".join(f"{f}={v}" for f, v in register.unpack(word).items())
                    raise LinkError(f"layer {k} {name} differs: the board has {show(got[name])}, "
                                    f"the network needs {show(want[name])} (at {lanes} lanes): "
                                    "the bitstream was built from another network")

    def load_weights(self, layer: int, chunks: Sequence[int], *,
                     progress: Callable[[int, int], None] | None = None) -> None:
        """Write layer ``layer``'s SPRAM weights: ``chunks`` are the 32-bit words of
        ``spikeforge.hw.layer.weight_chunks`` for the board's lane count, all of them, in order.

        Every frame starts on a weight-word boundary with its own ``W_ADDR`` write, so a frame
        whose reply was lost is sent again whole (``retries`` times) without writing any word
        twice. ``progress(chunks_done, chunks_total)`` is called after each frame.
        """
        info = self.weight_info(layer)
        if not info.in_ram:
            raise ValueError(f"Layer {layer}'s weights are in ROM, not loadable over the link")
        chunks = check_words32(chunks)
        if len(chunks) != info.words * info.chunks_per_word:
            raise ValueError(
                f"Layer {layer} takes {info.words} weight words of {info.chunks_per_word} "
                f"chunks ({info.words * info.chunks_per_word} in all), not {len(chunks)}: "
                f"were the chunks made for the board's lane count?")
        per_frame = (MAX_WORDS // info.chunks_per_word) * info.chunks_per_word
        for start in range(0, len(chunks), per_frame):
            for attempt in range(self.retries + 1):
                try:
                    self.write_register(self.address("W_ADDR", layer),
                                        start // info.chunks_per_word)
                    self.write_block(self.address("W_DATA", layer),
                                     chunks[start:start + per_frame])
                    break
                except DeviceError:
                    raise
                except LinkError:
                    if attempt == self.retries:
                        raise
            if progress is not None:
                progress(min(start + per_frame, len(chunks)), len(chunks))
        status = self.read_register(self.address("LAYER_STATUS", layer))
        if status & self.spec.layer_reg("STATUS").field("load_overflow").mask:
            raise LinkError(f"Layer {layer} reports a weight load past its last word")

    def load_network_weights(self, network, lanes: int, *,
                             progress: Callable[[int, int, int], None] | None = None) -> list[int]:
        """Load every layer of ``network`` (a :class:`spikeforge.sw.golden.Network`, the one the
        board was built for) whose weights live in SPRAM; returns those layers' indices.
        ``progress(layer, chunks_done, chunks_total)`` follows each frame."""
        from spikeforge.hw.core_layout import core_layout

        loaded = []
        for k, chunks in core_layout(network, lanes).weight_chunks().items():
            if not self.weight_info(k).in_ram:
                continue
            report = None if progress is None else (lambda done, total, k=k: progress(k, done,
                                                                                     total))
            self.load_weights(k, chunks, progress=report)
            loaded.append(k)
        return loaded

    def read_threshold(self, layer: int, t: int) -> int:
        return self.read_register(self.address("THETA", layer, t))

    def write_threshold(self, layer: int, t: int, value: int) -> None:
        self.write_register(self.address("THETA", layer, t), value)

    def read_leak_shift(self, layer: int) -> int:
        return self.read_register(self.address("LEAK_SHIFT", layer))

    def write_leak_shift(self, layer: int, value: int) -> None:
        self.write_register(self.address("LEAK_SHIFT", layer), value)

    def identify(self) -> int:
        """Read the ID register; raises :class:`LinkError` if it is not the accelerator's."""
        ident = self.read_register(self.address("ID"))
        if ident != self.spec.id_magic:
            raise LinkError(f"ID register reads 0x{ident:08x}, not 0x{self.spec.id_magic:08x}")
        return ident

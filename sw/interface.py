"""The accelerator's register map and the host link protocol, declared once, as data.

This is the contract between the gateware and everything that talks to it. Every address, bit
field, ID value, command, error code and frame rule is written here and nowhere else:

* the gateware's register decoders (:mod:`spikeforge.hw.layer`, :mod:`spikeforge.hw.accelerator`)
  and the link bridge (:mod:`spikeforge.hw.link`) are generated from it;
* the host client (:mod:`spikeforge.sw.link`), the mocks and the Python models
  (:mod:`spikeforge.sim.mock_accelerator`, :mod:`spikeforge.sim.link_model`) and the testbenches
  read their addresses and constants from it;
* the tables of ``docs/host-interface.md`` and ``docs/link-protocol.md`` are rendered from it
  (``python -m spikeforge.sw.interface --update docs``; ``tests/test_interface.py`` fails when a
  table and the spec differ).

The register map is a value, :class:`RegisterMap`; :data:`SPEC` is the one the project builds.
The gateware and the client take a ``spec=`` argument (default :data:`SPEC`), so a test can
hand both a map with a register moved and check that they still agree.

Stdlib only: cocotb testbenches and the host import this module without Amaranth or torch.
It is the bottom ("contract") layer of the package: it imports nothing of spikeforge.

Address model
-------------
Addresses are :data:`ADDRESS_BITS`-bit *word* addresses of :data:`WORD_BITS`-bit registers.
The *global block* holds the accelerator's own registers at absolute addresses inside block 0
(``0 .. layer_stride - 1``). Layer ``k``'s registers sit at ``layer_base + layer_stride * k +
offset``; ``layer_stride`` is a power of two, so the gateware splits an address into a block
number (the high bits) and an offset (the low :attr:`RegisterMap.offset_bits` bits). An array
register (``THETA``) takes ``count`` consecutive words, entry ``t`` at ``offset + t``.
"""

from __future__ import annotations

import argparse
import enum
import itertools
import operator
import re
import struct
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = [
    # register map
    "ADDRESS_BITS",
    "WORD_BITS",
    "ID_MAGIC",
    "MAX_TIMESTEPS",
    "LAYER_BASE",
    "LAYER_STRIDE",
    "SpecError",
    "Access",
    "Reset",
    "Field",
    "Register",
    "Location",
    "RegisterMap",
    "GLOBAL_REGISTERS",
    "LAYER_REGISTERS",
    "SPEC",
    "pack_fields",
    "unpack_fields",
    "register_address",
    "pack_w_info",
    "DESCRIPTOR_REGISTERS",
    "unpack_w_info",
    # link protocol
    "BAUD",
    "BITS_PER_BYTE",
    "SYNC_REQUEST",
    "SYNC_REPLY",
    "LINK_VERSION",
    "MAX_WORDS",
    "MAX_BLOCK_LEN",
    "CRC_POLY",
    "CRC_INIT",
    "REQUEST_HEADER",
    "REPLY_HEADER",
    "CRC_FORMAT",
    "Command",
    "ErrorCode",
    "RETRYABLE",
    "PIXEL",
    "IMAGE",
    "STREAM_MAX_PIXEL_BITS",
    "STREAM_MAX_RUN",
    "STREAM_RUN_BIT",
    "CommandSpec",
    "COMMANDS",
    "ERRORS",
    "PayloadRule",
    "pixel_bytes",
    "payload_rule",
    "INFO_FIELDS",
    "info_words",
    "decode_info",
    "crc16",
    "encode_request",
    "encode_reply",
    "encode_block",
    "stream_supported",
    "encode_stream_image",
    "decode_stream_image",
    "check_words32",
    "run_frame_bytes",
    "stream_frame_bytes",
    "link_images_per_second",
    "stream_images_per_second",
    # documentation
    "register_table",
    "field_table",
    "layer_table",
    "command_table",
    "error_table",
    "frame_text",
    "DOC_SECTIONS",
    "render_section",
    "splice",
    "doc_section",
    "stale_sections",
]

# ==== register map ===============================================================================

#: Width of a register address (words) on the register bus and in link frames.
ADDRESS_BITS = 16
#: Width of a register.
WORD_BITS = 32
#: Value of the global ``ID`` register: "this is a spikeforge accelerator".
ID_MAGIC = 0x5F0B6E01
#: Entries of the per-layer ``THETA`` array: the most timesteps a layer engine takes.
MAX_TIMESTEPS = 0xF0
#: Address of layer 0's block, and the distance between two layers' blocks.
LAYER_BASE = 0x0100
LAYER_STRIDE = 0x0100


class SpecError(ValueError):
    """A register map that contradicts itself (overlapping registers, a field past bit 31...)."""


class Access(enum.Enum):
    """What the host may do with a register."""

    R = "R"          #: read only; writes are ignored
    RW = "RW"        #: read and write
    W = "W"          #: write only; reads return 0
    W1C = "R/W1C"    #: read; writing 1 to a bit clears that (sticky) bit, 0 leaves it

    @property
    def readable(self) -> bool:
        return self is not Access.W

    @property
    def writable(self) -> bool:
        return self is not Access.R

    @property
    def text(self) -> str:
        """How the docs table says it."""
        return {Access.W1C: "R, write 1 to clear"}.get(self, self.value)


class Reset(enum.Enum):
    """Reset values that are not one constant of the map."""

    MANIFEST = "from manifest"              #: the exported network's value, set at elaboration
    ELABORATION = "fixed at build"          #: a constant of the build (the network's shape)
    NONE = "-"                              #: write-only: nothing to read


@dataclass(frozen=True)
class Field:
    """Bits ``offset .. offset + width - 1`` of a word, named."""

    name: str
    offset: int
    width: int = 1
    meaning: str = ""

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.offset

    @property
    def bits(self) -> slice:
        """The field as a slice of a word: ``word[field.bits]`` works on Amaranth values."""
        return slice(self.offset, self.offset + self.width)

    @property
    def span_text(self) -> str:
        if self.width == 1:
            return f"bit {self.offset}"
        return f"bits {self.offset}..{self.offset + self.width - 1}"

    def get(self, word: int) -> int:
        return (word >> self.offset) & ((1 << self.width) - 1)


def pack_fields(fields: Sequence[Field], what: str = "word", **values: int) -> int:
    """A word with each named field set to ``values[name]`` (fields not named are 0).

    Raises :class:`ValueError` for a name that is not a field or a value that does not fit."""
    by_name = {f.name: f for f in fields}
    word = 0
    for name, value in values.items():
        f = by_name.get(name)
        if f is None:
            raise ValueError(f"{what} has no field {name!r} (fields: {', '.join(by_name)})")
        value = operator.index(value)
        if not 0 <= value < 1 << f.width:
            raise ValueError(f"{what}.{name} is {f.width} bits wide: {value!r} does not fit")
        word |= value << f.offset
    return word


def unpack_fields(fields: Sequence[Field], word: int) -> dict[str, int]:
    """Every field of ``word``, by name."""
    return {f.name: f.get(word) for f in fields}


@dataclass(frozen=True)
class Register:
    """One register (or, with ``count > 1``, an array of registers at consecutive addresses).

    ``offset`` is the absolute address in the global block, the offset from the block's start
    in the per-layer block. ``reset`` is a constant or a :class:`Reset`. ``signed``: the value
    is two's complement (sign-extended to 32 bits on read)."""

    name: str
    offset: int
    access: Access
    reset: int | Reset
    meaning: str
    fields: tuple[Field, ...] = ()
    count: int = 1
    index: str = ""
    signed: bool = False

    @property
    def end(self) -> int:
        """One past the last word."""
        return self.offset + self.count

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"Register {self.name} has no field {name!r} "
                       f"(fields: {', '.join(f.name for f in self.fields) or 'none'})")

    def pack(self, **values: int) -> int:
        """The register's word from its fields: ``W_INFO.pack(in_ram=1, words=6, ...)``."""
        return pack_fields(self.fields, self.name, **values)

    def unpack(self, word: int) -> dict[str, int]:
        """The register's fields from its word."""
        return unpack_fields(self.fields, word)


@dataclass(frozen=True)
class Location:
    """Where an address points: a register, the layer (None: the global block), the entry."""

    register: Register
    layer: int | None
    index: int = 0


GLOBAL_REGISTERS = (
    Register("ID", 0x0000, Access.R, ID_MAGIC, "magic number: a spikeforge accelerator"),
    Register("STATUS", 0x0001, Access.W1C, 0, "sticky error flags", fields=(
        Field("bad_pixel", 0, 1, "an image had a pixel above `2**pixel_bits - 1` and was dropped"),
        Field("bad_address", 1, 1, "a layer engine dropped an out-of-range spike (the OR of "
                                   "every layer's `bad_addr`; never set, by construction)"),
        Field("busy_write", 2, 1, "a register write arrived while busy and was ignored"),
    )),
    Register("CYCLES", 0x0002, Access.R, 0,
             "compute cycles of the last inference (see docs/accelerator.md)"),
    Register("N_LAYERS", 0x0003, Access.R, Reset.ELABORATION, "number of layers"),
    Register("N_INPUTS", 0x0004, Access.R, Reset.ELABORATION, "pixels per image"),
    Register("N_OUTPUTS", 0x0005, Access.R, Reset.ELABORATION,
             "output neurons (scores per result)"),
    Register("TIMESTEPS", 0x0006, Access.R, Reset.ELABORATION, "T"),
    Register("LANES", 0x0007, Access.R, Reset.ELABORATION, "P, lanes per layer engine"),
)

_SHAPE_FIELDS = (
    Field("channels", 0, 16, "channels (a dense layer's neurons)"),
    Field("height", 16, 8, "rows"),
    Field("width", 24, 8, "columns"),
)

LAYER_REGISTERS = (
    Register("LEAK_SHIFT", 0x00, Access.RW, Reset.MANIFEST,
             "leak shift, 0..v_bits (larger values are stored as v_bits)"),
    Register("V_INIT", 0x01, Access.RW, Reset.MANIFEST,
             "initial membrane (signed v_bits, two's complement, sign-extended on read)",
             signed=True),
    Register("SYNOPS", 0x02, Access.R, 0,
             "synaptic operations of the last inference: `fan_out` per valid input spike"),
    Register("SPIKES", 0x03, Access.R, 0,
             "output spikes of the last inference (markers not counted)"),
    Register("FIRE", 0x04, Access.RW, Reset.MANIFEST, "how the neurons fire", fields=(
        Field("radix", 0, 1, "radix mode (0: threshold mode)"),
        Field("fires", 1, 1, "the neurons spike (0: they only integrate)"),
        Field("greater", 2, 1, "threshold mode fires on `V > theta` (0: `V >= theta`)"),
        Field("zero_reset", 3, 1, "threshold mode resets `V` to 0 after a spike "
              "(0: subtracts `theta`)"),
    )),
    Register("CYCLES", 0x05, Access.R, 0,
             "busy cycles of the layer's engine, last inference (the cycle model's `cycles`)"),
    Register("STATUS", 0x06, Access.W1C, 0, "sticky error flags of the layer", fields=(
        Field("bad_addr", 0, 1, "an input spike with `addr >= fan_in` was dropped"),
        Field("busy_write", 1, 1, "a register write arrived while busy and was ignored"),
        Field("load_overflow", 2, 1, "a `W_DATA` chunk completed a word past the last one"),
    )),
    Register("W_ADDR", 0x07, Access.RW, 0,
             "SPRAM weights: word the next `W_DATA` chunks complete (writes clamp to `words` "
             "and restart the word)"),
    Register("W_DATA", 0x08, Access.W, Reset.NONE,
             "SPRAM weights: next 32-bit chunk, lowest first (docs/microarchitecture.md, "
             "\"Weights in SPRAM\")"),
    Register("W_INFO", 0x09, Access.R, Reset.ELABORATION, "the layer's weight memory", fields=(
        Field("in_ram", 0, 1, "the weights live in SPRAM and must be loaded through `W_DATA`"),
        Field("chunks_per_word", 4, 4, "`W_DATA` chunks per weight word"),
        Field("words", 8, 24, "weight words of the layer"),
    )),
    # the layer's descriptor: its geometry on the core array, fixed at elaboration
    # (hw/core_layout.py LayerMap), so a host can check that a bitstream runs the network of
    # its export before it loads weights or streams images
    Register("SHAPE_IN", 0x0A, Access.R, Reset.ELABORATION,
             "the events the layer receives `(C, H, W)`, before its pooling (dense: `(fan_in, "
             "1, 1)`)", fields=_SHAPE_FIELDS),
    Register("SHAPE_OUT", 0x0B, Access.R, Reset.ELABORATION,
             "its neurons `(C, H, W)` (dense: `(fan_out, 1, 1)`)", fields=_SHAPE_FIELDS),
    Register("KERNEL", 0x0C, Access.R, Reset.ELABORATION, "how an input event expands", fields=(
        Field("conv", 0, 1, "a convolution (0: dense)"),
        Field("pool_shift", 1, 3, "log2 of the sum-pooling window folded in (0: none)"),
        Field("stride_shift", 4, 3, "log2 of the convolution's stride"),
        Field("height", 8, 4, "kernel rows"),
        Field("width", 12, 4, "kernel columns"),
        Field("pad_h", 16, 4, "rows of zero padding"),
        Field("pad_w", 20, 4, "columns of zero padding"),
    )),
    Register("WEIGHT_BASE", 0x0D, Access.R, Reset.ELABORATION,
             "its first word in the shared weight store"),
    Register("NEURON_BASE", 0x0E, Access.R, Reset.ELABORATION,
             "its first group in the shared membrane memory"),
    Register("THETA", 0x10, Access.RW, Reset.MANIFEST,
             "threshold of timestep t (signed v_bits)", count=MAX_TIMESTEPS, index="t",
             signed=True),
)


#: The per-layer registers of the layer's descriptor, in order
#: (spikeforge.hw.core_layout.CoreLayout.descriptors gives their words).
DESCRIPTOR_REGISTERS = ("SHAPE_IN", "SHAPE_OUT", "KERNEL", "WEIGHT_BASE", "NEURON_BASE")


def _is_name(name: str) -> bool:
    return re.fullmatch(r"[A-Z][A-Z0-9_]*", name) is not None


@dataclass(frozen=True)
class RegisterMap:
    """The whole register map: the global block and the per-layer block, validated on creation.

    A map whose registers overlap, leave their block, or whose fields overlap or pass bit 31
    cannot be made: the constructor raises :class:`SpecError` naming the problem."""

    global_registers: tuple[Register, ...] = GLOBAL_REGISTERS
    layer_registers: tuple[Register, ...] = LAYER_REGISTERS
    layer_base: int = LAYER_BASE
    layer_stride: int = LAYER_STRIDE
    _global: Mapping[str, Register] = field(init=False, repr=False, compare=False)
    _layer: Mapping[str, Register] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "global_registers", tuple(self.global_registers))
        object.__setattr__(self, "layer_registers", tuple(self.layer_registers))
        problems = self.problems()
        if problems:
            raise SpecError("; ".join(problems))
        object.__setattr__(self, "_global", {r.name: r for r in self.global_registers})
        object.__setattr__(self, "_layer", {r.name: r for r in self.layer_registers})

    # -- validation ------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Everything wrong with the map (empty for a good one)."""
        out = []
        stride, base = self.layer_stride, self.layer_base
        if stride < 2 or stride & (stride - 1):
            out.append(f"layer_stride 0x{stride:x} is not a power of two")
            return out
        if base < stride or base % stride or base >= 1 << ADDRESS_BITS:
            out.append(f"layer_base 0x{base:x} must be a multiple of layer_stride 0x{stride:x}, "
                       f"at least one stride, below 0x{1 << ADDRESS_BITS:x}")
        for block, registers, limit in (("global", self.global_registers, stride),
                                        ("per-layer", self.layer_registers, stride)):
            names = [r.name for r in registers]
            for name in sorted({n for n in names if names.count(n) > 1}):
                out.append(f"{block} register name {name} is used twice")
            for r in registers:
                out += self._register_problems(block, r, limit)
            ordered = sorted(registers, key=lambda r: r.offset)
            for a, b in itertools.combinations(ordered, 2):
                if b.offset < a.end:
                    out.append(f"{block} registers {a.name} (0x{a.offset:04x}..0x{a.end - 1:04x})"
                               f" and {b.name} (0x{b.offset:04x}..0x{b.end - 1:04x}) overlap")
        if not [r for r in self.global_registers if r.name == "ID" and isinstance(r.reset, int)]:
            out.append("the global block has no ID register with a constant reset value")
        return out

    @staticmethod
    def _register_problems(block: str, r: Register, limit: int) -> list[str]:
        out = []
        if not _is_name(r.name):
            out.append(f"{block} register name {r.name!r} is not UPPER_CASE")
        if r.count < 1 or (r.count > 1) != bool(r.index):
            out.append(f"{block} register {r.name}: count {r.count} needs an index name "
                       f"exactly when it is above 1")
        if r.offset < 0 or r.end > limit:
            where = "block 0" if block == "global" else "the layer block"
            out.append(f"{block} register {r.name} (0x{r.offset:04x}..0x{r.end - 1:04x}) lies "
                       f"outside {where} (0x0000..0x{limit - 1:04x}): it would overlap "
                       f"another block")
        if isinstance(r.reset, int) and not 0 <= r.reset < 1 << WORD_BITS:
            out.append(f"{block} register {r.name}: reset 0x{r.reset:x} does not fit 32 bits")
        names = [f.name for f in r.fields]
        if len(set(names)) != len(names):
            out.append(f"{block} register {r.name} has two fields of one name")
        used = 0
        for f in r.fields:
            if f.width < 1 or f.offset < 0 or f.offset + f.width > WORD_BITS:
                out.append(f"{block} register {r.name}: field {f.name} ({f.span_text}) is "
                           f"outside the 32-bit word")
                continue
            if used & f.mask:
                out.append(f"{block} register {r.name}: field {f.name} ({f.span_text}) "
                           f"overlaps another field")
            used |= f.mask
        return out

    # -- lookup ----------------------------------------------------------------------------------
    @property
    def id_magic(self) -> int:
        """What the ``ID`` register reads."""
        return self._global["ID"].reset

    @property
    def offset_bits(self) -> int:
        """Low address bits that select a register inside a block."""
        return self.layer_stride.bit_length() - 1

    @property
    def block_bits(self) -> int:
        """High address bits that select the block."""
        return ADDRESS_BITS - self.offset_bits

    @property
    def max_layers(self) -> int:
        """Layers whose blocks fit the address space."""
        return ((1 << ADDRESS_BITS) - self.layer_base) // self.layer_stride

    @property
    def max_timesteps(self) -> int:
        """Entries of the ``THETA`` array (the most timesteps a layer may run)."""
        return self.layer_reg("THETA").count

    def layer_block(self, layer: int) -> int:
        """Block number (the address's high :attr:`block_bits` bits) of layer ``layer``."""
        return (self.layer_base >> self.offset_bits) + layer

    def layer_start(self, layer: int) -> int:
        return self.layer_base + self.layer_stride * layer

    def _names(self) -> str:
        return (f"global: {', '.join(self._global)}; per layer: {', '.join(self._layer)} "
                f"(also as LAYER_<name>)")

    def global_reg(self, name: str) -> Register:
        try:
            return self._global[name]
        except KeyError:
            raise KeyError(f"Unknown global register {name!r} ({self._names()})") from None

    def layer_reg(self, name: str) -> Register:
        try:
            return self._layer[name]
        except KeyError:
            raise KeyError(f"Unknown per-layer register {name!r} ({self._names()})") from None

    def lookup(self, name: str, per_layer: bool | None = None) -> tuple[Register, bool]:
        """``(register, per_layer)`` of a name in the namespace of :meth:`address`: with
        ``per_layer`` None the global block first, then the per-layer block."""
        bare = name[len("LAYER_"):] if name.startswith("LAYER_") else name
        if not per_layer and name in self._global:
            return self._global[name], False
        if per_layer is not False and bare in self._layer:
            return self._layer[bare], True
        if per_layer and name in self._global:
            raise ValueError(f"{name} is a global register: it takes no layer")
        if per_layer is False and bare in self._layer:
            raise ValueError(f"{name} is a per-layer register: give its layer")
        raise ValueError(f"Unknown register {name!r} ({self._names()})")

    def address(self, name: str, layer: int | None = None, t: int | None = None) -> int:
        """Word address of register ``name``.

        Without ``layer``: a global register (``"STATUS"``). With ``layer``: that layer's
        register (``"LEAK_SHIFT"``, ``"STATUS"``; also spelled ``"LAYER_STATUS"``); an array
        (``"THETA"``) also needs its entry ``t``. Every error is a one-line
        :class:`ValueError` naming the register."""
        register, per_layer = self.lookup(name, None if layer is None else True)
        if not per_layer:
            if t is not None:
                raise ValueError(f"{name} is a global register: it takes no timestep")
            return register.offset
        if layer is None:
            raise ValueError(f"{name} is a per-layer register: give its layer")
        return self.layer_start(self._check_layer(name, layer)) + self._entry(register, t)

    def layer_offset(self, name: str, t: int | None = None) -> int:
        """Offset of per-layer register ``name`` (entry ``t`` of an array) inside a block."""
        return self._entry(self.layer_reg(name), t)

    def _check_layer(self, name: str, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.max_layers:
            raise ValueError(f"Layer index of {name} must be 0..{self.max_layers - 1}, "
                             f"not {layer!r}")
        return layer

    @staticmethod
    def _entry(register: Register, t: int | None) -> int:
        if register.count == 1:
            if t not in (None, 0):
                raise ValueError(f"{register.name} is not an array: it takes no timestep")
            return register.offset
        if t is None:
            raise ValueError(f"{register.name} is an array: give its entry {register.index}")
        if not isinstance(t, int) or not 0 <= t < register.count:
            raise ValueError(f"Timestep {register.index} of {register.name} must be "
                             f"0..{register.count - 1}, not {t!r}")
        return register.offset + t

    def decode(self, address: int) -> Location | None:
        """The register at ``address``, or None where nothing is mapped."""
        if address < self.layer_base:
            for r in self.global_registers:
                if r.offset <= address < r.end:
                    return Location(r, None, address - r.offset)
            return None
        layer, offset = divmod(address - self.layer_base, self.layer_stride)
        if layer >= self.max_layers:
            return None
        for r in self.layer_registers:
            if r.offset <= offset < r.end:
                return Location(r, layer, offset - r.offset)
        return None

    def registers(self, n_layers: int, timesteps: int | None = None
                  ) -> Iterator[tuple[int, Location]]:
        """``(address, location)`` of every register of a build with ``n_layers`` layers, in
        address order; arrays up to ``timesteps`` entries (all of them if None)."""
        for r in self.global_registers:
            for i in range(r.count):
                yield r.offset + i, Location(r, None, i)
        for k in range(n_layers):
            for r in sorted(self.layer_registers, key=lambda r: r.offset):
                entries = r.count if timesteps is None or r.count == 1 else timesteps
                for i in range(entries):
                    yield self.layer_start(k) + r.offset + i, Location(r, k, i)

    def with_register(self, name: str, *, per_layer: bool, **changes) -> RegisterMap:
        """A copy of the map with one register changed (``offset=...``), validated."""
        registers = self.layer_registers if per_layer else self.global_registers
        if name not in [r.name for r in registers]:
            (self.layer_reg if per_layer else self.global_reg)(name)
        changed = tuple(replace(r, **changes) if r.name == name else r for r in registers)
        key = "layer_registers" if per_layer else "global_registers"
        return replace(self, **{key: changed})


#: The register map of the accelerator.
SPEC = RegisterMap()


def register_address(name: str, layer: int | None = None, t: int | None = None) -> int:
    """:meth:`RegisterMap.address` of :data:`SPEC`."""
    return SPEC.address(name, layer, t)


def pack_w_info(*, in_ram: bool, chunks_per_word: int, words: int,
                spec: RegisterMap = SPEC) -> int:
    """The ``W_INFO`` word of a layer."""
    return spec.layer_reg("W_INFO").pack(in_ram=int(in_ram), chunks_per_word=chunks_per_word,
                                         words=words)


def unpack_w_info(word: int, spec: RegisterMap = SPEC) -> dict[str, int]:
    """``{"in_ram", "chunks_per_word", "words"}`` of a ``W_INFO`` word."""
    return spec.layer_reg("W_INFO").unpack(word)


# ==== link protocol ==============================================================================

#: The line rate of the host link, in baud: the default of the board tops
#: (:mod:`spikeforge.hw.boards`; ``constraints/<board>.toml`` may override it) and of the host
#: client (:mod:`spikeforge.sw.link`). 3 Mbaud is what both boards' FTDI USB UARTs run
#: exactly (FT2232H: 12 MHz / 4; FT231X: its 3 MHz maximum).
BAUD = 3_000_000
#: Bits on the line per byte: 8 data bits, no parity, 1 stop bit, with the start bit.
BITS_PER_BYTE = 10
#: First byte of a request frame and of a reply frame.
SYNC_REQUEST = 0xA5
SYNC_REPLY = 0x5A
#: Protocol version, in the INFO reply.
LINK_VERSION = 1
#: Most 32-bit words one frame carries: the registers a READ returns, the words of a
#: WRITE_BLOCK (the ``max_read`` field of the INFO reply).
MAX_WORDS = 64
#: CRC-16/CCITT-FALSE: polynomial, initial value (no reflection, no final xor).
CRC_POLY = 0x1021
CRC_INIT = 0xFFFF
#: ``SYNC cmd len`` of a request, ``SYNC cmd code len`` of a reply, the CRC after the payload
#: (struct formats, big-endian).
REQUEST_HEADER = ">BBH"
REPLY_HEADER = ">BBBH"
CRC_FORMAT = ">H"


class Command(enum.IntEnum):
    """Request command bytes; a reply echoes its request's."""

    INFO = 0x01
    READ = 0x02
    WRITE = 0x03
    RUN = 0x04
    WRITE_BLOCK = 0x05
    STREAM = 0x06


class ErrorCode(enum.IntEnum):
    """The ``code`` byte of a reply."""

    OK = 0x00
    CRC = 0x01
    LENGTH = 0x02
    COMMAND = 0x03
    TIMEOUT = 0x04
    PIXEL = 0x05
    BUSY = 0x06
    ARGUMENT = 0x07
    SYNC = 0x08


#: Errors of the link itself: the request never reached the accelerator, so it is safe to resend.
RETRYABLE = frozenset(
    {ErrorCode.CRC, ErrorCode.LENGTH, ErrorCode.TIMEOUT, ErrorCode.SYNC, ErrorCode.COMMAND}
)

#: When each error code is sent (docs/link-protocol.md's table). No error changes any state.
ERRORS = {
    ErrorCode.OK: "",
    ErrorCode.CRC: "the CRC does not match",
    ErrorCode.LENGTH: "`len` is not the length the command takes (checked as soon as `len` "
                      "arrives; see the command table)",
    ErrorCode.COMMAND: "unknown command byte",
    ErrorCode.TIMEOUT: "the line went quiet in the middle of a frame (truncated frame, host "
                       "reset)",
    ErrorCode.PIXEL: "a `RUN` or `STREAM` pixel above `2**pixel_bits - 1`; the image is not run",
    ErrorCode.BUSY: "`WRITE`, `WRITE_BLOCK` or `RUN` while the accelerator is busy (a "
                    "`STREAM` image not yet flushed); nothing done",
    ErrorCode.ARGUMENT: f"`READ` count 0 or above {MAX_WORDS}; a `STREAM` payload that does "
                        f"not decode to `n_inputs` pixels",
    ErrorCode.SYNC: "bytes outside a frame: garbage, or a frame whose SYNC byte was corrupted",
}

#: Unit size of a ``RUN`` payload: one pixel, 1 or 2 bytes by :func:`pixel_bytes`.
PIXEL = 0
#: A unit count that is the device's ``n_inputs`` (an image).
IMAGE = -1
#: The bit of a ``STREAM`` token that marks a zero run; the bits below it hold a pixel, or the
#: run's length less one.
STREAM_RUN_BIT = 7
#: Widest pixel a ``STREAM`` token holds.
STREAM_MAX_PIXEL_BITS = STREAM_RUN_BIT
#: Longest zero run one ``STREAM`` token stands for.
STREAM_MAX_RUN = 1 << STREAM_RUN_BIT
_RUN_FLAG = 1 << STREAM_RUN_BIT

_STRUCT = {1: "B", 2: "H", 4: "I"}


@dataclass(frozen=True)
class CommandSpec:
    """A command's request payload: fixed ``fields`` (name, bytes), big-endian, then
    ``count`` repeats of ``unit`` (name, bytes; :data:`PIXEL` for a pixel), ``count`` a range
    ``(low, high)`` whose bounds may be :data:`IMAGE` (the device's ``n_inputs``)."""

    command: Command
    fields: tuple[tuple[str, int], ...]
    unit: tuple[str, int] | None
    count: tuple[int, int]
    request: str
    reply: str

    @property
    def head_bytes(self) -> int:
        return sum(n for _, n in self.fields)

    @property
    def head_format(self) -> str:
        """struct format of the fixed fields."""
        return ">" + "".join(_STRUCT[n] for _, n in self.fields)

    def payload_format(self, count: int = 0, pixel_bits: int | None = None) -> str:
        """struct format of a whole request payload with ``count`` units (pixels need
        ``pixel_bits``)."""
        if self.unit is None:
            return self.head_format
        size = self.unit[1] if self.unit[1] != PIXEL else pixel_bytes(pixel_bits)
        return f"{self.head_format}{count}{_STRUCT[size]}"

    def unit_count(self, length: int, pixel_bits: int | None = None) -> int:
        """Units in a payload of ``length`` bytes."""
        size = self.unit[1] if self.unit[1] != PIXEL else pixel_bytes(pixel_bits)
        return (length - self.head_bytes) // size

    def field_bits(self, name: str) -> slice:
        """Bits of field ``name`` in the fixed part read as one big-endian integer."""
        low = 0
        for field_name, n in reversed(self.fields):
            if field_name == name:
                return slice(8 * low, 8 * (low + n))
            low += n
        raise KeyError(f"{self.command.name} has no field {name!r}")


#: The two words of the INFO reply.
INFO_FIELDS = (
    (Field("version", 24, 8), Field("pixel_bits", 16, 8), Field("n_inputs", 0, 16)),
    (Field("n_outputs", 16, 16), Field("max_read", 0, 16)),
)


def _info_text() -> str:
    words = [" \\| ".join(f"{f.name} << {f.offset}" if f.offset else f.name for f in fields)
             for fields in INFO_FIELDS]
    return f"{len(words)} words: " + ", ".join(f"`{w}`" for w in words)


COMMANDS = {
    Command.INFO: CommandSpec(Command.INFO, (), None, (0, 0), "none", _info_text()),
    Command.READ: CommandSpec(
        Command.READ, (("addr", 2), ("count", 1)), None, (0, 0),
        f"`addr` u16, `count` u8 (1..{MAX_WORDS})",
        "`count` words: registers `addr .. addr+count-1`"),
    Command.WRITE: CommandSpec(
        Command.WRITE, (("addr", 2), ("data", 4)), None, (0, 0), "`addr` u16, `data` u32",
        "none"),
    Command.RUN: CommandSpec(
        Command.RUN, (), ("pixel", PIXEL), (IMAGE, IMAGE),
        "`n_inputs` pixels: 1 byte each if `pixel_bits <= 8`, else 2 bytes",
        "`n_outputs` scores (signed 32-bit) then the predicted class"),
    Command.WRITE_BLOCK: CommandSpec(
        Command.WRITE_BLOCK, (("addr", 2),), ("word", 4), (1, MAX_WORDS),
        f"`addr` u16, then `count` words u32 (1..{MAX_WORDS}): `len = 2 + 4 * count`", "none"),
    Command.STREAM: CommandSpec(
        Command.STREAM, (), ("token", 1), (0, IMAGE),
        "the next image in zero-run tokens, `len` 0..`n_inputs` (0: no image, a flush); "
        f"`pixel_bits <= {STREAM_MAX_PIXEL_BITS}` only",
        "the previous `STREAM` image's scores and predicted class, as `RUN`'s; none when no "
        "image was pending"),
}


def pixel_bytes(pixel_bits: int) -> int:
    """Bytes of one pixel in a ``RUN`` payload."""
    return 1 if pixel_bits <= 8 else 2


@dataclass(frozen=True)
class PayloadRule:
    """The payload lengths a command takes: ``head + unit * count``, ``count`` in
    ``min_count .. max_count`` (``unit = 0`` or ``min_count == max_count``: one length)."""

    head: int
    unit: int
    min_count: int
    max_count: int

    @property
    def fixed(self) -> bool:
        return self.unit == 0 or self.min_count == self.max_count

    @property
    def min_length(self) -> int:
        return self.head + self.unit * self.min_count

    @property
    def max_length(self) -> int:
        return self.head + self.unit * self.max_count

    def accepts(self, length: int) -> bool:
        if self.fixed:
            return length == self.min_length
        count, rest = divmod(length - self.head, self.unit)
        return rest == 0 and self.min_count <= count <= self.max_count and length >= self.head


def payload_rule(command: Command, *, n_inputs: int | None = None,
                 pixel_bits: int | None = None) -> PayloadRule:
    """Request payload lengths of ``command``; ``RUN`` needs the image's ``n_inputs`` and
    ``pixel_bits``. The bridge checks ``len`` against this as soon as it arrives."""
    spec = COMMANDS[Command(command)]
    if spec.unit is None:
        return PayloadRule(spec.head_bytes, 0, 0, 0)
    unit = spec.unit[1]
    if IMAGE in spec.count and n_inputs is None:
        raise ValueError(f"The {spec.command.name} payload length depends on n_inputs: give it")
    count = tuple(n_inputs if bound == IMAGE else bound for bound in spec.count)
    if unit == PIXEL:
        if pixel_bits is None:
            raise ValueError(f"The {spec.command.name} payload length depends on pixel_bits")
        unit = pixel_bytes(pixel_bits)
    return PayloadRule(spec.head_bytes, unit, *count)


def stream_supported(pixel_bits: int) -> bool:
    """Whether a device with ``pixel_bits``-bit pixels takes ``STREAM`` (a token holds a pixel
    in 7 bits)."""
    return pixel_bits <= STREAM_MAX_PIXEL_BITS


def encode_stream_image(pixels: Sequence[int], pixel_bits: int) -> bytes:
    """A ``STREAM`` payload: the image as tokens, one byte each. A byte below 0x80 is one pixel
    of that value; ``0x80 | (n - 1)`` stands for ``n`` zero pixels (1..:data:`STREAM_MAX_RUN`).
    Zero runs are cut greedily, so the payload is never longer than the image; a 4-bit MNIST
    image takes about a quarter of its ``RUN`` payload."""
    if not stream_supported(pixel_bits):
        raise ValueError(f"STREAM takes pixels of at most {STREAM_MAX_PIXEL_BITS} bits, not "
                         f"{pixel_bits}: send the image with RUN")
    top = (1 << pixel_bits) - 1
    out = bytearray()
    zeros = 0
    for i, value in enumerate(pixels):
        value = operator.index(value)
        if not 0 <= value <= top:
            raise ValueError(f"Pixel {i} is {value}, outside 0..{top} ({pixel_bits}-bit pixels)")
        if value == 0:
            zeros += 1
            if zeros == STREAM_MAX_RUN:
                out.append(_RUN_FLAG | (zeros - 1))
                zeros = 0
            continue
        if zeros:
            out.append(_RUN_FLAG | (zeros - 1))
            zeros = 0
        out.append(value)
    if zeros:
        out.append(_RUN_FLAG | (zeros - 1))
    return bytes(out)


def decode_stream_image(payload: bytes | Sequence[int]) -> list[int]:
    """The pixels a ``STREAM`` payload stands for (:func:`encode_stream_image`'s inverse; the
    device checks their count and range)."""
    pixels: list[int] = []
    for token in payload:
        if token & _RUN_FLAG:
            pixels.extend([0] * ((token & ~_RUN_FLAG) + 1))
        else:
            pixels.append(token)
    return pixels


#: Longest WRITE_BLOCK payload: ``addr`` u16 and MAX_WORDS words.
MAX_BLOCK_LEN = payload_rule(Command.WRITE_BLOCK).max_length

def info_words(*, pixel_bits: int, n_inputs: int, n_outputs: int) -> tuple[int, int]:
    """The INFO reply's payload words for a device."""
    values = {"version": LINK_VERSION, "pixel_bits": pixel_bits, "n_inputs": n_inputs,
              "n_outputs": n_outputs, "max_read": MAX_WORDS}
    return tuple(pack_fields(fields, "INFO word", **{f.name: values[f.name] for f in fields})
                 for fields in INFO_FIELDS)


def decode_info(words: Sequence[int]) -> dict[str, int]:
    """Every field of the INFO reply's words, by name."""
    out = {}
    for fields, word in zip(INFO_FIELDS, words, strict=True):
        out.update(unpack_fields(fields, word))
    return out


def crc16(data: bytes | bytearray | Iterable[int], crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (MSB first, no reflection, no final xor)."""
    for byte in data:
        crc ^= (byte & 0xFF) << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def encode_request(command: int, payload: bytes = b"") -> bytes:
    """``SYNC cmd len_hi len_lo payload crc_hi crc_lo``; the CRC covers cmd .. payload."""
    if not 0 <= command <= 0xFF:
        raise ValueError(f"Command must be a byte, not {command!r}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"Payload of {len(payload)} bytes exceeds the 16-bit length field")
    body = struct.pack(REQUEST_HEADER, SYNC_REQUEST, command, len(payload)) + bytes(payload)
    return body + struct.pack(CRC_FORMAT, crc16(body[1:]))


def encode_reply(command: int, code: int, payload: bytes = b"") -> bytes:
    """``SYNC cmd code len_hi len_lo payload crc_hi crc_lo`` (what the device sends)."""
    body = struct.pack(REPLY_HEADER, SYNC_REPLY, command, code, len(payload)) + bytes(payload)
    return body + struct.pack(CRC_FORMAT, crc16(body[1:]))


def check_words32(words: Sequence[int]) -> list[int]:
    """``words`` as a list of ints, each checked to fit an unsigned 32-bit word."""
    out = [operator.index(word) for word in words]
    for i, word in enumerate(out):
        if not 0 <= word <= 0xFFFF_FFFF:
            raise ValueError(f"Word {i} of the block, {word!r}, does not fit 32 bits unsigned")
    return out


def encode_block(address: int, words: Sequence[int]) -> bytes:
    """Payload of a WRITE_BLOCK request: ``addr`` u16, then 1..:data:`MAX_WORDS` u32 words."""
    if not 0 <= address < 1 << ADDRESS_BITS:
        raise ValueError(f"Register address must be 16-bit, not {address!r}")
    words = check_words32(words)
    spec = COMMANDS[Command.WRITE_BLOCK]
    low, high = spec.count
    if not low <= len(words) <= high:
        raise ValueError(f"A block holds {low}..{high} words, not {len(words)}")
    return struct.pack(spec.payload_format(len(words)), address, *words)


# ==== documentation ==============================================================================

def run_frame_bytes(*, n_inputs: int, pixel_bits: int, n_outputs: int) -> tuple[int, int]:
    """Bytes on the line of a ``RUN``: ``(request, reply)`` (the image; the scores and the
    predicted class)."""
    crc = struct.calcsize(CRC_FORMAT)
    request = struct.calcsize(REQUEST_HEADER) + n_inputs * pixel_bytes(pixel_bits) + crc
    return request, struct.calcsize(REPLY_HEADER) + 4 * (n_outputs + 1) + crc


def stream_frame_bytes(pixels: Sequence[int], *, pixel_bits: int, n_outputs: int
                       ) -> tuple[int, int]:
    """Bytes on the line of the ``STREAM`` exchange that sends ``pixels``: ``(request, reply)``
    (the tokens; the previous image's scores and predicted class)."""
    crc = struct.calcsize(CRC_FORMAT)
    request = (struct.calcsize(REQUEST_HEADER) + len(encode_stream_image(pixels, pixel_bits))
               + crc)
    return request, struct.calcsize(REPLY_HEADER) + 4 * (n_outputs + 1) + crc


def link_images_per_second(*, n_inputs: int, pixel_bits: int, n_outputs: int,
                           baud: float = BAUD) -> float:
    """The most images a second the line carries at ``baud``: one ``RUN`` request and its reply
    per image, back to back (no time for the inference, the host or the USB)."""
    request, reply = run_frame_bytes(n_inputs=n_inputs, pixel_bits=pixel_bits,
                                     n_outputs=n_outputs)
    return baud / BITS_PER_BYTE / (request + reply)


def stream_images_per_second(images: Iterable[Sequence[int]], *, pixel_bits: int,
                             n_outputs: int, baud: float = BAUD) -> float:
    """The most images a second the line carries at ``baud`` with one ``STREAM`` exchange per
    image, over ``images`` (their mean token count; no time for the host or the USB)."""
    frames = [sum(stream_frame_bytes(image, pixel_bits=pixel_bits, n_outputs=n_outputs))
              for image in images]
    return baud / BITS_PER_BYTE / (sum(frames) / len(frames))


def _hex(value: int, digits: int = 4) -> str:
    return f"0x{value:0{digits}X}"


def _reset_text(register: Register) -> str:
    if isinstance(register.reset, Reset):
        return register.reset.value
    return _hex(register.reset, 8) if register.reset > 0xFFFF else str(register.reset)


def _meaning(register: Register) -> str:
    text = register.meaning
    if register.fields:
        text += ": " + ", ".join(f"{f.span_text} `{f.name}`" for f in register.fields)
    if register.count > 1:
        text += f"; {register.index} = 0..{register.count - 1}"
    return text


def _register_row(address: str, name: str, r: Register) -> str:
    return f"| {address} | `{name}` | {r.access.text} | {_reset_text(r)} | {_meaning(r)} |"


def register_table(spec: RegisterMap = SPEC) -> str:
    """The Markdown register table of docs/host-interface.md."""
    rows = ["| address | name | access | reset | meaning |", "|---|---|---|---|---|"]
    for r in sorted(spec.global_registers, key=lambda r: r.offset):
        rows.append(_register_row(_hex(r.offset), r.name, r))
    base = f"{_hex(spec.layer_base)} + {_hex(spec.layer_stride, 0)}*k"
    for r in sorted(spec.layer_registers, key=lambda r: r.offset):
        address = f"{base} + {_hex(r.offset, 2)}"
        name = f"{r.name}[k]"
        if r.count > 1:
            address += f" + {r.index}"
            name += f"[{r.index}]"
        rows.append(_register_row(address, name, r))
    return "\n".join(rows)


def layer_table(spec: RegisterMap = SPEC) -> str:
    """The Markdown table of the per-layer block alone, by offset (docs/microarchitecture.md:
    the layer engine's ``cfg`` bus)."""
    rows = ["| addr | name | access | reset | meaning |", "|---|---|---|---|---|"]
    for r in sorted(spec.layer_registers, key=lambda r: r.offset):
        address, name = _hex(r.offset, 2), r.name
        if r.count > 1:
            address += f"+{r.index}"
            name += f"[{r.index}]"
        rows.append(_register_row(address, name, r))
    return "\n".join(rows)


def field_table(spec: RegisterMap = SPEC) -> str:
    """The Markdown table of every register's bit fields."""
    rows = ["| register | bits | field | meaning |", "|---|---|---|---|"]
    for registers, suffix in ((spec.global_registers, ""), (spec.layer_registers, "[k]")):
        for r in sorted(registers, key=lambda r: r.offset):
            for f in r.fields:
                rows.append(f"| `{r.name}{suffix}` | {f.span_text.split(' ', 1)[1]} | "
                            f"`{f.name}` | {f.meaning} |")
    return "\n".join(rows)


def command_table() -> str:
    """The Markdown command table of docs/link-protocol.md."""
    rows = ["| cmd | name | request payload | reply payload |", "|---|---|---|---|"]
    for command, spec in COMMANDS.items():
        rows.append(f"| {_hex(command, 2)} | `{command.name}` | {spec.request} | "
                    f"{spec.reply} |")
    return "\n".join(rows)


def error_table() -> str:
    """The Markdown error-code table of docs/link-protocol.md."""
    rows = ["| code | name | when | resent by `LinkClient` |", "|---|---|---|---|"]
    for code, when in ERRORS.items():
        resent = "" if code is ErrorCode.OK else ("yes" if code in RETRYABLE else "no")
        rows.append(f"| {_hex(code, 2)} | `{code.name}` | {when} | {resent} |")
    return "\n".join(rows)


def frame_text() -> str:
    """The frame layouts and the CRC rule of docs/link-protocol.md."""
    return "\n".join([
        "```",
        f"request:  {SYNC_REQUEST:02X}  cmd  len_hi len_lo  payload[len]  crc_hi crc_lo",
        f"reply:    {SYNC_REPLY:02X}  cmd  code  len_hi len_lo  payload[len]  crc_hi crc_lo",
        "```",
        "",
        f"- `crc` is CRC-16/CCITT-FALSE (polynomial {_hex(CRC_POLY)}, initial value "
        f"{_hex(CRC_INIT)}, no reflection, no",
        f"  final xor; check value `crc(\"123456789\") = {_hex(crc16(b'123456789'))}`) over "
        f"every byte from `cmd` to the",
        "  end of the payload (SYNC and CRC excluded). Appending the CRC big-endian makes the "
        "CRC of the",
        "  whole frame body zero, which is what the gateware checks.",
    ])


#: Generated sections of the docs: file name -> section names, each between
#: ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.
DOC_SECTIONS = {
    "host-interface.md": ("registers", "fields"),
    "microarchitecture.md": ("layer-registers",),
    "link-protocol.md": ("frames", "commands", "errors"),
}

_RENDERERS = {
    "registers": register_table,
    "fields": field_table,
    "layer-registers": layer_table,
    "frames": lambda spec: frame_text(),
    "commands": lambda spec: command_table(),
    "errors": lambda spec: error_table(),
}


def render_section(name: str, spec: RegisterMap = SPEC) -> str:
    """The generated Markdown of section ``name`` (a key of :data:`DOC_SECTIONS`' values)."""
    return _RENDERERS[name](spec)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def doc_section(text: str, name: str) -> str:
    """What a document holds between section ``name``'s markers."""
    begin, end = _markers(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"No {begin} ... {end} section in the document")
    return text[start + len(begin):stop].strip("\n")


def splice(text: str, name: str, body: str) -> str:
    """``text`` with section ``name`` replaced by ``body``."""
    begin, end = _markers(name)
    doc_section(text, name)
    start, stop = text.find(begin), text.find(end)
    return text[:start + len(begin)] + "\n" + body + "\n" + text[stop:]


def stale_sections(docs: Path, spec: RegisterMap = SPEC) -> list[str]:
    """``file: section`` of every generated section of ``docs`` that differs from the spec."""
    out = []
    for file, sections in DOC_SECTIONS.items():
        text = (Path(docs) / file).read_text()
        out += [f"{file}: {name}" for name in sections
                if doc_section(text, name) != render_section(name, spec)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spikeforge.sw.interface",
        description="Render the register map and the link protocol tables from the spec.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", choices=sorted(_RENDERERS), help="print one table")
    group.add_argument("--update", metavar="DOCS", help="rewrite the tables in DOCS/*.md")
    group.add_argument("--check", metavar="DOCS",
                       help="exit 1 if a table in DOCS/*.md differs from the spec")
    args = parser.parse_args(argv)
    if args.markdown:
        print(render_section(args.markdown))
        return 0
    if args.check:
        stale = stale_sections(Path(args.check))
        for entry in stale:
            print(f"{entry} differs from spikeforge.sw.interface; run "
                  f"`python -m spikeforge.sw.interface --update {args.check}`", file=sys.stderr)
        return 1 if stale else 0
    updated = {}
    for file, sections in DOC_SECTIONS.items():  # every file checked before any is written
        path = Path(args.update) / file
        text = path.read_text()
        for name in sections:
            text = splice(text, name, render_section(name))
        updated[path] = text
    for path, text in updated.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Weight ROM packing: the one implementation of ``docs/rom-layout.md``.

A dense layer with ``fan_out = N``, ``fan_in = M`` and ``w_bits = W`` on an array of ``P`` lanes
is one ROM of ``M * G`` words (``G = ceil(N / P)``), each ``P * W`` bits wide. Word ``j * G + g``
holds the weights from input ``j`` to neurons ``g * P + lane``, lane 0 in the least significant
``W`` bits, each a ``W``-bit two's complement field; lanes with no neuron hold 0.

A convolution's kernel ``int[C_out, C_in, kh, kw]`` is stored the same way, as the matrix
``[C_out, C_in * kh * kw]``: one word per kernel tap ``(c, ky, kx)`` and group of ``P`` output
channels (:func:`pack_conv_weights`).

The exporter (:mod:`spikeforge.sw.export`) writes these words and the gateware takes them as the
``init`` of its weight memories, so both sides share this module and cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = [
    "RomLayoutError",
    "rom_groups",
    "rom_shape",
    "pack_weights",
    "unpack_weights",
    "hex_digits",
    "format_hex",
    "parse_hex",
    "conv_rom_shape",
    "pack_conv_weights",
    "unpack_conv_weights",
]


class RomLayoutError(ValueError):
    """Weights or ROM words that do not follow the layout. The message names the word or field."""


def _check_positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RomLayoutError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise RomLayoutError(f"{name} must be >= {minimum}, got {value}")
    return value


def rom_groups(fan_out: int, lanes: int) -> int:
    """``G = ceil(fan_out / lanes)``: ROM words per input, membrane words per lane."""
    _check_positive("fan_out", fan_out)
    _check_positive("lanes", lanes)
    return -(-fan_out // lanes)


def rom_shape(fan_in: int, fan_out: int, lanes: int, w_bits: int) -> tuple[int, int]:
    """``(width, depth)`` of the weight ROM: ``(lanes * w_bits, fan_in * ceil(fan_out/lanes))``."""
    _check_positive("fan_in", fan_in)
    _check_positive("w_bits", w_bits)
    return lanes * w_bits, fan_in * rom_groups(fan_out, lanes)


def pack_weights(weight: torch.Tensor, lanes: int, w_bits: int) -> list[int]:
    """Pack ``int[fan_out, fan_in]`` weights into ROM words (non-negative Python ints)."""
    weight = torch.as_tensor(weight)
    if weight.is_floating_point() or weight.is_complex() or weight.dtype == torch.bool:
        raise RomLayoutError(f"weight must hold integers, not {weight.dtype}")
    if weight.dim() != 2 or weight.shape[0] == 0 or weight.shape[1] == 0:
        raise RomLayoutError(f"weight must be a non-empty [fan_out, fan_in] matrix, "
                             f"got shape {tuple(weight.shape)}")
    fan_out = weight.shape[0]
    groups = rom_groups(fan_out, lanes)
    _check_positive("w_bits", w_bits)
    low, high = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    bad = ((weight < low) | (weight > high)).nonzero()
    if len(bad):
        i, j = (int(x) for x in bad[0])
        raise RomLayoutError(f"weight[{i}, {j}] = {int(weight[i, j])} does not fit "
                             f"w_bits = {w_bits} (signed range {low}..{high})")
    mask = (1 << w_bits) - 1
    columns = weight.to(torch.int64).T.tolist()  # columns[j][i] = weight[i, j]
    words = []
    for column in columns:
        for g in range(groups):
            word = 0
            for lane, value in enumerate(column[g * lanes:(g + 1) * lanes]):
                word |= (value & mask) << (lane * w_bits)
            words.append(word)
    return words


def unpack_weights(words: Iterable[int], fan_in: int, fan_out: int, lanes: int,
                   w_bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_weights`: ``int64[fan_out, fan_in]``.

    Refuses (``RomLayoutError`` naming the word) a word count other than the ROM depth, a word
    wider than ``lanes * w_bits`` bits, and a non-zero field in a lane that holds no neuron.
    """
    words = list(words)
    width, depth = rom_shape(fan_in, fan_out, lanes, w_bits)
    groups = depth // fan_in
    if len(words) != depth:
        raise RomLayoutError(f"ROM holds {len(words)} words, the layout needs "
                             f"fan_in * ceil(fan_out / lanes) = {depth}")
    mask = (1 << w_bits) - 1
    sign = 1 << (w_bits - 1)
    rows = [[0] * fan_in for _ in range(fan_out)]
    for address, word in enumerate(words):
        if isinstance(word, bool) or not isinstance(word, int) or word < 0:
            raise RomLayoutError(f"word {address} must be a non-negative integer, not {word!r}")
        if word >> width:
            raise RomLayoutError(f"word {address} = {word:#x} does not fit the {width}-bit "
                                 f"word (lanes * w_bits = {lanes} * {w_bits})")
        j, g = divmod(address, groups)
        for lane in range(lanes):
            field = (word >> (lane * w_bits)) & mask
            i = g * lanes + lane
            if i >= fan_out:
                if field:
                    raise RomLayoutError(
                        f"word {address} lane {lane} holds {field:#x} but that lane has no "
                        f"neuron (neuron {i} >= fan_out {fan_out}); padding lanes must be 0")
                continue
            rows[i][j] = field - (field & sign) * 2
    return torch.tensor(rows, dtype=torch.int64)


def hex_digits(width: int) -> int:
    """Hex digits per ``$readmemh`` line for a ``width``-bit word."""
    _check_positive("width", width)
    return -(-width // 4)


def format_hex(words: Iterable[int], width: int) -> str:
    """``$readmemh`` text: one word a line, ``ceil(width/4)`` lower-case digits, word 0 first."""
    digits = hex_digits(width)
    lines = []
    for address, word in enumerate(words):
        if word < 0 or word >> width:
            raise RomLayoutError(f"word {address} = {word!r} does not fit {width} bits")
        lines.append(f"{word:0{digits}x}\n")
    return "".join(lines)


_HEX = frozenset("0123456789abcdefABCDEF")


def parse_hex(text: str, width: int, depth: int) -> list[int]:
    """Read the text :func:`format_hex` writes, strictly.

    Every line must hold exactly ``ceil(width/4)`` hex digits (no comments, no ``@`` address
    markers, no blank lines), the value must fit ``width`` bits (padding bits of the top digit are
    0) and there must be exactly ``depth`` lines. ``\\r\\n`` line ends are accepted. Errors name
    the 1-based line.
    """
    digits = hex_digits(width)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    words = []
    for number, line in enumerate(lines, start=1):
        line = line[:-1] if line.endswith("\r") else line
        if not line:
            raise RomLayoutError(f"line {number} is empty")
        if not _HEX.issuperset(line):
            raise RomLayoutError(f"line {number}: {line[:40]!r} is not a hexadecimal word")
        if len(line) != digits:
            raise RomLayoutError(f"line {number} has {len(line)} hex digits; a {width}-bit word "
                                 f"takes {digits}")
        word = int(line, 16)
        if word >> width:
            raise RomLayoutError(f"line {number}: {line} has bits set above the {width}-bit "
                                 f"word width")
        words.append(word)
    if len(words) != depth:
        raise RomLayoutError(f"holds {len(words)} words (lines) but the ROM depth is {depth}"
                             + (" (truncated)" if len(words) < depth else ""))
    return words


# -- convolution kernels (docs/rom-layout.md, "Convolution layers") ---------------------------
#
# A convolution engine is event driven with its lanes across OUTPUT channels: an input spike at
# (c, y, x) visits every kernel tap (ky, kx) whose window holds it and, per tap, adds the weights
# weight[o, c, ky, kx] of all output channels o at one output position. So the ROM is the dense
# layout of the matrix ``weight.reshape(C_out, C_in * kh * kw)``: "inputs" are the taps
# t = (c * kh + ky) * kw + kx, "neurons" are the output channels. Word ``t * G + g``,
# ``G = ceil(C_out / P)``, holds output channels ``g * P + lane``, lane 0 least significant.


def _check_kernel(kernel) -> tuple[int, int]:
    if not isinstance(kernel, (tuple, list)) or len(kernel) != 2:
        raise RomLayoutError(f"kernel must be a pair (kh, kw), not {kernel!r}")
    return (_check_positive("kernel[0]", kernel[0]), _check_positive("kernel[1]", kernel[1]))


def conv_rom_shape(in_channels: int, out_channels: int, kernel, lanes: int,
                   w_bits: int) -> tuple[int, int]:
    """``(width, depth)`` of a convolution's kernel ROM:
    ``(lanes * w_bits, in_channels * kh * kw * ceil(out_channels / lanes))``."""
    kh, kw = _check_kernel(kernel)
    _check_positive("in_channels", in_channels)
    _check_positive("out_channels", out_channels)
    return rom_shape(in_channels * kh * kw, out_channels, lanes, w_bits)


def pack_conv_weights(weight: torch.Tensor, lanes: int, w_bits: int) -> list[int]:
    """Pack an ``int[C_out, C_in, kh, kw]`` kernel into ROM words (non-negative Python ints).

    Word ``((c * kh + ky) * kw + kx) * G + g`` holds ``weight[g * P + lane, c, ky, kx]`` in lane
    ``lane``; padding lanes (``g * P + lane >= C_out``) are 0.
    """
    weight = torch.as_tensor(weight)
    if weight.is_floating_point() or weight.is_complex() or weight.dtype == torch.bool:
        raise RomLayoutError(f"weight must hold integers, not {weight.dtype}")
    if weight.dim() != 4 or 0 in weight.shape:
        raise RomLayoutError(f"weight must be a non-empty [out_channels, in_channels, kh, kw] "
                             f"kernel, got shape {tuple(weight.shape)}")
    _check_positive("w_bits", w_bits)
    low, high = -(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1
    bad = ((weight < low) | (weight > high)).nonzero()
    if len(bad):
        index = tuple(int(x) for x in bad[0])
        raise RomLayoutError(f"weight[{', '.join(map(str, index))}] = {int(weight[index])} does "
                             f"not fit w_bits = {w_bits} (signed range {low}..{high})")
    return pack_weights(weight.reshape(weight.shape[0], -1), lanes, w_bits)


def unpack_conv_weights(words: Iterable[int], in_channels: int, out_channels: int, kernel,
                        lanes: int, w_bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_conv_weights`: ``int64[C_out, C_in, kh, kw]``.

    Refuses (``RomLayoutError`` naming the word) a word count other than the ROM depth, a word
    wider than ``lanes * w_bits`` bits, and a non-zero field in a lane that holds no output
    channel.
    """
    kh, kw = _check_kernel(kernel)
    words = list(words)
    width, depth = conv_rom_shape(in_channels, out_channels, (kh, kw), lanes, w_bits)
    if len(words) != depth:
        raise RomLayoutError(f"ROM holds {len(words)} words, the layout needs in_channels * kh "
                             f"* kw * ceil(out_channels / lanes) = {depth}")
    groups, mask = depth // (in_channels * kh * kw), (1 << w_bits) - 1
    for address, word in enumerate(words):  # name a padding lane as a channel, not a neuron
        if isinstance(word, bool) or not isinstance(word, int) or word < 0 or word >> width:
            continue  # unpack_weights names these
        for lane in range(lanes):
            channel = address % groups * lanes + lane
            if channel >= out_channels and (word >> (lane * w_bits)) & mask:
                raise RomLayoutError(
                    f"word {address} lane {lane} holds {(word >> (lane * w_bits)) & mask:#x} but "
                    f"that lane has no output channel (channel {channel} >= out_channels "
                    f"{out_channels}); padding lanes must be 0")
    matrix = unpack_weights(words, in_channels * kh * kw, out_channels, lanes, w_bits)
    return matrix.reshape(out_channels, in_channels, kh, kw)

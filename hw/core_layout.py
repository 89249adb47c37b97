"""Where every layer of a network lives in the core array's memories, and how its events expand.

The core (``hw/core.py``) runs **neuron layers** (dense and convolution); a sum-pooling layer
is not run but folded into the next neuron layer as an address transform
(``docs/contract.md``): a spike at ``(c, y, x)`` reaches that layer at ``(c, y // k, x // k)``.

Spikes travel between layers as **events** ``(c, y, x)``: channel and position (a dense layer's
neuron ``i`` is ``(i, 0, 0)``). Neuron ``(o, oy, ox)`` of a layer with ``Gc = ceil(C_out / P)``
channel groups lives in lane ``o % P`` of group ``g = (oy * OW + ox) * Gc + o // P``; a dense
layer is the case ``OH = OW = 1``, ``Gc = ceil(N / P)``, the layout of ``docs/rom-layout.md``.

An input event of a layer expands into ``slots = KH * KW * Gc`` issue slots ``(ky, kx, gc)``,
one weight word each (word ``weight_base + c * slots + slot``, contiguous), and adds it to
accumulator word ``(oy * OW + ox) * Gc + gc`` with ``oy = (y + ph - ky) / s`` and
``ox = (x + pw - kx) / s`` when that neuron exists: both divide by the stride ``s`` (a power of
two) and lie inside the output; any other slot writes nothing, so padding and stride are
exact. A dense layer's input event is its flat input index ``j = (c * H + y) * W + x`` as a
``1 x 1`` kernel. Direct-coded pixels (``value_bits``) repeat their slots once per set bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from amaranth.utils import ceil_log2

from spikeforge.hw.layer import check_lanes, current_bits, pack_bias
from spikeforge.hw.rom import pack_weights
from spikeforge.sw.golden import ConvLayer, DenseLayer, EncoderKind, Network, SumPoolLayer
from spikeforge.sw.interface import SPEC, RegisterMap

__all__ = ["LayerMap", "CoreLayout", "core_layout", "CoreLayoutError"]


class CoreLayoutError(ValueError):
    """A network the core array cannot run, with the layer and the reason."""


@dataclass(frozen=True)
class LayerMap:
    """One neuron layer on ``P`` lanes (the module docstring gives the formulas)."""

    index: int                      # position in network.layers
    layer: DenseLayer | ConvLayer
    source_shape: tuple[int, int, int]   # (C, H, W) of the events it receives, before pooling
    pool_shift: int                 # log2 of the pooling kernel folded in (0: none)
    in_shape: tuple[int, int, int]  # (C, H, W) after pooling
    kernel: tuple[int, int]
    padding: tuple[int, int]
    out_shape: tuple[int, int, int]
    channel_groups: int             # Gc
    lanes: int
    stride_shift: int = 0           # log2 of the convolution's stride (0: stride 1)
    input_max: int = 1              # the largest input value: 1 for spikes, the pixel maximum
                                    # for a first layer fed direct-coded pixels

    @property
    def dense(self) -> bool:
        return isinstance(self.layer, DenseLayer)

    @property
    def groups(self) -> int:
        """Groups (memory words) of the layer's neurons: ``OH * OW * Gc``."""
        return self.out_shape[1] * self.out_shape[2] * self.channel_groups

    @property
    def slots(self) -> int:
        """Issue slots per input event: ``KH * KW * Gc``."""
        return self.kernel[0] * self.kernel[1] * self.channel_groups

    @property
    def rows(self) -> int:
        """Weight rows (one per input channel and kernel tap, or per dense input)."""
        c = self.layer.fan_in if self.dense else self.in_shape[0]
        return c * self.kernel[0] * self.kernel[1]

    @property
    def weight_words(self) -> int:
        return self.rows * self.channel_groups

    @property
    def last_lanes(self) -> int:
        """Lanes holding a neuron in a position's last channel group."""
        return self.out_shape[0] - (self.channel_groups - 1) * self.lanes

    @property
    def pool_area(self) -> int:
        return 1 << (2 * self.pool_shift)

    @property
    def current_bits(self) -> int:
        """Exact width of one step's current: every synapse at its extreme weight, an input
        count up to the pooling area (a direct-coded pixel: up to its maximum)."""
        return current_bits(self.rows * self.pool_area * self.input_max, self.layer.w_bits)

    def weight_matrix(self) -> torch.Tensor:
        """``int[C_out, rows]``: the weights in the row order of the weight store."""
        return self.layer.weight.reshape(self.out_shape[0], -1)

    def native(self, flat: torch.Tensor) -> torch.Tensor:
        """``values[..., fan_out]`` in golden (C-major) order -> ``[..., groups * P]`` in the
        core's order (group, lane), padded with zeros."""
        co, oh, ow = self.out_shape
        gc, P = self.channel_groups, self.lanes
        x = flat.reshape(*flat.shape[:-1], co, oh * ow)
        pad = torch.zeros(*flat.shape[:-1], gc * P, oh * ow, dtype=flat.dtype)
        pad[..., :co, :] = x
        # [.., gc, P, pos] -> [.., pos, gc, P]
        return pad.reshape(*flat.shape[:-1], gc, P, oh * ow).permute(
            *range(flat.dim() - 1), -1, -3, -2).reshape(*flat.shape[:-1], -1)


class CoreLayout:
    """Every neuron layer of ``network`` on ``lanes`` lanes, and where its words are.

    ``maps[i]`` is the ``i``-th neuron layer; ``weight_base``, ``neuron_base`` (membranes) and
    ``bias_base`` are its first words in the weight store, the membrane memory and the bias
    memory (a convolution keeps one bias word per channel group, a dense layer one per group).
    """

    def __init__(self, network: Network, lanes: int):
        self.lanes = P = check_lanes(lanes)
        self.network = network
        direct = network.encoder.kind is EncoderKind.DIRECT
        #: Bits of a layer-0 event's value: the pixel for direct input (the integration unit
        #: adds its weight once per set bit, shifted), none for spikes.
        self.value_bits = network.encoder.pixel_bits if direct else 0
        maps, pool = [], None
        shape = None            # (C, H, W) of the events so far; None: the network's input
        for k, layer in enumerate(network.layers):
            flat_source = (shape is None and isinstance(layer, DenseLayer)) or \
                (bool(maps) and maps[-1].dense)
            if isinstance(layer, SumPoolLayer):
                kh, kw = layer.kernel
                if pool is not None:
                    raise CoreLayoutError(f"layers[{k}] ({layer.name}): two pooling layers in "
                                          "a row are not implemented in the core array")
                if (kh, kw) != tuple(layer.stride) or kh != kw or kh & (kh - 1) \
                        or tuple(layer.padding) != (0, 0):
                    raise CoreLayoutError(
                        f"layers[{k}] ({layer.name}): the core array pools with square, "
                        f"non-overlapping, unpadded power-of-two windows, not kernel "
                        f"{layer.kernel} stride {layer.stride} padding {layer.padding}")
                if maps and maps[-1].dense:
                    raise CoreLayoutError(f"layers[{k}] ({layer.name}): pooling after a dense "
                                          "layer is not implemented in the core array")
                if direct and not maps:
                    raise CoreLayoutError(f"layers[{k}] ({layer.name}): pooling of direct-coded "
                                          "pixels is not implemented in the core array (it "
                                          "sends each pixel, the contract counts a pooled "
                                          "value as one event)")
                pool = (layer, kh.bit_length() - 1)
                continue
            if pool is not None:
                source, in_shape = tuple(pool[0].input_shape), tuple(pool[0].output_shape)
                shift, pool = pool[1], None
            else:
                if isinstance(layer, ConvLayer):
                    in_shape = tuple(layer.input_shape)
                else:
                    in_shape = shape if shape is not None else (layer.fan_in, 1, 1)
                source, shift = in_shape, 0
            input_max = network.encoder.pixel_max if direct and not maps else 1
            if isinstance(layer, ConvLayer):
                sy, sx = layer.stride
                if sy != sx or sy & (sy - 1):
                    raise CoreLayoutError(f"layers[{k}] ({layer.name}): the core array runs "
                                          "convolutions of one power-of-two stride (1, 2, "
                                          f"4, ...), not {layer.stride}")
                if flat_source and maps:
                    raise CoreLayoutError(f"layers[{k}] ({layer.name}): a convolution after "
                                          "a dense layer is not implemented in the core array")
                maps.append(LayerMap(k, layer, source, shift, in_shape, tuple(layer.kernel),
                                     tuple(layer.padding), tuple(layer.output_shape),
                                     -(-layer.out_channels // P), P, sy.bit_length() - 1,
                                     input_max))
            else:
                maps.append(LayerMap(k, layer, source, shift, in_shape, (1, 1), (0, 0),
                                     (layer.fan_out, 1, 1), -(-layer.fan_out // P), P,
                                     input_max=input_max))
            shape = maps[-1].out_shape
        if not maps[-1].dense:
            raise CoreLayoutError(f"layers[{maps[-1].index}] ({maps[-1].layer.name}): the "
                                  "core array reads out a dense last layer")
        self.maps = maps
        self.layers = [x.layer for x in maps]
        self.groups = [x.groups for x in maps]
        self.weight_words = [x.weight_words for x in maps]
        self.bias_words = [x.channel_groups for x in maps]
        self.weight_base = [sum(self.weight_words[:i]) for i in range(len(maps))]
        self.neuron_base = [sum(self.groups[:i]) for i in range(len(maps))]
        self.bias_base = [sum(self.bias_words[:i]) for i in range(len(maps))]
        self.w_bits = max(x.w_bits for x in self.layers)
        #: Membranes are stored at the widest layer's width; with layers of several widths,
        #: stage C saturates each layer's to its own range (NeuronIntegrate's run-time range).
        self.v_bits = max(x.v_bits for x in self.layers)
        self.mixed_v_bits = len({x.v_bits for x in self.layers}) > 1
        self.current_bits = max(x.current_bits for x in maps)
        #: Entries of the spike queue: the most spikes of a hidden layer in one step, a marker.
        self.queue_depth = max([x.layer.fan_out for x in maps[:-1]], default=0) + 1
        shapes = [x.source_shape for x in maps] + [x.out_shape for x in maps]
        #: Widths of an event's fields (channel, row, column) on the spike queue.
        self.c_bits = max(1, ceil_log2(max(s[0] for s in shapes)))
        self.y_bits = max(1, ceil_log2(max(s[1] for s in shapes)))
        self.x_bits = max(1, ceil_log2(max(s[2] for s in shapes)))
        self.conv = any(not x.dense for x in maps)

    @property
    def total_groups(self) -> int:
        return sum(self.groups)

    @property
    def total_bias_words(self) -> int:
        return sum(self.bias_words)

    def descriptors(self, spec: RegisterMap = SPEC) -> list[dict[str, int]]:
        """Per neuron layer, the words of its read-only descriptor registers (``SHAPE_IN``,
        ``SHAPE_OUT``, ``KERNEL``, ``WEIGHT_BASE``, ``NEURON_BASE``): the gateware's
        read-only values and what a host expects of the bitstream of an export."""
        out = []
        for x, weight_base, neuron_base in zip(self.maps, self.weight_base, self.neuron_base,
                                               strict=True):
            def shape(name, c, h, w):
                return spec.layer_reg(name).pack(channels=c, height=h, width=w)
            # the keys in the order of interface.DESCRIPTOR_REGISTERS
            out.append({
                "SHAPE_IN": shape("SHAPE_IN", *x.source_shape),
                "SHAPE_OUT": shape("SHAPE_OUT", *x.out_shape),
                "KERNEL": spec.layer_reg("KERNEL").pack(
                    conv=int(not x.dense), pool_shift=x.pool_shift,
                    stride_shift=x.stride_shift, height=x.kernel[0], width=x.kernel[1],
                    pad_h=x.padding[0], pad_w=x.padding[1]),
                "WEIGHT_BASE": weight_base,
                "NEURON_BASE": neuron_base,
            })
        return out

    def weight_words_init(self) -> list[int]:
        """The weight store's contents: every layer's words, at ``w_bits`` (the widest)."""
        words = []
        for x in self.maps:
            words += pack_weights(x.weight_matrix(), self.lanes, self.w_bits)
        return words

    def weight_chunks(self) -> dict[int, list[int]]:
        """``{network layer index: the 32-bit W_DATA chunks of its part of the weight store}``
        for every neuron layer: what a host writes to load an SPRAM store
        (``docs/microarchitecture.md``, "Weights in SPRAM")."""
        per_word = -(-self.lanes * self.w_bits // 32)
        chunks = {}
        for x in self.maps:
            words = pack_weights(x.weight_matrix(), self.lanes, self.w_bits)
            chunks[x.index] = [(word >> (32 * i)) & 0xFFFF_FFFF
                               for word in words for i in range(per_word)]
        return chunks

    def bias_words_init(self) -> list[int]:
        words = []
        for x in self.maps:
            words += pack_bias(x.layer.bias, self.lanes, self.v_bits)
        return words


def core_layout(network: Network, lanes: int) -> CoreLayout:
    """The :class:`CoreLayout` of ``network``, or a :class:`CoreLayoutError` naming the first
    layer the core cannot run and why."""
    return CoreLayout(network, lanes)

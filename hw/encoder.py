"""The input encoder: pixels in, layer 0's spikes out as it makes them, while the core runs.

:class:`SpikeEncoder` keeps only the non-zero pixels of an image (a zero pixel never spikes in
rate and radix coding, and adds nothing in direct coding), as a list of ``(position, value)``
entries written while the host streams the image in. After ``run`` it encodes step
``s = 0 .. T-1``: one slot per list entry and one marker slot, each slot two pipeline stages
(the list and the rate state are block RAM; their data are registered before the encode
logic), into a FIFO that the core reads as the spikes arrive. The encoder starts step ``s``
only once the core has taken step ``s - 1``'s marker, so the FIFO (one step: ``n_inputs + 1``
entries, three EBR for MNIST on the iCE40) never fills and the encoder never stalls;
:mod:`spikeforge.sim.core_model` gives the exact timing of every spike.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.hw.integration import event_layout
from spikeforge.sw.golden import Encoder, EncoderKind

__all__ = ["SpikeEncoder"]


class SpikeEncoder(wiring.Component):
    """Rate, radix or direct encoding of ``n_inputs`` pixels over ``timesteps`` steps, streamed.

    Direct coding sends every non-zero pixel at every step as one event that carries its
    value (the core adds the value's set bits, :class:`spikeforge.hw.core.CoreArray`).

    Members
    -------
    pixels : In(stream.Signature(unsigned(16)))
        The image, ``n_inputs`` values; ready while ``load`` is high.
    load : In(1)
        Take pixels (the accelerator's LOAD phase).
    loaded : Out(1)
        Strobe: the last pixel of a well-formed image was taken (all values ``<= x_max``).
    bad_pixel : Out(1)
        Strobe: the last pixel of an image with a value above ``x_max`` was taken; the image is
        dropped.
    run : In(1)
        Strobe: encode the loaded image (its steps appear on ``spikes``).
    spikes : Out(stream.Signature(event_layout(addr_bits, y_bits, x_bits)))
        ``T`` steps, each its spikes as events ``(c, y, x)`` of the input ``shape`` in
        ascending (C-major) order, and a marker; direct coding adds each pixel's ``value``.
    """

    def __init__(self, encoder: Encoder, shape: tuple[int, int, int], timesteps: int,
                 addr_bits: int = 16, y_bits: int = 1, x_bits: int = 1):
        self._encoder, self._shape, self._T = encoder, tuple(shape), timesteps
        self._n = shape[0] * shape[1] * shape[2]
        self._direct = encoder.kind is EncoderKind.DIRECT
        self._bits = (addr_bits, y_bits, x_bits, encoder.pixel_bits if self._direct else 0)
        super().__init__({
            "pixels": In(stream.Signature(unsigned(16))),
            "load": In(1),
            "loaded": Out(1),
            "bad_pixel": Out(1),
            "run": In(1),
            "spikes": Out(stream.Signature(event_layout(*self._bits))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n, T = self._n, self._T
        C, H, W = self._shape
        pixel_bits = self._encoder.pixel_bits
        x_max = (1 << pixel_bits) - 1
        # a list entry's position (c, y, x), each field as wide as its range needs (none for
        # a dimension of 1: a flat input is its channel)
        c_bits, y_bits, x_bits = (ceil_log2(v) for v in (C, H, W))
        j_bits = max(1, c_bits + y_bits + x_bits)

        # ---- LOAD: the non-zero pixels into the list ------------------------------------------
        m.submodules.entries = entries = Memory(shape=unsigned(j_bits + pixel_bits), depth=n,
                                                init=[])
        e_wr, e_rd = entries.write_port(), entries.read_port()
        count = Signal(range(n + 1))            # pixels taken of the image being loaded
        at_c, at_y, at_x = Signal(c_bits), Signal(y_bits), Signal(x_bits)   # ... its position
        position = Cat(at_c, at_y, at_x, Const(0, j_bits - (c_bits + y_bits + x_bits)))
        length = Signal(range(n + 1))           # list entries of that image
        listed = Signal(range(n + 1))           # list entries of the image to encode
        bad = Signal()
        take = self.pixels.valid & self.pixels.ready
        value = self.pixels.payload
        m.d.comb += [
            self.pixels.ready.eq(self.load),
            e_wr.addr.eq(length), e_wr.data.eq(Cat(position, value[:pixel_bits])),
            e_wr.en.eq(take & (value != 0)),
        ]
        m.d.sync += [self.loaded.eq(0), self.bad_pixel.eq(0)]
        with m.If(take):
            m.d.sync += [count.eq(count + 1), length.eq(length + (value != 0))]
            with m.If(at_x != W - 1):
                m.d.sync += at_x.eq(at_x + 1)
            with m.Elif(at_y != H - 1):
                m.d.sync += [at_x.eq(0), at_y.eq(at_y + 1)]
            with m.Else():
                m.d.sync += [at_x.eq(0), at_y.eq(0), at_c.eq(at_c + 1)]
            with m.If(value > x_max):
                m.d.sync += bad.eq(1)
            with m.If(count == n - 1):
                m.d.sync += [count.eq(0), length.eq(0), bad.eq(0), at_c.eq(0), at_y.eq(0),
                             at_x.eq(0)]
                with m.If(bad | (value > x_max)):
                    m.d.sync += self.bad_pixel.eq(1)
                with m.Else():
                    m.d.sync += [self.loaded.eq(1), listed.eq(length + (value != 0))]

        # ---- the step FIFO and its release ----------------------------------------------------
        # one entry more than a step: a SyncFIFOBuffered of depth d refuses a write while d entries
        # are on their way to its output register
        value_bits = self._bits[3]
        fifo = SyncFIFOBuffered(width=j_bits + 1 + value_bits, depth=n + 2)
        m.submodules.fifo = ResetInserter(self.run)(fifo)
        taken = Signal(range(T + 1))            # markers the consumer took
        out_take = self.spikes.valid & self.spikes.ready
        m.d.comb += [
            self.spikes.valid.eq(fifo.r_rdy),
            self.spikes.payload.c.eq(fifo.r_data[:c_bits]),
            self.spikes.payload.y.eq(fifo.r_data[c_bits:c_bits + y_bits]),
            self.spikes.payload.x.eq(fifo.r_data[c_bits + y_bits:c_bits + y_bits + x_bits]),
            self.spikes.payload.eot.eq(fifo.r_data[j_bits]),
            *([self.spikes.payload.value.eq(fifo.r_data[j_bits + 1:])] if value_bits else []),
            fifo.r_en.eq(self.spikes.ready),
        ]
        with m.If(out_take & self.spikes.payload.eot):
            m.d.sync += taken.eq(taken + 1)

        # ---- encode: slot (s, i), i == listed is the marker slot ------------------------------
        active = Signal()
        step = Signal(range(T + 1))
        slot = Signal(range(n + 1))
        may_start = step == taken              # the FIFO holds one step at most
        issue = active & ((slot != 0) | may_start)
        s1_valid, s2_valid = Signal(), Signal()
        s1_t, s2_t = Signal(range(max(2, T))), Signal(range(max(2, T)))
        s1_marker, s2_marker = Signal(), Signal()
        s2_entry = Signal(j_bits + pixel_bits)
        s1_slot, s2_slot = Signal(range(n + 1)), Signal(range(n + 1))
        m.d.comb += [e_rd.addr.eq(slot), e_rd.en.eq(issue)]
        m.d.sync += [s1_valid.eq(issue), s1_t.eq(step), s1_marker.eq(slot == listed),
                     s1_slot.eq(slot),
                     s2_valid.eq(s1_valid), s2_t.eq(s1_t), s2_marker.eq(s1_marker),
                     s2_slot.eq(s1_slot), s2_entry.eq(e_rd.data)]
        s2_j, s2_x = s2_entry[:j_bits], s2_entry[j_bits:]
        spike = Signal()
        if self._encoder.kind is EncoderKind.RATE:
            m.submodules.rate_state = state = Memory(shape=unsigned(pixel_bits + 1), depth=n,
                                                     init=[])
            st_wr = state.write_port()
            st_rd = state.read_port(transparent_for=(st_wr,))
            s2_v = Signal(unsigned(pixel_bits + 1))
            m.d.sync += s2_v.eq(st_rd.data)
            v_sum = Signal(unsigned(pixel_bits + 2))
            m.d.comb += [
                st_rd.addr.eq(slot), st_rd.en.eq(issue),
                v_sum.eq(Mux(s2_t == 0, x_max // 2, s2_v) + s2_x),
                spike.eq(v_sum >= x_max),
                st_wr.addr.eq(s2_slot), st_wr.en.eq(s2_valid & ~s2_marker),
                st_wr.data.eq(Mux(spike, v_sum - x_max, v_sum)),
            ]
        elif self._direct:  # every listed (non-zero) pixel, with its value, at every step
            m.d.comb += spike.eq(1)
        else:  # radix: plane t carries bit t + pixel_bits - T (docs/contract.md)
            lead, drop = max(0, T - pixel_bits), max(0, pixel_bits - T)
            planes = Cat(Const(0, lead), s2_x, Const(0, T + 1))
            m.d.comb += spike.eq(planes.bit_select(s2_t + drop, 1))
        m.d.comb += [
            fifo.w_en.eq(s2_valid & (s2_marker | spike)),
            fifo.w_data.eq(Cat(Mux(s2_marker, 0, s2_j), s2_marker,
                               *([s2_x] if value_bits else []))),
        ]
        with m.If(issue):
            with m.If(slot == listed):
                m.d.sync += [slot.eq(0), step.eq(step + 1)]
                with m.If(step == T - 1):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += slot.eq(slot + 1)
        with m.If(self.run):
            m.d.sync += [active.eq(1), step.eq(0), slot.eq(0), taken.eq(0),
                         s1_valid.eq(0), s2_valid.eq(0)]
        return m

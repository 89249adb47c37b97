"""The integration unit (IU) of the core array: input events in, accumulates out.

:class:`IntegrationUnit` takes the events of pass ``(t, k)`` one at a time and expands each into
layer ``k``'s issue slots ``(ky, kx, gc)`` (``hw/core_layout.py``): a slot reads one weight word
(the event's words are consecutive) and, one cycle later (W1), registers it and reads the
accumulator word of its neuron group; one cycle after that (WB) it writes ``acc + weights``,
``P`` exact accumulates per cycle. A slot whose output position does not exist (outside the
output, off the stride's grid) writes nothing. A direct-coded pixel repeats its slots once per
set bit, the weights shifted by the bit. The pass's marker closes the pass: the unit waits,
``integrated``, until the core hands the bank to the fire unit (``handoff``) and then fills the
other bank with the next pass.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.hw.core_layout import CoreLayout
from spikeforge.hw.layer import select
from spikeforge.hw.serializer import lowest_set_bit

__all__ = ["IntegrationUnit", "event_layout", "times"]


def event_layout(c_bits: int, y_bits: int, x_bits: int,
                 value_bits: int = 0) -> data.StructLayout:
    """An event between layers (``hw/core_layout.py``): channel (or dense neuron) ``c`` at
    ``(y, x)``, or, with ``eot = 1``, the end of a timestep. With ``value_bits``, a layer-0
    event also carries its direct-coded pixel ``value`` (non-zero)."""
    value = {"value": unsigned(value_bits)} if value_bits else {}
    return data.StructLayout({"c": unsigned(c_bits), "y": unsigned(y_bits),
                              "x": unsigned(x_bits), "eot": unsigned(1), **value})


def times(value, constant: int):
    """``value * constant`` for a non-negative constant, as shifts and adds: a shift for a
    power of two, no logic for 0 or 1, else one shifted copy per set bit summed as a balanced
    tree (an ECP5 build once put ``c * 9`` in a DSP block, 3.9 ns on the IU's decode path)."""
    if constant == 0:
        return Const(0, 1)
    terms = [value << bit for bit in range(constant.bit_length()) if constant >> bit & 1]
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


class IntegrationUnit(wiring.Component):
    """The IU of a core of ``layout`` (see the module docstring).

    Members
    -------
    events : In(stream.Signature(event_layout(addr_bits, y_bits, x_bits, value_bits)))
        The passes' input events in order, each pass closed by a marker; ``ready`` in the cycle
        an event is decoded (its last slot issued, or at once for a marker or a dropped
        event).
    run : In(1)
        The core is running (no event is taken otherwise).
    clear : In(1)
        Strobe: a new inference (pass (0, 0), bank 0, counters zero).
    integrated : Out(1)
        The current pass's marker is decoded and its last slot issued: the bank may go.
    handoff : In(1)
        Strobe (only while ``integrated``): the fire unit takes ``bank``; fill the other.
    bank : Out(1)
        The accumulator bank being filled.
    weights : Out(addr, en; In data)
        The weight store's read port (data one cycle after the address).
    acc_read : Out(addr, banks)
        Stage W1's read of the slot's accumulator word; ``banks`` is the slot's bank one-hot
        (0 when no slot reads), from a flip-flop (each bank's port decodes no enable).
    acc_write : Out(addr, data, banks; In current)
        Stage WB's write of ``current + weights`` into the bank ``banks`` selects; ``current``
        is the word ``acc_read`` read.
    bad : Out(L)
        Strobe: layer ``k``'s event was outside its input and dropped.
    synops : Out(ArrayLayout(unsigned(32), L))
        Every layer's synaptic operations since ``clear``.
    """

    def __init__(self, layout: CoreLayout, addr_bits: int):
        self._layout, self._addr_bits = layout, addr_bits
        P, L = layout.lanes, len(layout.maps)
        word = max(1, ceil_log2(max(2, sum(layout.weight_words))))
        acc = max(1, ceil_log2(max(2, max(layout.groups))))
        super().__init__({
            "events": In(stream.Signature(event_layout(addr_bits, layout.y_bits, layout.x_bits,
                                                       layout.value_bits))),
            "run": In(1),
            "clear": In(1),
            "integrated": Out(1),
            "handoff": In(1),
            "bank": Out(1),
            "weights": Out(wiring.Signature({"addr": Out(word), "en": Out(1),
                                             "data": In(P * layout.w_bits)})),
            "acc_read": Out(wiring.Signature({"addr": Out(acc), "banks": Out(2)})),
            "acc_write": Out(wiring.Signature({"addr": Out(acc), "banks": Out(2),
                                               "data": Out(P * layout.current_bits),
                                               "current": In(P * layout.current_bits)})),
            "bad": Out(L),
            "synops": Out(data.ArrayLayout(unsigned(32), L)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        lay = self._layout
        maps, L, P = lay.maps, len(lay.maps), lay.lanes
        T = lay.layers[0].timesteps
        WB, VALUE = lay.w_bits, lay.value_bits
        G_max = max(lay.groups)
        n_weights = sum(lay.weight_words)
        beat = self.events.payload

        # ---- the pass being integrated: (iu_t, iu_k) into bank iu_bank -------------------------
        iu_t = Signal(range(T + 1))
        iu_k = Signal(range(max(2, L)))
        iu_done = Signal()                      # iu_t == T: every pass integrated
        eot_pending = Signal()

        layer_values = []                       # (register, layer 0's value)

        def per_layer(values, name):
            """Layer ``iu_k``'s value, registered: ``iu_k`` changes when a marker is decoded,
            and the pass's first event is decoded two cycles later at the earliest (the marker
            waits in ``eot_pending`` for the handoff), so no slot sees a stale value."""
            value = Signal(select(values, iu_k).shape(), init=values[0], name=name)
            m.d.sync += value.eq(select(values, iu_k))
            layer_values.append((value, values[0]))
            return value

        slots = [x.kernel[0] * x.kernel[1] * x.channel_groups for x in maps]
        gc_top, kx_top, ky_top, out_h, out_w, last_lanes = (per_layer(v, name) for v, name in (
            ([x.channel_groups - 1 for x in maps], "gc_top"),
            ([x.kernel[1] - 1 for x in maps], "kx_top"),
            ([x.kernel[0] - 1 for x in maps], "ky_top"),
            ([x.out_shape[1] for x in maps], "out_h"), ([x.out_shape[2] for x in maps], "out_w"),
            ([x.last_lanes for x in maps], "last_lanes")))
        row_step = per_layer([x.out_shape[2] * x.channel_groups for x in maps], "row_step")
        kx_step = per_layer([2 * x.channel_groups - 1 for x in maps], "kx_step")
        slots_top = per_layer([n - 1 for n in slots], "slots_top")
        single_slot = per_layer([int(n == 1) for n in slots], "single_slot")
        # a stride 2**s layer: ev_oy, ev_ox are the numerators y + ph - ky, x + pw - kx of the
        # output position; the slot exists where both divide by the stride
        strided = any(x.stride_shift for x in maps)
        stride_shift = per_layer([x.stride_shift for x in maps], "stride_shift") if strided else 0
        stride_mask = per_layer([(1 << x.stride_shift) - 1 for x in maps], "stride_mask") \
            if strided else 0

        # ---- slot expansion: the event being issued --------------------------------------------
        span = max(max((x.out_shape[1] + x.padding[0] + 1) * (x.out_shape[2] + x.padding[1] + 1),
                       (((x.in_shape[1] + x.padding[0]) >> x.stride_shift) + 1)
                       * (((x.in_shape[2] + x.padding[1]) >> x.stride_shift) + 1))
                   * x.channel_groups for x in maps)
        pos_bits = max(lay.y_bits, lay.x_bits) + 3
        ev_valid = Signal()
        ev_w = Signal(range(max(2, n_weights)))     # weight word of the slot
        ev_acc = Signal(signed(ceil_log2(span + 1) + 2))    # accumulator word of the slot
        ev_row_acc = Signal.like(ev_acc)            # ... of slot (ky, 0, 0)
        ev_gc = Signal(range(max(2, *(x.channel_groups for x in maps))))
        ev_kx = Signal(range(max(2, *(x.kernel[1] for x in maps))))
        ev_ky = Signal(range(max(2, *(x.kernel[0] for x in maps))))
        ev_oy = Signal(signed(pos_bits))            # output row of the slot (times the stride)
        ev_ox = Signal(signed(pos_bits))
        ev_ox0 = Signal(signed(pos_bits))
        # the slot being issued is the last (ky, kx, gc) of its pass over the kernel: a register
        # kept beside a count of the slots left, not a compare of the three counters on the
        # ready path
        ev_left = Signal.like(slots_top)
        ev_last = Signal()
        if strided:
            oy, ox = ev_oy >> stride_shift, ev_ox >> stride_shift    # floor: arithmetic
            on_grid = ((ev_oy & stride_mask) == 0) & ((ev_ox & stride_mask) == 0)
            # the output column (row) moves when the numerator leaves a multiple of the stride
            kx_move = Mux((ev_ox & stride_mask) == 0, kx_step, gc_top)
            ky_move = Mux((ev_oy & stride_mask) == 0, row_step, 0)
        else:
            oy, ox, on_grid, kx_move, ky_move = ev_oy, ev_ox, 1, kx_step, row_step
        slot_exists = on_grid & (oy >= 0) & (oy < out_h) & (ox >= 0) & (ox < out_w)
        # direct input: an event adds its weight words once per set bit of its value, each
        # shifted by the bit's position, and counts SynOps on the first pass over its slots
        if VALUE:
            ev_plane = Signal(range(max(2, VALUE)))  # the bit of the slots being issued
            ev_planes = Signal(VALUE)               # the set bits still to issue after it
            ev_first = Signal()
            ev_w0, ev_oy0, ev_acc0 = Signal.like(ev_w), Signal.like(ev_oy), Signal.like(ev_acc)
        else:
            ev_planes, ev_first = Const(0, 1), Const(1, 1)
        decode = self.events.valid & self.events.ready
        m.d.comb += [
            self.events.ready.eq(self.run & ~iu_done & ~eot_pending
                                 & (~ev_valid | (ev_last & (ev_planes == 0)))),
            self.integrated.eq(eot_pending & ~ev_valid),
            self.weights.addr.eq(ev_w), self.weights.en.eq(ev_valid),
        ]
        with m.If(ev_valid):
            m.d.sync += [ev_w.eq(ev_w + 1), ev_left.eq(ev_left - 1), ev_last.eq(ev_left == 1)]
            with m.If(ev_gc != gc_top):
                m.d.sync += [ev_gc.eq(ev_gc + 1), ev_acc.eq(ev_acc + 1)]
            with m.Elif(ev_kx != kx_top):
                m.d.sync += [ev_gc.eq(0), ev_kx.eq(ev_kx + 1), ev_ox.eq(ev_ox - 1),
                             ev_acc.eq(ev_acc - kx_move)]
            with m.Elif(ev_ky != ky_top):
                m.d.sync += [ev_gc.eq(0), ev_kx.eq(0), ev_ky.eq(ev_ky + 1),
                             ev_oy.eq(ev_oy - 1), ev_ox.eq(ev_ox0),
                             ev_acc.eq(ev_row_acc - ky_move),
                             ev_row_acc.eq(ev_row_acc - ky_move)]
            if VALUE:
                with m.Elif(ev_planes != 0):    # the same slots again, for the next set bit
                    m.d.sync += [ev_w.eq(ev_w0), ev_gc.eq(0), ev_kx.eq(0), ev_ky.eq(0),
                                 ev_oy.eq(ev_oy0), ev_ox.eq(ev_ox0), ev_acc.eq(ev_acc0),
                                 ev_row_acc.eq(ev_acc0), ev_left.eq(slots_top),
                                 ev_last.eq(single_slot),
                                 ev_plane.eq(lowest_set_bit(ev_planes)[0]),
                                 ev_planes.eq(ev_planes & (ev_planes - 1)), ev_first.eq(0)]
            with m.Else():
                m.d.sync += ev_valid.eq(0)

        # SynOps: a slot's count is added one cycle later (W1), so the slot's valid flag does
        # not spread over the 32-bit counters (the counters are read only after the inference)
        syn_count = Signal(range(P + 1))
        syn_layer = Signal.like(iu_k)
        m.d.sync += [syn_count.eq(Mux(ev_valid & slot_exists & ev_first,
                                      Mux(ev_gc == gc_top, last_lanes, P), 0)),
                     syn_layer.eq(iu_k)]
        for k in range(L):
            with m.If(syn_layer == k):
                m.d.sync += self.synops[k].eq(self.synops[k] + syn_count)

        # ---- decode: the event's first slot ----------------------------------------------------
        # Pooling is an address shift (an event in a dropped partial window is dropped); then
        # the first slot's weight word, output position and accumulator word. A dense layer's
        # event is its flat input j as a 1x1 kernel.
        starts = []
        for i, x in enumerate(maps):
            y, xx = beat.y >> x.pool_shift, beat.x >> x.pool_shift
            _, h_in, w_in = x.in_shape
            c_src, h_src, w_src = x.source_shape
            inside = (y < h_in) & (xx < w_in)
            legal = (beat.c < c_src) & (beat.y < h_src) & (beat.x < w_src)
            if x.dense:
                row = beat.c if (h_in, w_in) == (1, 1) else \
                    times(beat.c, h_in * w_in) + times(y, w_in) + xx
                oy0 = ox0 = Const(0, pos_bits)
                if x.source_shape[1:] == (1, 1):
                    legal = beat.c < x.layer.fan_in
                acc0 = Const(0, 1)
            else:
                row = times(beat.c, x.kernel[0] * x.kernel[1])
                oy0, ox0 = y + x.padding[0], xx + x.padding[1]
                acc0 = times(times(oy0 >> x.stride_shift, x.out_shape[2])
                             + (ox0 >> x.stride_shift), x.channel_groups)
            starts.append((lay.weight_base[i] + times(row, x.channel_groups),
                           oy0, ox0, acc0, inside, legal))
        start_w, start_oy, start_ox, start_acc, start_inside, start_legal = (
            select([s[i] for s in starts], iu_k) for i in range(6))
        with m.If(decode):
            with m.If(beat.eot):
                m.d.sync += eot_pending.eq(1)
                with m.If(iu_k == L - 1):
                    m.d.sync += [iu_k.eq(0), iu_t.eq(iu_t + 1), iu_done.eq(iu_t == T - 1)]
                with m.Else():
                    m.d.sync += iu_k.eq(iu_k + 1)
            with m.Elif(~start_legal):
                m.d.comb += self.bad.eq((Const(1, L) << iu_k)[:L])
            with m.Elif(start_inside):
                m.d.sync += [ev_valid.eq(1), ev_w.eq(start_w), ev_gc.eq(0), ev_kx.eq(0),
                             ev_ky.eq(0), ev_oy.eq(start_oy), ev_ox.eq(start_ox),
                             ev_ox0.eq(start_ox), ev_acc.eq(start_acc),
                             ev_row_acc.eq(start_acc), ev_left.eq(slots_top),
                             ev_last.eq(single_slot)]
                if VALUE:
                    value = beat.value
                    m.d.sync += [ev_w0.eq(start_w), ev_oy0.eq(start_oy), ev_acc0.eq(start_acc),
                                 ev_plane.eq(lowest_set_bit(value)[0]),
                                 ev_planes.eq(value & (value - 1)), ev_first.eq(1)]
        with m.If(self.handoff):
            m.d.sync += [eot_pending.eq(0), self.bank.eq(~self.bank)]

        # ---- W1 and WB: register the weights, read the word, write the sum ---------------------
        w_lanes = data.ArrayLayout(signed(WB), P)
        c_lanes = data.ArrayLayout(signed(lay.current_bits), P)
        w1_valid = Signal()
        w1_banks = Signal(2)                    # w1_valid, one-hot by bank
        w1_acc = Signal(range(max(2, G_max)))
        weight_reg = Signal(data.ArrayLayout(signed(WB + max(0, VALUE - 1)), P))
        issued = ev_valid & slot_exists
        m.d.sync += [w1_valid.eq(issued),
                     w1_banks.eq(Mux(issued, Mux(self.bank, 0b10, 0b01), 0)),
                     w1_acc.eq(ev_acc),
                     self.acc_write.banks.eq(w1_banks), self.acc_write.addr.eq(w1_acc)]
        raw_weights = data.View(w_lanes, self.weights.data)
        if VALUE:
            w1_plane = Signal.like(ev_plane)
            m.d.sync += w1_plane.eq(ev_plane)
        with m.If(w1_valid):
            for lane in range(P):
                m.d.sync += weight_reg[lane].eq(
                    raw_weights[lane] << w1_plane if VALUE else raw_weights[lane])
        current = data.View(c_lanes, self.acc_write.current)
        total = Signal(c_lanes)
        for lane in range(P):
            m.d.comb += total[lane].eq(current[lane] + weight_reg[lane])
        m.d.comb += [self.acc_read.addr.eq(w1_acc), self.acc_read.banks.eq(w1_banks),
                     self.acc_write.data.eq(total.as_value())]

        with m.If(self.clear):
            m.d.sync += [iu_t.eq(0), iu_k.eq(0), iu_done.eq(0), self.bank.eq(0), syn_count.eq(0),
                         eot_pending.eq(0), *[value.eq(v0) for value, v0 in layer_values],
                         ev_valid.eq(0), w1_valid.eq(0), w1_banks.eq(0),
                         self.acc_write.banks.eq(0),
                         *[s.eq(0) for s in self.synops]]
        return m

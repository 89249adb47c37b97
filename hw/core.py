"""The shared neuron core: one array of ``P`` lanes that runs every layer of a network.

:class:`CoreArray` runs an inference as a sequence of **passes**, timestep-major: pass
``(t, k)`` integrates layer ``k``'s input spikes of timestep ``t`` and then fires layer ``k`` at
``t``. Layer 0's spikes come from ``inputs``; layer ``k + 1``'s are layer ``k``'s output spikes
of the same timestep, which the fire unit writes into the core's spike queue; the last layer's
leave on ``outputs``. The two units of the layer engine (``docs/microarchitecture.md``) are
shared by all layers:

- the **integration unit** (IU) turns one input spike of layer ``k`` into ``G_k`` reads of the
  weight store (layer ``k``'s rows start at word ``weight_base[k]``), ``P`` exact accumulates
  per cycle into one of two accumulator banks;
- the **fire unit** (FU) walks layer ``k``'s ``G_k`` groups in the membrane and bias memories
  (from word ``neuron_base[k]``), leaks, integrates, saturates, fires and resets with layer
  ``k``'s run-time registers (:class:`spikeforge.hw.program.LayerProgram`), and serializes the
  spikes.

While the FU closes pass ``(t, k)`` from one bank, the IU integrates the next pass into the
other: layer 0 of step ``t + 1`` overlaps the last layer of step ``t``, and pass ``(t, k + 1)``
integrates layer ``k``'s spikes from the spike queue while the FU is still making them. The
cycle count is the exact recurrence of :mod:`spikeforge.sim.core_model`, which follows every
beat.

Memories, all ``P`` lanes wide: the weight store (every layer's rows, ROM or iCE40 SPRAM loaded
over ``W_DATA``), biases and membranes (every layer's groups), two accumulator banks of the
largest layer's groups, and the spike queue (the widest hidden layer's spikes and a marker).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect
from amaranth.utils import ceil_log2

from spikeforge.hw.core_layout import CoreLayout, core_layout
from spikeforge.hw.layer import LoadSignature, WeightMemory, select, spike_layout
from spikeforge.hw.neuron import (
    NeuronFire,
    NeuronIntegrate,
    NeuronLeak,
    drive_bits,
    refused_is_not_unused,
)
from spikeforge.hw.program import LayerProgram, ProgramBusSignature
from spikeforge.hw.serializer import SpikeSerializer, lowest_set_bit
from spikeforge.hw.spram import WeightStore
from spikeforge.sw.golden import Network
from spikeforge.sw.interface import SPEC, RegisterMap

__all__ = ["CoreArray", "CoreLayout", "core_layout", "event_layout", "core_spike_layout",
           "core_membrane_layout"]

#: Groups the serializer can hold back: the depth from the fire unit's read to its serializer.
_S_QUEUE = 4


def event_layout(c_bits: int, y_bits: int, x_bits: int,
                 value_bits: int = 0) -> data.StructLayout:
    """An event between layers (``hw/core_layout.py``): channel (or dense neuron) ``c`` at
    ``(y, x)``, or, with ``eot = 1``, the end of a timestep. With ``value_bits``, a layer-0
    event also carries its direct-coded pixel ``value`` (non-zero)."""
    value = {"value": unsigned(value_bits)} if value_bits else {}
    return data.StructLayout({"c": unsigned(c_bits), "y": unsigned(y_bits),
                              "x": unsigned(x_bits), "eot": unsigned(1), **value})


def core_spike_layout(layout: CoreLayout) -> data.StructLayout:
    """A spike or marker of neuron layer ``layer`` (the ``fired`` tap)."""
    return data.StructLayout({"layer": unsigned(max(1, ceil_log2(len(layout.maps)))),
                              **event_layout(layout.c_bits, layout.y_bits,
                                             layout.x_bits).members})


def core_membrane_layout(layout: CoreLayout) -> data.StructLayout:
    """One group's end-of-step membranes: layer, timestep, group within the layer, ``P`` values."""
    T = layout.layers[0].timesteps
    return data.StructLayout({
        "layer": unsigned(max(1, ceil_log2(len(layout.layers)))),
        "timestep": unsigned(max(1, ceil_log2(T))),
        "group": unsigned(max(1, ceil_log2(max(layout.groups)))),
        "v": data.ArrayLayout(signed(layout.v_bits), layout.lanes),
    })


def _times(value, constant: int):
    """``value * constant`` for a non-negative constant: a shift for a power of two, no
    logic for 0 or 1 (a general constant still multiplies)."""
    if constant == 0:
        return Const(0, 1)
    if constant & (constant - 1) == 0:
        return value << (constant.bit_length() - 1)
    return value * constant


class _State(enum.Enum, shape=unsigned(2)):
    IDLE = 0
    CLEAR = 1
    RUN = 2


class CoreArray(wiring.Component):
    """Every neuron layer of a :class:`spikeforge.sw.golden.Network` on one array of ``lanes``.

    Dense and convolution layers (power-of-two stride), with sum pooling folded into the next
    layer as an address transform (``hw/core_layout.py``); the last layer is dense.

    Parameters
    ----------
    network : Network
        Weights become the weight store's contents (ROM) and every other field the reset value
        of the layer program's registers. :class:`CoreLayoutError` names a layer the core
        cannot run.
    lanes : int
        ``P``, 1 .. 64.
    weight_memory : "rom" or "spram"
        ``"spram"``: the weight store is iCE40 UltraPlus SPRAM, empty after configuration,
        loaded by the host through each layer's ``W_ADDR``/``W_DATA`` registers.
    addr_bits : int
        Width of the channel (or dense input) field of ``inputs`` and of ``outputs``' address.
    loadable : bool
        Add ``weight_load`` and ``bias_load`` write ports on the weight store and the bias
        memory (testbenches that run many networks of one shape on one build).

    Members
    -------
    inputs : In(stream.Signature(event_layout(addr_bits, y_bits, x_bits)))
        Layer 0's input events ``(c, y, x)`` (a dense first layer: ``(j, 0, 0)``), ``T``
        timesteps each closed by a marker; an event outside the input is dropped and sets
        layer 0's ``bad_addr``.
    outputs : Out(stream.Signature(spike_layout(addr_bits)))
        The last layer's spikes, ascending within a step, and ``T`` markers.
    fired : Out, ``valid`` and ``payload`` (:func:`core_spike_layout`)
        Every spike and marker the fire unit emits, of every layer (a tap: no ``ready``).
    membranes : Out, ``valid`` and ``payload`` (:func:`core_membrane_layout`)
        One beat per group, layer and timestep: the membranes at the end of the step.
    start : In(1)
        Strobe: begin an inference (aborting one in flight); counters and flags clear.
    busy, done : Out(1)
        ``busy`` from the cycle after ``start`` to the cycle of the last output marker;
        ``done`` the cycle after.
    bus : In(ProgramBusSignature)
        The layer program's registers (one per-layer block of the spec per neuron layer).
    cycles : Out(unsigned(32))
        Busy cycles of the current or last inference.
    bad_addr : Out(1)
        Layer 0 dropped an input event since ``start``.
    busy_write : Out(1)
        Some layer's sticky ``busy_write`` flag.
    synops, spikes : Out(unsigned(32))
        The layers' ``SYNOPS`` and ``SPIKES`` counters, summed.
    weight_load, bias_load : In(LoadSignature(...))
        Only when ``loadable``: words at the weight store's and the bias memory's addresses.
    """

    @refused_is_not_unused
    def __init__(self, network: Network, lanes: int, *,
                 weight_memory: WeightMemory | str = WeightMemory.ROM, addr_bits: int = 16,
                 loadable: bool = False, spec: RegisterMap = SPEC):
        if not isinstance(network, Network):
            raise TypeError(f"network must be a spikeforge.sw.golden.Network, "
                            f"not {type(network).__name__}")
        self._layout = layout = core_layout(network, lanes)
        widest = max([network.n_inputs] + [layer.fan_out for layer in layout.layers])
        if widest > 1 << addr_bits:
            raise ValueError(f"A layer of {widest} neurons exceeds the {addr_bits}-bit spike "
                             "address")
        if len(layout.layers) > spec.max_layers:
            raise ValueError(f"{len(layout.layers)} layers do not fit the register map "
                             f"(at most {spec.max_layers})")
        self._network = network
        self._weight_memory = WeightMemory(weight_memory)
        if loadable and self._weight_memory is not WeightMemory.ROM:
            raise ValueError("loadable=True needs weight_memory='rom' (SPRAM weights are "
                             "loaded through the W_ADDR/W_DATA registers)")
        self._loadable = bool(loadable)
        self._addr_bits = addr_bits
        self._spec = spec
        L = len(layout.layers)
        loads = {}
        if loadable:
            loads = {"weight_load": In(LoadSignature(max(1, ceil_log2(sum(layout.weight_words))),
                                                     layout.lanes * layout.w_bits)),
                     "bias_load": In(LoadSignature(max(1, ceil_log2(layout.total_bias_words)),
                                                   layout.lanes * layout.v_bits))}
        super().__init__({
            **loads,
            "inputs": In(stream.Signature(event_layout(addr_bits, layout.y_bits,
                                                       layout.x_bits, layout.value_bits))),
            "outputs": Out(stream.Signature(spike_layout(addr_bits))),
            "fired": Out(wiring.Signature({"valid": Out(1),
                                           "payload": Out(core_spike_layout(layout))})),
            "membranes": Out(wiring.Signature({"valid": Out(1),
                                               "payload": Out(core_membrane_layout(layout))})),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "bus": In(ProgramBusSignature(L, spec.offset_bits)),
            "cycles": Out(unsigned(32)),
            "bad_addr": Out(1),
            "busy_write": Out(1),
            "synops": Out(unsigned(32)),
            "spikes": Out(unsigned(32)),
        })

    network = property(lambda self: self._network)
    layout = property(lambda self: self._layout)
    lanes = property(lambda self: self._layout.lanes)
    weight_memory = property(lambda self: self._weight_memory)

    @property
    def parameters(self) -> dict:
        lay = self._layout
        return {"lanes": lay.lanes, "groups": lay.groups, "weight_base": lay.weight_base,
                "neuron_base": lay.neuron_base, "bias_base": lay.bias_base,
                "w_bits": lay.w_bits, "v_bits": lay.v_bits,
                "current_bits": lay.current_bits, "queue_depth": lay.queue_depth,
                "weight_memory": self._weight_memory.value}

    def elaborate(self, platform) -> Module:
        m = Module()
        lay = self._layout
        maps, layers, L, P = lay.maps, lay.layers, len(lay.layers), lay.lanes
        T = layers[0].timesteps
        VB, WB, CB = lay.v_bits, lay.w_bits, lay.current_bits
        G_max = max(lay.groups)
        n_weights = sum(lay.weight_words)
        v_lanes = data.ArrayLayout(signed(VB), P)
        w_lanes = data.ArrayLayout(signed(WB), P)
        c_lanes = data.ArrayLayout(signed(CB), P)
        d_lanes = data.ArrayLayout(signed(drive_bits(VB, CB)), P)

        # ---- memories ------------------------------------------------------------------------
        in_ram = self._weight_memory is WeightMemory.SPRAM
        if in_ram:
            m.submodules.weights = weights = WeightStore(P * WB, n_weights, spram=True)
            w_rd = SimpleNamespace(addr=weights.read_addr, en=weights.read_en,
                                   data=weights.read_data)
        else:
            m.submodules.weights = weights = Memory(
                shape=unsigned(P * WB), depth=n_weights, init=lay.weight_words_init())
            w_rd = weights.read_port()
        m.submodules.biases = biases = Memory(
            shape=unsigned(P * VB), depth=lay.total_bias_words, init=lay.bias_words_init())
        m.submodules.vmem = vmem = Memory(shape=unsigned(P * VB), depth=lay.total_groups,
                                          init=[])
        b_rd, v_rd, v_wr = biases.read_port(), vmem.read_port(), vmem.write_port()
        acc_rd, acc_wr = [], []
        for b in range(2):
            bank = Memory(shape=unsigned(P * CB), depth=G_max, init=[])
            m.submodules[f"acc{b}"] = bank
            wr = bank.write_port()
            acc_wr.append(wr)
            acc_rd.append(bank.read_port(transparent_for=(wr,)))
        if self._loadable:
            w_wr, b_wr = weights.write_port(), biases.write_port()
            m.d.comb += [
                w_wr.addr.eq(self.weight_load.addr), w_wr.data.eq(self.weight_load.data),
                w_wr.en.eq(self.weight_load.en & (self.weight_load.addr < n_weights)),
                b_wr.addr.eq(self.bias_load.addr), b_wr.data.eq(self.bias_load.data),
                b_wr.en.eq(self.bias_load.en & (self.bias_load.addr < lay.total_bias_words)),
            ]
        CQ, YQ, XQ = lay.c_bits, lay.y_bits, lay.x_bits
        # one entry more than it ever holds: a SyncFIFOBuffered of depth d refuses a write
        # while d entries are on their way to its output register
        queue = SyncFIFOBuffered(width=CQ + YQ + XQ + 1, depth=lay.queue_depth + 1)
        m.submodules.queue = ResetInserter(self.start)(queue)   # empty at every start

        # ---- the layer program ---------------------------------------------------------------
        m.submodules.program = program = LayerProgram(
            layers, v_bits=VB, weight_words=lay.weight_words, word_bits=P * WB,
            in_ram=in_ram, spec=self._spec)
        connect(m, wiring.flipped(self.bus), program.bus)
        if in_ram:
            m.d.comb += [weights.write_addr.eq(program.store_addr),
                         weights.write_data.eq(program.store_word),
                         weights.write_en.eq(program.store_en)]

        # ---- control -------------------------------------------------------------------------
        state = Signal(_State)
        clear_g = Signal(range(max(2, G_max)))
        busy = Signal()
        m.d.comb += [busy.eq(state != _State.IDLE), self.busy.eq(busy),
                     program.busy.eq(busy), program.clear.eq(self.start)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.sync += self.done.eq(0)

        # ---- input register: the next event of the pass (in_t, in_k) ------------------------
        # Layer 0's events come from `inputs`; layer k's (k >= 1) from the spike queue, as the
        # fire unit writes pass (in_t, k - 1)'s spikes into it.
        VALUE = lay.value_bits
        event = event_layout(self._addr_bits, YQ, XQ, VALUE)
        in_t = Signal(range(T + 1))
        in_k = Signal(range(max(2, L)))
        in_valid = Signal()
        in_beat = Signal(event)
        consume = Signal()
        can_take = (state == _State.RUN) & (in_t < T) & (~in_valid | consume)
        from_queue = in_k != 0
        queue_beat = Signal(event)
        q_fields = [CQ, YQ, XQ]
        m.d.comb += [
            queue_beat.c.eq(queue.r_data[:CQ]),
            queue_beat.y.eq(queue.r_data[CQ:CQ + YQ]),
            queue_beat.x.eq(queue.r_data[CQ + YQ:sum(q_fields)]),
            queue_beat.eot.eq(queue.r_data[sum(q_fields)]),
            *([queue_beat.value.eq(1)] if VALUE else []),
            self.inputs.ready.eq(can_take & ~from_queue),
            queue.r_en.eq(can_take & from_queue),
        ]
        take_input = self.inputs.valid & self.inputs.ready
        take_queue = queue.r_rdy & queue.r_en
        beat_eot = Mux(from_queue, queue_beat.eot, self.inputs.payload.eot)
        with m.If(take_input | take_queue):
            m.d.sync += [in_valid.eq(1),
                         in_beat.eq(Mux(from_queue, queue_beat.as_value(),
                                        self.inputs.payload.as_value()))]
            with m.If(beat_eot):
                with m.If(in_k == L - 1):
                    m.d.sync += [in_k.eq(0), in_t.eq(in_t + 1)]
                with m.Else():
                    m.d.sync += in_k.eq(in_k + 1)
        with m.Elif(consume):
            m.d.sync += in_valid.eq(0)

        # ---- integration unit: an event of layer iu_k -> slots (ky, kx, gc) -----------------
        # Each slot reads one weight word (consecutive words) and adds it, P lanes, to the
        # accumulator word of neuron group (oy * OW + ox) * Gc + gc, when that group exists.
        iu_t = Signal(range(T + 1))
        iu_k = Signal(range(max(2, L)))
        iu_bank = Signal()
        eot_pending = Signal()
        layer_of_iu = [select(v, iu_k) for v in (
            [x.channel_groups - 1 for x in maps], [x.kernel[1] - 1 for x in maps],
            [x.kernel[0] - 1 for x in maps], [x.out_shape[1] for x in maps],
            [x.out_shape[2] for x in maps], [x.last_lanes for x in maps])]
        gc_top, kx_top, ky_top, out_h, out_w, iu_last_lanes = layer_of_iu
        row_step = select([x.out_shape[2] * x.channel_groups for x in maps], iu_k)
        kx_step = select([2 * x.channel_groups - 1 for x in maps], iu_k)
        # a stride 2**s layer: ev_oy, ev_ox are the numerators y + ph - ky, x + pw - kx of the
        # output position; the slot exists where both divide by the stride
        strided = any(x.stride_shift for x in maps)
        stride_shift = select([x.stride_shift for x in maps], iu_k) if strided else 0
        stride_mask = select([(1 << x.stride_shift) - 1 for x in maps], iu_k) if strided else 0
        span = max(max((x.out_shape[1] + x.padding[0] + 1) * (x.out_shape[2] + x.padding[1] + 1),
                       (((x.in_shape[1] + x.padding[0]) >> x.stride_shift) + 1)
                       * (((x.in_shape[2] + x.padding[1]) >> x.stride_shift) + 1))
                   * x.channel_groups for x in maps)
        pos_bits = max(YQ, XQ) + 3
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
        ev_last = (ev_gc == gc_top) & (ev_kx == kx_top) & (ev_ky == ky_top)
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
        w1_valid, w1_bank = Signal(), Signal()
        w1_acc = Signal(range(max(2, G_max)))
        ws_lanes = data.ArrayLayout(signed(WB + max(0, VALUE - 1)), P)
        weight_reg = Signal(ws_lanes)
        wb_valid, wb_bank = Signal(), Signal()
        wb_acc = Signal(range(max(2, G_max)))
        synops = [Signal(32, name=f"synops{k}") for k in range(L)]
        m.d.comb += consume.eq(in_valid & (state == _State.RUN) & (iu_t < T) & ~eot_pending
                               & (~ev_valid | (ev_last & (ev_planes == 0))))
        issue = ev_valid & slot_exists
        m.d.sync += [
            w1_valid.eq(issue), w1_bank.eq(iu_bank), w1_acc.eq(ev_acc),
            wb_valid.eq(w1_valid), wb_bank.eq(w1_bank), wb_acc.eq(w1_acc),
        ]
        raw_weights = data.View(w_lanes, w_rd.data)
        if VALUE:
            w1_plane = Signal.like(ev_plane)
            m.d.sync += w1_plane.eq(ev_plane)
        with m.If(w1_valid):
            for lane in range(P):
                m.d.sync += weight_reg[lane].eq(
                    raw_weights[lane] << w1_plane if VALUE else raw_weights[lane])
        with m.If(ev_valid):
            m.d.sync += ev_w.eq(ev_w + 1)
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
                                 ev_row_acc.eq(ev_acc0),
                                 ev_plane.eq(lowest_set_bit(ev_planes)[0]),
                                 ev_planes.eq(ev_planes & (ev_planes - 1)), ev_first.eq(0)]
            with m.Else():
                m.d.sync += ev_valid.eq(0)
            with m.If(slot_exists & ev_first):
                for k in range(L):
                    with m.If(iu_k == k):
                        m.d.sync += synops[k].eq(
                            synops[k] + Mux(ev_gc == gc_top, iu_last_lanes, P))

        # Decode an event for its layer: pooling (an address shift; an event in a dropped
        # partial window is dropped), then the first slot's weight word, output position and
        # accumulator word. A dense layer's event is its flat input j as a 1x1 kernel.
        starts = []
        for x in maps:
            shift = x.pool_shift
            y = in_beat.y >> shift
            xx = in_beat.x >> shift
            _, h_in, w_in = x.in_shape
            c_src, h_src, w_src = x.source_shape
            inside = (y < h_in) & (xx < w_in)
            if x.dense:
                row = in_beat.c if (h_in, w_in) == (1, 1) else \
                    _times(in_beat.c, h_in * w_in) + _times(y, w_in) + xx
                oy0 = ox0 = Const(0, pos_bits)
                legal = (in_beat.c < c_src) & (in_beat.y < h_src) & (in_beat.x < w_src)
                if x.source_shape[1:] == (1, 1):
                    legal = in_beat.c < x.layer.fan_in
            else:
                row = _times(in_beat.c, x.kernel[0] * x.kernel[1])
                oy0, ox0 = y + x.padding[0], xx + x.padding[1]
                legal = (in_beat.c < c_src) & (in_beat.y < h_src) & (in_beat.x < w_src)
            acc0 = Const(0, 1) if x.dense else _times(
                _times(oy0 >> x.stride_shift, x.out_shape[2]) + (ox0 >> x.stride_shift),
                x.channel_groups)
            starts.append((lay.weight_base[maps.index(x)] + _times(row, x.channel_groups),
                           oy0, ox0, acc0, inside, legal))
        start_w, start_oy, start_ox, start_acc, start_inside, start_legal = (
            select([s[i] for s in starts], iu_k) for i in range(6))
        bad = Signal(L)
        with m.If(consume):
            with m.If(in_beat.eot):
                m.d.sync += eot_pending.eq(1)
                with m.If(iu_k == L - 1):
                    m.d.sync += [iu_k.eq(0), iu_t.eq(iu_t + 1)]
                with m.Else():
                    m.d.sync += iu_k.eq(iu_k + 1)
            with m.Elif(~start_legal):
                m.d.comb += bad.eq((Const(1, L) << iu_k)[:L])
            with m.Elif(start_inside):
                m.d.sync += [ev_valid.eq(1), ev_w.eq(start_w), ev_gc.eq(0), ev_kx.eq(0),
                             ev_ky.eq(0), ev_oy.eq(start_oy), ev_ox.eq(start_ox),
                             ev_ox0.eq(start_ox), ev_acc.eq(start_acc),
                             ev_row_acc.eq(start_acc)]
                if VALUE:
                    value = in_beat.value
                    m.d.sync += [ev_w0.eq(start_w), ev_oy0.eq(start_oy), ev_acc0.eq(start_acc),
                                 ev_plane.eq(lowest_set_bit(value)[0]),
                                 ev_planes.eq(value & (value - 1)), ev_first.eq(1)]
        m.d.comb += [w_rd.addr.eq(ev_w), w_rd.en.eq(ev_valid), program.bad_addr.eq(bad)]
        with m.If(bad[0]):
            m.d.sync += self.bad_addr.eq(1)

        # ---- fire unit: pass (fu_t, fu_k) walks layer fu_k's groups --------------------------
        # Group g = (oy * OW + ox) * Gc + gc holds channels gc*P .. gc*P + P-1 at (oy, ox).
        fu_busy = Signal()
        fu_bank = Signal()
        fu_t = Signal(range(max(2, T)))
        fu_k = Signal(range(max(2, L)))
        fu_groups = select(lay.groups, fu_k)
        fu_gc_top = select([x.channel_groups - 1 for x in maps], fu_k)
        fu_ox_top = select([x.out_shape[2] - 1 for x in maps], fu_k)
        fu_g = Signal(range(G_max + 2))         # next item to read; item G_k is the marker
        fu_word = Signal(range(lay.total_groups + 1))   # neuron_base[fu_k] + fu_g
        fu_bias = Signal(range(lay.total_bias_words + 1))  # bias_base[fu_k] + gc
        fu_gc = Signal(range(max(2, *(x.channel_groups for x in maps))))
        fu_cbase = Signal(range(max(x.channel_groups for x in maps) * P + 1))  # gc * P
        fu_oy = Signal(YQ)
        fu_ox = Signal(XQ)
        m.d.comb += [program.fire_layer.eq(fu_k), program.fire_step.eq(fu_t)]

        def stage(name):
            return SimpleNamespace(
                valid=Signal(name=f"{name}_valid"), g=Signal(range(G_max + 1), name=f"{name}_g"),
                cbase=Signal.like(fu_cbase, name=f"{name}_cbase"),
                oy=Signal(YQ, name=f"{name}_oy"), ox=Signal(XQ, name=f"{name}_ox"),
                last=Signal(name=f"{name}_last"), eot=Signal(name=f"{name}_eot"))

        def copy(dst, src):
            return [dst.valid.eq(src.valid), dst.g.eq(src.g), dst.cbase.eq(src.cbase),
                    dst.oy.eq(src.oy), dst.ox.eq(src.ox), dst.last.eq(src.last),
                    dst.eot.eq(src.eot)]

        st_l, st_c, st_d = stage("l"), stage("c"), stage("d")
        c_leaked = Signal(v_lanes)
        c_drive = Signal(d_lanes)
        d_sat = Signal(v_lanes)
        pending = Signal(range(_S_QUEUE + 1))   # groups issued by R, not yet in stage S
        m.submodules.serializer = serializer = SpikeSerializer(
            P, c_bits=CQ, y_bits=YQ, x_bits=XQ, cbase_bits=len(fu_cbase), depth=_S_QUEUE)
        events = serializer.events

        next_k = Mux(fu_k == L - 1, 0, fu_k + 1)
        with m.If(eot_pending & ~fu_busy & ~ev_valid):
            m.d.sync += [
                eot_pending.eq(0), fu_busy.eq(1), fu_bank.eq(iu_bank), iu_bank.eq(~iu_bank),
                fu_g.eq(0), fu_word.eq(select(lay.neuron_base, fu_k)),
                fu_bias.eq(select(lay.bias_base, fu_k)), fu_gc.eq(0), fu_cbase.eq(0),
                fu_oy.eq(0), fu_ox.eq(0),
            ]

        to_queue = fu_k != L - 1
        # the queue never fills: it holds one pass's spikes at most (pass (t, k + 1) drains it
        # while pass (t, k) fills it, and fires, filling it again, only after it has taken
        # (t, k)'s marker), and it is as deep as the widest hidden layer plus a marker
        m.d.comb += events.ready.eq(to_queue | self.outputs.ready)
        out_take = events.valid & events.ready
        r_advance = Signal()
        m.d.comb += r_advance.eq(fu_busy & (fu_g <= fu_groups) & (pending < _S_QUEUE))
        fu_read = r_advance & (fu_g < fu_groups)
        m.d.comb += [
            v_rd.addr.eq(fu_word), v_rd.en.eq(fu_read),
            b_rd.addr.eq(fu_bias), b_rd.en.eq(fu_read),
        ]
        m.d.sync += st_l.valid.eq(r_advance)
        with m.If(r_advance):
            m.d.sync += [
                st_l.g.eq(fu_g), st_l.cbase.eq(fu_cbase), st_l.oy.eq(fu_oy), st_l.ox.eq(fu_ox),
                st_l.last.eq(fu_gc == fu_gc_top), st_l.eot.eq(fu_g == fu_groups),
                fu_g.eq(fu_g + 1), fu_word.eq(fu_word + 1),
            ]
            with m.If(fu_gc != fu_gc_top):
                m.d.sync += [fu_gc.eq(fu_gc + 1), fu_cbase.eq(fu_cbase + P),
                             fu_bias.eq(fu_bias + 1)]
            with m.Else():
                m.d.sync += [fu_gc.eq(0), fu_cbase.eq(0),
                             fu_bias.eq(fu_bias - fu_gc_top)]
                with m.If(fu_ox != fu_ox_top):
                    m.d.sync += fu_ox.eq(fu_ox + 1)
                with m.Else():
                    m.d.sync += [fu_ox.eq(0), fu_oy.eq(fu_oy + 1)]
        m.d.sync += copy(st_c, st_l) + copy(st_d, st_c)

        # accumulator banks: the IU owns bank iu_bank, the FU the other
        current = data.View(c_lanes, Mux(fu_bank, acc_rd[1].data, acc_rd[0].data))
        acc_sum = Signal(c_lanes)
        weight_in = weight_reg
        wb_data = data.View(c_lanes, Mux(wb_bank, acc_rd[1].data, acc_rd[0].data))
        for lane in range(P):
            m.d.comb += acc_sum[lane].eq(wb_data[lane] + weight_in[lane])
        fu_clear = st_l.valid & ~st_l.eot
        for b, (rd, wr) in enumerate(zip(acc_rd, acc_wr, strict=True)):
            iu_reads = w1_valid & (w1_bank == b)
            m.d.comb += [
                rd.addr.eq(Mux(iu_reads, w1_acc, fu_g)),
                rd.en.eq(iu_reads | (fu_read & (fu_bank == b))),
            ]
            with m.If(wb_valid & (wb_bank == b)):
                m.d.comb += [wr.addr.eq(wb_acc), wr.data.eq(acc_sum.as_value()), wr.en.eq(1)]
            with m.Elif(fu_clear & (fu_bank == b)):
                m.d.comb += [wr.addr.eq(st_l.g), wr.data.eq(0), wr.en.eq(1)]
            with m.Elif(state == _State.CLEAR):
                m.d.comb += [wr.addr.eq(clear_g), wr.data.eq(0), wr.en.eq(1)]

        # stages L, C, F: leak and drive, exact sum and saturation, fire and reset
        v_old = data.View(v_lanes, v_rd.data)
        bias_in = data.View(v_lanes, b_rd.data)
        v_new = Signal(v_lanes)
        fired = Signal(P)
        fu_write = st_d.valid & ~st_d.eot
        last_lanes = Signal(range(P + 1))
        # per-layer values of the fire unit, registered: fu_k changes only between passes
        m.d.sync += last_lanes.eq(select([x.last_lanes for x in maps], fu_k))
        if lay.mixed_v_bits:
            # a narrower layer saturates to its own range (registered per layer)
            v_low = Signal(signed(VB))
            v_high = Signal(signed(VB))
            m.d.sync += [v_low.eq(select([-(1 << (x.v_bits - 1)) for x in layers], fu_k)),
                         v_high.eq(select([(1 << (x.v_bits - 1)) - 1 for x in layers], fu_k))]
        for lane in range(P):
            leak, fire = NeuronLeak(VB, CB), NeuronFire(VB)
            integrate = NeuronIntegrate(VB, CB, variable_range=lay.mixed_v_bits)
            if lay.mixed_v_bits:
                m.d.comb += [integrate.low.eq(v_low), integrate.high.eq(v_high)]
            m.submodules[f"leak{lane}"] = leak
            m.submodules[f"integrate{lane}"] = integrate
            m.submodules[f"fire{lane}"] = fire
            m.d.comb += [
                leak.v.eq(v_old[lane]), leak.first.eq(fu_t == 0),
                leak.v_init.eq(program.v_init), leak.leak_shift.eq(program.leak_shift),
                leak.bias.eq(bias_in[lane]), leak.current.eq(current[lane]),
                integrate.base.eq(c_leaked[lane]), integrate.drive.eq(c_drive[lane]),
                fire.v_sat.eq(d_sat[lane]), fire.theta.eq(program.theta),
                fire.fire_mode.eq(program.fire_mode), fire.fires.eq(program.fires),
                fire.greater.eq(program.greater), fire.zero_reset.eq(program.zero_reset),
                v_new[lane].eq(fire.v_next),
            ]
            m.d.sync += [c_leaked[lane].eq(leak.base), c_drive[lane].eq(leak.drive),
                         d_sat[lane].eq(integrate.v_sat)]
            exists = ~st_d.last | (last_lanes > lane)
            m.d.comb += fired[lane].eq(fire.spike & exists)

        # stage S: one event per cycle, lowest channel first, to the queue or to `outputs`
        event = events.payload
        m.d.comb += [
            serializer.group.valid.eq(st_d.valid),
            serializer.group.payload.mask.eq(fired),
            serializer.group.payload.cbase.eq(st_d.cbase),
            serializer.group.payload.oy.eq(st_d.oy),
            serializer.group.payload.ox.eq(st_d.ox),
            serializer.group.payload.eot.eq(st_d.eot),
            serializer.clear.eq(self.start),
            self.outputs.valid.eq(events.valid & ~to_queue),
            self.outputs.payload.eot.eq(event.eot),
            self.outputs.payload.addr.eq(event.c),
            queue.w_en.eq(events.valid & to_queue),
            queue.w_data.eq(event.as_value()),
            self.fired.valid.eq(out_take),
            self.fired.payload.layer.eq(fu_k),
            self.fired.payload.eot.eq(event.eot),
            self.fired.payload.c.eq(event.c),
            self.fired.payload.y.eq(event.y),
            self.fired.payload.x.eq(event.x),
        ]
        spikes = [Signal(32, name=f"spikes{k}") for k in range(L)]
        layer_cycles = [Signal(32, name=f"cycles{k}") for k in range(L)]
        with m.If(out_take):
            with m.If(event.eot):
                m.d.sync += [fu_busy.eq(0), fu_k.eq(next_k)]
                with m.If(fu_t == T - 1):
                    for k in range(L):
                        with m.If(fu_k == k):
                            m.d.sync += layer_cycles[k].eq(self.cycles + 1)
                with m.If(fu_k == L - 1):
                    m.d.sync += fu_t.eq(fu_t + 1)
                    with m.If(fu_t == T - 1):
                        m.d.sync += [state.eq(_State.IDLE), self.done.eq(1), fu_t.eq(0)]
            with m.Else():
                for k in range(L):
                    with m.If(fu_k == k):
                        m.d.sync += spikes[k].eq(spikes[k] + 1)
        m.d.sync += pending.eq(pending + r_advance - serializer.taken)

        # membrane port: the group just closed, registered; it also writes vmem back
        d_word = Signal(range(lay.total_groups + 1))
        m.d.sync += d_word.eq(select(lay.neuron_base, fu_k) + st_c.g)
        m.d.sync += self.membranes.valid.eq(fu_write)
        wb_word = Signal(range(lay.total_groups + 1))
        with m.If(fu_write):
            m.d.sync += [
                self.membranes.payload.layer.eq(fu_k),
                self.membranes.payload.timestep.eq(fu_t),
                self.membranes.payload.group.eq(st_d.g),
                self.membranes.payload.v.eq(v_new),
                wb_word.eq(d_word),
            ]
        m.d.comb += [
            v_wr.addr.eq(wb_word),
            v_wr.data.eq(self.membranes.payload.v.as_value()),
            v_wr.en.eq(self.membranes.valid),
        ]
        m.d.comb += [self.synops.eq(sum(synops)), self.spikes.eq(sum(spikes)),
                     self.busy_write.eq(program.busy_write.any())]
        for k in range(L):
            m.d.comb += [getattr(program, f"synops{k}").eq(synops[k]),
                         getattr(program, f"spikes{k}").eq(spikes[k]),
                         getattr(program, f"cycles{k}").eq(layer_cycles[k])]

        # ---- start / clear pass ----------------------------------------------------------------
        with m.If(state == _State.CLEAR):
            m.d.sync += clear_g.eq(clear_g + 1)
            with m.If(clear_g == G_max - 1):
                m.d.sync += state.eq(_State.RUN)
        with m.If(self.start):
            m.d.sync += [
                state.eq(_State.CLEAR), clear_g.eq(0), iu_t.eq(0), iu_k.eq(0), iu_bank.eq(0),
                in_t.eq(0), in_k.eq(0), in_valid.eq(0),
                eot_pending.eq(0), ev_valid.eq(0), w1_valid.eq(0), wb_valid.eq(0),
                fu_busy.eq(0), fu_t.eq(0), fu_k.eq(0), st_l.valid.eq(0), st_c.valid.eq(0),
                st_d.valid.eq(0), pending.eq(0),
                self.cycles.eq(0), self.bad_addr.eq(0),
                *[s.eq(0) for s in synops + spikes + layer_cycles],
            ]
        return m

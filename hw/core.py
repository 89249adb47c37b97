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

from amaranth.hdl import Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out, connect
from amaranth.utils import ceil_log2

from spikeforge.hw.core_layout import CoreLayout, core_layout
from spikeforge.hw.fire import FireUnit, membrane_beat_layout
from spikeforge.hw.integration import IntegrationUnit, event_layout
from spikeforge.hw.layer import LoadSignature, WeightMemory, spike_layout
from spikeforge.hw.neuron import refused_is_not_unused
from spikeforge.hw.program import LayerProgram, ProgramBusSignature
from spikeforge.hw.spram import WeightStore
from spikeforge.hw.weight_rom import WeightRom
from spikeforge.sw.golden import Network
from spikeforge.sw.interface import SPEC, RegisterMap

__all__ = ["CoreArray", "CoreLayout", "core_layout", "event_layout", "core_spike_layout",
           "state_ram_attrs", "ECP5_DISTRIBUTED_DEPTH"]


#: Accumulator banks and membrane memories at most this deep go to distributed RAM on the
#: ECP5 (yosys would take a block RAM from 65 words on; 256 words are 16 LUT RAMs deep).
ECP5_DISTRIBUTED_DEPTH = 256


def state_ram_attrs(platform, depth: int) -> dict[str, str]:
    """Synthesis attributes of an accumulator bank or the membrane memory of ``depth`` words:
    on the ECP5 distributed (LUT) RAM up to :data:`ECP5_DISTRIBUTED_DEPTH` words, because a
    block RAM's 5.6 ns clock-to-output before the IU's write-back adder (or the leak's shifter)
    held the 16-lane conv preset at 69 MHz (then 81); elsewhere (the iCE40 has no LUT RAM) the
    synthesizer's choice."""
    if getattr(platform, "family", None) == "ecp5" and depth <= ECP5_DISTRIBUTED_DEPTH:
        return {"ram_style": "distributed"}
    return {}


def core_spike_layout(layout: CoreLayout) -> data.StructLayout:
    """A spike or marker of neuron layer ``layer`` (the ``fired`` tap)."""
    return data.StructLayout({"layer": unsigned(max(1, ceil_log2(len(layout.maps)))),
                              **event_layout(layout.c_bits, layout.y_bits,
                                             layout.x_bits).members})


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
    membranes : Out, ``valid`` and ``payload`` (:func:`spikeforge.hw.fire.membrane_beat_layout`)
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
                                               "payload": Out(membrane_beat_layout(layout))})),
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
        L, P, T = len(lay.layers), lay.lanes, lay.layers[0].timesteps
        VB, WB, CB = lay.v_bits, lay.w_bits, lay.current_bits
        G_max = max(lay.groups)
        n_weights = sum(lay.weight_words)

        # ---- memories ------------------------------------------------------------------------
        in_ram = self._weight_memory is WeightMemory.SPRAM
        if in_ram:
            m.submodules.weights = weights = WeightStore(P * WB, n_weights, spram=True)
            w_rd = SimpleNamespace(addr=weights.read_addr, en=weights.read_en,
                                   data=weights.read_data)
        else:
            m.submodules.weights = weights = WeightRom(P, WB, n_weights, lay.weight_words_init(),
                                                       writable=self._loadable)
            w_rd = SimpleNamespace(addr=weights.read_addr, en=weights.read_en,
                                   data=weights.read_data)
        m.submodules.biases = biases = Memory(
            shape=unsigned(P * VB), depth=lay.total_bias_words, init=lay.bias_words_init())
        m.submodules.vmem = vmem = Memory(shape=unsigned(P * VB), depth=lay.total_groups,
                                          init=[], attrs=state_ram_attrs(platform,
                                                                         lay.total_groups))
        b_rd, v_rd, v_wr = biases.read_port(), vmem.read_port(), vmem.write_port()
        acc_rd, acc_wr = [], []
        for b in range(2):      # the accumulator banks: the IU fills one, the FU closes the other
            bank = Memory(shape=unsigned(P * CB), depth=G_max, init=[],
                          attrs=state_ram_attrs(platform, G_max))
            m.submodules[f"acc{b}"] = bank
            wr = bank.write_port()
            acc_wr.append(wr)
            acc_rd.append(bank.read_port(transparent_for=(wr,)))
        if self._loadable:
            b_wr = biases.write_port()
            m.d.comb += [
                weights.write_addr.eq(self.weight_load.addr),
                weights.write_data.eq(self.weight_load.data),
                weights.write_en.eq(self.weight_load.en & (self.weight_load.addr < n_weights)),
                b_wr.addr.eq(self.bias_load.addr), b_wr.data.eq(self.bias_load.data),
                b_wr.en.eq(self.bias_load.en & (self.bias_load.addr < lay.total_bias_words)),
            ]
        CQ, YQ, XQ = lay.c_bits, lay.y_bits, lay.x_bits
        # one entry more than it ever holds: a SyncFIFOBuffered of depth d refuses a write
        # while d entries are on their way to its output register
        queue = SyncFIFOBuffered(width=CQ + YQ + XQ + 1, depth=lay.queue_depth + 1)
        m.submodules.queue = ResetInserter(self.start)(queue)   # empty at every start

        # ---- the layer program and the two units ----------------------------------------------
        m.submodules.program = program = LayerProgram(
            lay.layers, v_bits=VB, weight_words=lay.weight_words, word_bits=P * WB,
            in_ram=in_ram, descriptors=lay.descriptors(self._spec), spec=self._spec)
        connect(m, wiring.flipped(self.bus), program.bus)
        if in_ram:
            m.d.comb += [weights.write_addr.eq(program.store_addr),
                         weights.write_data.eq(program.store_word),
                         weights.write_en.eq(program.store_en)]
        m.submodules.iu = iu = IntegrationUnit(lay, self._addr_bits)
        m.submodules.fu = fu = FireUnit(lay)
        connect(m, program.fire, fu.registers)

        # ---- control: clear pass, RUN, done ----------------------------------------------------
        state = Signal(_State)
        clear_g = Signal(range(max(2, G_max)))
        busy = Signal()
        m.d.comb += [busy.eq(state != _State.IDLE), self.busy.eq(busy),
                     program.busy.eq(busy), program.clear.eq(self.start),
                     iu.run.eq(state == _State.RUN), iu.clear.eq(self.start),
                     fu.clear.eq(self.start)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.sync += self.done.eq(0)
        with m.If(state == _State.CLEAR):
            m.d.sync += clear_g.eq(clear_g + 1)
            with m.If(clear_g == G_max - 1):
                m.d.sync += state.eq(_State.RUN)

        # ---- input register: the next event of pass (in_t, in_k) -----------------------------
        # Layer 0's events come from `inputs`; layer k's (k >= 1) from the spike queue, as the
        # fire unit writes pass (in_t, k - 1)'s spikes into it.
        event = event_layout(self._addr_bits, YQ, XQ, lay.value_bits)
        in_t = Signal(range(T + 1))
        in_k = Signal(range(max(2, L)))
        in_beat = Signal(event)
        # A marker taken into the register moves (in_t, in_k) on in the next cycle, counted
        # from the register (not from the FIFO's block-RAM output, a critical path on the
        # ECP5); until then `cur_t`, `cur_k` are the moved-on values.
        fresh = Signal()                        # in_beat was taken in the previous cycle
        moving = fresh & in_beat.eot
        last_k = in_k == L - 1
        cur_k = Mux(moving, Mux(last_k, 0, in_k + 1), in_k)
        cur_t = Mux(moving & last_k, in_t + 1, in_t)
        with m.If(moving):
            m.d.sync += [in_k.eq(cur_k), in_t.eq(cur_t)]
        consume = iu.events.valid & iu.events.ready
        can_take = (state == _State.RUN) & (cur_t < T) & (~iu.events.valid | consume)
        from_queue = cur_k != 0
        queue_beat = Signal(event)
        m.d.comb += [
            queue_beat.c.eq(queue.r_data[:CQ]),
            queue_beat.y.eq(queue.r_data[CQ:CQ + YQ]),
            queue_beat.x.eq(queue.r_data[CQ + YQ:CQ + YQ + XQ]),
            queue_beat.eot.eq(queue.r_data[CQ + YQ + XQ]),
            *([queue_beat.value.eq(1)] if lay.value_bits else []),
            self.inputs.ready.eq(can_take & ~from_queue),
            queue.r_en.eq(can_take & from_queue),
            iu.events.payload.eq(in_beat),
        ]
        take = (self.inputs.valid & self.inputs.ready) | (queue.r_rdy & queue.r_en)
        m.d.sync += fresh.eq(take)
        with m.If(take):
            m.d.sync += [iu.events.valid.eq(1),
                         in_beat.eq(Mux(from_queue, queue_beat.as_value(),
                                        self.inputs.payload.as_value()))]
        with m.Elif(consume):
            m.d.sync += iu.events.valid.eq(0)

        # ---- the IU's ports: weights, its bank; a closed pass goes to the FU --------------------
        # A ROM reads in every cycle: the IU takes its data only in W1 of a slot, and a constant
        # enable keeps the slot's valid flag off every block RAM's enable pin (on the ECP5 a
        # fanout across the die); SPRAM reads only when asked.
        m.d.comb += [w_rd.addr.eq(iu.weights.addr), w_rd.en.eq(iu.weights.en if in_ram else 1),
                     iu.weights.data.eq(w_rd.data), program.bad_addr.eq(iu.bad)]
        with m.If(iu.bad[0]):
            m.d.sync += self.bad_addr.eq(1)
        handoff = iu.integrated & ~fu.busy
        m.d.comb += [iu.handoff.eq(handoff), fu.start.eq(handoff), fu.bank.eq(iu.bank)]
        m.d.comb += [iu.acc_write.current.eq(Mux(iu.acc_write.banks[1], acc_rd[1].data,
                                                 acc_rd[0].data)),
                     fu.acc_read.data.eq(Mux(fu.acc_read.banks[1], acc_rd[1].data,
                                             acc_rd[0].data))]
        # Each bank's ports are chosen by one-hot flip-flops of the two units (the IU's slot in
        # W1 and WB, the FU's pass and its stage L), no bank compare: on the ECP5 the compares
        # and their fanout into the banks' LUT RAM were a 32-lane build's critical path.
        for b, (rd, wr) in enumerate(zip(acc_rd, acc_wr, strict=True)):
            iu_reads = iu.acc_read.banks[b]
            m.d.comb += [
                rd.addr.eq(Mux(iu_reads, iu.acc_read.addr, fu.acc_read.addr)),
                # A read enable: without one yosys moves a distributed-RAM bank's read register
                # in front of the (transparent) RAM, and the read joins the write-back adder.
                # The FU's part is its bank while it is busy, not its per-cycle issue decision
                # (its data is used only after an issued read, so a repeated one is harmless).
                rd.en.eq(iu_reads | fu.acc_read.banks[b]),
            ]
            with m.If(iu.acc_write.banks[b]):
                m.d.comb += [wr.addr.eq(iu.acc_write.addr), wr.data.eq(iu.acc_write.data),
                             wr.en.eq(1)]
            with m.Elif(fu.acc_clear.banks[b]):
                m.d.comb += [wr.addr.eq(fu.acc_clear.addr), wr.data.eq(0), wr.en.eq(1)]
            with m.Elif(state == _State.CLEAR):
                m.d.comb += [wr.addr.eq(clear_g), wr.data.eq(0), wr.en.eq(1)]

        # ---- the FU's ports: membranes and biases, its spikes to the queue or `outputs` -------
        # The membrane and bias memories read in every cycle: the FU uses the data only in the
        # cycle after its read (L), so a read enable would only spread its issue decision over
        # every lane's read register (on the ECP5 the conv preset's critical path).
        m.d.comb += [
            v_rd.addr.eq(fu.vmem_read.addr), v_rd.en.eq(1),
            fu.vmem_read.data.eq(v_rd.data),
            b_rd.addr.eq(fu.bias_read.addr), b_rd.en.eq(1),
            fu.bias_read.data.eq(b_rd.data),
            v_wr.addr.eq(fu.membranes.word), v_wr.data.eq(fu.membranes.payload.v.as_value()),
            v_wr.en.eq(fu.membranes.valid),
            self.membranes.valid.eq(fu.membranes.valid),
            self.membranes.payload.eq(fu.membranes.payload),
        ]
        events, spike = fu.events, fu.events.payload
        to_queue = fu.layer != L - 1
        # the queue never fills: it holds one pass's spikes at most (pass (t, k + 1) drains it
        # while pass (t, k) fills it, and fires, filling it again, only after it has taken
        # (t, k)'s marker), and it is as deep as the widest hidden layer plus a marker
        m.d.comb += events.ready.eq(to_queue | self.outputs.ready)
        out_take = events.valid & events.ready
        m.d.comb += [
            self.outputs.valid.eq(events.valid & ~to_queue),
            self.outputs.payload.eot.eq(spike.eot),
            self.outputs.payload.addr.eq(spike.c),
            queue.w_en.eq(events.valid & to_queue),
            queue.w_data.eq(spike.as_value()),
            self.fired.valid.eq(out_take),
            self.fired.payload.layer.eq(fu.layer),
            self.fired.payload.eot.eq(spike.eot),
            self.fired.payload.c.eq(spike.c),
            self.fired.payload.y.eq(spike.y),
            self.fired.payload.x.eq(spike.x),
        ]

        # ---- counters: SYNOPS (the IU's), SPIKES and CYCLES per layer -------------------------
        spikes = [Signal(32, name=f"spikes{k}") for k in range(L)]
        layer_cycles = [Signal(32, name=f"cycles{k}") for k in range(L)]
        with m.If(out_take):
            with m.If(spike.eot):
                with m.If(fu.step == T - 1):
                    for k in range(L):
                        with m.If(fu.layer == k):
                            m.d.sync += layer_cycles[k].eq(self.cycles + 1)
                    with m.If(fu.layer == L - 1):
                        m.d.sync += [state.eq(_State.IDLE), self.done.eq(1)]
            with m.Else():
                for k in range(L):
                    with m.If(fu.layer == k):
                        m.d.sync += spikes[k].eq(spikes[k] + 1)
        m.d.comb += [self.synops.eq(sum(iu.synops)), self.spikes.eq(sum(spikes)),
                     self.busy_write.eq(program.busy_write.any())]
        for k in range(L):
            m.d.comb += [getattr(program, f"synops{k}").eq(iu.synops[k]),
                         getattr(program, f"spikes{k}").eq(spikes[k]),
                         getattr(program, f"cycles{k}").eq(layer_cycles[k])]

        with m.If(self.start):
            m.d.sync += [state.eq(_State.CLEAR), clear_g.eq(0), in_t.eq(0), in_k.eq(0),
                         fresh.eq(0),
                         iu.events.valid.eq(0), self.cycles.eq(0), self.bad_addr.eq(0),
                         *[s.eq(0) for s in spikes + layer_cycles]]
        return m

"""The network accelerator: the input encoder, the shared core array, the readout.

One inference::

    LOAD     the host streams n_inputs pixels; the encoder keeps the non-zero ones
    RUN      the encoder streams layer 0's spikes, a timestep at a time, into the core array
             (spikeforge.hw.core.CoreArray), which runs every layer pass by pass (t, k) and
             sends the last layer's spikes to the readout
    READOUT  scores, then the predicted class, leave on ``results``

The encoder runs up to two timesteps ahead of the core, so encoding overlaps computing; the
cycle count is exact (:mod:`spikeforge.sim.network_model`).

The host interface (members, register map) is ``docs/host-interface.md``; the register map and
its decoder here are generated from :mod:`spikeforge.sw.interface`.
"""
from __future__ import annotations

import enum as py_enum
from types import SimpleNamespace

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.hw.core import CoreArray, core_layout
from spikeforge.hw.encoder import SpikeEncoder
from spikeforge.hw.layer import field_word, membrane_layout, select, spike_layout
from spikeforge.hw.link import RegisterBusSignature, ResultLayout
from spikeforge.hw.neuron import refused_is_not_unused
from spikeforge.sw.golden import Network
from spikeforge.sw.interface import ID_MAGIC, SPEC, RegisterMap

__all__ = ["NetworkAccelerator", "GlobalReg", "ID_MAGIC", "Status", "LAYER_BASE",
           "LAYER_STRIDE", "spike_buffer_depths", "spike_entry_bits"]

#: Width of spike addresses on every internal stream.
ADDR_BITS = 16


#: Word addresses of the accelerator's own registers (the global block), derived from
#: :data:`spikeforge.sw.interface.SPEC`; ``ID`` reads :data:`ID_MAGIC`.
GlobalReg = py_enum.IntEnum("GlobalReg", {r.name: r.offset for r in SPEC.global_registers},
                            module=__name__)

#: Bits of the global ``STATUS`` register (``BAD_PIXEL``, ``BAD_ADDRESS``, ``BUSY_WRITE``), from
#: the spec.
Status = py_enum.IntFlag("Status", {f.name.upper(): f.mask
                                    for f in SPEC.global_reg("STATUS").fields},
                         module=__name__)

#: Layer k's registers live at ``LAYER_BASE + LAYER_STRIDE * k + spikeforge.hw.layer.Reg``.
LAYER_BASE = SPEC.layer_base
LAYER_STRIDE = SPEC.layer_stride



class _Phase(enum.Enum, shape=unsigned(2)):
    LOAD = 0
    RUN = 1
    READOUT = 2


def spike_buffer_depths(network: Network) -> list[int]:
    """Entries of the spike FIFOs: the encoder's (one timestep of every input and a marker)
    and the core's spike queue (the widest hidden layer's spikes and a marker), each with one
    entry of slack (a buffered FIFO refuses a write while it is full on its way out)."""
    queue = max([x.layer.fan_out for x in core_layout(network, 1).maps[:-1]], default=0) + 1
    return [network.n_inputs + 2, queue + 1]


def spike_entry_bits(network: Network) -> int:
    """Bits of an encoder FIFO entry: an input position ``(c, y, x)``, the marker bit and, for
    direct coding, the pixel value."""
    layout = core_layout(network, 1)
    shape = layout.maps[0].source_shape
    return max(1, sum(ceil_log2(v) for v in shape)) + 1 + layout.value_bits


class NetworkAccelerator(wiring.Component):
    """A whole :class:`spikeforge.sw.golden.Network` on one core array of ``lanes``: dense and
    convolution layers, sum pooling folded into addresses (``hw/core_layout.py``).

    Parameters
    ----------
    network : spikeforge.sw.golden.Network
        Weights become the weight store's contents; thresholds, leak shifts, ``v_init`` and
        the fire modes become the reset values of the layer program's registers. Any encoder:
        ``rate``, ``radix`` or ``direct`` (each pixel's set bits, shifted weights).
    lanes : int
        ``P``, the core array's neuron datapaths.
    taps : bool
        Add observation ports for testbenches: ``input_spikes`` (every beat the encoder hands
        the core), ``layer{k}_spikes`` (every spike and marker of layer ``k``) and
        ``layer{k}_membranes`` (its end-of-timestep membranes). They add no logic.
    spram_layers : iterable of int
        Non-empty: the weight store (every layer's weights) is iCE40 UltraPlus SPRAM, empty
        after configuration and loaded by the host through the layers' ``W_ADDR``/``W_DATA``
        registers (``LinkClient.load_network_weights``).
    spec : spikeforge.sw.interface.RegisterMap
        The register map the decoders implement (default: the spec).

    Members
    -------
    pixels : In(stream.Signature(unsigned(16)))
    results : Out(stream.Signature(ResultLayout))
    bus : In(RegisterBusSignature())
    busy : Out(1)
        See ``docs/host-interface.md``.
    """

    @refused_is_not_unused
    def __init__(self, network: Network, lanes: int, *, taps: bool = False,
                 spram_layers=(), spec: RegisterMap = SPEC):
        if not isinstance(network, Network):
            raise TypeError(f"network must be a spikeforge.sw.golden.Network, "
                            f"not {type(network).__name__}")
        spram_layers = sorted({int(k) for k in spram_layers})
        if any(not 0 <= k < len(network.layers) for k in spram_layers):
            raise ValueError(f"spram_layers {spram_layers} name a layer outside "
                             f"0..{len(network.layers) - 1}")
        # one weight store: in SPRAM as a whole or not at all
        self._spram_layers = list(range(len(network.layers))) if spram_layers else []
        # the core checks the layers, the address width and the register map's layer count
        self._core = CoreArray(network, lanes, addr_bits=ADDR_BITS, spec=spec,
                               weight_memory="spram" if spram_layers else "rom")
        self._layout = self._core.layout
        self._network = network
        self._spec = spec
        self._taps = bool(taps)
        self._lanes = lanes

        members = {
            "pixels": In(stream.Signature(unsigned(16))),
            "results": Out(stream.Signature(ResultLayout)),
            "bus": In(RegisterBusSignature()),
            "busy": Out(1),
        }
        if taps:
            tap = wiring.Signature({"valid": Out(1), "payload": Out(spike_layout(ADDR_BITS))})
            members["input_spikes"] = Out(tap)
            for x in self._layout.maps:      # neuron layers (a pooling layer has no tap)
                members[f"layer{x.index}_spikes"] = Out(tap)
                members[f"layer{x.index}_membranes"] = Out(wiring.Signature({
                    "valid": Out(1),
                    "payload": Out(membrane_layout(lanes, x.layer.v_bits, x.groups,
                                                   x.layer.timesteps)),
                }))
        super().__init__(members)

    network = property(lambda self: self._network)
    lanes = property(lambda self: self._lanes)
    layout = property(lambda self: self._layout)
    taps = property(lambda self: self._taps)
    spram_layers = property(lambda self: list(self._spram_layers))
    spec = property(lambda self: self._spec)

    @property
    def parameters(self) -> dict:
        net, lay = self._network, self._layout
        return {
            "n_inputs": net.n_inputs, "n_outputs": net.n_outputs, "timesteps": net.timesteps,
            "lanes": self._lanes, "pixel_bits": net.encoder.pixel_bits,
            "encoder": net.encoder.kind.value, "n_layers": len(net.layers),
            "spram_layers": list(self._spram_layers),
            "spike_buffer_depths": spike_buffer_depths(net),
            "spike_entry_bits": spike_entry_bits(net),
            "core": {"groups": lay.groups, "weight_base": lay.weight_base,
                     "neuron_base": lay.neuron_base, "w_bits": lay.w_bits,
                     "v_bits": lay.v_bits, "current_bits": lay.current_bits},
            "layers": [{"kind": x.layer.kind, "index": x.index, "fan_in": x.layer.fan_in,
                        "fan_out": x.layer.fan_out, "groups": x.groups,
                        "channel_groups": x.channel_groups, "out_shape": list(x.out_shape),
                        "v_bits": x.layer.v_bits, "w_bits": x.layer.w_bits}
                       for x in lay.maps],
        }

    def elaborate(self, platform) -> Module:
        m = Module()
        net = self._network
        T, n_in, n_out, L = net.timesteps, net.n_inputs, net.n_outputs, len(net.layers)
        last = net.layers[-1]
        spike_shape = spike_layout(ADDR_BITS)

        lay = self._layout
        m.submodules.encoder = encoder = SpikeEncoder(
            net.encoder, lay.maps[0].source_shape, T, ADDR_BITS, lay.y_bits, lay.x_bits)
        m.submodules.core = core = self._core

        phase = Signal(_Phase)
        busy = Signal()
        m.d.comb += [busy.eq(phase != _Phase.LOAD), self.busy.eq(busy)]

        # ---- LOAD: pixels into the encoder; RUN: encoder -> core -> readout -----------------
        bad_pixel = Signal()
        wiring.connect(m, wiring.flipped(self.pixels), encoder.pixels)
        wiring.connect(m, encoder.spikes, core.inputs)
        run = Signal()
        m.d.comb += [encoder.load.eq(phase == _Phase.LOAD), run.eq(encoder.loaded),
                     encoder.run.eq(run), core.start.eq(run)]
        with m.If(encoder.bad_pixel):
            m.d.sync += bad_pixel.eq(1)
        m.d.comb += core.outputs.ready.eq(1)
        final = SimpleNamespace(outputs=core.outputs, running=phase == _Phase.RUN)

        # ---- readout: scores of the last layer -------------------------------------------------
        # Scores only as wide as they can get: a count <= T, a radix value < 2**T, or a membrane.
        score_bits = last.v_bits if not last.fires else T + 2
        scores = [Signal(signed(score_bits), name=f"score{i}") for i in range(n_out)]
        out_t = Signal(range(T + 1))
        clear_scores = Signal()             # the scores clear in RUN's first cycle
        # The core's output beats are registered before they update the scores: it takes the
        # spike-address encoder off the score adders' path, and the last beat (the final
        # marker) still lands in the core's `done` cycle, before READOUT starts.
        beat_valid = Signal()
        beat = Signal(spike_shape)
        m.d.sync += [beat_valid.eq(final.outputs.valid & final.running),
                     beat.eq(final.outputs.payload)]
        with m.If(clear_scores):
            m.d.sync += [score.eq(0) for score in scores]
            m.d.sync += out_t.eq(0)
        with m.Elif(beat_valid):
            with m.If(beat.eot):
                m.d.sync += out_t.eq(out_t + 1)
            if last.fires:
                # Each score has its own adder, enabled by an address decode: no read mux of
                # the scores on the path.
                increment = (Const(1, T + 1) << out_t) if last.fire_mode.value == "radix" else 1
                for i, score in enumerate(scores):
                    with m.If(~beat.eot & (beat.addr == i)):
                        m.d.sync += score.eq(score + increment)
        if not last.fires:
            beat = core.membranes
            P, G = self._lanes, lay.groups[-1]
            with m.If(beat.valid & (beat.payload.layer == len(lay.maps) - 1)
                      & (beat.payload.timestep == T - 1)):
                with m.Switch(beat.payload.group):
                    for g in range(G):
                        with m.Case(g):
                            for lane in range(P):
                                if g * P + lane < n_out:
                                    m.d.sync += scores[g * P + lane].eq(beat.payload.v[lane])

        # The argmax runs one beat behind the scores on `results`: each score sent is registered
        # as a candidate and compared in the next cycle, and the prediction waits for the last
        # comparison (the score mux and the compare are then never in the same cycle).
        out_index = Signal(range(n_out + 1))
        best_value = Signal(signed(score_bits))
        best_index = Signal(range(n_out))
        candidate_valid = Signal()
        candidate_value = Signal(signed(score_bits))
        candidate_index = Signal(range(n_out))
        is_prediction = out_index == n_out
        # a Mux tree, not an Array read: defined in simulation from reset on (hw.layer.select)
        score_out = select(scores, out_index)
        m.d.comb += [
            self.results.valid.eq((phase == _Phase.READOUT) & ~(is_prediction & candidate_valid)),
            self.results.payload.value.eq(Mux(is_prediction, best_index, score_out)),
            self.results.payload.last.eq(is_prediction),
        ]
        m.d.sync += candidate_valid.eq(0)
        with m.If(self.results.valid & self.results.ready):
            m.d.sync += out_index.eq(out_index + 1)
            with m.If(~is_prediction):
                m.d.sync += [candidate_valid.eq(1), candidate_value.eq(score_out),
                             candidate_index.eq(out_index)]
        with m.If(candidate_valid & ((candidate_index == 0) | (candidate_value > best_value))):
            m.d.sync += [best_value.eq(candidate_value), best_index.eq(candidate_index)]


        # ---- sequencer -------------------------------------------------------------------------
        cycles = Signal(32)
        m.d.comb += clear_scores.eq(run)
        with m.If(phase == _Phase.RUN):
            m.d.sync += cycles.eq(cycles + 1)
        with m.Switch(phase):
            with m.Case(_Phase.LOAD):
                with m.If(run):
                    m.d.sync += [phase.eq(_Phase.RUN), cycles.eq(0)]
            with m.Case(_Phase.RUN):
                with m.If(core.done):
                    m.d.sync += [phase.eq(_Phase.READOUT), out_index.eq(0)]
            with m.Case(_Phase.READOUT):
                with m.If(self.results.valid & self.results.ready & is_prediction):
                    m.d.sync += phase.eq(_Phase.LOAD)

        # ---- registers: the spec's global block, and the layer program's blocks ---------------
        spec = self._spec
        bus = self.bus
        block = bus.addr[spec.offset_bits:]
        offset = bus.addr[:spec.offset_bits]
        status_reg = spec.global_reg("STATUS")
        is_status = (block == 0) & (offset == status_reg.offset)
        busy_write = Signal()
        read_block = Signal(spec.block_bits)
        global_r_data = Signal(32)
        with m.If(bus.w_en & busy & ~is_status):
            m.d.sync += busy_write.eq(1)
        status_bits = {"bad_pixel": bad_pixel, "bad_address": core.bad_addr,
                       "busy_write": busy_write}
        status = field_word(status_reg, **status_bits)
        with m.If(bus.w_en & is_status):
            # write 1 to clear; bad_address is the core's flag, which clears on its start
            for name in ("bad_pixel", "busy_write"):
                with m.If(bus.w_data[status_reg.field(name).bits].any()):
                    m.d.sync += status_bits[name].eq(0)
        # Register block k belongs to network.layers[k]; a pooling layer's block reads 0 and
        # ignores writes (the core folds pooling into the next layer's addresses).
        neuron_of = {x.index: i for i, x in enumerate(lay.maps)}
        first_block = spec.layer_block(0)
        in_program = Signal()
        program_layer = Signal.like(core.bus.layer)
        # Mux chains (continuous assigns), not a Switch: an `always @*` block that Icarus
        # leaves X after reset (hw.layer.select)
        hit, layer_of_block = Const(0), Const(0, program_layer.shape())
        for k, i in neuron_of.items():
            here = block == first_block + k
            hit, layer_of_block = hit | here, Mux(here, i, layer_of_block)
        m.d.comb += [in_program.eq(hit), program_layer.eq(layer_of_block)]
        read_program = Signal()
        with m.If(bus.r_en):
            m.d.sync += read_program.eq(in_program)
        m.d.comb += [
            core.bus.layer.eq(program_layer), core.bus.addr.eq(offset),
            core.bus.w_data.eq(bus.w_data),
            core.bus.w_en.eq(bus.w_en & in_program & ~busy),
            core.bus.r_en.eq(bus.r_en & in_program),
        ]
        values = {"ID": spec.id_magic, "STATUS": status, "CYCLES": cycles, "N_LAYERS": L,
                  "N_INPUTS": n_in, "N_OUTPUTS": n_out, "TIMESTEPS": T, "LANES": self._lanes}
        with m.If(bus.r_en):
            m.d.sync += read_block.eq(block)
            with m.Switch(offset):
                for reg in spec.global_registers:
                    with m.Case(reg.offset):
                        m.d.sync += global_r_data.eq(values[reg.name])
                with m.Default():
                    m.d.sync += global_r_data.eq(0)
        in_layer_block = (read_block >= first_block) & (read_block < first_block + L)
        m.d.comb += bus.r_data.eq(Mux(read_program, core.bus.r_data,
                                      Mux(in_layer_block, 0, global_r_data)))

        # ---- taps ----------------------------------------------------------------------------
        if self._taps:
            event = core.inputs.payload
            _, h, w = lay.maps[0].source_shape
            m.d.comb += [self.input_spikes.valid.eq(core.inputs.valid & core.inputs.ready),
                         self.input_spikes.payload.addr.eq((event.c * h + event.y) * w + event.x),
                         self.input_spikes.payload.eot.eq(event.eot)]
            fired = core.fired.payload
            for i, x in enumerate(lay.maps):
                spikes_tap = getattr(self, f"layer{x.index}_spikes")
                membranes_tap = getattr(self, f"layer{x.index}_membranes")
                _, oh, ow = x.out_shape
                m.d.comb += [
                    spikes_tap.valid.eq(core.fired.valid & (fired.layer == i)),
                    spikes_tap.payload.addr.eq((fired.c * oh + fired.y) * ow + fired.x),
                    spikes_tap.payload.eot.eq(fired.eot),
                    membranes_tap.valid.eq(core.membranes.valid
                                           & (core.membranes.payload.layer == i)),
                    membranes_tap.payload.timestep.eq(core.membranes.payload.timestep),
                    membranes_tap.payload.group.eq(core.membranes.payload.group),
                ]
                for lane in range(self._lanes):
                    m.d.comb += membranes_tap.payload.v[lane].eq(core.membranes.payload.v[lane])
        return m

"""The network accelerator: input encoder, one layer engine per layer, spike buffers, readout.

One inference runs in phases, one after another, so that every phase sees a producer that is
never empty and a consumer that is never full, and the cycle count is an exact sum of per-phase
counts (:mod:`spikeforge.sim.network_model`)::

    LOAD     the host streams n_inputs pixels into the pixel memory
    ENCODE   the encoder walks (t, j) and writes input spikes + end-of-timestep markers into
             spike buffer 0
    LAYER k  engine k drains buffer k % 2 and fills buffer (k+1) % 2 (the last engine feeds the
             readout instead)
    READOUT  scores, then the predicted class, leave on ``results``

The two spike buffers are FIFOs used in turn (ping-pong): each layer drains its input buffer
completely, so the buffer is empty again when the layer after next writes into it.

The host interface (members, register map) is ``docs/host-interface.md``; the register map and
its decoder here are generated from :mod:`spikeforge.sw.interface`.
"""

from __future__ import annotations

import enum as py_enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.hw.layer import LayerEngine, field_word, membrane_layout, select, spike_layout
from spikeforge.hw.link import RegisterBusSignature, ResultLayout
from spikeforge.hw.neuron import refused_is_not_unused
from spikeforge.sw.golden import EncoderKind, Network
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


class _Phase(enum.Enum, shape=unsigned(3)):
    LOAD = 0
    ENCODE = 1
    DRAIN = 2
    START = 3
    RUN = 4
    READOUT = 5


def spike_buffer_depths(network: Network) -> list[int]:
    """Entries of each spike buffer: the most spikes plus markers a phase writes into it.

    ``network`` is a :class:`spikeforge.sw.golden.Network` (the memory plan sizes the buffers
    with this same function).

    Buffer 0 takes the encoder's spikes and those of layers 1, 3, ...; buffer 1 those of layers
    0, 2, ... (the last layer writes into neither: it feeds the readout).
    """
    widths = [[network.n_inputs], []]
    for k, layer in enumerate(network.layers[:-1]):
        widths[(k + 1) % 2].append(layer.fan_out)
    return [network.timesteps * (max(w) + 1) for w in widths[:min(2, len(network.layers))]]


def spike_entry_bits(network: Network) -> int:
    """Bits of a spike buffer entry: the widest address any phase writes, and the marker bit."""
    widest = max([network.n_inputs] + [layer.fan_out for layer in network.layers[:-1]])
    return max(1, ceil_log2(widest)) + 1


class NetworkAccelerator(wiring.Component):
    """A whole :class:`spikeforge.sw.golden.Network` on ``lanes`` neuron datapaths per layer.

    Parameters
    ----------
    network : spikeforge.sw.golden.Network
        Weights become ROM contents; thresholds, leak shifts, ``v_init`` and the fire mode
        become the reset values of run-time registers. The encoder must be ``rate`` or
        ``radix``.
    lanes : int
        ``P``, parallel datapaths of every layer engine.
    taps : bool
        Add observation ports for testbenches: ``input_spikes``, ``layer{k}_spikes`` (every
        spike and marker a stage writes, one per cycle at most) and ``layer{k}_membranes``
        (engine ``k``'s end-of-timestep membranes). They add no logic.
    spram_layers : iterable of int
        Layers whose weights live in iCE40 UltraPlus SPRAM (``weight_memory="spram"`` of
        :class:`spikeforge.hw.layer.LayerEngine`): empty after configuration, loaded by the host
        through the layer's ``W_ADDR``/``W_DATA`` registers (``LinkClient.load_network_weights``).
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
        if network.encoder.kind is EncoderKind.DIRECT:
            raise ValueError("The direct (analog) encoder is not implemented in hardware; "
                             "train or export the network with the 'rate' or 'radix' encoder")
        widest = max([network.n_inputs] + [layer.fan_out for layer in network.layers])
        if widest > 1 << ADDR_BITS:
            raise ValueError(f"A layer of {widest} neurons exceeds the {ADDR_BITS}-bit spike "
                             "address")
        if len(network.layers) > spec.max_layers:
            raise ValueError(f"{len(network.layers)} layers do not fit the register map "
                             f"(at most {spec.max_layers})")
        self._network = network
        self._spec = spec
        self._taps = bool(taps)
        spram_layers = sorted({int(k) for k in spram_layers})
        if any(not 0 <= k < len(network.layers) for k in spram_layers):
            raise ValueError(f"spram_layers {spram_layers} name a layer outside "
                             f"0..{len(network.layers) - 1}")
        self._spram_layers = spram_layers
        self._engines = []
        try:
            for k, layer in enumerate(network.layers):
                self._engines.append(LayerEngine.from_layer(
                    layer, lanes, addr_bits=ADDR_BITS, spec=spec,
                    weight_memory="spram" if k in spram_layers else "rom"))
        except BaseException:
            for engine in self._engines:  # built, but part of an accelerator that is not
                engine._MustUse__silence = True
            raise
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
            for k, (layer, engine) in enumerate(zip(network.layers, self._engines, strict=True)):
                members[f"layer{k}_spikes"] = Out(tap)
                members[f"layer{k}_membranes"] = Out(wiring.Signature({
                    "valid": Out(1),
                    "payload": Out(membrane_layout(lanes, layer.v_bits, engine.groups,
                                                   layer.timesteps)),
                }))
        super().__init__(members)

    network = property(lambda self: self._network)
    lanes = property(lambda self: self._lanes)
    engines = property(lambda self: list(self._engines))
    taps = property(lambda self: self._taps)
    spram_layers = property(lambda self: list(self._spram_layers))
    spec = property(lambda self: self._spec)

    @property
    def parameters(self) -> dict:
        net = self._network
        return {
            "n_inputs": net.n_inputs, "n_outputs": net.n_outputs, "timesteps": net.timesteps,
            "lanes": self._lanes, "pixel_bits": net.encoder.pixel_bits,
            "encoder": net.encoder.kind.value, "n_layers": len(net.layers),
            "spram_layers": list(self._spram_layers),
            "spike_buffer_depths": spike_buffer_depths(net),
            "spike_entry_bits": spike_entry_bits(net),
            "layers": [engine.parameters for engine in self._engines],
        }

    def elaborate(self, platform) -> Module:
        m = Module()
        net = self._network
        T, n_in, n_out, L = net.timesteps, net.n_inputs, net.n_outputs, len(net.layers)
        pixel_bits = net.encoder.pixel_bits
        x_max = (1 << pixel_bits) - 1
        last = net.layers[-1]
        spike_shape = spike_layout(ADDR_BITS)
        # Buffer entries hold only the address bits a phase can use, then the marker bit.
        entry_bits = spike_entry_bits(net)

        def pack(beat):
            return Cat(beat.addr[:entry_bits - 1], beat.eot)

        for k, engine in enumerate(self._engines):
            m.submodules[f"layer{k}"] = engine

        phase = Signal(_Phase)
        layer_k = Signal(range(max(L, 2)))
        busy = Signal()
        m.d.comb += [busy.eq(phase != _Phase.LOAD), self.busy.eq(busy)]

        # ---- pixel memory, filled in LOAD ----------------------------------------------------
        m.submodules.pixel_mem = pixel_mem = Memory(shape=unsigned(pixel_bits), depth=n_in,
                                                    init=[])
        pix_wr = pixel_mem.write_port()
        pix_rd = pixel_mem.read_port()
        pix_count = Signal(range(n_in + 1))
        pix_bad = Signal()
        bad_pixel = Signal()
        pix_take = self.pixels.valid & self.pixels.ready
        m.d.comb += [
            self.pixels.ready.eq(phase == _Phase.LOAD),
            pix_wr.addr.eq(pix_count), pix_wr.data.eq(self.pixels.payload),
            pix_wr.en.eq(pix_take),
        ]
        image_done = Signal()
        m.d.comb += image_done.eq(pix_take & (pix_count == n_in - 1))
        with m.If(pix_take):
            m.d.sync += pix_count.eq(pix_count + 1)
            with m.If(self.pixels.payload > x_max):
                m.d.sync += pix_bad.eq(1)
            with m.If(image_done):
                m.d.sync += [pix_count.eq(0), pix_bad.eq(0)]
                with m.If(pix_bad | (self.pixels.payload > x_max)):
                    m.d.sync += bad_pixel.eq(1)

        # ---- spike buffers (ping-pong FIFOs) -------------------------------------------------
        buffers = [SyncFIFOBuffered(width=entry_bits, depth=depth)
                   for depth in spike_buffer_depths(net)]
        for b, fifo in enumerate(buffers):
            m.submodules[f"spike_buffer{b}"] = fifo

        # ---- encoder: slot (t, j), j == n_in is the marker slot --------------------------------
        # Slot issue reads the pixel (and the rate encoder's state); stage 1 registers what the
        # block RAMs return, so their clock-to-output delay never meets the adder; stage 2
        # encodes, writes the state back and writes the spike buffer.
        enc_t = Signal(range(T + 1))
        enc_j = Signal(range(n_in + 1))
        s1_valid, s2_valid = Signal(), Signal()
        s1_t, s2_t = Signal(range(T + 1)), Signal(range(T + 1))
        s1_j, s2_j = Signal(range(n_in + 1)), Signal(range(n_in + 1))
        s2_x = Signal(unsigned(pixel_bits))
        enc_spike = Signal()
        encoding = phase == _Phase.ENCODE
        m.d.comb += [pix_rd.addr.eq(enc_j), pix_rd.en.eq(encoding)]
        m.d.sync += [s1_valid.eq(encoding), s1_t.eq(enc_t), s1_j.eq(enc_j),
                     s2_valid.eq(s1_valid), s2_t.eq(s1_t), s2_j.eq(s1_j), s2_x.eq(pix_rd.data)]
        s2_marker = s2_j == n_in
        if net.encoder.kind is EncoderKind.RATE:
            m.submodules.encoder_mem = enc_mem = Memory(
                shape=unsigned(pixel_bits + 1), depth=n_in, init=[])
            v_wr = enc_mem.write_port()
            # transparent: with one input, slot (t + 1, 0) reads as slot (t, 0) writes back
            v_rd = enc_mem.read_port(transparent_for=(v_wr,))
            s2_v = Signal(unsigned(pixel_bits + 1))
            m.d.sync += s2_v.eq(v_rd.data)
            v_prev = Mux(s2_t == 0, x_max // 2, s2_v)
            v_sum = Signal(unsigned(pixel_bits + 2))
            m.d.comb += [
                v_rd.addr.eq(enc_j), v_rd.en.eq(encoding),
                v_sum.eq(v_prev + s2_x),
                enc_spike.eq(v_sum >= x_max),
                v_wr.addr.eq(s2_j), v_wr.en.eq(s2_valid & ~s2_marker),
                v_wr.data.eq(Mux(enc_spike, v_sum - x_max, v_sum)),
            ]
        else:  # radix: plane t carries bit t + pixel_bits - T of the pixel (docs/contract.md)
            lead = max(0, T - pixel_bits)  # leading zero planes when T > pixel_bits
            drop = max(0, pixel_bits - T)  # least significant bits dropped when T < pixel_bits
            planes = Cat(Const(0, lead), s2_x, Const(0, T + 1))
            m.d.comb += enc_spike.eq(planes.bit_select(s2_t + drop, 1))
        enc_write = Signal()
        enc_payload = Signal(spike_shape)
        m.d.comb += [
            enc_write.eq(s2_valid & (s2_marker | enc_spike)),
            enc_payload.addr.eq(Mux(s2_marker, 0, s2_j)),
            enc_payload.eot.eq(s2_marker),
        ]
        with m.If(encoding):
            with m.If(enc_j == n_in):
                m.d.sync += [enc_j.eq(0), enc_t.eq(enc_t + 1)]
            with m.Else():
                m.d.sync += enc_j.eq(enc_j + 1)

        # ---- layer engines between the buffers --------------------------------------------------
        running = Signal(L)
        for k in range(L):
            m.d.comb += running[k].eq((phase == _Phase.RUN) & (layer_k == k))
        w_en = [enc_write if b == 0 else Const(0) for b in range(len(buffers))]
        w_data = [pack(enc_payload) if b == 0 else Const(0, entry_bits)
                  for b in range(len(buffers))]
        r_en = [Const(0) for _ in buffers]
        for k, engine in enumerate(self._engines):
            source = buffers[k % 2]
            m.d.comb += [
                engine.inputs.valid.eq(source.r_rdy & running[k]),
                engine.inputs.payload.addr.eq(source.r_data[:entry_bits - 1]),
                engine.inputs.payload.eot.eq(source.r_data[entry_bits - 1]),
                engine.start.eq((phase == _Phase.START) & (layer_k == k)),
            ]
            r_en[k % 2] = r_en[k % 2] | (engine.inputs.ready & running[k])
            if k < L - 1:
                sink = (k + 1) % 2
                m.d.comb += engine.outputs.ready.eq(buffers[sink].w_rdy)
                w_en[sink] = w_en[sink] | (engine.outputs.valid & running[k])
                w_data[sink] = Mux(running[k], pack(engine.outputs.payload), w_data[sink])
            else:
                m.d.comb += engine.outputs.ready.eq(1)
        for b, fifo in enumerate(buffers):
            m.d.comb += [fifo.w_en.eq(w_en[b]), fifo.w_data.eq(w_data[b]), fifo.r_en.eq(r_en[b])]

        # ---- readout: scores of the last layer -------------------------------------------------
        final = self._engines[-1]
        # Scores only as wide as they can get: a count <= T, a radix value < 2**T, or a membrane.
        score_bits = last.v_bits if not last.fires else T + 2
        scores = [Signal(signed(score_bits), name=f"score{i}") for i in range(n_out)]
        out_t = Signal(range(T + 1))
        clear_scores = Signal()             # registered: the scores clear in ENCODE's first cycle
        # The last engine's output beats are registered before they update the scores: it takes
        # the spike-address encoder off the score adders' path, and the last beat (the final
        # marker) still lands in the engine's `done` cycle, before READOUT starts.
        beat_valid = Signal()
        beat = Signal(spike_shape)
        m.d.sync += [beat_valid.eq(final.outputs.valid & running[L - 1]),
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
            beat = final.membranes
            P, G = self._lanes, final.groups
            with m.If(beat.valid & (beat.payload.timestep == T - 1) & running[L - 1]):
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
        draining = Signal()
        m.d.sync += clear_scores.eq(0)
        with m.If((phase != _Phase.LOAD) & (phase != _Phase.READOUT)):
            m.d.sync += cycles.eq(cycles + 1)
        with m.Switch(phase):
            with m.Case(_Phase.LOAD):
                with m.If(image_done & ~pix_bad & (self.pixels.payload <= x_max)):
                    m.d.sync += [phase.eq(_Phase.ENCODE), enc_t.eq(0), enc_j.eq(0),
                                 cycles.eq(0), clear_scores.eq(1)]
            with m.Case(_Phase.ENCODE):
                with m.If((enc_t == T - 1) & (enc_j == n_in)):
                    m.d.sync += [phase.eq(_Phase.DRAIN), draining.eq(1)]
            with m.Case(_Phase.DRAIN):  # two cycles: the encoder's two stages empty
                m.d.sync += draining.eq(0)
                with m.If(~draining):
                    m.d.sync += [phase.eq(_Phase.START), layer_k.eq(0)]
            with m.Case(_Phase.START):
                m.d.sync += phase.eq(_Phase.RUN)
            with m.Case(_Phase.RUN):
                with m.If(select([e.done for e in self._engines], layer_k)):
                    with m.If(layer_k == L - 1):
                        m.d.sync += [phase.eq(_Phase.READOUT), out_index.eq(0)]
                    with m.Else():
                        m.d.sync += [phase.eq(_Phase.START), layer_k.eq(layer_k + 1)]
            with m.Case(_Phase.READOUT):
                with m.If(self.results.valid & self.results.ready & is_prediction):
                    m.d.sync += phase.eq(_Phase.LOAD)

        # ---- registers: the spec's global block and one per-layer block per engine ------------
        spec = self._spec
        bus = self.bus
        block = bus.addr[spec.offset_bits:]
        offset = bus.addr[:spec.offset_bits]
        status_reg = spec.global_reg("STATUS")
        is_status = (block == 0) & (offset == status_reg.offset)
        busy_write = Signal()
        read_block = Signal(spec.block_bits)
        global_r_data = Signal(32)
        writing_while_busy = bus.w_en & busy & ~is_status
        with m.If(writing_while_busy):
            m.d.sync += busy_write.eq(1)
        bad_address = Signal()
        m.d.comb += bad_address.eq(Cat(e.bad_addr for e in self._engines).any())
        status_bits = {"bad_pixel": bad_pixel, "bad_address": bad_address,
                       "busy_write": busy_write}
        status = field_word(status_reg, **status_bits)
        with m.If(bus.w_en & is_status):
            # write 1 to clear; bad_address is the engines' flag, which clears on their start
            for name in ("bad_pixel", "busy_write"):
                with m.If(bus.w_data[status_reg.field(name).bits].any()):
                    m.d.sync += status_bits[name].eq(0)
        for k, engine in enumerate(self._engines):
            selected = block == spec.layer_block(k)
            m.d.comb += [
                engine.cfg.addr.eq(offset), engine.cfg.w_data.eq(bus.w_data),
                engine.cfg.w_en.eq(bus.w_en & selected & ~busy),
                engine.cfg.r_en.eq(bus.r_en & selected),
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
        r_data = global_r_data
        for k, engine in enumerate(self._engines):
            r_data = Mux(read_block == spec.layer_block(k), engine.cfg.r_data, r_data)
        m.d.comb += bus.r_data.eq(r_data)

        # ---- taps ----------------------------------------------------------------------------
        if self._taps:
            m.d.comb += [self.input_spikes.valid.eq(enc_write),
                         self.input_spikes.payload.eq(enc_payload)]
            for k, engine in enumerate(self._engines):
                spikes_tap = getattr(self, f"layer{k}_spikes")
                membranes_tap = getattr(self, f"layer{k}_membranes")
                m.d.comb += [
                    spikes_tap.valid.eq(engine.outputs.valid & engine.outputs.ready & running[k]),
                    spikes_tap.payload.eq(engine.outputs.payload),
                    membranes_tap.valid.eq(engine.membranes.valid),
                    membranes_tap.payload.eq(engine.membranes.payload),
                ]
        return m

"""The layer program of the shared core: every layer's run-time registers and their decoder.

:class:`LayerProgram` holds, for each layer ``k`` of the network the core runs, the registers of
the spec's per-layer block (``docs/host-interface.md``): ``LEAK_SHIFT``, ``V_INIT``, ``FIRE``,
``THETA[t]``, the weight-loading pair ``W_ADDR``/``W_DATA``, and the read-only counters and
status. Their reset values are the network's (the manifest's); the host reads and rewrites
them between inferences, and a value takes effect at the next one. The core asks the program
for the values of the layer its fire unit is closing (``fire_layer``, ``fire_step``).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from spikeforge.hw.layer import ConfigSignature, field_word, select
from spikeforge.hw.neuron import FireMode
from spikeforge.sw.interface import SPEC, RegisterMap

__all__ = ["ProgramBusSignature", "FireRegistersSignature", "LayerProgram", "chunks_per_word"]


def chunks_per_word(word_bits: int) -> int:
    """32-bit ``W_DATA`` chunks that make one weight word of ``word_bits`` bits."""
    return -(-word_bits // 32)


class ProgramBusSignature(wiring.Signature):
    """Register access to the program, as the host drives it: ``layer`` picks the per-layer
    block, ``addr`` the word in it; ``w_en`` writes ``w_data`` at the next edge, ``r_en`` makes
    ``r_data`` hold the word in the following cycle."""

    def __init__(self, layers: int, offset_bits: int = SPEC.offset_bits):
        # the layer engine's register port (one block) and which layer's block it reaches
        super().__init__({"layer": Out(range(max(2, layers))),
                          **ConfigSignature(offset_bits).members})


class FireRegistersSignature(wiring.Signature):
    """The fire unit's view of the program: it drives the ``layer`` and ``step`` it is closing
    and gets that layer's values, registered (one cycle later)."""

    def __init__(self, layers: int, timesteps: int, v_bits: int):
        super().__init__({
            "layer": In(range(max(2, layers))),
            "step": In(range(max(2, timesteps))),
            "theta": Out(signed(v_bits)),
            "leak_shift": Out(range(v_bits + 1)),
            "v_init": Out(signed(v_bits)),
            "fire_mode": Out(FireMode),
            "fires": Out(1),
            "greater": Out(1),
            "zero_reset": Out(1),
        })


class LayerProgram(wiring.Component):
    """Run-time registers of ``len(layers)`` layers, one per-layer block of ``spec`` each.

    Parameters
    ----------
    layers : sequence of spikeforge.sw.golden.DenseLayer
        Reset values (theta per step, leak shift, v_init, fire mode, fires, compare, reset).
    v_bits : int
        Width of the thresholds and ``v_init`` (the core's membrane width).
    weight_words : sequence of int
        Words of each layer's part of the weight store (``W_INFO.words``).
    word_bits : int
        Bits of one weight word; the ``W_DATA`` chunks of a word are ``ceil(word_bits / 32)``.
    in_ram : bool
        The weight store is RAM the host loads (``W_ADDR``/``W_DATA``, ``W_INFO.in_ram``).
    descriptors : sequence of dict
        Per layer, the words of its read-only descriptor registers by name
        (:meth:`spikeforge.hw.core_layout.CoreLayout.descriptors`).

    Members
    -------
    bus : In(ProgramBusSignature)
        Register access. Writes while ``busy`` are ignored and set the layer's ``busy_write``.
    busy, clear : In(1)
        The core is running; ``clear`` (the start strobe) clears every status flag.
    fire : Out(FireRegistersSignature)
        The fire unit's view: it drives ``layer`` and ``step``; theta, leak_shift, v_init,
        fire_mode, fires, greater and zero_reset are that layer's values, registered (they
        follow ``layer`` and ``step`` one cycle later).
    synops, spikes, cycles : In, one 32-bit value per layer
        Counters, readable as ``SYNOPS``, ``SPIKES``, ``CYCLES``.
    bad_addr : In(len(layers))
        Per layer: a strobe that sets its sticky ``bad_addr`` flag.
    busy_write : Out(len(layers))
        Per layer: its sticky ``busy_write`` flag.
    store_en, store_addr, store_word : Out
        A completed ``W_DATA`` word for the weight store: ``store_addr`` counts from the layer's
        first word (``weight_base``), written in the cycle ``store_en`` is high.
    """

    def __init__(self, layers, *, v_bits: int, weight_words, word_bits: int, in_ram: bool,
                 descriptors, spec: RegisterMap = SPEC):
        self._layers = list(layers)
        self._descriptors = [dict(d) for d in descriptors]
        if len(self._descriptors) != len(self._layers):
            raise ValueError(f"{len(self._descriptors)} descriptors for "
                             f"{len(self._layers)} layers")
        self._v_bits = v_bits
        self._words = [int(w) for w in weight_words]
        self._word_bits = word_bits
        self._in_ram = bool(in_ram)
        self._spec = spec
        L = len(self._layers)
        self._timesteps = self._layers[0].timesteps
        self.weight_base = [sum(self._words[:k]) for k in range(L)]
        total = sum(self._words)
        super().__init__({
            "bus": In(ProgramBusSignature(L, spec.offset_bits)),
            "busy": In(1),
            "clear": In(1),
            "fire": Out(FireRegistersSignature(L, self._timesteps, v_bits)),
            **{f"synops{k}": In(unsigned(32)) for k in range(L)},
            **{f"spikes{k}": In(unsigned(32)) for k in range(L)},
            **{f"cycles{k}": In(unsigned(32)) for k in range(L)},
            "bad_addr": In(L),
            "busy_write": Out(L),
            "store_en": Out(1),
            "store_addr": Out(range(max(2, total))),
            "store_word": Out(unsigned(word_bits)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        spec, at = self._spec, self._spec.layer_offset
        L, T, VB = len(self._layers), self._timesteps, self._v_bits
        K = chunks_per_word(self._word_bits)
        bus = self.bus

        regs = []
        for k, layer in enumerate(self._layers):
            regs.append({
                "theta": [Signal(signed(VB), init=int(v), name=f"l{k}_theta{t}")
                          for t, v in enumerate(layer.theta.tolist())],
                "leak_shift": Signal(range(VB + 1), init=layer.leak_shift, name=f"l{k}_leak"),
                "v_init": Signal(signed(VB), init=layer.v_init, name=f"l{k}_v_init"),
                "radix": Signal(FireMode, init=FireMode[layer.fire_mode.name],
                                name=f"l{k}_radix"),
                "fires": Signal(init=layer.fires, name=f"l{k}_fires"),
                "greater": Signal(init=layer.compare.value == ">", name=f"l{k}_greater"),
                "zero_reset": Signal(init=layer.reset.value == "zero", name=f"l{k}_zero_reset"),
                "bad_addr": Signal(name=f"l{k}_bad_addr"),
                "busy_write": Signal(name=f"l{k}_busy_write"),
                "load_overflow": Signal(name=f"l{k}_load_overflow"),
            })

        # ---- the fire unit's view: the values of layer `fire.layer` ----------------------------
        fire, k_sel = self.fire, self.fire.layer
        m.d.sync += fire.theta.eq(select(
            [select(r["theta"], fire.step) for r in regs], k_sel))
        # registered like theta: the layer changes only between passes, several cycles before
        # the next pass's first group reaches stage L
        m.d.sync += [
            fire.leak_shift.eq(select([r["leak_shift"] for r in regs], k_sel)),
            fire.v_init.eq(select([r["v_init"] for r in regs], k_sel)),
            fire.fire_mode.eq(select([r["radix"] for r in regs], k_sel)),
            fire.fires.eq(select([r["fires"] for r in regs], k_sel)),
            fire.greater.eq(select([r["greater"] for r in regs], k_sel)),
            fire.zero_reset.eq(select([r["zero_reset"] for r in regs], k_sel)),
        ]

        # ---- sticky flags ----------------------------------------------------------------------
        m.d.comb += self.busy_write.eq(Cat(r["busy_write"] for r in regs))
        for k, r in enumerate(regs):
            with m.If(self.bad_addr[k]):
                m.d.sync += r["bad_addr"].eq(1)
        with m.If(self.clear):
            m.d.sync += [r[f].eq(0) for r in regs
                         for f in ("bad_addr", "busy_write", "load_overflow")]

        # ---- weight loading: W_DATA chunks -> one word of the layer's part of the store -------
        # Each layer has its own W_ADDR; the chunks of the word being assembled belong to the
        # layer that received the last W_ADDR or W_DATA write (`load_layer`).
        load_layer = Signal(range(max(2, L)))
        load_addr = [Signal(range(words + 1), name=f"l{k}_w_addr")
                     for k, words in enumerate(self._words)]
        chunk = Signal(range(max(2, K)))
        held = Signal(32 * K)
        m.d.sync += self.store_en.eq(0)

        # ---- register reads --------------------------------------------------------------------
        status_reg, fire_reg, w_info_reg = (spec.layer_reg(n) for n in
                                            ("STATUS", "FIRE", "W_INFO"))
        fire_bits = {f.name: f.bits for f in fire_reg.fields}
        read = [Signal(32, name=f"l{k}_read") for k in range(L)]
        for k, r in enumerate(regs):
            fire_state = {"radix": r["radix"].as_value(), "fires": r["fires"],
                          "greater": r["greater"], "zero_reset": r["zero_reset"]}
            status = {n: r[n] for n in ("bad_addr", "busy_write", "load_overflow")}
            w_info = w_info_reg.pack(in_ram=int(self._in_ram), chunks_per_word=K,
                                     words=self._words[k])
            values = {
                at("LEAK_SHIFT"): r["leak_shift"], at("V_INIT"): r["v_init"].as_signed(),
                at("SYNOPS"): getattr(self, f"synops{k}"),
                at("SPIKES"): getattr(self, f"spikes{k}"),
                at("CYCLES"): getattr(self, f"cycles{k}"),
                at("FIRE"): field_word(fire_reg, **fire_state),
                at("STATUS"): field_word(status_reg, **status),
                at("W_ADDR"): load_addr[k],
                at("W_INFO"): Const(w_info, 32),
                **{at("THETA", t): r["theta"][t] for t in range(T)},
            }
            # a Mux chain (continuous assigns, defined from reset on in every simulator), not
            # a Switch (an `always @*` case block that Icarus leaves X until an input changes)
            word = Const(0, 32)
            for offset, value in values.items():
                word = Mux(bus.addr == offset, value, word)
            m.d.comb += read[k].eq(word)
        # The descriptors (constants) come from one table of every layer's words, indexed by
        # the layer and the register: one multiplexer level on the read path, not one per
        # register and layer (about 30 logic cells less on the iCE40). A constant table, not a
        # Memory: with this read path the demo's ULX3S build passes yosys's ABC9 pass, which
        # failed an assertion both with a small ROM Memory and with a constant per register
        # (docs/synthesis.md).
        names = list(self._descriptors[0]) if self._descriptors else []
        slots = 1 << max(1, (len(names) - 1).bit_length())
        # every value of bus.layer has its words (zeros past the last layer)
        blocks = 1 << len(bus.layer)
        words = [d.get(name, 0) for d in self._descriptors
                 for name in names + [None] * (slots - len(names))]
        words += [0] * ((blocks - len(self._descriptors)) * slots)
        which = Const(0, max(1, (slots - 1).bit_length()))
        is_descriptor = Const(0, 1)
        for i, name in enumerate(names):
            hit = bus.addr == at(name)
            which = Mux(hit, i, which)
            is_descriptor = is_descriptor | hit
        descriptor_word = select([Const(w, 32) for w in words], Cat(which, bus.layer))
        with m.If(bus.r_en):
            m.d.sync += bus.r_data.eq(Mux(is_descriptor, descriptor_word,
                                          select(read, bus.layer)))

        # ---- register writes -------------------------------------------------------------------
        for k, r in enumerate(regs):
            with m.If(bus.w_en & (bus.layer == k)):
                with m.If(bus.addr == at("STATUS")):
                    for f in status_reg.fields:  # write 1 to clear
                        with m.If(bus.w_data[f.bits].any()):
                            m.d.sync += r[f.name].eq(0)
                with m.Elif(self.busy):
                    m.d.sync += r["busy_write"].eq(1)
                with m.Else():
                    with m.Switch(bus.addr):
                        with m.Case(at("LEAK_SHIFT")):
                            m.d.sync += r["leak_shift"].eq(Mux(bus.w_data > VB, VB, bus.w_data))
                        with m.Case(at("V_INIT")):
                            m.d.sync += r["v_init"].eq(bus.w_data)
                        with m.Case(at("FIRE")):
                            m.d.sync += [r["radix"].eq(bus.w_data[fire_bits["radix"]]),
                                         r["fires"].eq(bus.w_data[fire_bits["fires"]]),
                                         r["greater"].eq(bus.w_data[fire_bits["greater"]]),
                                         r["zero_reset"].eq(bus.w_data[fire_bits["zero_reset"]])]
                        for t in range(T):
                            with m.Case(at("THETA", t)):
                                m.d.sync += r["theta"][t].eq(bus.w_data)
                        if self._in_ram:
                            words = self._words[k]
                            with m.Case(at("W_ADDR")):
                                m.d.sync += [load_layer.eq(k), chunk.eq(0),
                                             load_addr[k].eq(Mux(bus.w_data > words, words,
                                                                 bus.w_data))]
                            with m.Case(at("W_DATA")):
                                self._w_data(m, k, r, words, load_layer, load_addr[k], chunk, held)
        return m

    def _w_data(self, m, k, r, words, load_layer, load_addr, chunk, held):
        """One ``W_DATA`` chunk for layer ``k``: the ``K``-th completes the word at its
        ``W_ADDR`` (a chunk after another layer's restarts the word)."""
        K = chunks_per_word(self._word_bits)
        w_data = self.bus.w_data
        part = Mux(load_layer == k, chunk, 0)
        m.d.sync += [load_layer.eq(k), held.word_select(part, 32).eq(w_data)]
        with m.If(part == K - 1):
            m.d.sync += chunk.eq(0)
            with m.If(load_addr < words):
                word = Cat(held[:32 * (K - 1)], w_data) if K > 1 else w_data
                m.d.sync += [load_addr.eq(load_addr + 1), self.store_en.eq(1),
                             self.store_addr.eq(self.weight_base[k] + load_addr),
                             self.store_word.eq(word[:self._word_bits])]
            with m.Else():
                m.d.sync += r["load_overflow"].eq(1)
        with m.Else():
            m.d.sync += chunk.eq(part + 1)

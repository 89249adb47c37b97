"""The neuron core array and the layer engine that runs one dense layer over ``T`` timesteps.

:class:`LayerEngine` takes a stream of input spike addresses, one timestep after another, and
returns the layer's output spike addresses in the same stream format, so engines chain through
spike buffers into a network. ``docs/microarchitecture.md`` describes the lanes, the pipeline, the
memories, the stream protocol and the cycle formula that :mod:`spikeforge.sim.cycle_model`
implements. The register decoder is generated from :mod:`spikeforge.sw.interface`.
"""

from __future__ import annotations

import enum as py_enum
from types import SimpleNamespace

import torch
from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.hw.neuron import (
    FireMode,
    NeuronFire,
    NeuronIntegrate,
    NeuronLeak,
    check_width,
    drive_bits,
    refused_is_not_unused,
    signed_bits_for,
)
from spikeforge.hw.rom import pack_weights
from spikeforge.hw.spram import WeightStore
from spikeforge.sw.interface import SPEC, Register, RegisterMap

__all__ = [
    "spike_layout",
    "membrane_layout",
    "ConfigSignature",
    "LoadSignature",
    "Reg",
    "MAX_TIMESTEPS",
    "field_word",
    "LayerEngine",
    "current_bits",
    "WeightMemory",
    "weight_chunks",
    "select",
]

#: Largest timestep count: the entries of the spec's ``THETA`` array.
MAX_TIMESTEPS = SPEC.max_timesteps


def spike_layout(addr_bits: int = 16) -> data.StructLayout:
    """Payload of every spike stream: a spike address or an end-of-timestep marker.

    ``eot = 0``: a spike of neuron (or input) ``addr``. ``eot = 1``: the current timestep has no
    more spikes (``addr`` is ignored and should be 0). A timestep is zero or more spikes followed
    by exactly one marker, so an empty timestep is a single marker.
    """
    return data.StructLayout({"addr": unsigned(addr_bits), "eot": unsigned(1)})


def membrane_layout(lanes: int, v_bits: int, groups: int, timesteps: int) -> data.StructLayout:
    """Payload of the membrane port: the ``lanes`` membranes of one group at the end of a step."""
    return data.StructLayout({
        "timestep": unsigned(max(1, ceil_log2(timesteps))),
        "group": unsigned(max(1, ceil_log2(groups))),
        "v": data.ArrayLayout(signed(v_bits), lanes),
    })


class ConfigSignature(wiring.Signature):
    """Register access, as the host drives it (the engine takes the flipped view).

    ``addr`` selects a word of the per-layer block (:class:`Reg`), ``offset_bits`` wide (the
    spec's :attr:`~spikeforge.sw.interface.RegisterMap.offset_bits`); ``w_en`` writes
    ``w_data`` at the next clock edge; ``r_en`` makes ``r_data`` hold the word in the following
    cycle.
    """

    def __init__(self, offset_bits: int = SPEC.offset_bits):
        super().__init__({
            "addr": Out(unsigned(offset_bits)),
            "w_data": Out(unsigned(32)),
            "w_en": Out(1),
            "r_en": Out(1),
            "r_data": In(unsigned(32)),
        })


class LoadSignature(wiring.Signature):
    """A memory write port as the host drives it: ``en`` writes ``data`` at word ``addr``."""

    def __init__(self, addr_bits: int, data_bits: int):
        super().__init__({
            "addr": Out(unsigned(addr_bits)),
            "data": Out(unsigned(data_bits)),
            "en": Out(1),
        })


#: Offsets of the engine's registers in the per-layer block (docs/host-interface.md), derived
#: from :data:`spikeforge.sw.interface.SPEC`: ``Reg.THETA + t`` is the threshold of step ``t``.
Reg = py_enum.IntEnum("Reg", {r.name: r.offset for r in SPEC.layer_registers},
                      module=__name__)


def field_word(register: Register, **values) -> Value:
    """The 32-bit word of ``register`` with each named bit field driven by ``values[name]``
    (an Amaranth value or an int, truncated to the field's width); other bits are 0."""
    parts, at = [], 0
    for f in sorted(register.fields, key=lambda f: f.offset):
        if f.name not in values:
            continue
        parts += [Const(0, f.offset - at), Value.cast(values.pop(f.name))[:f.width]]
        at = f.offset + f.width
    if values:
        raise KeyError(f"Register {register.name} has no field {sorted(values)[0]!r}")
    return Cat(*parts, Const(0, 32 - at))


class WeightMemory(py_enum.Enum):
    """Where an engine keeps its weights."""

    ROM = "rom"        #: block RAM initialised from the bitstream
    SPRAM = "spram"    #: iCE40 UltraPlus SPRAM, loaded after configuration through W_DATA


def weight_chunks(weight, lanes: int, w_bits: int) -> list[int]:
    """The 32-bit words a host writes to ``W_DATA`` to load ``weight`` (``int[fan_out, fan_in]``).

    Each weight word of ``docs/rom-layout.md`` (``lanes * w_bits`` bits) is split into
    ``ceil(lanes * w_bits / 32)`` chunks, lowest bits first, words in address order.
    """
    return [(word >> (32 * i)) & 0xFFFF_FFFF
            for word in pack_weights(weight, lanes, w_bits)
            for i in range(_chunks_per_word(lanes, w_bits))]


def select(values, index) -> Value:
    """``values[index]`` as a balanced tree of 2-way ``Mux``es on the bits of ``index``.

    The same logic as ``Array(values)[index]`` for an index in range, but Amaranth writes an
    ``Array`` read as a Verilog ``always @*`` case block, which Icarus Verilog evaluates only
    when one of its inputs changes: a register loaded from it right after reset, while the index
    and the values still hold their initial values, stays X (docs/microarchitecture.md,
    "Verification"). Each ``Mux`` becomes a continuous ``assign``, defined from time 0. An index
    past the end reads the last value.
    """
    values = [Value.cast(v) for v in values]
    if not values:
        raise ValueError("select needs at least one value")
    index = Value.cast(index)
    level, bit = values, 0
    while len(level) > 1:
        level = [Mux(index[bit], level[i + 1] if i + 1 < len(level) else level[i], level[i])
                 if bit < len(index) else level[i]
                 for i in range(0, len(level), 2)]
        bit += 1
    return level[0]


def _chunks_per_word(lanes: int, w_bits: int) -> int:
    """32-bit ``W_DATA`` chunks that make one weight word of ``lanes * w_bits`` bits."""
    return -(-lanes * w_bits // 32)


#: Most lanes (parallel neuron datapaths) a layer engine takes.
MAX_LANES = 64


def check_lanes(lanes) -> int:
    """``lanes`` if a layer engine takes that many lanes (1 .. :data:`MAX_LANES`), else a
    ``ValueError``/``TypeError`` naming it. Callers check before building anything."""
    return check_width("Lane count", lanes, 1, MAX_LANES)


def current_bits(fan_in: int, w_bits: int) -> int:
    """Width of the exact per-timestep synaptic current of a neuron with ``fan_in`` inputs."""
    return signed_bits_for(-fan_in << (w_bits - 1), fan_in * ((1 << (w_bits - 1)) - 1))


#: Groups the fire unit's serializer can hold back while it emits a group's spikes: the depth
#: of stages R .. F, so that S never waits for a group that R held back (docs/microarchitecture.md).
_S_QUEUE = 4


class _State(enum.Enum, shape=unsigned(2)):
    IDLE = 0
    CLEAR = 1
    RUN = 2


class LayerEngine(wiring.Component):
    """One dense layer of ``fan_out`` neurons on ``lanes`` parallel neuron datapaths.

    Neuron ``i`` lives in lane ``i % lanes`` at group ``i // lanes``; the weights are one ROM in
    the layout of ``docs/rom-layout.md``. An inference starts with a ``start`` strobe and consumes
    exactly ``timesteps`` end-of-timestep markers from ``inputs``; it emits each timestep's output
    spikes on ``outputs`` (ascending addresses) followed by one marker.

    Parameters
    ----------
    fan_in, fan_out : int
        Inputs and neurons, 1 .. 2**addr_bits.
    timesteps : int
        ``T``, 1 .. :data:`MAX_TIMESTEPS` (the entries of the spec's ``THETA`` array).
    lanes : int
        ``P``, parallel datapaths, 1 .. 64.
    w_bits, v_bits : int
        Weight width 2..8 and membrane width 2..32 (signed).
    weight : int[fan_out, fan_in] or None
        Initial contents of the weight ROM (zeros if None).
    bias : int[fan_out] or None
        Initial contents of the bias ROM (zeros if None).
    theta : sequence of int, or None
        Reset values of the ``T`` threshold registers (all 1 if None).
    leak_shift, v_init, fire_mode, fires :
        Reset values of the corresponding registers.
    addr_bits : int
        Width of the spike address in both streams, 1..32.
    loadable : bool
        Add ``weight_load`` and ``bias_load`` write ports to the weight and bias memories (for
        testbenches that run many layers on one build). Without them both memories are ROMs.
    weight_memory : WeightMemory or str
        ``"rom"``: the weights are the memory's initial contents. ``"spram"``: the weights live
        in a :class:`spikeforge.hw.spram.WeightStore` on SPRAM, which starts empty; the host
        writes them word by word through ``W_ADDR``/``W_DATA`` (:func:`weight_chunks`) before
        the first inference. Not combinable with ``loadable``.
    spec : spikeforge.sw.interface.RegisterMap
        The register map whose per-layer block the decoder implements (default: the spec).

    Members
    -------
    inputs : In(stream.Signature(spike_layout(addr_bits)))
        Input spikes. ``ready`` does not depend on ``valid`` or ``payload``.
    outputs : Out(stream.Signature(spike_layout(addr_bits)))
        Output spikes.
    membranes : Out(wiring.Signature({"valid": Out(1), "payload": Out(membrane_layout(...))}))
        One beat per group and timestep with the ``lanes`` membranes at the end of the
        timestep (lanes past ``fan_out`` hold don't-care values); a stream without ``ready``
        (no backpressure): whoever listens must take every beat.
    start : In(1)
        Strobe: begin an inference (aborting one in flight). Counters and status clear.
    busy : Out(1)
        High from the cycle after ``start`` until the last output marker is transferred.
    done : Out(1)
        High for the one cycle after an inference completes.
    cfg : In(ConfigSignature(spec.offset_bits))
        Register access (the spec's per-layer block). Writes while ``busy`` are ignored and set
        ``busy_write``.
    cycles, synops, spikes : Out(unsigned(32))
        Counters of the current or last inference.
    bad_addr : Out(1)
        Sticky: an input spike with ``addr >= fan_in`` was dropped.
    busy_write : Out(1)
        Sticky: a register write arrived while busy and was ignored.
    weight_load, bias_load : In(LoadSignature(...))
        Only when ``loadable``.
    """

    @refused_is_not_unused
    def __init__(self, *, fan_in: int, fan_out: int, timesteps: int, lanes: int,
                 w_bits: int = 8, v_bits: int = 16, weight=None, bias=None, theta=None,
                 leak_shift: int = 0, v_init: int = 0, fire_mode=FireMode.THRESHOLD,
                 fires: bool = True, compare: str = ">=", reset: str = "subtract",
                 addr_bits: int = 16, loadable: bool = False,
                 weight_memory: WeightMemory | str = WeightMemory.ROM,
                 spec: RegisterMap = SPEC):
        if not isinstance(spec, RegisterMap):
            raise TypeError(f"spec must be a spikeforge.sw.interface.RegisterMap, not {spec!r}")
        self._spec = spec
        check_width("Address width addr_bits", addr_bits, 1, 32)
        check_width("Fan-in", fan_in, 1, 1 << addr_bits)
        check_width("Fan-out", fan_out, 1, 1 << addr_bits)
        check_width("Timestep count", timesteps, 1, spec.max_timesteps)
        check_lanes(lanes)
        check_width("Weight width w_bits", w_bits, 2, 8)
        check_width("Membrane width v_bits", v_bits, 2, 32)
        v_low, v_high = -(1 << (v_bits - 1)), (1 << (v_bits - 1)) - 1
        check_width("leak_shift", leak_shift, 0, v_bits)
        check_width("v_init", v_init, v_low, v_high)
        fire_mode = FireMode(fire_mode) if not isinstance(fire_mode, str) else \
            FireMode[fire_mode.upper()]
        if not isinstance(fires, bool):
            raise TypeError(f"fires must be a bool, not {fires!r}")
        compare, reset = getattr(compare, "value", compare), getattr(reset, "value", reset)
        if compare not in (">=", ">"):
            raise ValueError(f"compare must be '>=' or '>', not {compare!r}")
        if reset not in ("subtract", "zero"):
            raise ValueError(f"reset must be 'subtract' or 'zero', not {reset!r}")
        if theta is None:
            theta = [1] * timesteps
        theta = [int(x) for x in torch.as_tensor(theta).tolist()]
        if len(theta) != timesteps:
            raise ValueError(f"theta must have {timesteps} entries (one per timestep), "
                             f"not {len(theta)}")
        for t, value in enumerate(theta):
            check_width(f"theta[{t}]", value, v_low, v_high)

        self._fan_in, self._fan_out, self._timesteps = fan_in, fan_out, timesteps
        self._lanes, self._w_bits, self._v_bits = lanes, w_bits, v_bits
        self._addr_bits, self._loadable = addr_bits, bool(loadable)
        self._weight_memory = WeightMemory(weight_memory)
        if loadable and self._weight_memory is not WeightMemory.ROM:
            raise ValueError("loadable=True needs weight_memory='rom' (SPRAM weights are "
                             "loaded through the W_ADDR/W_DATA registers)")
        self._groups = -(-fan_out // lanes)
        self._current_bits = current_bits(fan_in, w_bits)
        self._reset = {"theta": theta, "leak_shift": leak_shift, "v_init": v_init,
                       "fire_mode": fire_mode, "fires": fires, "compare": compare,
                       "reset": reset}

        if weight is None:
            weight = torch.zeros((fan_out, fan_in), dtype=torch.int64)
        weight = torch.as_tensor(weight)
        if tuple(weight.shape) != (fan_out, fan_in):
            raise ValueError(f"weight must have shape ({fan_out}, {fan_in}), "
                             f"not {tuple(weight.shape)}")
        if bias is None:
            bias = torch.zeros(fan_out, dtype=torch.int64)
        bias = torch.as_tensor(bias)
        if tuple(bias.shape) != (fan_out,):
            raise ValueError(f"bias must have shape ({fan_out},), not {tuple(bias.shape)}")
        self._weight_words = pack_weights(weight, lanes, w_bits)
        self._bias_words = pack_bias(bias, lanes, v_bits)

        members = {
            "inputs": In(stream.Signature(spike_layout(addr_bits))),
            "outputs": Out(stream.Signature(spike_layout(addr_bits))),
            "membranes": Out(wiring.Signature({
                "valid": Out(1),
                "payload": Out(membrane_layout(lanes, v_bits, self._groups, timesteps)),
            })),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "cfg": In(ConfigSignature(spec.offset_bits)),
            "cycles": Out(unsigned(32)),
            "synops": Out(unsigned(32)),
            "spikes": Out(unsigned(32)),
            "bad_addr": Out(1),
            "busy_write": Out(1),
        }
        if loadable:
            members["weight_load"] = In(LoadSignature(
                max(1, ceil_log2(fan_in * self._groups)), lanes * w_bits))
            members["bias_load"] = In(LoadSignature(
                max(1, ceil_log2(self._groups)), lanes * v_bits))
        super().__init__(members)

    @classmethod
    def from_layer(cls, layer, lanes: int, **kwargs) -> LayerEngine:
        """An engine for a :class:`spikeforge.sw.golden.DenseLayer`, every reset value taken
        from it."""
        params = dict(fan_in=layer.fan_in, fan_out=layer.fan_out, timesteps=layer.timesteps,
                      lanes=lanes, w_bits=layer.w_bits, v_bits=layer.v_bits,
                      weight=layer.weight, bias=layer.bias, theta=layer.theta,
                      leak_shift=layer.leak_shift, v_init=layer.v_init,
                      fire_mode=FireMode[layer.fire_mode.name], fires=layer.fires,
                      compare=layer.compare.value, reset=layer.reset.value)
        params.update(kwargs)
        return cls(**params)

    fan_in = property(lambda self: self._fan_in)
    fan_out = property(lambda self: self._fan_out)
    timesteps = property(lambda self: self._timesteps)
    lanes = property(lambda self: self._lanes)
    groups = property(lambda self: self._groups)
    w_bits = property(lambda self: self._w_bits)
    v_bits = property(lambda self: self._v_bits)
    addr_bits = property(lambda self: self._addr_bits)
    loadable = property(lambda self: self._loadable)
    weight_memory = property(lambda self: self._weight_memory)
    current_bits = property(lambda self: self._current_bits)
    spec = property(lambda self: self._spec)

    @property
    def parameters(self) -> dict:
        """The elaboration parameters (written into the RTL metadata)."""
        return {
            "fan_in": self._fan_in, "fan_out": self._fan_out, "timesteps": self._timesteps,
            "lanes": self._lanes, "groups": self._groups, "w_bits": self._w_bits,
            "v_bits": self._v_bits, "current_bits": self._current_bits,
            "addr_bits": self._addr_bits, "loadable": self._loadable,
            "weight_memory": self._weight_memory.value,
            "reset": {**self._reset, "fire_mode": self._reset["fire_mode"].name.lower()},
        }

    def elaborate(self, platform) -> Module:
        m = Module()
        P, G, M, N, T = self._lanes, self._groups, self._fan_in, self._fan_out, self._timesteps
        VB, WB, CB = self._v_bits, self._w_bits, self._current_bits
        v_lanes = data.ArrayLayout(signed(VB), P)
        w_lanes = data.ArrayLayout(signed(WB), P)
        c_lanes = data.ArrayLayout(signed(CB), P)
        d_lanes = data.ArrayLayout(signed(drive_bits(VB, CB)), P)

        # ---- memories ------------------------------------------------------------------------
        in_ram = self._weight_memory is WeightMemory.SPRAM
        if in_ram:
            m.submodules.weights = weights = WeightStore(P * WB, M * G, spram=True)
            w_rd = SimpleNamespace(addr=weights.read_addr, en=weights.read_en,
                                   data=weights.read_data)
        else:
            m.submodules.weights = weights = Memory(
                shape=unsigned(P * WB), depth=M * G, init=self._weight_words)
            w_rd = weights.read_port()
        m.submodules.biases = biases = Memory(
            shape=unsigned(P * VB), depth=G, init=self._bias_words)
        m.submodules.vmem = vmem = Memory(shape=unsigned(P * VB), depth=G, init=[])
        b_rd = biases.read_port()
        v_rd = vmem.read_port()
        v_wr = vmem.write_port()
        acc_rd, acc_wr = [], []
        for b in range(2):
            bank = Memory(shape=unsigned(P * CB), depth=G, init=[])
            m.submodules[f"acc{b}"] = bank
            wr = bank.write_port()
            acc_wr.append(wr)
            acc_rd.append(bank.read_port(transparent_for=(wr,)))
        if self._loadable:
            w_wr = weights.write_port()
            b_wr = biases.write_port()
            m.d.comb += [
                w_wr.addr.eq(self.weight_load.addr), w_wr.data.eq(self.weight_load.data),
                w_wr.en.eq(self.weight_load.en & (self.weight_load.addr < M * G)),
                b_wr.addr.eq(self.bias_load.addr), b_wr.data.eq(self.bias_load.data),
                b_wr.en.eq(self.bias_load.en & (self.bias_load.addr < G)),
            ]

        # ---- run-time registers --------------------------------------------------------------
        reset = self._reset
        # a list, read through `select` (never an Array read: see `select`)
        theta = [Signal(signed(VB), init=value, name=f"theta{t}")
                 for t, value in enumerate(reset["theta"])]
        leak_shift = Signal(range(VB + 1), init=reset["leak_shift"])
        v_init = Signal(signed(VB), init=reset["v_init"])
        fire_mode = Signal(FireMode, init=reset["fire_mode"])
        fires = Signal(init=reset["fires"])
        greater = Signal(init=reset["compare"] == ">")
        zero_reset = Signal(init=reset["reset"] == "zero")
        # theta[fu_t], registered: thresholds change only while idle and fu_t only between fire
        # passes, so the copy is always current when stage F uses it.
        theta_now = Signal(signed(VB), init=reset["theta"][0])

        # ---- weight loading (RAM weights): W_DATA chunks -> one word at W_ADDR -----------------
        chunks_per_word = _chunks_per_word(P, WB)
        w_load_addr = Signal(range(M * G + 1))
        w_chunk = Signal(range(chunks_per_word))
        w_held = Signal(32 * chunks_per_word)   # earlier chunks of the word being assembled
        load_overflow = Signal()
        store_en = Signal()                     # a completed word goes to the SPRAM next cycle
        store_addr = Signal(range(M * G))
        store_word = Signal(P * WB)

        # ---- control -------------------------------------------------------------------------
        state = Signal(_State)
        clear_g = Signal(range(G))
        busy = Signal()
        m.d.comb += [busy.eq(state != _State.IDLE), self.busy.eq(busy)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        m.d.sync += self.done.eq(0)

        # ---- input register: the stream's beat lands in a register before the IU decodes it ----
        # (so a block RAM FIFO's read data never feeds the address arithmetic in the same cycle)
        in_t = Signal(range(T + 1))         # markers taken from the stream
        in_valid = Signal()
        in_beat = Signal(spike_layout(self._addr_bits))
        consume = Signal()                  # the IU takes the registered beat this cycle
        m.d.comb += self.inputs.ready.eq((state == _State.RUN) & (in_t < T)
                                         & (~in_valid | consume))
        with m.If(self.inputs.valid & self.inputs.ready):
            m.d.sync += [in_valid.eq(1), in_beat.eq(self.inputs.payload)]
            with m.If(self.inputs.payload.eot):
                m.d.sync += in_t.eq(in_t + 1)
        with m.Elif(consume):
            m.d.sync += in_valid.eq(0)

        # ---- integration unit: one input spike -> G reads -> G * P accumulates ----------------
        iu_t = Signal(range(T + 1))         # markers accepted
        iu_bank = Signal()                  # accumulator bank of the timestep being integrated
        eot_pending = Signal()              # marker accepted, waiting to hand the bank over
        ev_valid = Signal()                 # an event is issuing reads
        ev_addr = Signal(range(M * G))      # weight word j * G + g
        ev_g = Signal(range(G))
        ev_last = ev_g == G - 1
        # W1: the weight word leaves the RAM into `weight_reg`, the accumulator word is read;
        # WB: their sum is written back. (The register keeps the RAM's slow clock-to-out off
        # the adders.)
        w1_valid = Signal()
        w1_bank = Signal()
        w1_g = Signal(range(G))
        weight_reg = Signal(P * WB)
        wb_valid = Signal()
        wb_bank = Signal()
        wb_g = Signal(range(G))

        m.d.comb += consume.eq(in_valid & (state == _State.RUN) & (iu_t < T) & ~eot_pending
                               & (~ev_valid | ev_last))
        m.d.sync += [
            w1_valid.eq(ev_valid), w1_bank.eq(iu_bank), w1_g.eq(ev_g),
            wb_valid.eq(w1_valid), wb_bank.eq(w1_bank), wb_g.eq(w1_g),
        ]
        with m.If(w1_valid):
            m.d.sync += weight_reg.eq(w_rd.data)
        with m.If(ev_valid):
            m.d.sync += [ev_addr.eq(ev_addr + 1), ev_g.eq(ev_g + 1)]
            with m.If(ev_last):
                m.d.sync += ev_valid.eq(0)
        in_addr = in_beat.addr
        with m.If(consume):
            with m.If(in_beat.eot):
                m.d.sync += [eot_pending.eq(1), iu_t.eq(iu_t + 1)]
            with m.Elif(in_addr < M):
                m.d.sync += [
                    ev_valid.eq(1), ev_addr.eq(in_addr * G), ev_g.eq(0),
                    self.synops.eq(self.synops + N),
                ]
            with m.Else():
                m.d.sync += self.bad_addr.eq(1)
        m.d.comb += [w_rd.addr.eq(ev_addr), w_rd.en.eq(ev_valid)]

        # ---- fire unit: walk the groups, close the timestep, serialize spikes ------------------
        # Stages: R reads the memories, L leaks and forms the drive, C sums and clamps, F fires
        # and writes back, S serializes. Every stage carries its group, base address and marker.
        # L, C and F never stall: F hands each group to S or, while S is busy, to a queue of
        # _S_QUEUE entries, and R issues a group only while fewer than _S_QUEUE are on their way
        # (`pending`, a register), so no stall reaches back from S to the memories' read ports.
        fu_busy = Signal()
        fu_bank = Signal()
        fu_t = Signal(range(T))
        m.d.sync += theta_now.eq(select(theta, fu_t))
        fu_g = Signal(range(G + 2))         # next item to read; item G is the marker
        fu_base = Signal(range(G * P + 1))  # fu_g * P

        def stage(name):
            return (Signal(name=f"{name}_valid"), Signal(range(G + 1), name=f"{name}_g"),
                    Signal(range(G * P + 1), name=f"{name}_base"), Signal(name=f"{name}_eot"))

        l_valid, l_g, l_base, l_eot = stage("l")
        c_valid, c_g, c_base, c_eot = stage("c")
        d_valid, d_g, d_base, d_eot = stage("d")
        c_leaked = Signal(v_lanes)          # stage C: leaked membranes ...
        c_drive = Signal(d_lanes)           # ... and bias + current
        d_sat = Signal(v_lanes)             # stage F: saturated membranes
        s_mask = Signal(P)
        s_base = Signal(range(G * P + 1))
        s_eot = Signal()
        pending = Signal(range(_S_QUEUE + 1))   # groups issued by R, not yet in S
        q_count = Signal(range(_S_QUEUE + 1))
        q_mask = [Signal(P, name=f"q{i}_mask") for i in range(_S_QUEUE)]
        q_base = [Signal(range(G * P + 1), name=f"q{i}_base") for i in range(_S_QUEUE)]
        q_eot = [Signal(name=f"q{i}_eot") for i in range(_S_QUEUE)]

        with m.If(eot_pending & ~fu_busy & ~ev_valid):
            m.d.sync += [
                eot_pending.eq(0), fu_busy.eq(1), fu_bank.eq(iu_bank), iu_bank.eq(~iu_bank),
                fu_g.eq(0), fu_base.eq(0),
            ]

        # At most one spike left in the mask: a ripple of ORs (no carry chain) on the stall path.
        seen, several = Const(0), Const(0)
        for lane in range(P):
            several = several | (seen & s_mask[lane])
            seen = seen | s_mask[lane]
        s_single = ~several
        out_valid = s_eot | (s_mask != 0)
        out_take = out_valid & self.outputs.ready
        s_free = ~out_valid | (self.outputs.ready & (s_eot | s_single))
        r_advance = Signal()
        m.d.comb += r_advance.eq(fu_busy & (fu_g <= G) & (pending < _S_QUEUE))
        fu_read = r_advance & (fu_g < G)
        m.d.comb += [
            v_rd.addr.eq(fu_g), v_rd.en.eq(fu_read),
            b_rd.addr.eq(fu_g), b_rd.en.eq(fu_read),
        ]
        m.d.sync += l_valid.eq(r_advance)
        with m.If(r_advance):
            m.d.sync += [
                l_g.eq(fu_g), l_base.eq(fu_base), l_eot.eq(fu_g == G),
                fu_g.eq(fu_g + 1), fu_base.eq(fu_base + P),
            ]
        # L, C and F never stall: each takes the stage before it every cycle.
        m.d.sync += [
            c_valid.eq(l_valid), c_g.eq(l_g), c_base.eq(l_base), c_eot.eq(l_eot),
            d_valid.eq(c_valid), d_g.eq(c_g), d_base.eq(c_base), d_eot.eq(c_eot),
        ]

        # The accumulator banks: the integration unit owns bank iu_bank, the fire unit the other.
        current = data.View(c_lanes, Mux(fu_bank, acc_rd[1].data, acc_rd[0].data))
        acc_sum = Signal(c_lanes)
        weight_in = data.View(w_lanes, weight_reg)
        wb_data = data.View(c_lanes, Mux(wb_bank, acc_rd[1].data, acc_rd[0].data))
        for lane in range(P):
            m.d.comb += acc_sum[lane].eq(wb_data[lane] + weight_in[lane])
        fu_clear = l_valid & ~l_eot
        for b, (rd, wr) in enumerate(zip(acc_rd, acc_wr, strict=True)):
            iu_reads = w1_valid & (w1_bank == b)
            m.d.comb += [
                rd.addr.eq(Mux(iu_reads, w1_g, fu_g)),
                rd.en.eq(iu_reads | (fu_read & (fu_bank == b))),
            ]
            with m.If(wb_valid & (wb_bank == b)):
                m.d.comb += [wr.addr.eq(wb_g), wr.data.eq(acc_sum.as_value()), wr.en.eq(1)]
            with m.Elif(fu_clear & (fu_bank == b)):
                m.d.comb += [wr.addr.eq(l_g), wr.data.eq(0), wr.en.eq(1)]
            with m.Elif(state == _State.CLEAR):
                m.d.comb += [wr.addr.eq(clear_g), wr.data.eq(0), wr.en.eq(1)]

        # Stage L: leak and drive; stage C: exact sum and saturation; stage F: fire, soft reset.
        v_old = data.View(v_lanes, v_rd.data)
        bias_in = data.View(v_lanes, b_rd.data)
        v_new = Signal(v_lanes)
        fired = Signal(P)
        fu_write = d_valid & ~d_eot
        lanes_in_last = N - (G - 1) * P
        for lane in range(P):
            leak = NeuronLeak(VB, CB)
            integrate = NeuronIntegrate(VB, CB)
            fire = NeuronFire(VB)
            m.submodules[f"leak{lane}"] = leak
            m.submodules[f"integrate{lane}"] = integrate
            m.submodules[f"fire{lane}"] = fire
            m.d.comb += [
                leak.v.eq(v_old[lane]), leak.first.eq(fu_t == 0),
                leak.v_init.eq(v_init), leak.leak_shift.eq(leak_shift),
                leak.bias.eq(bias_in[lane]), leak.current.eq(current[lane]),
                integrate.base.eq(c_leaked[lane]), integrate.drive.eq(c_drive[lane]),
                fire.v_sat.eq(d_sat[lane]), fire.theta.eq(theta_now),
                fire.fire_mode.eq(fire_mode), fire.fires.eq(fires),
                fire.greater.eq(greater), fire.zero_reset.eq(zero_reset),
                v_new[lane].eq(fire.v_next),
            ]
            m.d.sync += [c_leaked[lane].eq(leak.base), c_drive[lane].eq(leak.drive),
                         d_sat[lane].eq(integrate.v_sat)]
            exists = Const(1) if lane < lanes_in_last else (d_g != G - 1)
            m.d.comb += fired[lane].eq(fire.spike & exists)

        # Stage S: one output beat per cycle, lowest address first.
        # a Mux chain (continuous assigns), not an If chain (an `always @*` block that Icarus
        # would leave X after reset, see `select`)
        lowest = Signal(range(max(P, 2)))
        lowest_value = Const(0, lowest.shape())
        for lane in reversed(range(P)):
            lowest_value = Mux(s_mask[lane], lane, lowest_value)
        m.d.comb += lowest.eq(lowest_value)
        m.d.comb += [
            self.outputs.valid.eq(out_valid),
            self.outputs.payload.eot.eq(s_eot),
            self.outputs.payload.addr.eq(Mux(s_eot, 0, s_base + lowest)),
        ]
        with m.If(out_take):
            with m.If(s_eot):
                m.d.sync += [s_eot.eq(0), fu_busy.eq(0), fu_t.eq(fu_t + 1)]
                with m.If(fu_t == T - 1):
                    m.d.sync += [state.eq(_State.IDLE), self.done.eq(1), fu_t.eq(0)]
            with m.Else():
                m.d.sync += [s_mask.eq(s_mask & (s_mask - 1)), self.spikes.eq(self.spikes + 1)]
        # S takes its next group from the queue, else straight from F; F's group goes to the
        # queue when S is busy or the queue is not empty.
        fired_or_marker = Mux(d_eot, 0, fired)
        pop = s_free & (q_count != 0)
        direct = s_free & (q_count == 0) & d_valid
        push = d_valid & ~direct
        with m.If(pop):
            m.d.sync += [s_mask.eq(q_mask[0]), s_base.eq(q_base[0]), s_eot.eq(q_eot[0])]
        with m.Elif(direct):
            m.d.sync += [s_mask.eq(fired_or_marker), s_base.eq(d_base), s_eot.eq(d_eot)]
        for i in range(_S_QUEUE):
            # F's group lands behind the last entry that stays (no subtractor on this path)
            with m.If(push & Mux(pop, q_count == i + 1, q_count == i)):
                m.d.sync += [q_mask[i].eq(fired_or_marker), q_base[i].eq(d_base),
                             q_eot[i].eq(d_eot)]
            if i + 1 < _S_QUEUE:
                with m.Elif(pop):
                    m.d.sync += [q_mask[i].eq(q_mask[i + 1]), q_base[i].eq(q_base[i + 1]),
                                 q_eot[i].eq(q_eot[i + 1])]
        m.d.sync += [q_count.eq(q_count + push - pop),
                     pending.eq(pending + r_advance - (pop | direct))]

        # Membrane port: registered copy of the group just closed, which is also what writes the
        # group back to vmem (a cycle after F, so the RAM's write port is off the fire path).
        m.d.sync += self.membranes.valid.eq(fu_write)
        with m.If(fu_write):
            m.d.sync += [
                self.membranes.payload.timestep.eq(fu_t),
                self.membranes.payload.group.eq(d_g),
                self.membranes.payload.v.eq(v_new),
            ]
        m.d.comb += [
            v_wr.addr.eq(self.membranes.payload.group),
            v_wr.data.eq(self.membranes.payload.v.as_value()),
            v_wr.en.eq(self.membranes.valid),
        ]

        # ---- start / clear pass ----------------------------------------------------------------
        with m.If(state == _State.CLEAR):
            m.d.sync += clear_g.eq(clear_g + 1)
            with m.If(clear_g == G - 1):
                m.d.sync += state.eq(_State.RUN)
        with m.If(self.start):
            m.d.sync += [
                state.eq(_State.CLEAR), clear_g.eq(0), iu_t.eq(0), iu_bank.eq(0),
                eot_pending.eq(0), ev_valid.eq(0), w1_valid.eq(0), wb_valid.eq(0),
                fu_busy.eq(0), fu_t.eq(0),
                in_valid.eq(0), in_t.eq(0), l_valid.eq(0), c_valid.eq(0), d_valid.eq(0),
                s_mask.eq(0), s_eot.eq(0), pending.eq(0), q_count.eq(0), self.cycles.eq(0),
                self.synops.eq(0),
                self.spikes.eq(0), self.bad_addr.eq(0), self.busy_write.eq(0),
            ]

        # ---- register access: the spec's per-layer block -------------------------------------
        spec = self._spec
        at = spec.layer_offset
        status_reg, fire_reg = spec.layer_reg("STATUS"), spec.layer_reg("FIRE")
        status_bits = {"bad_addr": self.bad_addr, "busy_write": self.busy_write,
                       "load_overflow": load_overflow}
        fire_bits = {f.name: f.bits for f in fire_reg.fields}
        fire_state = {"radix": fire_mode.as_value(), "fires": fires, "greater": greater,
                      "zero_reset": zero_reset}
        w_info = spec.layer_reg("W_INFO").pack(in_ram=int(in_ram),
                                               chunks_per_word=chunks_per_word, words=M * G)
        m.d.sync += store_en.eq(0)
        cfg = self.cfg
        with m.If(cfg.r_en):
            with m.Switch(cfg.addr):
                with m.Case(at("LEAK_SHIFT")):
                    m.d.sync += cfg.r_data.eq(leak_shift)
                with m.Case(at("V_INIT")):
                    m.d.sync += cfg.r_data.eq(v_init.as_signed())
                with m.Case(at("SYNOPS")):
                    m.d.sync += cfg.r_data.eq(self.synops)
                with m.Case(at("SPIKES")):
                    m.d.sync += cfg.r_data.eq(self.spikes)
                with m.Case(at("FIRE")):
                    m.d.sync += cfg.r_data.eq(field_word(fire_reg, **fire_state))
                with m.Case(at("CYCLES")):
                    m.d.sync += cfg.r_data.eq(self.cycles)
                with m.Case(at("STATUS")):
                    m.d.sync += cfg.r_data.eq(field_word(status_reg, **status_bits))
                with m.Case(at("W_ADDR")):
                    m.d.sync += cfg.r_data.eq(w_load_addr)
                with m.Case(at("W_INFO")):
                    m.d.sync += cfg.r_data.eq(Const(w_info, 32))
                for t in range(T):
                    with m.Case(at("THETA", t)):
                        m.d.sync += cfg.r_data.eq(theta[t])
                with m.Default():
                    m.d.sync += cfg.r_data.eq(0)
        with m.If(cfg.w_en):
            with m.If(cfg.addr == at("STATUS")):
                for f in status_reg.fields:  # write 1 to clear
                    with m.If(cfg.w_data[f.bits].any()):
                        m.d.sync += status_bits[f.name].eq(0)
            with m.Elif(busy):
                m.d.sync += self.busy_write.eq(1)
            with m.Else():
                with m.Switch(cfg.addr):
                    with m.Case(at("LEAK_SHIFT")):
                        m.d.sync += leak_shift.eq(Mux(cfg.w_data > VB, VB, cfg.w_data))
                    with m.Case(at("V_INIT")):
                        m.d.sync += v_init.eq(cfg.w_data)
                    with m.Case(at("FIRE")):
                        m.d.sync += [signal.eq(cfg.w_data[fire_bits[name]])
                                     for name, signal in fire_state.items()]
                    if in_ram:
                        with m.Case(at("W_ADDR")):
                            m.d.sync += [w_load_addr.eq(Mux(cfg.w_data > M * G, M * G,
                                                            cfg.w_data)),
                                         w_chunk.eq(0)]
                        with m.Case(at("W_DATA")):
                            m.d.sync += w_held.word_select(w_chunk, 32).eq(cfg.w_data)
                            with m.If(w_chunk == chunks_per_word - 1):
                                m.d.sync += w_chunk.eq(0)
                                with m.If(w_load_addr < M * G):
                                    word = Cat(w_held[:32 * (chunks_per_word - 1)], cfg.w_data)
                                    m.d.sync += [w_load_addr.eq(w_load_addr + 1),
                                                 store_en.eq(1), store_addr.eq(w_load_addr),
                                                 store_word.eq(word[:P * WB])]
                                with m.Else():
                                    m.d.sync += load_overflow.eq(1)
                            with m.Else():
                                m.d.sync += w_chunk.eq(w_chunk + 1)
                    for t in range(T):
                        with m.Case(at("THETA", t)):
                            m.d.sync += theta[t].eq(cfg.w_data)
        if in_ram:
            # The completed word is registered (`store_*`, set by the W_DATA write above) before
            # it reaches the SPRAM: the register bus decode never drives its chip select.
            m.d.comb += [
                weights.write_addr.eq(store_addr), weights.write_data.eq(store_word),
                weights.write_en.eq(store_en),
            ]
        return m


def pack_bias(bias, lanes: int, v_bits: int) -> list[int]:
    """Bias memory words: word ``g`` holds ``bias[g * lanes + lane]`` in ``v_bits``-bit fields.

    The same layout as one input's row of the weight ROM (``docs/rom-layout.md``) with
    ``w_bits = v_bits``.
    """
    bias = torch.as_tensor(bias, dtype=torch.int64)
    return pack_weights(bias.reshape(-1, 1), lanes, v_bits)

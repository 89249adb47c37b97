"""The layer engine (one dense layer over ``T`` timesteps), and the stream and register
helpers the core array shares.

:class:`LayerEngine` is :class:`spikeforge.hw.core.CoreArray` running a one-layer network: it
takes a stream of input spike addresses, one timestep after another, and returns the layer's
output spike addresses in the same stream format. ``docs/microarchitecture.md`` describes the
lanes, the pipeline, the memories, the stream protocol and the cycle formula that
:mod:`spikeforge.sim.cycle_model` implements. The register decoder is generated from
:mod:`spikeforge.sw.interface`.
"""

from __future__ import annotations

import enum as py_enum

import torch
from amaranth.hdl import Cat, Const, Module, Mux, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from spikeforge.hw.neuron import (
    FireMode,
    check_width,
    refused_is_not_unused,
    signed_bits_for,
)
from spikeforge.hw.rom import pack_weights
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
        # The engine is the shared core array running a one-layer network: the same units,
        # memories and timing (docs/microarchitecture.md); the golden layer checks the values.
        from spikeforge.hw.core import CoreArray
        from spikeforge.sw.golden import DenseLayer, Network
        self._layer = DenseLayer(weight=weight, bias=bias, theta=torch.tensor(theta),
                                 leak_shift=leak_shift, fire_mode=fire_mode.name.lower(),
                                 v_init=v_init, fires=fires, w_bits=w_bits, v_bits=v_bits,
                                 compare=compare, reset=reset, name="layer")
        self._core = CoreArray(Network([self._layer], timesteps), lanes,
                               weight_memory=self._weight_memory, addr_bits=addr_bits,
                               loadable=loadable, spec=spec)

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
        m.submodules.core = core = self._core
        m.d.comb += [core.inputs.valid.eq(self.inputs.valid),
                     core.inputs.payload.c.eq(self.inputs.payload.addr),
                     core.inputs.payload.eot.eq(self.inputs.payload.eot),
                     self.inputs.ready.eq(core.inputs.ready)]
        wiring.connect(m, core.outputs, wiring.flipped(self.outputs))
        m.d.comb += [
            core.start.eq(self.start), self.busy.eq(core.busy), self.done.eq(core.done),
            core.bus.layer.eq(0), core.bus.addr.eq(self.cfg.addr),
            core.bus.w_data.eq(self.cfg.w_data), core.bus.w_en.eq(self.cfg.w_en),
            core.bus.r_en.eq(self.cfg.r_en), self.cfg.r_data.eq(core.bus.r_data),
            self.cycles.eq(core.cycles), self.synops.eq(core.synops),
            self.spikes.eq(core.spikes), self.bad_addr.eq(core.bad_addr),
            self.busy_write.eq(core.busy_write),
            self.membranes.valid.eq(core.membranes.valid),
            self.membranes.payload.timestep.eq(core.membranes.payload.timestep),
            self.membranes.payload.group.eq(core.membranes.payload.group),
        ]
        for lane in range(self._lanes):
            m.d.comb += self.membranes.payload.v[lane].eq(core.membranes.payload.v[lane])
        if self._loadable:
            wiring.connect(m, wiring.flipped(self.weight_load), core.weight_load)
            wiring.connect(m, wiring.flipped(self.bias_load), core.bias_load)
        return m


def pack_bias(bias, lanes: int, v_bits: int) -> list[int]:
    """Bias memory words: word ``g`` holds ``bias[g * lanes + lane]`` in ``v_bits``-bit fields.

    The same layout as one input's row of the weight ROM (``docs/rom-layout.md``) with
    ``w_bits = v_bits``.
    """
    bias = torch.as_tensor(bias, dtype=torch.int64)
    return pack_weights(bias.reshape(-1, 1), lanes, v_bits)

"""Bring your own network: import a NIR graph as a golden :class:`Network`, and export one.

`NIR <https://neuroir.org>`_ (the Neuromorphic Intermediate Representation) is the graph format
snnTorch, sinabs, Norse, Lava and others read and write. Two functions::

    network, report = from_nir(graph)      # a nir.NIRGraph, or the path of a .nir file
    graph = to_nir(network)                 # a nir.NIRGraph (write_graph(graph, path) saves it)

:func:`from_nir` takes a feed-forward chain ``Input -> [Affine | Linear | Conv2d] [Scale]
-> neuron (IF | LIF | Threshold | LI | I) -> [SumPool2d | AvgPool2d] [Flatten] -> ... -> Output``
and refuses any other node, by name. Integer-valued weights import exactly (the report says so
for every layer and nothing is rounded); float weights are quantized per layer, symmetric, to
``w_bits``, and the report gives the error of every layer. A leak becomes a right shift only
where the time constant makes it one (within ``leak_tolerance``); otherwise the node is
refused with the reason. What NIR leaves open (the reset, ``>`` or ``>=``, the time step of a
LIF) follows the library that wrote the graph, as ``docs/nir.md`` records.

:func:`to_nir` writes every layer with integer-valued weights and puts what NIR cannot say (the
reset, the comparison, per-timestep thresholds, ``v_init``, widths, the integer scale) into the
metadata of each neuron node, so that ``from_nir(to_nir(network))`` gives ``network`` back field
by field; the node kinds and values are chosen so that snnTorch and sinabs, which ignore that
metadata, reproduce the spikes where their own neurons can (``docs/nir.md``).

The ``nir`` package is imported on first use: ``spikeforge`` runs without it, and these
functions then raise a :class:`NirError` saying how to install it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spikeforge._version import __version__
from spikeforge.sw.golden import (
    Compare,
    ContractError,
    ConvLayer,
    DenseLayer,
    Encoder,
    EncoderKind,
    FireMode,
    Network,
    NeuronLayer,
    Reset,
    SumPoolLayer,
)

__all__ = [
    "DEFAULT_TIMESTEPS",
    "DEFAULT_LANES",
    "DEFAULT_ENCODER",
    "DEFAULT_LEAK_TOLERANCE",
    "DIALECTS",
    "SNNTORCH_DT",
    "NO_LEAK_TAU",
    "NirError",
    "LayerImport",
    "NirReport",
    "from_nir",
    "to_nir",
    "read_graph",
    "write_graph",
]

#: Timesteps of an imported network when neither the call nor the graph's metadata says.
DEFAULT_TIMESTEPS = 4
#: Lanes of the export ``spikeforge from-nir`` writes unless told (the demo's).
DEFAULT_LANES = 8
#: Input encoder of an imported network (integer pixels to the frames the graph's Input takes).
DEFAULT_ENCODER = "rate"
#: Largest difference between a LIF's decay per step and ``2**-leak_shift`` that still imports.
DEFAULT_LEAK_TOLERANCE = 1e-6
#: How a LIF node's ``tau`` and ``r`` are read (``docs/nir.md``).
DIALECTS = ("auto", "snntorch", "sinabs")
#: snnTorch's fixed time step in its NIR export and import (``tau = dt / (1 - beta)``).
SNNTORCH_DT = 1e-4
#: The ``tau`` :func:`to_nir` writes for a layer without leak: ``1 - SNNTORCH_DT / tau`` (snnTorch)
#: and ``exp(-1 / tau)`` in float32 (sinabs) are both exactly 1.
NO_LEAK_TAU = 1e30
#: Key of spikeforge's entry in node and graph metadata, and the version of that entry.
METADATA_KEY = "spikeforge"
METADATA_FORMAT = 1

_NEURONS = ("IF", "LIF", "Threshold", "LI", "I")
_SUPPORTED = ("Input", "Output", "Affine", "Linear", "Scale", "Conv2d", "SumPool2d", "AvgPool2d",
              "Flatten", *_NEURONS)


class NirError(ValueError):
    """A graph spikeforge cannot import (or a network it cannot export). One line; it names the
    node and the reason."""


def _nir():
    try:
        import nir
    except ImportError:  # pragma: no cover - exercised only without the package
        raise NirError("NIR support needs the 'nir' package: pip install nir") from None
    return nir


# --- the report ---------------------------------------------------------------------------------

@dataclass
class LayerImport:
    """How one spikeforge layer came out of the graph.

    ``scale`` is the real value of one integer unit of weight and membrane (1.0 when exact);
    ``weight_error`` the largest ``|w - scale * w_int|`` and ``weight_rel_error`` the relative
    RMS error ``||w - scale * w_int|| / ||w||``; ``threshold_error`` is ``|thr - scale * theta|``
    in the graph's units. ``semantics`` says where reset and comparison came from.
    """

    name: str
    kind: str
    nodes: tuple[str, ...]
    exact: bool = True
    w_bits: int | None = None
    v_bits: int | None = None
    scale: float | None = None
    weight_error: float = 0.0
    weight_rel_error: float = 0.0
    threshold: float | None = None
    theta: int | None = None
    threshold_error: float = 0.0
    compare: str | None = None
    reset: str | None = None
    leak_shift: int | None = None
    fires: bool | None = None
    semantics: str = ""
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        where = "+".join(self.nodes)
        if self.kind == "sumpool":
            return f"{self.name} ({where}): sum pooling" + "".join(f"; {n}" for n in self.notes)
        if self.exact:
            how = f"exact, w_bits={self.w_bits}"
        else:
            how = (f"quantized to w_bits={self.w_bits}, scale {self.scale:.4g}: weight error "
                   f"max {self.weight_error:.3g} (rms {self.weight_rel_error:.2%}), threshold "
                   f"{self.threshold:.4g} -> {self.theta} (error {self.threshold_error:.3g})")
        neuron = ("non-firing (membrane readout)" if not self.fires else
                  f"theta={self.theta} compare '{self.compare}' reset {self.reset}")
        text = (f"{self.name} ({where}): {self.kind}, {how}; v_bits={self.v_bits}, "
                f"leak_shift={self.leak_shift}, {neuron}")
        if self.semantics:
            text += f" [{self.semantics}]"
        return text + "".join(f"; {n}" for n in self.notes)


@dataclass
class NirReport:
    """What :func:`from_nir` did: one :class:`LayerImport` per layer, the defaults it assumed."""

    layers: list[LayerImport]
    timesteps: int
    encoder: Encoder
    assumed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """True when no weight, bias or threshold was rounded."""
        return all(layer.exact for layer in self.layers)

    @property
    def scales(self) -> list[float | None]:
        """Per layer, the real value of one integer unit (None for pooling): for the export."""
        return [layer.scale for layer in self.layers]

    def lines(self) -> list[str]:
        head = (f"T={self.timesteps}, encoder={self.encoder.kind.value} "
                f"(pixel_bits={self.encoder.pixel_bits}), "
                f"{'exact' if self.exact else 'quantized'}")
        return ([head] + [f"  default: {a}" for a in self.assumed]
                + [f"  {layer.line()}" for layer in self.layers]
                + [f"  note: {n}" for n in self.notes])

    def __str__(self) -> str:
        return "\n".join(self.lines())


# --- reading values NIR stores as numpy arrays, torch tensors or scalars -------------------------

def _array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _ints(value, n: int, what: str) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints (NIR stores kernel, stride, padding either way)."""
    arr = np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
    flat = arr.reshape(-1)
    if flat.size == 1:
        flat = np.repeat(flat, n)
    if flat.size != n or not np.all(flat == np.round(flat)):
        raise NirError(f"{what} must be {n} integers, not {value!r}")
    return tuple(int(x) for x in flat)


def _uniform(name: str, what: str, value) -> float:
    """The one value of a neuron parameter (a spikeforge layer has one threshold, one leak)."""
    arr = _array(value).reshape(-1)
    if arr.size == 0:
        raise NirError(f"node {name!r} has an empty {what}")
    if np.any(np.isnan(arr)):
        raise NirError(f"node {name!r} has a {what} that is not a number")
    if not np.all(arr == arr[0]):
        raise NirError(f"node {name!r} has {np.unique(arr).size} different values of {what} "
                       f"({arr.min():.4g}..{arr.max():.4g}); a spikeforge layer has one")
    return float(arr[0])


def _meta(node) -> dict | None:
    """spikeforge's entry in a node's metadata (written by :func:`to_nir`), if any."""
    metadata = getattr(node, "metadata", None)
    if not isinstance(metadata, dict):
        return None
    entry = metadata.get(METADATA_KEY)
    return entry if isinstance(entry, dict) else None


def _meta_value(entry: dict, key: str, kind, where: str):
    if key not in entry:
        raise NirError(f"{where}: spikeforge metadata lacks {key!r}")
    value = entry[key]
    if isinstance(value, bytes):
        value = value.decode("utf8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if kind is list:
        return [int(x) for x in np.asarray(value).reshape(-1)]
    if kind is bool:
        return bool(value)
    if kind is int:
        if isinstance(value, float) and value != int(value):
            raise NirError(f"{where}: spikeforge metadata {key!r} = {value!r} is not an integer")
        return int(value)
    if kind is float:
        return float(value)
    return str(value)


# --- the chain of nodes ---------------------------------------------------------------------------

def _chain(graph) -> list[tuple[str, Any]]:
    """The nodes of a feed-forward chain from its Input to its Output, in order."""
    nir = _nir()
    nodes = dict(graph.nodes)
    for name, node in nodes.items():
        kind = type(node).__name__
        if isinstance(node, nir.NIRGraph):
            raise NirError(f"node {name!r} is a nested NIRGraph (a recurrent or composite "
                           "block): spikeforge imports feed-forward chains only")
        if kind not in _SUPPORTED:
            raise NirError(f"node {name!r} is a {kind} node, which spikeforge does not import "
                           f"(it imports {', '.join(_SUPPORTED)})")
    successors: dict[str, list[str]] = {name: [] for name in nodes}
    predecessors: dict[str, list[str]] = {name: [] for name in nodes}
    for edge in graph.edges:
        a, b = (x.decode("utf8") if isinstance(x, bytes) else str(x) for x in edge)
        for end in (a, b):
            if end not in nodes:
                raise NirError(f"edge ({a!r}, {b!r}) names node {end!r}, which the graph "
                               "does not hold")
        if b in successors[a]:
            continue  # a repeated edge
        successors[a].append(b)
        predecessors[b].append(a)
    inputs = [n for n, node in nodes.items() if isinstance(node, nir.Input)]
    outputs = [n for n, node in nodes.items() if isinstance(node, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise NirError(f"the graph has {len(inputs)} Input and {len(outputs)} Output nodes; "
                       "spikeforge imports graphs with exactly one of each")
    for name in nodes:
        for what, ends in (("outgoing", successors[name]), ("incoming", predecessors[name])):
            if len(ends) > 1:
                raise NirError(f"node {name!r} has {len(ends)} {what} edges ({', '.join(ends)}): "
                               "spikeforge imports feed-forward chains only (no branches, "
                               "no recurrence)")
    chain, name, seen = [], inputs[0], set()
    while True:
        if name in seen:
            raise NirError(f"node {name!r} is on a cycle: spikeforge imports feed-forward "
                           "chains only")
        seen.add(name)
        chain.append((name, nodes[name]))
        if name == outputs[0]:
            break
        if not successors[name]:
            raise NirError(f"node {name!r} has no outgoing edge: the chain from the Input "
                           f"does not reach the Output {outputs[0]!r}")
        name = successors[name][0]
    unused = [n for n in nodes if n not in seen]
    if unused:
        raise NirError(f"node {unused[0]!r} is not on the chain from the Input to the Output")
    return chain


# --- import ---------------------------------------------------------------------------------------

@dataclass
class _Synapse:
    kind: str  # "dense" or "conv"
    nodes: list[str]  # the synapse node first, then Scale nodes folded into it
    weight: np.ndarray
    bias: np.ndarray
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    area: int = 1  # an AvgPool2d before it: its current is divided by this

    def scale_rows(self, gain: np.ndarray, name: str) -> None:
        """Multiply each output neuron's current by ``gain`` (scalar, per neuron/channel)."""
        gain = _array(gain).reshape(-1)
        if self.kind == "dense":
            if gain.size not in (1, self.weight.shape[0]):
                raise NirError(f"node {name!r} scales {gain.size} values but "
                               f"{self.nodes[0]!r} has {self.weight.shape[0]} outputs")
            self.weight = self.weight * gain.reshape(-1, 1)
            self.bias = self.bias * gain
            return
        channels = self.weight.shape[0]
        gain = _per_channel(gain, self.output_shape, name)
        self.weight = self.weight * gain.reshape(channels, 1, 1, 1)
        self.bias = self.bias * gain


def _per_channel(values: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Values given per element of ``shape = (C, H, W)`` (or per channel, or one) as per channel."""
    channels = shape[0]
    if values.size == 1:
        return np.repeat(values, channels)
    if values.size == channels:
        return values
    if values.size == math.prod(shape):
        per = values.reshape(channels, -1)
        if np.all(per == per[:, :1]):
            return per[:, 0]
    raise NirError(f"node {name!r} scales the positions of a channel differently: spikeforge "
                   "can fold a scale into a convolution only per channel")


def _image(shape: tuple[int, ...], name: str) -> tuple[int, int, int]:
    """``shape`` as ``(C, H, W)``: leading batch dimensions of 1 dropped, a missing C is 1."""
    dims = list(shape)
    while len(dims) > 3 and dims[0] == 1:
        dims.pop(0)
    if len(dims) == 2:
        dims.insert(0, 1)
    if len(dims) != 3:
        raise NirError(f"node {name!r} needs an image (channels, height, width) but its input "
                       f"has shape {tuple(shape)}")
    return tuple(dims)


def _padding(node, kernel: tuple[int, int], stride: tuple[int, int], name: str):
    padding = node.padding
    if isinstance(padding, bytes):
        padding = padding.decode("utf8")
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        if padding == "same" and stride == (1, 1) and kernel[0] % 2 and kernel[1] % 2:
            return (kernel[0] // 2, kernel[1] // 2)
        raise NirError(f"node {name!r}: padding {padding!r} with kernel {kernel} and stride "
                       f"{stride} is not a symmetric zero padding")
    return _ints(padding, 2, f"node {name!r} padding")


@dataclass
class _Neuron:
    name: str
    kind: str  # the NIR node type, or "" for a synapse read out directly
    fires: bool = True
    threshold: float = 1.0
    compare: Compare = Compare.GE
    reset: Reset = Reset.SUBTRACT
    leak_shift: int = 0
    stateless: bool = False  # a Threshold node: the membrane is cleared every step
    semantics: str = ""
    notes: list[str] = field(default_factory=list)
    meta: dict | None = None


@dataclass
class _Options:
    dialect: str
    reset: Reset | None
    compare: Compare | None
    leak_tolerance: float


def _leak_shift(decay: float, name: str, how: str, tolerance: float) -> tuple[int, str]:
    """The right shift whose decay ``2**-k`` is within ``tolerance`` of ``decay``."""
    if abs(decay - 1.0) <= tolerance:
        return 0, ""
    if not 0.0 < decay < 1.0:
        raise NirError(f"node {name!r}: a decay of {decay:.6g} per step ({how}) is not a leak "
                       "spikeforge can run (it needs 0 < decay <= 1)")
    k = max(0, round(-math.log2(decay)))
    error = abs(decay - 2.0 ** -k)
    if error > tolerance:
        raise NirError(f"node {name!r}: its time constant gives a decay of {decay:.6g} per step "
                       f"({how}); spikeforge leaks by right shifts only (decay 2**-k) and the "
                       f"nearest, 2**-{k} = {2.0 ** -k:.6g}, is {error:.3g} away (more than "
                       f"leak_tolerance = {tolerance:g})")
    note = (f"decay {decay:.6g} per step is the shift {k} within {error:.2g}; the shift floors, "
            "a float library multiplies")
    return k, note


def _lif_convention(node, name: str, dialect: str) -> str:
    r = _uniform(name, "r", node.r)
    tau = _uniform(name, "tau", node.tau)
    if dialect != "auto":
        return dialect
    if r == 1.0:
        return "sinabs"
    if (math.isinf(tau) and math.isinf(r)) or (
            math.isfinite(tau) and tau > 0 and math.isclose(r * SNNTORCH_DT / tau, 1.0,
                                                            rel_tol=1e-6)):
        return "snntorch"
    raise NirError(f"node {name!r}: r = {r:g} and tau = {tau:g} match neither snnTorch's "
                   f"convention (r = tau / {SNNTORCH_DT:g}) nor sinabs' (r = 1); pass "
                   "dialect='snntorch' or 'sinabs' to say how to read it")


def _decay_and_gain(node, name: str, convention: str) -> tuple[float, float, str]:
    r = _uniform(name, "r", node.r)
    tau = _uniform(name, "tau", node.tau)
    if tau <= 0 or math.isnan(tau):
        raise NirError(f"node {name!r}: tau = {tau:g} is not a time constant")
    if convention == "sinabs":  # tau in steps, exact exponential, input not scaled
        return math.exp(-1.0 / tau), 1.0, "sinabs: decay exp(-1/tau), input gain 1"
    decay = 1.0 - SNNTORCH_DT / tau  # forward Euler with snnTorch's dt
    gain = 1.0 if math.isinf(tau) and math.isinf(r) else r * SNNTORCH_DT / tau
    return decay, gain, f"snnTorch: decay 1 - dt/tau, input gain r*dt/tau, dt = {SNNTORCH_DT:g}"


def _check_zero(node, name: str, attribute: str) -> None:
    value = getattr(node, attribute, None)
    if value is not None and np.any(_array(value) != 0):
        raise NirError(f"node {name!r} has a non-zero {attribute}; spikeforge neurons rest and "
                       "reset at 0")


def _neuron(node, name: str, options: _Options) -> tuple[_Neuron, float]:
    """The neuron of a NIR neuron node, and the gain its input is multiplied by."""
    kind = type(node).__name__
    meta = _meta(node)
    for attribute in ("v_leak", "v_reset"):
        _check_zero(node, name, attribute)
    gain, decay, how = 1.0, 1.0, ""
    if kind in ("IF", "I"):
        gain = _uniform(name, "r", node.r)
        how = "IF: no leak, input gain r"
    elif kind in ("LIF", "LI"):
        convention = _lif_convention(node, name, options.dialect)
        decay, gain, how = _decay_and_gain(node, name, convention)
    neuron = _Neuron(name=name, kind=kind, fires=kind not in ("LI", "I"), meta=meta)
    if meta is not None:  # spikeforge's own export: the integers are in the metadata
        where = f"node {name!r}"
        neuron.fires = _meta_value(meta, "fires", bool, where)
        neuron.compare = Compare(_meta_value(meta, "compare", str, where))
        neuron.reset = Reset(_meta_value(meta, "reset", str, where))
        neuron.leak_shift = _meta_value(meta, "leak_shift", int, where)
        neuron.semantics = "spikeforge metadata"
        return neuron, 1.0
    if kind in ("LIF", "LI"):
        neuron.leak_shift, note = _leak_shift(decay, name, how, options.leak_tolerance)
        if note:
            neuron.notes.append(note)
    if kind == "Threshold":
        neuron.threshold = _uniform(name, "threshold", node.threshold)
        neuron.compare, neuron.reset, neuron.stateless = Compare.GT, Reset.ZERO, True
        neuron.semantics = "NIR Threshold: stateless, V > thr"
        return neuron, 1.0
    if neuron.fires:
        neuron.threshold = _uniform(name, "v_threshold", node.v_threshold)
        if kind == "LIF" and convention == "snntorch":
            neuron.compare, neuron.reset = Compare.GT, Reset.ZERO
            neuron.semantics = "snnTorch's reading of LIF: reset to zero, V > thr"
        else:
            neuron.compare, neuron.reset = Compare.GE, Reset.SUBTRACT
            neuron.semantics = f"sinabs' reading of {kind}: subtract, V >= thr"
        if options.reset is not None or options.compare is not None:
            neuron.reset = options.reset or neuron.reset
            neuron.compare = options.compare or neuron.compare
            neuron.semantics = f"given: reset {neuron.reset.value}, V {neuron.compare.value} thr"
    elif how:
        neuron.semantics = how
    if gain != 1.0:
        neuron.notes.append(f"input gain {gain:.6g} folded into the weights")
    return neuron, gain


def _integer_theta(threshold: float, compare: Compare, reset: Reset, name: str,
                   exact: bool) -> tuple[int, Compare] | None:
    """The integer threshold firing where ``V compare threshold`` does, for integer ``V``.

    With a zero reset only the firing condition matters: ``V > x`` is ``V > floor(x)`` and
    ``V >= x`` is ``V >= ceil(x)``. A subtract reset also subtracts the threshold, so it must be
    an integer. None where the threshold has to be rounded (``exact``) or cannot be ``>= 1``.
    """
    if not math.isfinite(threshold):
        raise NirError(f"node {name!r}: threshold {threshold!r} is not a finite number")
    if reset is Reset.SUBTRACT:
        if threshold == round(threshold) and threshold >= 1:
            return round(threshold), compare
        return None if exact else (max(1, round(threshold)), compare)
    if compare is Compare.GT:
        theta = math.floor(threshold)
        if theta >= 1:
            return theta, compare
        compare, theta = Compare.GE, theta + 1
    else:
        theta = math.ceil(threshold)
    if theta >= 1:
        return theta, compare
    if exact:
        raise NirError(f"node {name!r}: threshold {threshold:g} fires on every membrane >= "
                       f"{theta}; spikeforge thresholds are >= 1")
    return 1, compare


def _bits_for(values: np.ndarray) -> int:
    if values.size == 0:
        return 2
    top = int(max(values.max(), -values.min() - 1, 0))
    return max(2, top.bit_length() + 1)


def _quantize(syn: _Synapse, neuron: _Neuron, w_bits: int | None, report: LayerImport):
    """``(weight, bias, theta, compare)`` integers of one layer; fills in ``report``."""
    weight, bias, threshold = syn.weight, syn.bias, neuron.threshold
    integral = bool(np.all(weight == np.round(weight)) and np.all(bias == np.round(bias)))
    if syn.area > 1:
        if integral and neuron.leak_shift == 0 and not neuron.stateless:
            bias, threshold = bias * syn.area, threshold * syn.area
            report.notes.append(f"average pooling before it: bias and threshold multiplied by "
                                f"{syn.area} instead of dividing the weights")
        else:
            weight, integral = weight / syn.area, False
    report.threshold = neuron.threshold
    theta = None
    if integral:
        needed = _bits_for(weight)
        fits = needed <= (w_bits or 8)
        theta = _integer_theta(threshold, neuron.compare, neuron.reset, neuron.name,
                               exact=True) if neuron.fires else (1, neuron.compare)
        if fits and theta is not None:
            report.exact, report.w_bits, report.scale = True, w_bits or needed, 1.0
            return weight, bias, theta[0], theta[1]
        if not fits:
            report.notes.append(f"integer weights need {needed} bits: quantized")
        else:
            report.notes.append(f"threshold {threshold:g} is not an integer >= 1 and the "
                                "reset subtracts it: quantized")
    bits = w_bits or 8
    q_max = (1 << (bits - 1)) - 1
    peak = float(np.abs(weight).max()) if weight.size else 0.0
    scale = peak / q_max if peak > 0 else 1.0
    w_int = np.clip(np.round(weight / scale), -q_max - 1, q_max)
    b_int = np.round(bias / scale)
    if neuron.fires:
        theta, compare = _integer_theta(threshold / scale, neuron.compare, neuron.reset,
                                        neuron.name, exact=False)
    else:
        theta, compare = 1, neuron.compare
    error = weight - scale * w_int
    norm = float(np.linalg.norm(weight))
    report.exact, report.w_bits, report.scale = False, bits, scale
    report.weight_error = float(np.abs(error).max()) if error.size else 0.0
    report.weight_rel_error = float(np.linalg.norm(error)) / norm if norm else 0.0
    report.threshold_error = abs(threshold - scale * theta) if neuron.fires else 0.0
    return w_int, b_int, theta, compare


def _auto_v_bits(weight: np.ndarray, bias: np.ndarray, theta: int, v_init: int, peak: int,
                 timesteps: int) -> tuple[int, bool]:
    """The smallest width >= 16 in which no membrane can saturate in ``timesteps`` steps
    (capped at 32; the flag says whether 32 was too few)."""
    row = float(np.abs(weight.reshape(weight.shape[0], -1)).sum(1).max()) if weight.size else 0
    b = float(np.abs(bias).max()) if bias.size else 0.0
    bound = int(timesteps * (peak * row + b) + theta + abs(v_init))
    bits = bound.bit_length() + 1
    return min(32, max(16, bits)), bits > 32


def from_nir(graph, *, timesteps: int | None = None, encoder: Encoder | str | None = None,
             pixel_bits: int | None = None, w_bits: int | None = None,
             v_bits: int | None = None, dialect: str = "auto", reset: str | None = None,
             compare: str | None = None,
             leak_tolerance: float = DEFAULT_LEAK_TOLERANCE) -> tuple[Network, NirReport]:
    """Import a NIR graph (a ``nir.NIRGraph`` or the path of a ``.nir`` file) as a Network.

    Parameters
    ----------
    timesteps, encoder, pixel_bits
        ``T``, the input encoder (``"rate"``, ``"radix"``, ``"direct"`` or an :class:`Encoder`)
        and its pixel width. Defaults: the graph's spikeforge metadata (written by
        :func:`to_nir`), else ``DEFAULT_TIMESTEPS``, ``DEFAULT_ENCODER`` and
        ``spikeforge.sw.data.PIXEL_BITS``. The network takes integer pixels; the graph's Input
        receives the encoder's frames (spikes, or for ``direct`` the pixel values as currents).
    w_bits, v_bits
        Widths of every layer. Default: per layer, from the metadata, else the fewest bits that
        hold integer-valued weights exactly (8 for float weights), and the smallest ``v_bits >=
        16`` in which no membrane can saturate in ``T`` steps (at most 32).
    dialect
        How a LIF/LI node's ``tau`` and ``r`` are read: ``"snntorch"`` (decay ``1 - dt/tau``,
        input gain ``r*dt/tau``, ``dt = 1e-4``; reset to zero, ``V > thr``), ``"sinabs"`` (decay
        ``exp(-1/tau)``, gain 1; subtract, ``V >= thr``), or ``"auto"`` (the default: snnTorch
        when ``r = tau/dt``, sinabs when ``r = 1``, refused otherwise). IF nodes follow sinabs.
    reset, compare
        Force the reset (``"subtract"``/``"zero"``) and comparison (``">="``/``">"``) of every
        IF/LIF node that carries no spikeforge metadata (NIR cannot say them; snnTorch drops
        its ``reset_mechanism`` on export).
    leak_tolerance
        Largest ``|decay - 2**-leak_shift|`` accepted; a leak outside it is refused.

    Returns ``(network, report)``; raises :class:`NirError` (one line, naming the node).
    """
    nir = _nir()
    if isinstance(graph, (str, os.PathLike)):
        graph = read_graph(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise NirError(f"from_nir takes a nir.NIRGraph or a .nir file, not "
                       f"{type(graph).__name__}")
    if dialect not in DIALECTS:
        raise NirError(f"dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
    try:
        options = _Options(dialect, None if reset is None else Reset(reset),
                           None if compare is None else Compare(compare), float(leak_tolerance))
    except ValueError:
        raise NirError(f"reset must be 'subtract' or 'zero' and compare '>=' or '>', not "
                       f"{reset!r} and {compare!r}") from None
    chain = _chain(graph)
    top = _meta(graph) or {}
    assumed: list[str] = []

    def pick(value, key, kind, default, what):
        if value is not None:
            return value
        if key in top:
            return _meta_value(top, key, kind, "graph")
        assumed.append(f"{what} = {default}")
        return default

    from spikeforge.sw.data import PIXEL_BITS

    steps = pick(timesteps, "timesteps", int, DEFAULT_TIMESTEPS, "T")
    if isinstance(encoder, Encoder):
        enc = encoder if pixel_bits is None else Encoder(encoder.kind, pixel_bits)
    else:
        kind = pick(encoder, "encoder", str, DEFAULT_ENCODER, "encoder")
        bits = pick(pixel_bits, "pixel_bits", int, PIXEL_BITS, "pixel_bits")
        try:
            enc = Encoder(kind, bits)
        except ContractError as error:
            raise NirError(str(error)) from None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise NirError(f"timesteps must be a positive integer, not {steps!r}")
    for what, value, low, high in (("w_bits", w_bits, 2, 8), ("v_bits", v_bits, 2, 32)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not low <= value <= high):
            raise NirError(f"{what} must be an integer {low}..{high}, not {value!r}")

    layers, reports = _import_chain(chain, steps, enc, w_bits, v_bits, options)
    try:
        network = Network(layers, steps, enc)
    except ContractError as error:
        raise NirError(f"the imported network is not valid: {error}") from None
    report = NirReport(reports, steps, enc, assumed)
    if any(not r.exact for r in reports):
        report.notes.append("float weights were quantized: accuracy may differ from the graph's")
    return network, report


def _import_chain(chain, steps: int, enc: Encoder, w_bits, v_bits, options: _Options):
    layers: list = []
    reports: list[LayerImport] = []
    shape: tuple[int, ...] | None = None
    syn: _Synapse | None = None
    pre_scale: tuple[str, np.ndarray] | None = None  # a Scale waiting for the next synapse
    area = 1  # an AvgPool2d waiting for the next synapse
    peak = enc.pixel_max if enc.kind is EncoderKind.DIRECT else 1

    def finish(neuron: _Neuron):
        nonlocal syn, peak
        report = LayerImport(name=syn.nodes[0], kind=syn.kind,
                             nodes=(*syn.nodes, *([neuron.name] if neuron.kind else [])),
                             fires=neuron.fires, semantics=neuron.semantics,
                             notes=list(neuron.notes))
        meta = neuron.meta
        where = f"node {neuron.name!r}"
        layer_w_bits = w_bits if w_bits is not None or meta is None else \
            _meta_value(meta, "w_bits", int, where)
        weight, bias, theta, compare = _quantize(syn, neuron, layer_w_bits, report)
        thetas = [theta] * steps
        v_init, fire_mode = 0, FireMode.THRESHOLD
        if meta is not None:
            report.name = _meta_value(meta, "layer", str, where)
            thetas = _meta_value(meta, "theta", list, where)
            if len(thetas) != steps:
                if len(set(thetas)) != 1:
                    raise NirError(f"{where}: its {len(thetas)} per-timestep thresholds do not "
                                   f"fit T = {steps}")
                thetas = thetas[:1] * steps
            v_init = _meta_value(meta, "v_init", int, where)
            fire_mode = FireMode(_meta_value(meta, "fire_mode", str, where))
            if "scale" in meta:
                report.scale = _meta_value(meta, "scale", float, where)
            report.threshold = float(thetas[0])
            compare = neuron.compare
            if not report.exact:
                raise NirError(f"{where}: spikeforge metadata but the weights of "
                               f"{syn.nodes[0]!r} are not integers of w_bits = {layer_w_bits}")
        layer_v_bits = v_bits
        if layer_v_bits is None and meta is not None:
            layer_v_bits = _meta_value(meta, "v_bits", int, where)
        if layer_v_bits is None:
            layer_v_bits, short = _auto_v_bits(weight, bias, max(thetas), v_init, peak, steps)
            if short:
                report.notes.append("membranes may saturate at v_bits = 32")
        leak = layer_v_bits if neuron.stateless else neuron.leak_shift
        if neuron.stateless and (np.any(weight < 0) or np.any(bias < 0)):
            raise NirError(f"node {neuron.name!r} is a Threshold node (stateless: V = current "
                           "every step); spikeforge runs it as a neuron whose membrane the leak "
                           "clears each step, which is exact only when no current is negative, "
                           f"and {syn.nodes[0]!r} has negative weights or bias")
        fields = dict(weight=torch.from_numpy(weight.astype(np.int64)),
                      bias=torch.from_numpy(bias.astype(np.int64)), theta=thetas,
                      leak_shift=leak, fire_mode=fire_mode, v_init=v_init,
                      fires=neuron.fires, w_bits=report.w_bits, v_bits=layer_v_bits,
                      name=report.name, compare=compare, reset=neuron.reset)
        try:
            if syn.kind == "conv":
                layer = ConvLayer(**fields, input_shape=syn.input_shape, stride=syn.stride,
                                  padding=syn.padding)
            else:
                layer = DenseLayer(**fields)
        except ContractError as error:
            raise NirError(f"node {syn.nodes[0]!r}: {error}") from None
        report.v_bits, report.theta, report.leak_shift = layer.v_bits, thetas[0], leak
        report.compare, report.reset = layer.compare.value, layer.reset.value
        layers.append(layer)
        reports.append(report)
        syn, peak = None, 1

    for name, node in chain:
        kind = type(node).__name__
        if kind == "Input":
            shape = tuple(int(d) for d in np.asarray(node.input_type["input"]).reshape(-1))
            continue
        if kind == "Output":
            if syn is not None:  # synapses read out directly: a non-firing layer
                neuron = _Neuron(name=name, kind="", fires=False,
                                 semantics="no neuron before the Output: membrane readout")
                finish(neuron)
            break
        if kind == "Flatten":
            if syn is not None:
                raise NirError(f"node {name!r} flattens the current of {syn.nodes[0]!r} before "
                               "its neuron; spikeforge needs the neuron first")
            dims = list(shape)
            start, end = int(node.start_dim), int(node.end_dim)
            end = end % len(dims) if dims else 0
            start = start % len(dims) if dims else 0
            kept = [d for i, d in enumerate(dims) if not start <= i <= end and d != 1]
            if kept:
                raise NirError(f"node {name!r} flattens dims {start}..{end} of shape "
                               f"{tuple(shape)}, which leaves {len(kept)} other dimension(s): "
                               "spikeforge flattens whole (C, H, W) images only")
            shape = (math.prod(shape),)
            continue
        if kind == "Scale":
            values = _array(node.scale)
            if syn is not None:
                syn.scale_rows(values, name)
                syn.nodes.append(name)
            elif pre_scale is not None:
                raise NirError(f"node {name!r} is a second Scale in a row")
            else:
                pre_scale = (name, values)
            continue
        if kind in ("Affine", "Linear", "Conv2d"):
            if syn is not None:
                raise NirError(f"node {name!r} follows the synapses {syn.nodes[0]!r} without a "
                               "neuron between them")
            weight = _array(node.weight)
            if kind == "Conv2d":
                syn = _conv_synapse(node, name, weight, shape)
            else:
                if weight.ndim != 2:
                    raise NirError(f"node {name!r} has a weight of shape {weight.shape}; "
                                   "spikeforge imports [out, in] matrices")
                if math.prod(shape) != weight.shape[1]:
                    raise NirError(f"node {name!r} takes {weight.shape[1]} inputs but gets "
                                   f"{math.prod(shape)} (shape {tuple(shape)})")
                bias = _array(node.bias).reshape(-1) if kind == "Affine" else \
                    np.zeros(weight.shape[0])
                if bias.size != weight.shape[0]:
                    raise NirError(f"node {name!r} has {bias.size} biases for "
                                   f"{weight.shape[0]} outputs")
                syn = _Synapse("dense", [name], weight, bias, (weight.shape[1],),
                               (weight.shape[0],))
            if pre_scale is not None:
                _scale_columns(syn, *pre_scale)
                syn.nodes.append(pre_scale[0])
                pre_scale = None
            syn.area, area = area, 1
            shape = syn.output_shape
            continue
        if kind in ("SumPool2d", "AvgPool2d"):
            if syn is not None:
                raise NirError(f"node {name!r} pools the current of {syn.nodes[0]!r} before its "
                               "neuron; spikeforge pools spikes only")
            if pre_scale is not None:
                raise NirError(f"node {pre_scale[0]!r} scales the input of the pooling node "
                               f"{name!r}; spikeforge folds a Scale into the next synapses only")
            image = _image(shape, name)
            kernel = _ints(node.kernel_size, 2, f"node {name!r} kernel_size")
            stride = _ints(node.stride, 2, f"node {name!r} stride")
            padding = _ints(node.padding, 2, f"node {name!r} padding")
            meta = _meta(node)
            layer_name = _meta_value(meta, "layer", str, name) if meta else name
            try:
                pool = SumPoolLayer(kernel=kernel, input_shape=image, stride=stride,
                                    padding=padding, name=layer_name)
            except ContractError as error:
                raise NirError(f"node {name!r}: {error}") from None
            layers.append(pool)
            note = [] if kind == "SumPool2d" else [f"average: the next synapses' current is "
                                                   f"divided by {pool.area}"]
            reports.append(LayerImport(name=layer_name, kind="sumpool", nodes=(name,),
                                       exact=True, notes=note))
            if kind == "AvgPool2d":
                area *= pool.area
            peak *= pool.area
            shape = pool.output_shape
            continue
        # a neuron node
        if syn is None:
            raise NirError(f"node {name!r} ({kind}) has no Affine, Linear or Conv2d before it; "
                           "spikeforge layers start with their synapses")
        neuron, gain = _neuron(node, name, options)
        size = math.prod(syn.output_shape)
        # one value per neuron, one for all, or (a convolution) one per channel
        sizes = {1, size} | ({syn.output_shape[0]} if syn.kind == "conv" else set())
        for attribute in ("r", "tau", "v_threshold", "threshold"):
            value = getattr(node, attribute, None)
            if value is not None and _array(value).size not in sizes:
                raise NirError(f"node {name!r} has {_array(value).size} values of {attribute} "
                               f"but {syn.nodes[0]!r} gives {size} values")
        if gain != 1.0:
            syn.scale_rows(np.array([gain]), name)
        finish(neuron)
    return layers, reports


def _conv_synapse(node, name: str, weight: np.ndarray, shape) -> _Synapse:
    if weight.ndim != 4:
        raise NirError(f"node {name!r} has a weight of shape {weight.shape}; a Conv2d kernel is "
                       "[out, in, kh, kw]")
    if int(node.groups) != 1:
        raise NirError(f"node {name!r} is a grouped convolution (groups = {node.groups}); "
                       "spikeforge convolutions have groups = 1")
    if _ints(node.dilation, 2, f"node {name!r} dilation") != (1, 1):
        raise NirError(f"node {name!r} is dilated ({node.dilation}); spikeforge convolutions "
                       "have dilation 1")
    image = _image(shape, name)
    if image[0] != weight.shape[1]:
        raise NirError(f"node {name!r} takes {weight.shape[1]} input channels but gets "
                       f"{image[0]} (shape {image})")
    if node.input_shape is not None:
        declared = _ints(node.input_shape, 2, f"node {name!r} input_shape")
        if declared != image[1:]:
            raise NirError(f"node {name!r} declares input_shape {declared} but gets {image[1:]}")
    kernel = (weight.shape[2], weight.shape[3])
    stride = _ints(node.stride, 2, f"node {name!r} stride")
    padding = _padding(node, kernel, stride, name)
    bias = _array(node.bias).reshape(-1) if node.bias is not None else np.zeros(weight.shape[0])
    if bias.size == 1 and weight.shape[0] > 1:
        bias = np.repeat(bias, weight.shape[0])
    if bias.size != weight.shape[0]:
        raise NirError(f"node {name!r} has {bias.size} biases for {weight.shape[0]} channels")
    h = (image[1] + 2 * padding[0] - kernel[0]) // stride[0] + 1
    w = (image[2] + 2 * padding[1] - kernel[1]) // stride[1] + 1
    if h < 1 or w < 1:
        raise NirError(f"node {name!r}: kernel {kernel} does not fit input {image} with padding "
                       f"{padding}")
    return _Synapse("conv", [name], weight, bias, image, (weight.shape[0], h, w), stride, padding)


def _scale_columns(syn: _Synapse, name: str, values: np.ndarray) -> None:
    """Fold a Scale of the synapses' input into their weights (per input, or per channel)."""
    values = values.reshape(-1)
    if syn.kind == "dense":
        if values.size not in (1, syn.weight.shape[1]):
            raise NirError(f"node {name!r} scales {values.size} values but {syn.nodes[0]!r} "
                           f"takes {syn.weight.shape[1]}")
        syn.weight = syn.weight * values.reshape(1, -1)
        return
    per = _per_channel(values, syn.input_shape, name)
    syn.weight = syn.weight * per.reshape(1, -1, 1, 1)


# --- export ---------------------------------------------------------------------------------------

def _key(name: str, used: set[str]) -> str:
    """A node name torch and NIR readers accept (letters, digits, underscores), unique."""
    key = re.sub(r"\W", "_", name) or "layer"
    if key[0].isdigit():
        key = "n" + key
    base, n = key, 1
    while key in used or key in ("input", "output"):
        n += 1
        key = f"{base}_{n}"
    used.add(key)
    return key


def _neuron_node(nir, layer: NeuronLayer, scale: float | None):
    """The NIR neuron node of ``layer``; see docs/nir.md for why these values.

    A dense layer's parameters have one entry per neuron; a convolution's one per channel,
    shaped ``(C, 1, 1)`` to broadcast over the image (sinabs 3.1's LIF import cannot read
    parameters of shape ``(C, H, W)``), with the node's types set to the full ``(C, H, W)``.
    """
    shape = layer.output_shape
    ones = np.ones((shape[0], 1, 1) if len(shape) == 3 else shape)
    metadata = {METADATA_KEY: {
        "format": METADATA_FORMAT, "layer": layer.name, "kind": layer.kind,
        "theta": [int(t) for t in layer.theta.tolist()], "leak_shift": layer.leak_shift,
        "fire_mode": layer.fire_mode.value, "compare": layer.compare.value,
        "reset": layer.reset.value, "v_init": layer.v_init, "fires": layer.fires,
        "w_bits": layer.w_bits, "v_bits": layer.v_bits, "units": "integer",
        **({"scale": float(scale)} if scale is not None else {}),
    }}
    decay = 2.0 ** -layer.leak_shift
    tau = NO_LEAK_TAU if layer.leak_shift == 0 else SNNTORCH_DT / (1.0 - decay)
    if not layer.fires:
        # r = 1: sinabs' reading (it refuses LI with r != 1); the metadata says the rest
        node = nir.LI(tau=tau * ones, r=ones, v_leak=0 * ones, metadata=metadata)
        return _typed(node, shape)
    theta = float(layer.theta[0])
    if layer.fire_mode is FireMode.RADIX:
        threshold = 1.0
    elif layer.reset is Reset.ZERO:
        # halfway between two integers: V > thr and V >= thr then fire alike on integer V
        threshold = theta - 0.5 if layer.compare is Compare.GE else theta + 0.5
    else:
        threshold = theta  # the reset subtracts it: it must be the integer itself
    node = nir.LIF(tau=tau * ones, r=(tau / SNNTORCH_DT) * ones, v_leak=0 * ones,
                   v_threshold=threshold * ones, metadata=metadata)
    return _typed(node, shape)


def _typed(node, shape):
    node.input_type = {"input": np.array(shape)}
    node.output_type = {"output": np.array(shape)}
    return node


def to_nir(network: Network, *, scales: Sequence[float | None] | None = None):
    """``network`` as a ``nir.NIRGraph`` (Input, Affine/Conv2d + LIF or LI, SumPool2d, Flatten,
    Output), integer-valued, with the exact spikeforge fields in node metadata.

    ``scales`` (one per layer, None allowed) is the real value of one integer unit, as in an
    export's manifest; it is stored in the metadata. See ``docs/nir.md`` for how snnTorch and
    sinabs read the graph.
    """
    nir = _nir()
    if not isinstance(network, Network):
        raise NirError(f"to_nir takes a spikeforge Network, not {type(network).__name__}")
    if scales is not None and len(scales) != len(network.layers):
        raise NirError(f"scales has {len(scales)} entries but the network has "
                       f"{len(network.layers)} layers")
    first = network.layers[0]
    in_shape = first.input_shape
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(in_shape)})}
    edges: list[tuple[str, str]] = []
    used: set[str] = set()
    previous, shape = "input", tuple(in_shape)

    def add(key, node):
        nonlocal previous
        nodes[key] = node
        edges.append((previous, key))
        previous = key

    for k, layer in enumerate(network.layers):
        key = _key(layer.name, used)
        if isinstance(layer, SumPoolLayer):
            node = nir.SumPool2d(kernel_size=np.array(layer.kernel),
                                 stride=np.array(layer.stride),
                                 padding=np.array(layer.padding),
                                 metadata={METADATA_KEY: {"format": METADATA_FORMAT,
                                                          "layer": layer.name}})
            node.input_type = {"input": np.array(layer.input_shape)}
            node.output_type = {"output": np.array(layer.output_shape)}
            add(key, node)
            shape = layer.output_shape
            continue
        weight = layer.weight.to(torch.float64).numpy()
        bias = layer.bias.to(torch.float64).numpy()
        if isinstance(layer, ConvLayer):
            synapse = nir.Conv2d(input_shape=tuple(layer.input_shape[1:]), weight=weight,
                                 stride=layer.stride, padding=layer.padding, dilation=(1, 1),
                                 groups=1, bias=bias)
        else:
            if len(shape) > 1:  # a torch Linear needs the (C, H, W) image flattened first
                add(_key(f"{layer.name}_flatten", used),
                    nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1))
            synapse = nir.Affine(weight=weight, bias=bias)
        add(key, synapse)
        scale = None if scales is None else scales[k]
        add(_key(f"{layer.name}_{'lif' if layer.fires else 'li'}", used),
            _neuron_node(nir, layer, scale))
        shape = layer.output_shape
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((previous, "output"))
    metadata = {METADATA_KEY: {"format": METADATA_FORMAT, "spikeforge_version": __version__,
                               "timesteps": network.timesteps,
                               "encoder": network.encoder.kind.value,
                               "pixel_bits": network.encoder.pixel_bits}}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


# --- files ----------------------------------------------------------------------------------------

def read_graph(path):
    """Read a ``.nir`` (HDF5) file; a missing or unreadable file is a :class:`NirError`."""
    nir = _nir()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NirError(f"{path}: no such file")
    try:
        return nir.read(path)
    except Exception as error:  # h5py and NIR raise many kinds; the message says which
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise NirError(f"{path}: not a readable NIR graph ({detail})") from None


def write_graph(graph, path) -> None:
    """Write ``graph`` to ``path`` as a ``.nir`` (HDF5) file."""
    nir = _nir()
    try:
        nir.write(os.fspath(path), graph)
    except OSError as error:
        raise NirError(f"{path}: cannot write ({error})") from None

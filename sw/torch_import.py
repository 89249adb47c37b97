"""Bring your own torch network: an ``nn.Sequential`` as a golden :class:`Network`.

::

    network, report = from_torch(ann, calibration=pixels)   # ReLU: ANN-to-SNN conversion
    network, report = from_torch(snn_model, timesteps=16)   # snnTorch Leaky / sinabs IAF

Two paths, chosen by the activations the module holds:

**ReLU** (an ANN): the conversion path of the trainer, nothing else. The module becomes a
:class:`spikeforge.sw.train.SpikingNet` of the same architecture (method ``ann``) holding its
float weights; each hidden layer's threshold is set by Threshold LayerNorm
(:func:`spikeforge.sw.train.loop.calibrate_thresholds`: the ``percentile`` of its ReLU
activations on the ``calibration`` images, the layers before it already spiking), and
:meth:`~spikeforge.sw.train.SpikingNet.to_network` quantizes to ``w_bits`` exactly as a trained
checkpoint is quantized (docs/training.md). The module is read as the trainer's float ANN: its
input is the pixel divided by ``2**pixel_bits - 1`` (``0..1``), its last layer a ``Linear``
without activation (the readout), every other ``Linear``/``Conv2d`` followed by a ``ReLU``,
with ``AvgPool2d`` and ``Flatten`` between them.

**Spiking** (snnTorch ``Leaky``, sinabs ``IAF``/``IAFSqueeze``, or no activation at all): each
module becomes the NIR node its library's convention gives it (docs/nir.md: ``Leaky`` a ``LIF``
with ``tau = dt / (1 - beta)``, ``r = tau / dt``; ``IAF`` an ``IF``; ``SumPool2d``,
``AvgPool2d``, ``Flatten``, ``Linear``/``Affine``, ``Conv2d`` as themselves), and
:func:`spikeforge.sw.nir.from_nir` imports the graph: integer-valued weights exactly, float
weights quantized with the error reported. What NIR drops is read off the modules instead:
the reset (``reset_mechanism``; ``MembraneSubtract``/``MembraneReset``) is passed to
:func:`~spikeforge.sw.nir.from_nir`, and a neuron spikeforge cannot run exactly (snnTorch's
subtract reset without ``reset_delay``, sinabs' ``MultiSpike``, a ``min_v_mem``, graded
spikes, inhibition) is refused with the reason. The network's input frames are what the module
receives per timestep: ``network.encode(pixels)``.

Any other module is refused with one line naming its index and type
(:class:`TorchImportError`). ``Dropout`` and ``Identity`` are skipped (inference).
"""

from __future__ import annotations

import itertools
import math
import re
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from spikeforge.sw.data import PIXEL_BITS
from spikeforge.sw.golden import Encoder, Network
from spikeforge.sw.nir import DEFAULT_TIMESTEPS, SNNTORCH_DT, NirError, NirReport, _nir, from_nir

__all__ = ["DEFAULT_CONVERSION_W_BITS", "TorchImportError", "TorchReport", "from_torch"]

#: Weight width of a converted ReLU network unless told (the least error the hardware holds).
DEFAULT_CONVERSION_W_BITS = 8

_SUPPORTED = ("Linear, Conv2d, AvgPool2d, Flatten, ReLU, snntorch.Leaky, sinabs IAF/IAFSqueeze, "
              "sinabs SumPool2d, Dropout, Identity")


class TorchImportError(ValueError):
    """A module :func:`from_torch` cannot convert; one line naming the module (index, type)."""


@dataclass
class TorchReport:
    """What :func:`from_torch` did.

    ``path`` is ``"conversion"`` (ReLU) or ``"spiking"``; ``layers`` has one line per golden
    layer; ``scales`` the real value of one integer unit per layer (None for pooling), for
    :func:`spikeforge.sw.export.export_network`; ``nir`` the import report of the spiking path.
    With ``labels``, ``float_accuracy`` is the module's own accuracy on the calibration images
    and ``accuracy`` the golden network's (conversion path only).
    """

    path: str
    timesteps: int
    encoder: Encoder
    layers: list[str]
    scales: list[float | None]
    nir: NirReport | None = None
    float_accuracy: float | None = None
    accuracy: float | None = None
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = (f"{self.path} path: T={self.timesteps}, encoder={self.encoder.kind.value} "
                f"(pixel_bits={self.encoder.pixel_bits})")
        out = [head] + [f"  {line}" for line in self.layers]
        if self.float_accuracy is not None:
            out.append(f"  accuracy on the calibration images: {self.float_accuracy:.2%} "
                       f"(float module) -> {self.accuracy:.2%} (golden network)")
        return out + [f"  note: {n}" for n in self.notes]

    def __str__(self) -> str:
        return "\n".join(self.lines())


# --- the modules -------------------------------------------------------------------------------

@dataclass
class _Module:
    index: str  # its position in the Sequential ("3", or "2.1" inside a nested one)
    module: nn.Module
    kind: str

    @property
    def what(self) -> str:
        return f"module {self.index} ({type(self.module).__name__})"

    def error(self, message: str) -> TorchImportError:
        return TorchImportError(f"{self.what}: {message}")


def _library_class(module_name: str, *names: str) -> tuple[type, ...]:
    """The classes ``names`` of an already imported library (a module of it exists only if the
    user built one, so nothing is imported here)."""
    library = sys.modules.get(module_name)
    return tuple(getattr(library, n) for n in names if library is not None and hasattr(library, n))


def _kind(module: nn.Module) -> str | None:
    kind = {nn.Linear: "linear", nn.Conv2d: "conv", nn.AvgPool2d: "avgpool", nn.Flatten: "flatten",
            nn.ReLU: "relu", nn.Dropout: "skip", nn.Identity: "skip"}.get(type(module))
    if kind is not None:
        return kind
    # exact types: a subclass may change the forward
    if type(module) in _library_class("snntorch", "Leaky"):
        return "leaky"
    if type(module) in _library_class("sinabs.layers", "IAF", "IAFSqueeze"):
        return "iaf"
    if type(module) in _library_class("sinabs.layers", "SumPool2d"):
        return "sumpool"
    return None


def _modules(module) -> list[_Module]:
    if not isinstance(module, nn.Sequential):
        raise TorchImportError(f"from_torch takes an nn.Sequential, not {type(module).__name__}")
    out: list[_Module] = []

    def walk(seq: nn.Sequential, prefix: str):
        for name, child in seq.named_children():
            index = f"{prefix}{name}"
            if type(child) is nn.Sequential:
                walk(child, f"{index}.")
                continue
            kind = _kind(child)
            if kind is None:
                raise TorchImportError(f"module {index} ({type(child).__name__}) is not "
                                       f"supported: from_torch takes {_SUPPORTED}")
            if kind != "skip":
                out.append(_Module(index, child, kind))

    walk(module, "")
    if not out:
        raise TorchImportError("the Sequential holds no layer")
    return out


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(int(v) for v in value)


def _conv_padding(m: _Module) -> tuple[int, int]:
    conv = m.module
    if conv.groups != 1 or _pair(conv.dilation) != (1, 1):
        raise m.error(f"groups = {conv.groups} and dilation = {conv.dilation}; spikeforge "
                      "convolutions have groups 1 and dilation 1")
    if conv.padding_mode != "zeros":
        raise m.error(f"padding_mode {conv.padding_mode!r}; spikeforge pads with zeros")
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        kernel = _pair(conv.kernel_size)
        if _pair(conv.stride) != (1, 1) or not all(k % 2 for k in kernel):
            raise m.error("padding 'same' needs stride 1 and an odd kernel to be symmetric")
        return (kernel[0] // 2, kernel[1] // 2)
    return _pair(conv.padding)


def _pool_shape(m: _Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(kernel, stride, padding)`` of an AvgPool2d or sinabs SumPool2d."""
    pool = m.module
    if getattr(pool, "ceil_mode", False):
        raise m.error("ceil_mode = True; spikeforge pools whole windows only")
    kernel = _pair(pool.kernel_size)
    stride = kernel if pool.stride is None else _pair(pool.stride)
    padding = _pair(getattr(pool, "padding", 0))
    if m.kind == "avgpool":
        if pool.divisor_override is not None:
            raise m.error(f"divisor_override = {pool.divisor_override}; spikeforge averages "
                          "over the whole window")
        if padding != (0, 0) and not pool.count_include_pad:
            raise m.error("count_include_pad = False with padding: the divisor varies per "
                          "window, spikeforge's does not")
    return kernel, stride, padding


def _input_shape(modules: list[_Module], input_shape, n_pixels: int | None) -> tuple[int, ...]:
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in (1, 3) or any(s < 1 for s in shape):
            raise TorchImportError(f"input_shape must be (n,) or (C, H, W), not {input_shape!r}")
        return shape
    first = next((m for m in modules if m.kind in ("linear", "conv")), None)
    if first is None:
        raise TorchImportError("the Sequential has no Linear or Conv2d layer")
    if first.kind == "conv":
        side = math.isqrt(n_pixels) if n_pixels else 0
        if first.module.in_channels == 1 and side and side * side == n_pixels:
            return (1, side, side)
        raise first.error("the input image's size is unknown: pass input_shape=(C, H, W)")
    return (first.module.in_features,)


def _after(m: _Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape after module ``m`` on input ``shape`` (checked)."""
    if m.kind == "linear":
        if math.prod(shape) != m.module.in_features:
            raise m.error(f"takes {m.module.in_features} inputs but gets {math.prod(shape)} "
                          f"(shape {shape})")
        if len(shape) != 1:
            raise m.error(f"gets an image of shape {shape}: put an nn.Flatten() before it")
        return (m.module.out_features,)
    if m.kind == "flatten":
        if (m.module.start_dim, m.module.end_dim) != (1, -1):
            raise m.error(f"flattens dims {m.module.start_dim}..{m.module.end_dim}; spikeforge "
                          "flattens whole images (start_dim=1, end_dim=-1)")
        return (math.prod(shape),)
    if m.kind in ("relu", "leaky", "iaf"):
        return shape
    if len(shape) != 3:
        raise m.error(f"needs an image (C, H, W) but gets shape {shape}")
    channels, height, width = shape
    if m.kind == "conv":
        if m.module.in_channels != channels:
            raise m.error(f"takes {m.module.in_channels} channels but gets {channels}")
        kernel, stride = _pair(m.module.kernel_size), _pair(m.module.stride)
        padding, channels = _conv_padding(m), m.module.out_channels
    else:
        kernel, stride, padding = _pool_shape(m)
    h = (height + 2 * padding[0] - kernel[0]) // stride[0] + 1
    w = (width + 2 * padding[1] - kernel[1]) // stride[1] + 1
    if h < 1 or w < 1:
        raise m.error(f"its {kernel} window does not fit the {height}x{width} input")
    return (channels, h, w)


def _steps(progress: bool, console: Console | None, total: int, title: str):
    """A rich progress bar of ``total`` steps (or a silent stand-in)."""
    if not progress:
        return _Silent()
    return _Bar(Progress(TextColumn(title + " {task.description}"), BarColumn(),
                         MofNCompleteColumn(), TimeElapsedColumn(),
                         console=console or Console()), total)


class _Silent:
    def __enter__(self):
        return lambda description="": None

    def __exit__(self, *exc):
        return False


class _Bar:
    def __init__(self, progress: Progress, total: int):
        self.progress, self.total = progress, total

    def __enter__(self):
        self.progress.__enter__()
        task = self.progress.add_task("", total=self.total)
        return lambda description="": self.progress.update(task, advance=1,
                                                            description=description)

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


# --- the conversion path (ReLU) ------------------------------------------------------------------

def _arch(modules: list[_Module], shape: tuple[int, ...]) -> tuple[str, list[_Module]]:
    """The trainer's architecture spec of a ReLU Sequential, and its Linear/Conv2d modules."""
    tokens, synapses = [], []
    pending: _Module | None = None  # a Linear/Conv2d waiting for its ReLU
    for k, m in enumerate(modules):
        if m.kind in ("sumpool", "leaky", "iaf"):
            raise m.error("a ReLU network (the ANN-to-SNN conversion path) cannot also hold "
                          "sum pooling or spiking neurons: use AvgPool2d and ReLU only, or no "
                          "ReLU at all")
        if m.kind == "relu":
            if pending is None:
                raise m.error("does not follow a Linear or Conv2d; the conversion path puts "
                              "a ReLU right after each hidden layer's synapses")
            pending = None
            shape = _after(m, shape)
            continue
        if pending is not None:
            raise pending.error("has no ReLU after it but is not the last layer: every hidden "
                                "Linear/Conv2d needs one")
        if m.kind == "flatten":
            shape = _after(m, shape)
            continue
        if m.kind == "linear":
            shape = _after(m, shape)
            tokens.append(f"f{m.module.out_features}")
        elif m.kind == "conv":
            shape = _after(m, shape)
            kernel, stride, padding = (_pair(m.module.kernel_size), _pair(m.module.stride),
                                       _conv_padding(m))
            if kernel[0] != kernel[1] or stride[0] != stride[1] or padding[0] != padding[1]:
                raise m.error(f"kernel {kernel}, stride {stride}, padding {padding}: the "
                              "conversion path takes square kernels, strides and paddings")
            tokens.append(f"c{m.module.out_channels}k{kernel[0]}s{stride[0]}p{padding[0]}")
        else:  # avgpool
            shape = _after(m, shape)
            kernel, stride, padding = _pool_shape(m)
            if padding != (0, 0) or kernel[0] != kernel[1] or stride[0] != stride[1]:
                raise m.error(f"kernel {kernel}, stride {stride}, padding {padding}: the "
                              "conversion path takes square windows without padding")
            tokens.append(f"p{kernel[0]}s{stride[0]}")
            continue
        synapses.append(m)
        last = not any(x.kind in ("linear", "conv") for x in modules[k + 1:])
        pending = None if last else m
        if last and any(x.kind == "relu" for x in modules[k + 1:]):
            relu = next(x for x in modules[k + 1:] if x.kind == "relu")
            raise relu.error("follows the last layer, which the network reads out by its "
                             "membrane (argmax): drop it")
        if last and m.kind != "linear":
            raise m.error("is the last layer; the conversion path reads out a Linear layer")
    if len(synapses) < 2:
        raise TorchImportError("a ReLU network needs a hidden layer and a Linear readout")
    return "-".join(tokens), synapses


def _convert(modules, input_shape, calibration, labels, *, timesteps, encoder, pixel_bits,
             w_bits, percentile, v_init_half, progress, console, original) -> tuple:
    from spikeforge.sw.train import ConfigError, QuantizationError, SpikingNet, TrainConfig
    from spikeforge.sw.train.loop import calibrate_thresholds

    if calibration is None:
        raise TorchImportError(
            "a ReLU network is converted by setting each layer's threshold from its "
            "activations: pass calibration=pixels (int[N, n_inputs], e.g. "
            "sf.load_dataset('digits', split='train')[0])")
    pixels = torch.as_tensor(calibration)
    if pixels.dim() != 2 or pixels.dtype.is_floating_point:
        raise TorchImportError(f"calibration must be integer pixels int[N, n_inputs], not "
                               f"{pixels.dtype} of shape {tuple(pixels.shape)}")
    shape = _input_shape(modules, input_shape, pixels.shape[1])
    if math.prod(shape) != pixels.shape[1]:
        raise TorchImportError(f"the calibration images have {pixels.shape[1]} pixels but the "
                               f"input shape {shape} holds {math.prod(shape)}")
    spec, synapses = _arch(modules, shape)
    n_out = synapses[-1].module.out_features
    try:
        config = TrainConfig(method="ann", arch=spec, timesteps=timesteps, w_bits=w_bits,
                             encoder=encoder, percentile=percentile, v_init_half=v_init_half,
                             epochs=0, ann_epochs=0, baseline_epochs=0)
        image = shape if len(shape) == 3 else None
        model = SpikingNet(config, pixels.shape[1], n_out, pixel_bits, image)
    except ConfigError as error:
        raise TorchImportError(f"cannot convert: {error}") from None
    with torch.no_grad():
        for m, linear in zip(synapses, model.linears, strict=True):
            linear.weight.copy_(m.module.weight.detach().to(linear.weight.dtype))
            if m.module.bias is None:
                linear.bias.zero_()
            else:
                linear.bias.copy_(m.module.bias.detach().to(linear.bias.dtype))
    model.encoder.encode(pixels, 1)  # the pixels' range, checked once (a ContractError)
    with _steps(progress, console, len(model.neurons) + 1, "converting:") as step:
        for layer in range(len(model.neurons)):
            calibrate_thresholds(model, pixels, percentile, layers=[layer])
            step(f"threshold of {synapses[layer].what}")
        try:
            network = model.to_network()
        except QuantizationError as error:
            raise TorchImportError(f"cannot quantize: {error}") from None
        step("quantized")
    scales = model.scales()
    lines = []
    neuron = 0
    for layer, scale in zip(network.layers, scales, strict=True):
        if layer.kind == "sumpool":
            lines.append(f"{layer.name}: sum pooling {layer.kernel} (the average's 1/{layer.area} "
                         "folded into the next layer)")
            continue
        m = synapses[neuron]
        readout = ("non-firing (membrane readout)" if not layer.fires else
                   f"threshold {float(model.neurons[neuron].thresholds()[0].detach()):.4g} -> "
                   f"theta={int(layer.theta[0])}, v_init={layer.v_init}")
        lines.append(f"{layer.name} ({m.what}): {layer.kind}, w_bits={layer.w_bits}, scale "
                     f"{scale:.4g}, v_bits={layer.v_bits}, {readout}")
        neuron += 1
    report = TorchReport("conversion", network.timesteps, network.encoder, lines, scales,
                         notes=[f"thresholds: the {percentile:g}th percentile of each layer's "
                                f"activations on {len(pixels)} calibration images"])
    if labels is not None:
        labels = torch.as_tensor(labels)
        values = pixels.to(torch.float32) / model.encoder.pixel_max
        with torch.no_grad():
            logits = original(values.reshape(len(values), *shape))
        report.float_accuracy = float((logits.argmax(1) == labels).float().mean())
        report.accuracy = float((network.predict(pixels) == labels).float().mean())
    return network, report


# --- the spiking path (through NIR) -----------------------------------------------------------

def _array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    return np.asarray(value, dtype=np.float64)


def _neuron_node(nir, m: _Module) -> tuple[object, str, str]:
    """The NIR node of a spiking module, its library and the reset it runs."""
    module = m.module
    if m.kind == "leaky":
        if module.inhibition or module.state_quant:
            raise m.error("inhibition and state quantization have no spikeforge equivalent")
        if not torch.all(module.graded_spikes_factor == 1):
            raise m.error("graded spikes (graded_spikes_factor != 1): spikeforge spikes are 1")
        reset = module.reset_mechanism
        if reset not in ("subtract", "zero"):
            raise m.error(f"reset_mechanism {reset!r}; spikeforge resets by 'subtract' or "
                          "'zero'")
        if reset == "subtract" and not module.reset_delay:
            raise m.error("reset_mechanism 'subtract' with reset_delay=False requires V > 2 * "
                          "threshold to fire again after a reset (snnTorch's double-reset "
                          "correction), which spikeforge does not run: use reset_delay=True")
        beta = _array(module.beta).reshape(-1)
        threshold = _array(module.threshold).reshape(-1)
        with np.errstate(divide="ignore"):  # beta = 1: tau = r = inf, as snnTorch exports it
            tau = np.where(beta == 1.0, np.inf, SNNTORCH_DT / (1.0 - beta))
            r = np.where(beta == 1.0, np.inf, tau / SNNTORCH_DT)
        node = nir.LIF(tau=tau, r=r, v_leak=np.zeros_like(tau), v_threshold=threshold)
        return node, "snnTorch", reset
    from sinabs.activation import MembraneReset, MembraneSubtract, SingleSpike

    if module.spike_fn is not SingleSpike:
        raise m.error(f"spike_fn {getattr(module.spike_fn, '__name__', module.spike_fn)} can "
                      "fire several spikes in one step, spikeforge neurons one: use "
                      "spike_fn=sinabs.activation.SingleSpike")
    if module.min_v_mem is not None:
        floor = _array(module.min_v_mem).reshape(-1)
        raise m.error(f"min_v_mem = {floor[0]:g}: spikeforge membranes have no floor")
    if module.tau_syn is not None or getattr(module, "norm_input", False):
        raise m.error("a synaptic time constant or input normalisation has no spikeforge "
                      "equivalent")
    reset_fn = module.reset_fn
    if type(reset_fn) is MembraneSubtract and reset_fn.subtract_value is None:
        reset = "subtract"
    elif type(reset_fn) is MembraneReset and reset_fn.reset_value == 0:
        reset = "zero"
    else:
        raise m.error(f"reset_fn {reset_fn!r}; spikeforge subtracts the threshold or resets to 0")
    threshold = _array(module.spike_threshold).reshape(-1)
    node = nir.IF(r=np.ones_like(threshold), v_threshold=threshold)
    return node, "sinabs", reset


#: How NIR's reading (docs/nir.md) resets each library's node when no reset is given.
_NIR_RESET = {"snnTorch": "zero", "sinabs": "subtract"}


def _via_nir(modules, input_shape, *, timesteps, encoder, pixel_bits, w_bits, v_bits, progress,
             console) -> tuple:
    nir = _nir()
    shape = _input_shape(modules, input_shape, None)
    nodes: dict[str, object] = {"input": nir.Input(input_type={"input": np.array(shape)})}
    order = ["input"]
    names = {}
    neurons: list[tuple[_Module, str, str]] = []
    with _steps(progress, console, len(modules) + 1, "importing:") as step:
        for m in modules:
            if m.kind == "relu":
                raise m.error("a ReLU next to spiking neurons: give either a ReLU network "
                              "(converted) or a spiking one")
            before, shape = shape, _after(m, shape)
            module = m.module
            if m.kind == "linear":
                weight = _array(module.weight)
                node = (nir.Linear(weight=weight) if module.bias is None else
                        nir.Affine(weight=weight, bias=_array(module.bias)))
            elif m.kind == "conv":
                node = nir.Conv2d(input_shape=before[1:], weight=_array(module.weight),
                                  stride=_pair(module.stride), padding=_conv_padding(m),
                                  dilation=(1, 1), groups=1,
                                  bias=(np.zeros(module.out_channels) if module.bias is None
                                        else _array(module.bias)))
            elif m.kind in ("avgpool", "sumpool"):
                kernel, stride, padding = _pool_shape(m)
                kind = nir.AvgPool2d if m.kind == "avgpool" else nir.SumPool2d
                node = kind(kernel_size=np.array(kernel), stride=np.array(stride),
                            padding=np.array(padding))
            elif m.kind == "flatten":
                node = nir.Flatten(input_type={"input": np.array(before)}, start_dim=0,
                                   end_dim=-1)
            else:
                node, library, reset = _neuron_node(nir, m)
                neurons.append((m, library, reset))
            nodes[m.index] = node
            names[m.index] = m.what
            order.append(m.index)
            step(m.what)
        nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
        order.append("output")
        libraries = {library for _, library, _ in neurons}
        if len(libraries) > 1:
            first = next(m for m, library, _ in neurons if library != neurons[0][1])
            raise first.error(f"mixes {' and '.join(sorted(libraries))} neurons, whose "
                              "conventions differ: use one library's")
        resets = {reset for _, _, reset in neurons}
        if len(resets) > 1:
            first, _, first_reset = neurons[0]
            other, _, other_reset = next(n for n in neurons if n[2] != first_reset)
            raise other.error(f"resets by {other_reset!r} but {first.what} by {first_reset!r}: "
                              "from_torch imports one reset per network")
        library = next(iter(libraries), None)
        reset = next(iter(resets), None)
        graph = nir.NIRGraph(nodes=nodes, edges=list(itertools.pairwise(order)))
        try:
            network, nir_report = from_nir(
                graph, timesteps=timesteps, encoder=encoder, pixel_bits=pixel_bits,
                w_bits=w_bits, v_bits=v_bits,
                dialect="snntorch" if library == "snnTorch" else "auto",
                reset=None if library is None or reset == _NIR_RESET[library] else reset)
        except NirError as error:
            raise TorchImportError(_name_modules(str(error), names)) from None
        step("imported")
    lines = []
    for layer in nir_report.layers:  # "name (nodes): what" -> "module 0 (Linear) + ...: what"
        what = layer.line().split("): ", 1)[1]
        lines.append(f"{' + '.join(names.get(n, n) for n in layer.nodes)}: "
                     f"{_name_modules(what, names)}")
    report = TorchReport("spiking", network.timesteps, network.encoder, lines,
                         nir_report.scales, nir=nir_report,
                         notes=[*nir_report.notes, *(f"default: {a}" for a in nir_report.assumed)])
    return network, report


def _name_modules(text: str, names: dict[str, str]) -> str:
    """``node '3'`` -> ``module 3 (Leaky)`` in a message of :func:`from_nir`."""
    def replace(match):
        name = match.group(1)
        return names.get(name, match.group(0))

    return re.sub(r"node '([^']*)'", replace, text)


def from_torch(module: nn.Module, *, input_shape=None, calibration=None, labels=None,
               timesteps: int | None = None, encoder: str | None = None,
               pixel_bits: int | None = None, w_bits: int | None = None,
               v_bits: int | None = None, percentile: float | None = None,
               v_init_half: bool = True, progress: bool = True,
               console: Console | None = None) -> tuple[Network, TorchReport]:
    """Convert a torch ``nn.Sequential`` into a golden :class:`Network`; see the module doc.

    Parameters
    ----------
    module
        An ``nn.Sequential`` (nested ones are flattened) of ``Linear``, ``Conv2d``,
        ``AvgPool2d``, ``Flatten`` and either ``ReLU`` (conversion) or snnTorch ``Leaky`` /
        sinabs ``IAF``, ``IAFSqueeze`` (with sinabs ``SumPool2d``) activations.
    input_shape
        ``(n,)`` or ``(C, H, W)`` of one input. Default: the first ``Linear``'s inputs; a
        network starting with a ``Conv2d`` needs it, unless the calibration images are square
        one-channel images.
    calibration, labels
        Integer pixels ``int[N, n_inputs]`` the thresholds of a ReLU network are set from
        (required for it, unused by a spiking one), and their labels (optional: the report then
        gives the accuracy before and after).
    timesteps, encoder, pixel_bits
        ``T`` (default :data:`spikeforge.sw.nir.DEFAULT_TIMESTEPS`), the input encoder
        (``"rate"``, the default, ``"radix"`` or ``"direct"``) and its pixel width (default
        :data:`spikeforge.sw.data.PIXEL_BITS`).
    w_bits, v_bits
        Widths. Conversion: ``w_bits`` default :data:`DEFAULT_CONVERSION_W_BITS`, ``v_bits``
        what the trainer's bound needs. Spiking: :func:`~spikeforge.sw.nir.from_nir`'s
        defaults (integer weights exactly in the fewest bits, float ones at 8; the smallest
        ``v_bits >= 16`` that cannot saturate).
    percentile, v_init_half
        Conversion only: Threshold LayerNorm's percentile (default
        ``TrainConfig.percentile``) and whether membranes start at half the threshold (the
        trainer's default).
    progress, console
        A progress bar on ``console`` (a new one by default) unless ``progress`` is false.

    Returns ``(network, report)`` (:class:`TorchReport`). Raises :class:`TorchImportError`
    (one line naming the module by index and type) for a module or arrangement it cannot
    convert, and :class:`~spikeforge.sw.golden.ContractError` for calibration pixels out of
    range.
    """
    modules = _modules(module)
    if any(m.kind == "relu" for m in modules):
        from spikeforge.sw.train import TrainConfig

        was_training = module.training
        module.eval()
        try:
            return _convert(modules, input_shape, calibration, labels,
                            timesteps=DEFAULT_TIMESTEPS if timesteps is None else timesteps,
                            encoder=encoder or "rate",
                            pixel_bits=PIXEL_BITS if pixel_bits is None else pixel_bits,
                            w_bits=DEFAULT_CONVERSION_W_BITS if w_bits is None else w_bits,
                            percentile=TrainConfig.percentile if percentile is None
                            else percentile, v_init_half=v_init_half, progress=progress,
                            console=console, original=module)
        finally:
            module.train(was_training)
    return _via_nir(modules, input_shape, timesteps=timesteps, encoder=encoder,
                    pixel_bits=pixel_bits, w_bits=w_bits, v_bits=v_bits, progress=progress,
                    console=console)

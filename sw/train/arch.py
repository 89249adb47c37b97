"""Network architectures: a small grammar, named presets, and their shapes on a given image.

An architecture is a string of layer tokens joined by ``-`` (docs/training.md, "Architectures")::

    conv   cN[kK][sS][pP]   2-D convolution, N output channels, K x K kernel (default 3),
                            stride S (default 1), zero padding P (default 0); spiking neurons
    pool   pK[sS]           K x K average pooling, stride S (default K); no neurons
    dense  fN               N fully connected neurons

for example ``c8k3p1-p2-c16k3p1-p2-f10``. The last token is the output layer: a dense layer
with one neuron per class, which does not fire and is read out by its membrane. Every other
conv and dense layer is a hidden spiking layer. A flatten between a shaped layer and a dense
one is implicit (C-major, as ``torch.flatten``), exactly as in the golden model.

Presets (:data:`PRESETS`) are names for common networks: ``mlp`` (today's fully connected
network, hidden widths from ``TrainConfig.hidden``), ``conv`` (a small convolutional network
sized for the UP5K and the ECP5 85F), ``conv-wide`` (``conv`` with twice the channels, 16 and
32: the mnist5k accuracy target, docs/training.md "Conv results (measured)"; on the UP5K it
needs the SPRAM) and ``seed001`` (seed 001's three 3x3 convolutions each followed by 2x2
average pooling). :func:`parse_arch` checks the syntax; :func:`resolve_arch`
checks that every layer fits the image of the dataset and returns the shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PRESETS", "Stage", "parse_arch", "arch_spec", "resolve_arch", "neuron_layers",
           "GRAMMAR", "memory_report", "BOARDS"]

#: One-line summary of the grammar, for error messages and ``--help``.
GRAMMAR = ("tokens joined by '-': cN[kK][sS][pP] (conv, N channels, kernel K=3, stride S=1, "
           "padding P=0), pK[sS] (average pool K x K, stride S=K), fN (dense); the last token "
           "is the output fN")

#: Preset name -> spec, with ``{classes}`` for the number of classes; ``mlp`` is built from
#: ``TrainConfig.hidden`` instead (see :func:`arch_spec`).
PRESETS = {
    "mlp": None,
    "conv": "c8k3p1-p2-c16k3p1-p2-f{classes}",
    "conv-wide": "c16k3p1-p2-c32k3p1-p2-f{classes}",
    "seed001": "c8k3p1-p2-c12k3p1-p2-c12k3p1-p2-f{classes}",
}

_CONV = re.compile(r"c(\d+)((?:[ksp]\d+)*)")
_POOL = re.compile(r"p(\d+)(?:s(\d+))?")
_DENSE = re.compile(r"f(\d+)")
_OPTION = re.compile(r"([ksp])(\d+)")


def _error(message: str) -> ValueError:
    from .config import ConfigError  # config imports this module
    return ConfigError(message)


@dataclass(frozen=True)
class Stage:
    """One layer of an architecture. ``kind`` is ``conv``, ``pool`` or ``dense``.

    ``size`` is the channel count (conv) or the neuron count (dense); ``kernel``, ``stride``
    and ``padding`` belong to conv and pool stages. ``in_shape`` and ``out_shape`` are filled
    in by :func:`resolve_arch`: ``(C, H, W)`` for an image, ``(n,)`` for a flat vector.
    ``token`` is the text it was parsed from and ``index`` its position (1-based).
    """

    kind: str
    token: str
    index: int
    size: int = 0
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    in_shape: tuple = ()
    out_shape: tuple = ()

    @property
    def is_neuron(self) -> bool:
        return self.kind != "pool"

    @property
    def fan_in(self) -> int:
        return _numel(self.in_shape)

    @property
    def fan_out(self) -> int:
        return _numel(self.out_shape)

    @property
    def where(self) -> str:
        return f"arch token {self.index} {self.token!r}"


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def arch_spec(arch: str, hidden=None, classes: int | str = "{classes}") -> str:
    """The spec string of ``arch`` (a preset name or a spec), with the output sized to
    ``classes`` for a preset (``mlp``: ``f<h>-..-f<classes>`` from ``hidden``)."""
    text = arch.strip()
    if text == "mlp":
        return "-".join([*(f"f{h}" for h in (hidden or ())), f"f{classes}"])
    if text in PRESETS:
        return PRESETS[text].replace("{classes}", str(classes))
    return text


def parse_arch(spec: str) -> list[Stage]:
    """Parse a spec (not a preset name) into stages, or raise ``ConfigError`` naming the token.

    Checks the syntax and the rules that do not depend on the image: at least one token, the
    last one a dense output layer, positive sizes, a window no smaller than its stride's use,
    padding below the kernel, and no conv or pool after a dense layer (which outputs a flat
    vector). The output's size is checked against the classes by :func:`resolve_arch`.
    """
    text = spec.strip()
    if not text:
        raise _error(f"arch is empty: {GRAMMAR}")
    tokens = text.split("-")
    stages: list[Stage] = []
    flat_since = None
    for index, token in enumerate(tokens, 1):
        where = f"arch token {index} {token!r}"
        if not token:
            raise _error(f"arch {text!r} has an empty token at position {index} "
                         f"(two '-' in a row, or one at an end)")
        if m := _CONV.fullmatch(token):
            options: dict[str, int] = {}
            for key, value in _OPTION.findall(m.group(2)):
                if key in options:
                    raise _error(f"{where}: '{key}' is given twice")
                options[key] = int(value)
            stage = Stage("conv", token, index, size=int(m.group(1)),
                          kernel=options.get("k", 3), stride=options.get("s", 1),
                          padding=options.get("p", 0))
            if stage.size < 1:
                raise _error(f"{where}: a convolution needs at least 1 output channel")
            if stage.kernel < 1 or stage.stride < 1:
                raise _error(f"{where}: kernel and stride must be >= 1")
            if stage.padding >= stage.kernel:
                raise _error(f"{where}: padding {stage.padding} must be smaller than the "
                             f"kernel {stage.kernel} (a window would see only padding)")
        elif m := _POOL.fullmatch(token):
            kernel = int(m.group(1))
            stride = int(m.group(2)) if m.group(2) is not None else kernel
            stage = Stage("pool", token, index, kernel=kernel, stride=stride)
            if kernel < 1 or stride < 1:
                raise _error(f"{where}: pooling kernel and stride must be >= 1")
        elif m := _DENSE.fullmatch(token):
            stage = Stage("dense", token, index, size=int(m.group(1)))
            if stage.size < 1:
                raise _error(f"{where}: a dense layer needs at least 1 neuron")
        else:
            raise _error(f"{where} is not a layer: {GRAMMAR}")
        if stage.kind != "dense" and flat_since is not None:
            raise _error(f"{where}: a {stage.kind} layer needs an image, but {flat_since!r} "
                         "before it outputs a flat vector (put convolutions and pooling "
                         "before the dense layers)")
        if stage.kind == "dense" and flat_since is None:
            flat_since = token
        stages.append(stage)
    if stages[-1].kind != "dense":
        raise _error(f"arch {text!r} must end with the output layer fN (one neuron per "
                     f"class), not {stages[-1].token!r}")
    return stages


def neuron_layers(spec: str) -> int:
    """Number of conv and dense layers of a spec (each has weights and one ``w_bits``)."""
    return sum(stage.is_neuron for stage in parse_arch(spec))


def resolve_arch(spec: str, input_shape: tuple[int, int, int], classes: int) -> list[Stage]:
    """:func:`parse_arch`, then every stage's input and output shape on ``input_shape``.

    Raises ``ConfigError`` naming the token when a conv or pool window does not fit its input
    (for a conv, its input with the padding), or when the output layer's size differs from
    ``classes``.
    """
    stages = parse_arch(spec)
    shape = tuple(input_shape)
    out = []
    for stage in stages:
        if stage.kind == "dense":
            after = (stage.size,)
        else:
            channels, height, width = shape
            pad = stage.padding
            if stage.kernel > min(height, width) + 2 * pad:
                padded = f" (padded by {pad}: {height + 2 * pad}x{width + 2 * pad})" if pad \
                    else ""
                what = "kernel" if stage.kind == "conv" else "pooling window"
                raise _error(f"{stage.where}: the {stage.kernel}x{stage.kernel} {what} does "
                             f"not fit its {height}x{width} input{padded}")
            h_out = (height + 2 * pad - stage.kernel) // stage.stride + 1
            w_out = (width + 2 * pad - stage.kernel) // stage.stride + 1
            after = (stage.size if stage.kind == "conv" else channels, h_out, w_out)
        out.append(Stage(**{**stage.__dict__, "in_shape": shape, "out_shape": after}))
        shape = after
    last = out[-1]
    if last.size != classes:
        raise _error(f"{last.where}: the output layer has {last.size} neurons but the data "
                     f"has {classes} classes")
    return out


# --- memory budget of a converted network --------------------------------------------------------

#: Memories of the two boards' FPGAs, in bits: block RAM (EBR / DP16KD) and SPRAM.
BOARDS = {
    "UP5K": {"ebr": 30 * 4096, "spram": 4 * 256 * 1024, "note": "30 EBR x 4 kbit, 4 SPRAM x "
             "256 kbit, 5280 LCs"},
    "ECP5-85F": {"ebr": 208 * 18 * 1024, "spram": 0, "note": "208 DP16KD x 18 kbit"},
}


def memory_report(network) -> list[dict]:
    """Per layer of a golden ``Network``: the bits of its weights (a convolution stores its
    kernel once, ``C_out * C_in * kh * kw * w_bits``), of its biases (``v_bits`` each) and of
    its membranes (one ``v_bits`` word per neuron). Pooling layers hold nothing."""
    rows = []
    for layer in network.layers:
        if layer.kind == "sumpool":
            rows.append({"name": layer.name, "kind": "sumpool", "neurons": 0, "weights": 0,
                         "weight_bits": 0, "bias_bits": 0, "membrane_bits": 0})
            continue
        rows.append({"name": layer.name, "kind": layer.kind, "neurons": layer.fan_out,
                     "weights": layer.weight.numel(), "w_bits": layer.w_bits,
                     "v_bits": layer.v_bits, "weight_bits": layer.weight.numel() * layer.w_bits,
                     "bias_bits": layer.bias.numel() * layer.v_bits,
                     "membrane_bits": layer.fan_out * layer.v_bits})
    return rows

"""The trainable network and its exact conversion to the integer golden model.

One :class:`SpikingMLP` holds float weights ``W_l``, biases ``b_l`` and the neurons'
parameters, and runs in three modes:

``ann``
    The float ANN (ReLU, or seed 001's QReLU for ``qrelu``), fed the decoded input value.
``snn``
    The spiking network, timestep by timestep, with the contract's neuron rule, fake-quantized
    weights, thresholds and biases, and surrogate gradients (direct training).
``hardware``
    The integer network that :meth:`compile` produces, run with integer-valued float64
    arithmetic (exact): leak, integrate, saturate, fire, soft reset. Its predictions must equal
    :meth:`sw.golden.Network.predict` of :meth:`to_network` bit for bit; the tests check it.

Scales (threshold methods). Layer ``l`` receives binary spikes whose value is the amplitude
``a_{l-1}`` of the previous layer's neurons (its mean threshold; for direct input coding the
input "spike" is the integer pixel and ``a_0 = 1 / pixel_max``). Its effective weight is
``W_l * a_{l-1}``; a per-layer scale ``s_l`` (chosen to minimise the weight quantization error)
turns it into ``w_bits``-bit integers, and the bias, the thresholds and the initial membrane are
divided by the *same* ``s_l`` and rounded: an IF layer is invariant to a common scale of its
weights, bias, threshold and membrane, so nothing else changes. Thresholds round to at least 1.

Radix (seed 002). Input frames are the pixel's bit planes, LSB first. A radix layer with shift
leak 1 and initial membrane ``c`` emits the low ``T`` bits of
``A = c + b (2**T - 1) + sum_j W_j X_j`` (``X_j`` the input trains read as binary numbers), and
a non-firing leak-1 layer ends with membrane ``floor(A / 2**(T-1))`` (both exact, proven in
docs/training.md). So a radix layer computes ``A mod 2**T``: it does not rectify, and its
weights live in integer units (scale 1); only the last layer has a free scale.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..golden import DenseLayer, Encoder, Network
from .config import TrainConfig
from .neurons import ThresholdNeuron, qrelu, round_ste

__all__ = ["SpikingMLP", "QuantizationError", "weight_scale", "run_integer", "IntLayer"]


class QuantizationError(ValueError):
    """The trained model does not fit the integer contract; the message says what and where."""


def weight_scale(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-layer scale for ``bits``-bit symmetric weights, minimising the rounding MSE.

    Candidates clip at ``max|w| * r`` for r in 1.0, 0.95, .. 0.3; the weights become
    ``clamp(round(w / s), -qmax, qmax)`` with ``qmax = 2**(bits-1) - 1``.
    """
    w = w.detach()
    qmax = (1 << (bits - 1)) - 1
    top = w.abs().max().clamp(min=1e-12)
    ratios = torch.linspace(1.0, 0.3, 15, dtype=w.dtype)
    scales = top * ratios / qmax
    q = torch.clamp(torch.round(w.reshape(1, -1) / scales[:, None]), -qmax, qmax) * scales[:, None]
    err = ((q - w.reshape(1, -1)) ** 2).sum(1)
    return scales[int(torch.argmin(err))]


class IntLayer(dict):
    """The integer parameters of one layer: the keyword arguments of :class:`DenseLayer`."""


def run_integer(layers: list[dict], frames: torch.Tensor, timesteps: int):
    """Hardware mode: run integer layers on integer frames, exactly, with float64 tensors.

    Written from the contract independently of :mod:`sw.golden` (which it is checked against).
    Returns ``(output, counts)``: the readout of the last layer and the input event count of
    every layer per sample (for synaptic operations).
    """
    x = frames.to(torch.float64)
    events = []
    spikes = v = None
    for layer in layers:
        events.append((x != 0).sum((1, 2)))
        w = layer["weight"].to(torch.float64)
        current = x @ w.T + layer["bias"].to(torch.float64)
        lo, hi = -2.0 ** (layer["v_bits"] - 1), 2.0 ** (layer["v_bits"] - 1) - 1
        v = torch.full(current[:, 0].shape, float(layer["v_init"]), dtype=torch.float64)
        spikes = torch.zeros_like(current)
        theta = layer["theta"].to(torch.float64)
        leak = 2.0 ** layer["leak_shift"]
        for t in range(timesteps):
            if t > 0 and layer["leak_shift"]:
                v = torch.floor(v / leak)
            v = torch.clamp(v + current[:, t], lo, hi)
            if layer["fires"]:
                if layer["fire_mode"] == "radix":
                    s = v - 2 * torch.floor(v / 2)
                    v = v - s
                else:
                    s = (v >= theta[t]).to(torch.float64)
                    v = v - theta[t] * s
                spikes[:, t] = s
        x = spikes
    last = layers[-1]
    if not last["fires"]:
        out = v
    elif last["fire_mode"] == "radix":
        out = (spikes * (2.0 ** torch.arange(timesteps, dtype=torch.float64))[None, :, None]).sum(1)
    else:
        out = spikes.sum(1)
    return out.to(torch.int64), torch.stack(events, 1)


class SpikingMLP(nn.Module):
    """A fully connected spiking network ``n_in - hidden.. - n_out`` for one training method.

    Hidden layers are threshold neurons (``if``: fixed threshold; ``atif-u``, ``qrelu``,
    ``ptl``, ``ann``: one threshold per layer; ``atif-nu``: ``p_1..p_T``) or, for ``radix``,
    radix neurons. The last layer never fires: the class is the argmax of its final membrane.
    """

    def __init__(self, config: TrainConfig, n_in: int, n_out: int, pixel_bits: int = 4):
        super().__init__()
        self.config = config
        self.timesteps = config.timesteps
        self.w_bits = config.w_bits
        self.pixel_bits = pixel_bits
        self.encoder = Encoder(config.encoder_kind, pixel_bits)
        sizes = [n_in, *config.hidden, n_out]
        self.sizes = sizes
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.radix = config.method == "radix"
        kind = {"if": "fixed", "qrelu": "fixed", "atif-nu": "nu"}.get(config.method, "trainable")
        #: arithmetic right shift of every layer's membrane (radix: the base-2 shift leak)
        self.leak_shift = 1 if self.radix else 0
        self.neurons = nn.ModuleList()
        for _ in config.hidden:
            self.neurons.append(ThresholdNeuron(
                config.timesteps, kind, config.theta_init, config.v_init_half,
                config.surrogate, config.alpha))
        self.stats: dict = {}

    # --- parameters in the SNN's units -------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return len(self.linears)

    def input_amplitude(self) -> float:
        kind = self.encoder.kind.value
        if kind == "direct":
            return 1.0 / self.encoder.pixel_max
        return 1.0

    def amplitude(self, layer: int) -> torch.Tensor:
        """Value of one input spike of ``layer`` (the previous layer's spike amplitude)."""
        if layer == 0:
            return torch.tensor(self.input_amplitude())
        return self.neurons[layer - 1].amplitude()

    def quantized(self, layer: int) -> dict:
        """Fake-quantized float parameters of ``layer`` in its SNN units (with gradients).

        Returns ``weight``, ``bias``, ``theta`` (``[T]``, hidden layers), ``v_init``, the
        ``scale`` and the integers ``weight_int``, ``bias_int``, ``theta_int``, ``v_init_int``.
        """
        lin = self.linears[layer]
        qmax = (1 << (self.w_bits - 1)) - 1
        last = layer == self.n_layers - 1
        w_eff = lin.weight * self.amplitude(layer)
        scale = weight_scale(w_eff, self.w_bits)
        w_int = torch.clamp(torch.round(w_eff.detach() / scale), -qmax, qmax)
        w = w_eff + (w_int * scale - w_eff).detach()
        b = round_ste(lin.bias / scale) * scale
        b_int = torch.round(lin.bias.detach() / scale)
        if last:
            return dict(weight=w, bias=b, theta=None, v_init=torch.tensor(0.0), scale=scale,
                        weight_int=w_int, bias_int=b_int, theta_int=None, v_init_int=0)
        neuron = self.neurons[layer]
        th = neuron.thresholds()
        th_int = torch.clamp(torch.round(th.detach() / scale), min=1)
        theta = th + (th_int * scale - th).detach()
        v_int = int(th_int[0]) // 2 if neuron.v_init_half else 0
        v_init = theta[0] / 2 + (v_int * scale - theta[0] / 2).detach() if neuron.v_init_half \
            else torch.zeros(())
        return dict(weight=w, bias=b, theta=theta, v_init=v_init, scale=scale, weight_int=w_int,
                    bias_int=b_int, theta_int=th_int, v_init_int=v_int)

    # --- forward passes ----------------------------------------------------------------------

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Integer pixels ``[B, n_in]`` to the golden encoder's frames ``[B, T, n_in]`` (float)."""
        return self.encoder.encode(pixels, self.timesteps).to(torch.float32)

    def forward(self, frames: torch.Tensor, mode: str = "snn", spiking_upto: int | None = None):
        """Logits ``[B, n_out]`` for encoded ``frames``; see the module doc for ``mode``.

        ``spiking_upto`` (PTL, ``snn`` mode only): layers ``< spiking_upto`` run as SNN, layer
        ``spiking_upto`` is a tandem layer (SNN forward, ANN gradient), later layers are ANN.
        """
        if mode == "hardware":
            out, events = run_integer(self.compile(), frames, self.timesteps)
            self.stats = {"events": events}
            return out.to(torch.float32)
        if self.radix:  # one layer: seed 002's exact ANN domain; deeper: BPTT with shift leak
            return self._radix_forward(frames) if not self.neurons else \
                self._snn_forward(frames)
        if mode == "ann":
            return self._ann_forward(frames, quantize=False)
        if mode == "qann":
            return self._ann_forward(frames, quantize=True)
        if mode == "snn":
            return self._snn_forward(frames, spiking_upto)
        raise ValueError(f"mode must be 'ann', 'qann', 'snn' or 'hardware', not {mode!r}")

    def _ann_forward(self, frames: torch.Tensor, quantize: bool = False):
        """Float ANN on the decoded input value; ``quantize`` (mode ``qann``, seed 001) fake-
        quantizes the weights and replaces ReLU by the QReLU of the layer's threshold."""
        x = frames.mean(1) * self.input_amplitude()
        acts = []
        for layer, lin in enumerate(self.linears):
            if quantize:
                q = self.quantized(layer)
                z = x @ (q["weight"] / self.amplitude(layer)).T + q["bias"]
            else:
                z = lin(x)
            if layer == self.n_layers - 1:
                self.stats = {"acts": acts}
                return z
            if quantize:
                theta = q["theta"].mean()
                x = qrelu(z, theta, self.timesteps, 0.5 if self.neurons[layer].v_init_half else 0)
                acts.append(x * self.timesteps / theta)  # spike counts
            else:
                x = torch.relu(z)
                acts.append(x)
        raise AssertionError("unreachable")

    def _snn_forward(self, frames: torch.Tensor, spiking_upto: int | None = None):
        x = frames
        counts = []
        upto = self.n_layers if spiking_upto is None else spiking_upto
        ann_value = None  # decoded ANN-domain activation once past the spiking part
        for layer in range(self.n_layers):
            q = self.quantized(layer)
            last = layer == self.n_layers - 1
            if layer > upto:  # ANN part of a PTL hybrid: plain float layers on decoded values
                lin = self.linears[layer]
                z = lin(ann_value)
                if last:
                    return z
                ann_value = torch.relu(z)
                continue
            current = x @ q["weight"].T + q["bias"]  # [B, T, out]
            if last:
                if self.leak_shift:
                    v = q["v_init"]
                    for t in range(self.timesteps):
                        v = (self._leak(v, q["scale"]) if t else v) + current[:, t]
                    self.stats = {"counts": counts}
                    return v / 2  # ~ sum_t I_t 2**(t-T), the radix-weighted mean current
                v = q["v_init"] + current.sum(1)
                self.stats = {"counts": counts}
                return v / self.timesteps
            neuron = self.neurons[layer]
            neuron.reset(q["v_init"])
            spikes = []
            for t in range(self.timesteps):
                if t and self.leak_shift:
                    neuron.v = self._leak(neuron.v, q["scale"])
                spikes.append(neuron(current[:, t], q["theta"][t]))
            x = torch.stack(spikes, 1)
            neuron.reset()
            count = x.sum(1)
            counts.append(count)
            if layer == upto:  # tandem layer: SNN count forward, ANN (clamped ReLU) gradient
                theta = q["theta"].mean()
                ann_in = self._decoded_input(frames, layer, counts)
                z_ann = ann_in @ (q["weight"] / self.amplitude(layer)).T + q["bias"]
                proxy = torch.clamp(z_ann, min=0)
                decoded = count * theta / self.timesteps
                ann_value = proxy + (decoded - proxy).detach()
        raise AssertionError("unreachable")

    def _leak(self, v, scale):
        """``V >> leak_shift`` on a membrane held in float units of ``scale``: exact floor of
        the integer membrane forward, gradient ``2**-leak_shift``."""
        if not torch.is_tensor(v):
            v = torch.as_tensor(v, dtype=torch.float32)
        k = 2 ** self.leak_shift
        exact = torch.floor(torch.round(v.detach() / scale.detach()) / k) * scale.detach()
        return v / k + (exact - v / k).detach()

    def _decoded_input(self, frames, layer, counts):
        """Decoded (ANN-domain) value of the input of ``layer`` from SNN spike counts."""
        if layer == 0:
            return frames.mean(1) * self.input_amplitude()
        amp = self.neurons[layer - 1].amplitude()
        return counts[layer - 1].detach() * amp / self.timesteps

    def _radix_forward(self, frames: torch.Tensor):
        """Seed 002's ANN domain (WDT/WPT), exact in integer units (straight-through through
        ``mod``); used for the one-layer radix network, whose output is ``floor(A/2**(T-1))``."""
        T = self.timesteps
        weights = (2.0 ** torch.arange(T, dtype=frames.dtype))
        x = (frames * weights[None, :, None]).sum(1)  # input trains as binary numbers
        for layer in range(self.n_layers):
            q = self.quantized(layer)
            a = q["v_init"] + q["bias"] * (2 ** T - 1) + x @ q["weight"].T
            if layer == self.n_layers - 1:
                self.stats = {}
                return a / 2 ** (T - 1) / q["scale"].detach()
            wrapped = a - 2 ** T * torch.floor(a.detach() / 2 ** T)
            x = wrapped
        raise AssertionError("unreachable")

    # --- conversion --------------------------------------------------------------------------

    @torch.no_grad()
    def compile(self) -> list[dict]:
        """The integer layers (keyword arguments of :class:`DenseLayer`), or QuantizationError."""
        layers = []
        T = self.timesteps
        for layer in range(self.n_layers):
            q = self.quantized(layer)
            last = layer == self.n_layers - 1
            w = q["weight_int"].to(torch.int64)
            b = q["bias_int"].to(torch.int64)
            name = f"layer{layer}"
            theta = torch.ones(T, dtype=torch.int64) if last else q["theta_int"].to(torch.int64)
            fire_mode, leak = "threshold", self.leak_shift
            v_init = int(q["v_init_int"])
            in_max = self.encoder.pixel_max if (layer == 0 and
                                                self.encoder.kind.value == "direct") else 1
            max_current = int((b.abs() + w.abs().sum(1) * in_max).max())
            if leak:  # |V| <= |V|/2 + |I| + theta at every step
                bound = abs(v_init) + 2 * (max_current + int(theta.max())) + 1
            else:
                bound = abs(v_init) + T * max_current
            bound = max(bound, int(theta.max()))
            v_bits = max(8, bound.bit_length() + 1)
            if v_bits > self.config.v_bits_max:
                raise QuantizationError(
                    f"{name}: the membrane needs {v_bits} bits (|V| up to {bound}) but "
                    f"v_bits_max = {self.config.v_bits_max}")
            layers.append(IntLayer(weight=w, bias=b, theta=theta, leak_shift=leak,
                                   fire_mode=fire_mode, v_init=v_init, fires=not last,
                                   w_bits=self.w_bits, v_bits=v_bits, name=name))
        return layers

    def to_network(self) -> Network:
        """The golden model's :class:`Network` of this model (validated by the golden model)."""
        layers = []
        for spec in self.compile():
            try:
                layers.append(DenseLayer(**spec))
            except ValueError as exc:
                raise QuantizationError(f"integer conversion failed: {exc}") from None
        return Network(layers, self.timesteps, self.encoder)

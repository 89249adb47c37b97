"""The trainable network and its exact conversion to the integer golden model.

One :class:`SpikingNet` is built from an architecture (:mod:`spikeforge.sw.train.arch`:
convolutions, average pooling and dense layers). It holds float weights ``W_l`` and biases
``b_l`` of every conv/dense ("neuron") layer and the neurons' parameters, and runs in three
modes:

``ann``
    The float ANN (ReLU, or seed 001's QReLU for ``qrelu``; average pooling), fed the decoded
    input value.
``snn``
    The spiking network, timestep by timestep, with the contract's neuron rule, fake-quantized
    weights, thresholds and biases, sum pooling of spikes, and surrogate gradients.
``hardware``
    The integer network that :meth:`to_network` produces, run by the golden model itself
    (:meth:`spikeforge.sw.golden.Network.trace_frames`): there is no second integer model.

Scales (threshold methods). Neuron layer ``l`` receives binary spikes whose value is the
amplitude ``a_{l-1}`` of the previous layer's neurons (its mean threshold; for direct input
coding the input "spike" is the integer pixel and ``a_0 = 1 / pixel_max``). Average pooling
between the two is sum pooling in the integer network, with its ``1 / (k*k)`` folded into the
next layer (docs/contract.md): the layer's input unit is ``u_l = a_{l-1} / prod(k*k)`` over
the pools before it, and its effective weight is ``W_l * u_l``. A per-layer scale ``s_l``
(chosen to minimise the weight quantization error) turns that into ``w_bits``-bit integers, and
the bias, the thresholds and the initial membrane are divided by the *same* ``s_l`` and
rounded: an IF layer is invariant to a common scale of its weights, bias, threshold and
membrane, so nothing else changes. Thresholds round to at least 1.

Radix (seed 002). Input frames are the pixel's bit planes, LSB first. A radix layer with shift
leak 1 and initial membrane ``c`` emits the low ``T`` bits of
``A = c + b (2**T - 1) + sum_j W_j X_j`` (``X_j`` the input trains read as binary numbers), and
a non-firing leak-1 layer ends with membrane ``floor(A / 2**(T-1))`` (both exact, proven in
docs/training.md). So a radix layer computes ``A mod 2**T``: it does not rectify, and its
weights live in integer units (scale 1); only the last layer has a free scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..golden import ConvLayer, DenseLayer, Encoder, Network, SumPoolLayer
from .arch import Stage, arch_spec, resolve_arch
from .config import ConfigError, TrainConfig
from .neurons import ThresholdNeuron, qrelu, round_ste

__all__ = ["SpikingNet", "SpikingMLP", "QuantizationError", "weight_scale", "IntLayer",
           "image_shape"]


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


def image_shape(n_in: int, input_shape=None) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)``, or, when None, a square one-channel image of
    ``n_in`` pixels (digits: 1x8x8, MNIST: 1x28x28), or ``(n_in, 1, 1)`` if not square."""
    if input_shape is not None:
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or math.prod(shape) != n_in:
            raise ConfigError(f"input_shape {shape} does not hold the data's {n_in} pixels")
        return shape
    side = math.isqrt(n_in)
    return (1, side, side) if side * side == n_in else (n_in, 1, 1)


class IntLayer(dict):
    """The integer parameters of one layer: the keyword arguments of its golden class.

    ``kind`` says which: ``dense`` (:class:`DenseLayer`), ``conv`` (:class:`ConvLayer`) or
    ``sumpool`` (:class:`SumPoolLayer`, no weights).
    """

    @property
    def kind(self) -> str:
        if "kernel" in self:
            return "sumpool"
        return "conv" if self["weight"].dim() == 4 else "dense"


_GOLDEN = {"dense": DenseLayer, "conv": ConvLayer, "sumpool": SumPoolLayer}


class SpikingNet(nn.Module):
    """A spiking network of conv, average-pool and dense stages for one training method.

    ``linears[l]`` is the ``nn.Linear`` or ``nn.Conv2d`` of neuron layer ``l`` (the name
    predates convolutions; checkpoints use it). Hidden layers are threshold neurons (``if``:
    fixed threshold; ``atif-u``, ``qrelu``, ``ptl``, ``ann``: one threshold per layer;
    ``atif-nu``: ``p_1..p_T``), with the shift leak for ``radix``. The last layer never fires:
    the class is the argmax of its final membrane. ``pools[l]`` are the pooling stages between
    neuron layer ``l - 1`` (or the input) and neuron layer ``l``.
    """

    def __init__(self, config: TrainConfig, n_in: int, n_out: int, pixel_bits: int = 4,
                 input_shape=None):
        super().__init__()
        self.config = config
        self.timesteps = config.timesteps
        self.pixel_bits = pixel_bits
        self.encoder = Encoder(config.encoder_kind, pixel_bits)
        self.input_shape = image_shape(n_in, input_shape)
        self.spec = arch_spec(config.arch, config.hidden, n_out)
        self.stages = resolve_arch(self.spec, self.input_shape, n_out)
        neuron_stages = [s for s in self.stages if s.is_neuron]
        self.layer_stages: list[Stage] = neuron_stages
        self.pools: list[list[Stage]] = [[] for _ in neuron_stages]
        k = 0
        for stage in self.stages:
            if stage.is_neuron:
                k += 1
            else:
                self.pools[k].append(stage)
        self.bits = config.layer_bits(len(neuron_stages))
        self.w_bits = self.bits[0]  # the first layer's (every layer's, for one width)
        self.linears = nn.ModuleList()
        for stage in neuron_stages:
            if stage.kind == "conv":
                conv = nn.Conv2d(stage.in_shape[0], stage.size, stage.kernel, stage.stride,
                                 stage.padding)
                # He initialisation for the ReLU (PyTorch's default starts convolutions so small
                # that average pooling leaves little signal: digits float ANN 90 % vs 93 % at
                # 30 epochs); dense layers keep PyTorch's default, as before convolutions
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)
                self.linears.append(conv)
            else:
                self.linears.append(nn.Linear(stage.fan_in, stage.size))
        #: neuron counts: the input, then every neuron layer (the MLP's layer sizes)
        self.sizes = [n_in, *(s.fan_out for s in neuron_stages)]
        self.radix = config.method == "radix"
        kind = {"if": "fixed", "qrelu": "fixed", "atif-nu": "nu"}.get(config.method, "trainable")
        #: arithmetic right shift of every layer's membrane (radix: the base-2 shift leak)
        self.leak_shift = 1 if self.radix else 0
        self.neurons = nn.ModuleList()
        for _ in neuron_stages[:-1]:
            self.neurons.append(ThresholdNeuron(
                config.timesteps, kind, config.theta_init, config.v_init_half,
                config.surrogate, config.alpha))
        self._reach = [self._input_reach(k) for k in range(len(neuron_stages))]
        self.stats: dict = {}

    # --- structure ----------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return len(self.linears)

    def _input_reach(self, layer: int) -> torch.Tensor:
        """``float[fan_in]`` of neuron layer ``layer`` (after its pools): the neurons an input
        event at each position updates (docs/contract.md, synaptic operations)."""
        stage = self.layer_stages[layer]
        if stage.kind == "dense":
            return torch.full((stage.fan_in,), float(stage.fan_out))
        probe = ConvLayer(weight=torch.zeros((stage.size, stage.in_shape[0], stage.kernel,
                                              stage.kernel), dtype=torch.int64),
                          bias=torch.zeros(stage.size, dtype=torch.int64), theta=[1],
                          input_shape=stage.in_shape, stride=stage.stride,
                          padding=stage.padding, w_bits=2, v_bits=2)
        return probe.reach().to(torch.float32)

    def _pool(self, stage: Stage, x: torch.Tensor, average: bool) -> torch.Tensor:
        """Pool flat rows ``[R, C*H*W]``: average (ANN domain) or sum (spike counts)."""
        c, h, w = stage.in_shape
        x = x.reshape(x.shape[0], c, h, w)
        y = F.avg_pool2d(x, stage.kernel, stage.stride, divisor_override=None if average else 1)
        return y.reshape(y.shape[0], -1)

    def _pooled(self, layer: int, x: torch.Tensor, average: bool) -> torch.Tensor:
        for stage in self.pools[layer]:
            x = self._pool(stage, x, average)
        return x

    def _apply(self, layer: int, x: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
        """The synaptic current of neuron layer ``layer`` for flat input rows ``[R, fan_in]``
        (already pooled): ``[R, fan_out]``."""
        stage = self.layer_stages[layer]
        if stage.kind == "dense":
            return F.linear(x, weight, bias)
        x = x.reshape(x.shape[0], *stage.in_shape)
        y = F.conv2d(x, weight, bias, stage.stride, stage.padding)
        return y.reshape(y.shape[0], -1)

    def ann_layer(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Float ANN pre-activation of neuron layer ``layer`` from the ANN-domain output of the
        layer before it (average pooling, then the float weights)."""
        lin = self.linears[layer]
        return self._apply(layer, self._pooled(layer, x, True), lin.weight, lin.bias)

    # --- parameters in the SNN's units -------------------------------------------------------

    def input_amplitude(self) -> float:
        kind = self.encoder.kind.value
        if kind == "direct":
            return 1.0 / self.encoder.pixel_max
        return 1.0

    def pool_area(self, layer: int) -> int:
        """Product of the pooling windows ``k*k`` before neuron layer ``layer``."""
        return math.prod(s.kernel * s.kernel for s in self.pools[layer])

    def amplitude(self, layer: int) -> torch.Tensor:
        """Value of one input unit of ``layer``: one spike of the previous layer (its spike
        amplitude), or one input unit, divided by the pooling windows in between."""
        if layer == 0:
            value = torch.tensor(self.input_amplitude())
        else:
            value = self.neurons[layer - 1].amplitude()
        return value / self.pool_area(layer)

    def quantized(self, layer: int) -> dict:
        """Fake-quantized float parameters of ``layer`` in its SNN units (with gradients).

        Returns ``weight``, ``bias``, ``theta`` (``[T]``, hidden layers), ``v_init``, the
        ``scale`` and the integers ``weight_int``, ``bias_int``, ``theta_int``, ``v_init_int``.
        """
        lin = self.linears[layer]
        bits = self.bits[layer]
        qmax = (1 << (bits - 1)) - 1
        last = layer == self.n_layers - 1
        w_eff = lin.weight * self.amplitude(layer)
        scale = weight_scale(w_eff, bits)
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
        if mode == "hardware":  # the golden model itself, on the integer network
            trace = self.to_network().trace_frames(frames.round().to(torch.int64), trace=False)
            self.stats = {"events": torch.stack([x.input_events for x in trace.layers], 1),
                          "synops": torch.stack([x.synops for x in trace.layers], 1)}
            return trace.output.to(torch.float32)
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

    def ann_values(self, x: torch.Tensor) -> torch.Tensor:
        """The float ANN (ReLU, average pooling, float weights) on input values ``[B, n_in]``:
        the architecture's plain ANN, as the float baseline uses it on normalized pixels."""
        for layer in range(self.n_layers):
            z = self.ann_layer(layer, x)
            if layer == self.n_layers - 1:
                return z
            x = torch.relu(z)
        raise AssertionError("unreachable")

    def _ann_forward(self, frames: torch.Tensor, quantize: bool = False):
        """Float ANN on the decoded input value; ``quantize`` (mode ``qann``, seed 001) fake-
        quantizes the weights and replaces ReLU by the QReLU of the layer's threshold."""
        x = frames.mean(1) * self.input_amplitude()
        acts = []
        for layer in range(self.n_layers):
            if quantize:
                q = self.quantized(layer)
                pooled = self._pooled(layer, x, True)
                z = self._apply(layer, pooled, q["weight"] / self.amplitude(layer), q["bias"])
            else:
                z = self.ann_layer(layer, x)
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

    def synops_estimate(self, counts: list[torch.Tensor]) -> torch.Tensor:
        """Seed 001's SynOps per sample ``[B]`` from the hidden layers' spike counts
        ``counts[k]`` ``[B, fan_out_k]``: every spike, sum-pooled to its pooled address,
        updates each neuron of the next layer that sees that address."""
        total = 0
        for k, count in enumerate(counts):
            pooled = self._pooled(k + 1, count, False)
            total = total + (pooled * self._reach[k + 1]).sum(1)
        return total

    def _snn_forward(self, frames: torch.Tensor, spiking_upto: int | None = None):
        x = frames
        batch, steps = frames.shape[0], frames.shape[1]
        counts = []
        upto = self.n_layers if spiking_upto is None else spiking_upto
        ann_value = None  # decoded ANN-domain activation once past the spiking part
        for layer in range(self.n_layers):
            last = layer == self.n_layers - 1
            if layer > upto:  # ANN part of a PTL hybrid: plain float layers on decoded values
                z = self.ann_layer(layer, ann_value)
                if last:
                    self.stats = {"counts": counts}
                    return z
                ann_value = torch.relu(z)
                continue
            q = self.quantized(layer)
            rows = self._pooled(layer, x.reshape(batch * steps, -1), False)
            current = self._apply(layer, rows, q["weight"], q["bias"]).reshape(batch, steps, -1)
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
                ann_in = self._pooled(layer, self._decoded_input(frames, layer, counts), True)
                z_ann = self._apply(layer, ann_in, q["weight"] / self.amplitude(layer),
                                    q["bias"])
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
        """Decoded (ANN-domain) value of the output of the stage before ``layer`` (before its
        pools) from SNN spike counts."""
        if layer == 0:
            return frames.mean(1) * self.input_amplitude()
        amp = self.neurons[layer - 1].amplitude()
        return counts[layer - 1].detach() * amp / self.timesteps

    def _radix_forward(self, frames: torch.Tensor):
        """Seed 002's ANN domain (WDT/WPT), exact in integer units (straight-through through
        ``mod``); used for the one-layer radix network, whose output is ``floor(A/2**(T-1))``.
        Sum pooling before the layer is linear, so it commutes with reading the trains as
        binary numbers."""
        T = self.timesteps
        weights = (2.0 ** torch.arange(T, dtype=frames.dtype))
        x = (frames * weights[None, :, None]).sum(1)  # input trains as binary numbers
        for layer in range(self.n_layers):
            q = self.quantized(layer)
            rows = self._pooled(layer, x, False)
            a = q["v_init"] + self._apply(layer, rows, q["weight"], q["bias"] * (2 ** T - 1))
            if layer == self.n_layers - 1:
                self.stats = {}
                return a / 2 ** (T - 1) / q["scale"].detach()
            x = a - 2 ** T * torch.floor(a.detach() / 2 ** T)
        raise AssertionError("unreachable")

    # --- conversion --------------------------------------------------------------------------

    @torch.no_grad()
    def compile(self) -> list[IntLayer]:
        """The integer layers (keyword arguments of their golden classes, see
        :class:`IntLayer`), pools included, or :class:`QuantizationError`."""
        layers: list[IntLayer] = []
        T = self.timesteps
        for layer in range(self.n_layers):
            stage = self.layer_stages[layer]
            for k, pool in enumerate(self.pools[layer]):
                layers.append(IntLayer(kernel=pool.kernel, stride=pool.stride,
                                       input_shape=pool.in_shape,
                                       name=f"pool{layer}" + (f"_{k}" if k else "")))
            q = self.quantized(layer)
            last = layer == self.n_layers - 1
            w = q["weight_int"].to(torch.int64)
            b = q["bias_int"].to(torch.int64)
            name = f"layer{layer}"
            theta = torch.ones(T, dtype=torch.int64) if last else q["theta_int"].to(torch.int64)
            fire_mode, leak = "threshold", self.leak_shift
            v_init = int(q["v_init_int"])
            # the largest input entry: 1 for spikes, pixel_max for direct-coded pixels, times
            # the pooling windows before the layer (a pooled count sums its window)
            in_max = self.encoder.pixel_max if (layer == 0 and
                                                self.encoder.kind.value == "direct") else 1
            in_max *= self.pool_area(layer)
            max_current = int((b.abs() + w.reshape(w.shape[0], -1).abs().sum(1) * in_max).max())
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
            spec = IntLayer(weight=w, bias=b, theta=theta, leak_shift=leak,
                            fire_mode=fire_mode, v_init=v_init, fires=not last,
                            w_bits=self.bits[layer], v_bits=v_bits, name=name)
            if stage.kind == "conv":
                spec.update(input_shape=stage.in_shape, stride=stage.stride,
                            padding=stage.padding)
            layers.append(spec)
        return layers

    def to_network(self) -> Network:
        """The golden model's :class:`Network` of this model (validated by the golden model)."""
        layers = []
        for spec in self.compile():
            try:
                layers.append(_GOLDEN[spec.kind](**spec))
            except ValueError as exc:
                raise QuantizationError(f"integer conversion failed: {exc}") from None
        return Network(layers, self.timesteps, self.encoder)

    def scales(self) -> list[float | None]:
        """Per layer of :meth:`to_network`: the real value of one integer unit (None for a
        pooling layer, which has no weights)."""
        out: list[float | None] = []
        with torch.no_grad():
            for layer in range(self.n_layers):
                out += [None] * len(self.pools[layer])
                out.append(float(self.quantized(layer)["scale"]))
        return out


#: The former name (fully connected networks only), kept for existing code and checkpoints.
SpikingMLP = SpikingNet

"""The integer golden model: the single source of truth for every spike and membrane.

Everything spikeforge builds is checked against this module. The RTL regressions compare every
spike and every end-of-timestep membrane to :meth:`Network.trace`; the trainer's "hardware mode"
must reproduce :meth:`Network.predict`; the exporter writes exactly the integers held here.

The semantics are those of ``docs/contract.md``. In short, per layer and neuron ``i``, for
``t = 0 .. T-1``::

    if t > 0:  V = V >> leak_shift                                   (arithmetic shift)
    V = sat(V + bias[i] + sum_j weight[i, j] * s_in[j, t])           (one saturation per step)
    threshold: s = V >= theta[t];  V -= theta[t] * s
    radix:     s = V & 1;          V -= s
    non-firing layers skip fire and reset.

Tensors are laid out ``[batch, time, neurons]`` and hold ``torch.int64``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "ContractError",
    "FireMode",
    "EncoderKind",
    "DenseLayer",
    "Encoder",
    "Network",
    "LayerTrace",
    "Trace",
    "signed_range",
    "saturate",
]

class ContractError(ValueError):
    """A parameter breaks the integer contract. The message names the offending field."""


class FireMode(str, enum.Enum):
    THRESHOLD = "threshold"
    RADIX = "radix"


class EncoderKind(str, enum.Enum):
    RATE = "rate"
    RADIX = "radix"
    DIRECT = "direct"


def signed_range(bits: int) -> tuple[int, int]:
    """Inclusive range of a two's complement integer of ``bits`` bits."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def saturate(value: torch.Tensor, bits: int) -> torch.Tensor:
    """Clamp ``value`` to the signed range of ``bits`` bits (never wraps)."""
    low, high = signed_range(bits)
    return value.clamp(low, high)


def _as_int_tensor(name: str, value, dims: int) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    if tensor.is_floating_point():
        if not torch.equal(tensor, tensor.round()):
            raise ContractError(f"{name} must hold integers, got non-integral floats")
        tensor = tensor.round()
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ContractError(f"{name} must hold integers, not {tensor.dtype}")
    tensor = tensor.to(torch.int64)
    if tensor.dim() != dims:
        raise ContractError(
            f"{name} must have {dims} dimension(s), got shape {tuple(tensor.shape)}")
    return tensor


def _check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(f"{name} must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise ContractError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ContractError(f"{name} must be <= {maximum}, got {value}")
    return value


def _check_fits(name: str, tensor: torch.Tensor, bits: int, width_name: str) -> None:
    if tensor.numel() == 0:
        return
    low, high = signed_range(bits)
    bad = ((tensor < low) | (tensor > high)).nonzero()
    if len(bad):
        index = tuple(int(i) for i in bad[0])
        where = f"{name}[{', '.join(map(str, index))}]" if index else name
        raise ContractError(
            f"{where} = {int(tensor[index])} does not fit {width_name} = {bits} "
            f"(signed range {low}..{high})")


@dataclass(frozen=True, eq=False)
class DenseLayer:
    """One fully connected layer of integrate-and-fire neurons.

    Parameters
    ----------
    weight : int[out, in]
        Synaptic weights, two's complement of ``w_bits`` bits.
    bias : int[out]
        Constant current added every timestep; must fit ``v_bits``.
    theta : int[T]
        Threshold of each timestep, ``1 <= theta[t] <= 2**(v_bits-1) - 1``. Ignored (but still
        checked) in radix mode and for non-firing layers.
    leak_shift : int
        Arithmetic right shift of the membrane at the start of every timestep ``t >= 1``.
    fire_mode : FireMode
    v_init : int
        Membrane before timestep 0; must fit ``v_bits``.
    fires : bool
        A non-firing layer only integrates and is read out by its final membrane.
    w_bits : int
        Weight width, 2..8.
    v_bits : int
        Membrane width (signed), 2..32. Every step's result saturates to this range.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    theta: torch.Tensor
    leak_shift: int = 0
    fire_mode: FireMode = FireMode.THRESHOLD
    v_init: int = 0
    fires: bool = True
    w_bits: int = 8
    v_bits: int = 16
    name: str = "layer"

    def __post_init__(self):
        n = self.name
        set_ = object.__setattr__
        _check_int(f"{n}.w_bits", self.w_bits, minimum=2, maximum=8)
        _check_int(f"{n}.v_bits", self.v_bits, minimum=2, maximum=32)
        _check_int(f"{n}.leak_shift", self.leak_shift, minimum=0, maximum=self.v_bits)
        _check_int(f"{n}.v_init", self.v_init)
        if not isinstance(self.fires, bool):
            raise ContractError(f"{n}.fires must be a bool, not {self.fires!r}")
        try:
            set_(self, "fire_mode", FireMode(self.fire_mode))
        except ValueError:
            raise ContractError(
                f"{n}.fire_mode must be 'threshold' or 'radix', not {self.fire_mode!r}") from None

        weight = _as_int_tensor(f"{n}.weight", self.weight, 2)
        bias = _as_int_tensor(f"{n}.bias", self.bias, 1)
        theta = _as_int_tensor(f"{n}.theta", self.theta, 1)
        if weight.shape[0] == 0 or weight.shape[1] == 0:
            raise ContractError(f"{n}.weight must have at least one row and column, "
                                f"got shape {tuple(weight.shape)}")
        if bias.shape[0] != weight.shape[0]:
            raise ContractError(f"{n}.bias has {bias.shape[0]} entries but weight has "
                                f"{weight.shape[0]} output neurons")
        if theta.shape[0] == 0:
            raise ContractError(f"{n}.theta must have one entry per timestep, got none")
        _check_fits(f"{n}.weight", weight, self.w_bits, "w_bits")
        _check_fits(f"{n}.bias", bias, self.v_bits, "v_bits")
        _check_fits(f"{n}.v_init", torch.tensor(self.v_init), self.v_bits, "v_bits")
        if (theta < 1).any():
            t = int((theta < 1).nonzero()[0])
            raise ContractError(f"{n}.theta[{t}] = {int(theta[t])} must be >= 1")
        _check_fits(f"{n}.theta", theta, self.v_bits, "v_bits")
        set_(self, "weight", weight)
        set_(self, "bias", bias)
        set_(self, "theta", theta)

    @property
    def fan_in(self) -> int:
        return self.weight.shape[1]

    @property
    def fan_out(self) -> int:
        return self.weight.shape[0]

    @property
    def timesteps(self) -> int:
        return self.theta.shape[0]

    def with_(self, **changes) -> DenseLayer:
        """A copy with some fields replaced (validated again)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields.update(changes)
        return DenseLayer(**fields)

    @property
    def _max_row_weight(self) -> int:
        return int(self.weight.abs().sum(1).max())

    def _compute_dtype(self, s_in: torch.Tensor, peak: int | None = None) -> torch.dtype:
        """The narrowest dtype in which every value of a run is an exactly represented integer.

        float32 holds every integer below 2**24, float64 below 2**53; membranes, currents and
        their sums must stay below that, and floor division by 2**k is then exact too. ``peak``
        bounds ``|s_in|`` when the caller knows it (1 for spikes).
        """
        if peak is None:
            peak = max(int(s_in.max()), -int(s_in.min())) if s_in.numel() else 0
        bound = peak * self._max_row_weight + int(self.bias.abs().max()) + (1 << (self.v_bits - 1))
        if bound < 2**23:
            return torch.float32
        if bound < 2**52:
            return torch.float64
        return torch.int64

    def current(self, s_in: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Synaptic current ``s_in @ weight.T`` of input ``[rows, fan_in]``, in ``dtype``.

        Exact when ``dtype`` comes from :meth:`_compute_dtype`. A layer with another
        connectivity (convolution) replaces this method; the neuron dynamics stay in :meth:`run`.
        """
        return s_in.to(dtype) @ self.weight.T.to(dtype)

    def run(self, s_in: torch.Tensor, trace: bool = False, *, _peak: int | None = None,
            _raw: bool = False):
        """Run all timesteps.

        ``s_in`` is ``int[batch, T, fan_in]`` (binary spikes, or integer currents for a direct-
        coded first layer). Returns ``(spikes, v_final, membranes)``: spikes ``int[batch, T,
        fan_out]`` (zeros for a non-firing layer), the final membrane ``int[batch, fan_out]``,
        and, if ``trace``, the membrane at the end of every timestep ``int[batch, T, fan_out]``
        (else ``None``). The arithmetic runs in the narrowest exact dtype (see
        :meth:`_compute_dtype`), so it is integer arithmetic at BLAS speed.
        """
        if _raw:  # already time-major [T, batch, fan_in]
            s_in = s_in.transpose(0, 1)
        if s_in.dim() != 3 or s_in.shape[2] != self.fan_in or s_in.shape[1] != self.timesteps:
            raise ContractError(
                f"{self.name}: input must be [batch, T={self.timesteps}, fan_in={self.fan_in}], "
                f"got {tuple(s_in.shape)}")
        batch, steps, _ = s_in.shape
        dtype = self._compute_dtype(s_in, _peak)
        exact_int = dtype == torch.int64
        low, high = signed_range(self.v_bits)
        # Time-major, so that every per-step slice below is contiguous.
        currents = self.current(s_in.transpose(0, 1).reshape(steps * batch, -1), dtype)
        currents = currents.reshape(steps, batch, -1).add_(self.bias.to(dtype))
        v = torch.full((batch, self.fan_out), self.v_init, dtype=dtype)
        spikes = torch.zeros((steps, batch, self.fan_out), dtype=dtype)
        membranes = torch.empty_like(spikes) if trace else None
        divisor = float(1 << self.leak_shift)
        theta = self.theta.tolist()
        for t in range(steps):
            if t > 0 and self.leak_shift:
                v = v >> self.leak_shift if exact_int else torch.floor_divide(v, divisor)
            v.add_(currents[t]).clamp_(low, high)
            if self.fires:
                s = spikes[t]
                if self.fire_mode is FireMode.RADIX:
                    s.copy_(v & 1 if exact_int else torch.remainder(v, 2))
                    v.sub_(s)
                else:
                    torch.ge(v, theta[t], out=s) if not exact_int else s.copy_(v >= theta[t])
                    v.sub_(s, alpha=theta[t])
            if trace:
                membranes[t] = v
        membranes = membranes.transpose(0, 1) if trace else None
        if _raw:  # time-major spikes in the compute dtype, for Network.trace_frames
            return spikes, v.to(torch.int64), membranes.to(torch.int64) if trace else None
        spikes = spikes.transpose(0, 1)
        as_int = (lambda x: x) if exact_int else (lambda x: x.to(torch.int64))
        return as_int(spikes), as_int(v), as_int(membranes) if trace else None

    def readout(self, spikes: torch.Tensor, v_final: torch.Tensor) -> torch.Tensor:
        """The layer's output value per neuron, as the network readout uses it.

        Non-firing: the final membrane. Threshold mode: the spike count. Radix mode: the spike
        train read as a binary number, LSB first (``sum_t s[t] * 2**t``).
        """
        if not self.fires:
            return v_final
        if self.fire_mode is FireMode.RADIX:
            weights = (1 << torch.arange(spikes.shape[1], dtype=torch.int64))
            return (spikes * weights[None, :, None]).sum(1)
        return spikes.sum(1)


@dataclass(frozen=True)
class Encoder:
    """Turns integer pixels ``int[batch, n]`` in ``0 .. 2**pixel_bits - 1`` into input frames.

    - ``rate``: one soft-reset IF neuron per pixel, current ``x`` per step, threshold
      ``x_max = 2**pixel_bits - 1``, initial membrane ``x_max // 2``. Spike count is
      ``min(T, (T*x + x_max//2) // x_max)``: a rounding uniform quantizer with T+1 levels.
    - ``radix``: bit planes, LSB first, aligned at the most significant end: plane ``t``
      carries bit ``t + pixel_bits - T`` of the pixel (zero where that bit does not exist).
      The train, read LSB first, is ``x >> (pixel_bits - T)`` for ``T <= pixel_bits`` and
      ``x << (T - pixel_bits)`` otherwise, so a shift-leak layer always sees the pixel at the
      same scale.
    - ``direct``: the pixel value itself, the same at every timestep (analog coding).
    """

    kind: EncoderKind = EncoderKind.RATE
    pixel_bits: int = 4

    def __post_init__(self):
        try:
            object.__setattr__(self, "kind", EncoderKind(self.kind))
        except ValueError:
            raise ContractError(
                f"encoder.kind must be 'rate', 'radix' or 'direct', not {self.kind!r}") from None
        _check_int("encoder.pixel_bits", self.pixel_bits, minimum=1, maximum=16)

    @property
    def pixel_max(self) -> int:
        return (1 << self.pixel_bits) - 1

    def encode(self, pixels: torch.Tensor, timesteps: int) -> torch.Tensor:
        pixels = _as_int_tensor("pixels", pixels, 2)
        _check_int("timesteps", timesteps, minimum=1)
        if pixels.numel() and (pixels.min() < 0 or pixels.max() > self.pixel_max):
            raise ContractError(f"pixels must lie in 0..{self.pixel_max} "
                                f"(pixel_bits = {self.pixel_bits}), got "
                                f"{int(pixels.min())}..{int(pixels.max())}")
        batch, n = pixels.shape
        if self.kind is EncoderKind.DIRECT:
            return pixels[:, None, :].expand(batch, timesteps, n).contiguous()
        if self.kind is EncoderKind.RADIX:
            bits = torch.arange(timesteps, dtype=torch.int64) + (self.pixel_bits - timesteps)
            frames = (pixels[:, None, :] >> bits.clamp(min=0)[None, :, None]) & 1
            return frames * (bits >= 0)[None, :, None]
        x_max = self.pixel_max
        v = torch.full_like(pixels, x_max // 2)
        frames = torch.zeros((batch, timesteps, n), dtype=torch.int64)
        for t in range(timesteps):
            v = v + pixels
            s = (v >= x_max).to(torch.int64)
            v = v - s * x_max
            frames[:, t] = s
        return frames


@dataclass
class LayerTrace:
    """Everything one layer did in one run: what the RTL scoreboard compares."""

    spikes: torch.Tensor  # int[batch, T, fan_out]
    membranes: torch.Tensor  # int[batch, T, fan_out], end of every timestep
    input_events: torch.Tensor  # int[batch]: non-zero input entries over all timesteps
    synops: torch.Tensor  # int[batch]: input_events * fan_out


@dataclass
class Trace:
    inputs: torch.Tensor  # the encoded input frames int[batch, T, n_in]
    layers: list[LayerTrace]
    output: torch.Tensor  # int[batch, n_out]: readout of the last layer
    prediction: torch.Tensor  # int[batch]


def argmax_lowest(values: torch.Tensor) -> torch.Tensor:
    """Argmax over the last dimension, ties going to the lowest index (documented, not luck)."""
    best = values.max(dim=-1, keepdim=True).values
    index = torch.arange(values.shape[-1], dtype=torch.int64)
    return torch.where(values == best, index, values.shape[-1]).min(dim=-1).values


@dataclass(frozen=True, eq=False)
class Network:
    """A stack of layers run over ``timesteps`` steps, fed by an :class:`Encoder`."""

    layers: Sequence[DenseLayer]
    timesteps: int
    encoder: Encoder = field(default_factory=Encoder)

    def __post_init__(self):
        _check_int("timesteps", self.timesteps, minimum=1)
        layers = list(self.layers)
        if not layers:
            raise ContractError("network.layers must hold at least one layer")
        object.__setattr__(self, "layers", layers)
        for k, layer in enumerate(layers):
            if not isinstance(layer, DenseLayer):
                raise ContractError(f"layers[{k}] must be a DenseLayer, not {type(layer).__name__}")
            if layer.timesteps != self.timesteps:
                raise ContractError(f"{layer.name}.theta has {layer.timesteps} entries but the "
                                    f"network runs {self.timesteps} timesteps")
            if k > 0 and layer.fan_in != layers[k - 1].fan_out:
                raise ContractError(f"{layer.name}.weight takes {layer.fan_in} inputs but "
                                    f"{layers[k - 1].name} has {layers[k - 1].fan_out} neurons")
            if k < len(layers) - 1 and not layer.fires:
                raise ContractError(f"{layer.name}.fires is False but only the last layer may "
                                    "be non-firing")

    @property
    def n_inputs(self) -> int:
        return self.layers[0].fan_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].fan_out

    def encode(self, pixels) -> torch.Tensor:
        pixels = _as_int_tensor("pixels", pixels, 2)
        if pixels.shape[1] != self.n_inputs:
            raise ContractError(f"pixels have {pixels.shape[1]} values per image but the "
                                f"network takes {self.n_inputs}")
        return self.encoder.encode(pixels, self.timesteps)

    def trace_frames(self, frames: torch.Tensor, trace: bool = True) -> Trace:
        """Run already-encoded input frames ``int[batch, T, n_in]`` through every layer."""
        frames = _as_int_tensor("frames", frames, 3)
        layer_traces = []
        x, peak = frames.transpose(0, 1), None  # time-major between layers: contiguous steps
        events = (frames != 0).sum((1, 2))
        v_final = spikes = None
        for layer in self.layers:
            raw_spikes, v_final, membranes = layer.run(x, trace=trace, _peak=peak, _raw=True)
            spikes = raw_spikes.to(torch.int64).transpose(0, 1)
            layer_traces.append(LayerTrace(spikes, membranes, events, events * layer.fan_out))
            x, peak = raw_spikes, 1
            events = raw_spikes.sum((0, 2)).to(torch.int64)
        output = self.layers[-1].readout(spikes, v_final)
        return Trace(frames, layer_traces, output, argmax_lowest(output))

    def trace(self, pixels) -> Trace:
        """Run integer pixels ``int[batch, n_in]`` and keep every spike and membrane."""
        return self.trace_frames(self.encode(pixels), trace=True)

    def run(self, pixels) -> Trace:
        """Like :meth:`trace` but without the per-timestep membranes (faster)."""
        return self.trace_frames(self.encode(pixels), trace=False)

    def predict(self, pixels) -> torch.Tensor:
        return self.run(pixels).prediction

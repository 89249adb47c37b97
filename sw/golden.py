"""The integer golden model: the single source of truth for every spike and membrane.

Everything spikeforge builds is checked against this module. The RTL regressions compare every
spike and every end-of-timestep membrane to :meth:`Network.trace`; the trainer's "hardware mode"
must reproduce :meth:`Network.predict`; the exporter writes exactly the integers held here.

The semantics are those of ``docs/contract.md``. In short, per layer and neuron ``i``, for
``t = 0 .. T-1``::

    if t > 0:  V = V >> leak_shift                                   (arithmetic shift)
    V = sat(V + bias[i] + sum_j weight[i, j] * s_in[j, t])           (one saturation per step)
    threshold: s = V >= theta[t]   (compare ">=", the default; ">" gives s = V > theta[t])
               V -= theta[t] * s   (reset "subtract", the default; "zero" gives V = 0 if s)
    radix:     s = V & 1;          V -= s      (compare is ignored, reset must be "subtract")
    non-firing layers skip fire and reset.

Layer kinds (every one exchanges flat vectors; shaped ones use PyTorch's C-major ``(C, H, W)``
order, so a flatten is the identity and conv -> dense needs no flatten layer):

- :class:`DenseLayer`: fully connected neurons.
- :class:`ConvLayer`: 2-D convolution (zero padding, stride), the same neuron as a dense layer;
  it is a dense layer whose weight matrix is the convolution's (sparse, shared) matrix.
- :class:`SumPoolLayer`: sum of its input over each window; no neurons, no state.

Both neuron kinds share :class:`NeuronLayer`, which holds the neuron fields, their validation and
:meth:`NeuronLayer.run`; a kind only supplies its connectivity (:meth:`NeuronLayer.current`).

Tensors are laid out ``[batch, time, neurons]`` and hold ``torch.int64``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = [
    "ContractError",
    "FireMode",
    "Compare",
    "Reset",
    "EncoderKind",
    "NeuronLayer",
    "DenseLayer",
    "ConvLayer",
    "SumPoolLayer",
    "Layer",
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


class Compare(str, enum.Enum):
    """How a threshold neuron compares its membrane with ``theta[t]`` (``docs/contract.md``)."""

    GE = ">="  # s = V >= theta: sinabs, SpikingJelly, spikeforge's default
    GT = ">"  # s = V > theta: snnTorch, NIR


class Reset(str, enum.Enum):
    """What a threshold neuron's membrane becomes after a spike (``docs/contract.md``)."""

    SUBTRACT = "subtract"  # soft reset, V -= theta[t]: spikeforge's default
    ZERO = "zero"  # V = 0: snnTorch reset_mechanism="zero", NIR's coded IF, Spiker+


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



def _check_pair(name: str, value, *, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (rows, columns), each ``>= minimum``, as a pair."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(pair, torch.Size):
        pair = tuple(pair)
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(
            isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise ContractError(f"{name} must be an integer or a pair of integers, not {value!r}")
    if min(pair) < minimum:
        raise ContractError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_shape3(name: str, value) -> tuple[int, int, int]:
    shape = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else None
    if shape is None or len(shape) != 3 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise ContractError(f"{name} must be (channels, height, width) of positive integers, "
                            f"not {value!r}")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _window_positions(size: int, kernel: int, stride: int, padding: int) -> int:
    """Number of window positions along one axis (PyTorch's rule: a partial last window is
    dropped, ``floor((size + 2 * padding - kernel) / stride) + 1``)."""
    return (size + 2 * padding - kernel) // stride + 1


def _windows(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int],
             padding: tuple[int, int]) -> torch.Tensor:
    """``x[n, c, h, w]`` -> the view ``[n, c, h_out, w_out, kh, kw]`` of every window (any dtype).

    Pure indexing: zero padding then strided views, so it is exact in every dtype.
    """
    if padding != (0, 0):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    return x.unfold(2, kernel[0], stride[0]).unfold(3, kernel[1], stride[1])


# The largest im2col buffer (elements) a convolution builds at once; bigger batches go in chunks.
_CHUNK_ELEMENTS = 1 << 23


@dataclass(frozen=True, eq=False)
class NeuronLayer:
    """Integrate-and-fire neurons: the fields, validation and dynamics every neuron kind shares.

    Not used directly: :class:`DenseLayer` and :class:`ConvLayer` are its kinds. A kind fixes
    the shape of ``weight`` and how an input becomes a synaptic current (:meth:`current`); the
    neuron (leak, integrate, saturate once per step, fire, reset) is :meth:`run`, the same for
    all kinds.

    Parameters
    ----------
    weight : int tensor
        Synaptic weights, two's complement of ``w_bits`` bits; its shape is the kind's.
    bias : int[out]
        Constant current added every timestep (per neuron for a dense layer, per output channel
        for a convolution); must fit ``v_bits``.
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
    compare : Compare, keyword only
        ``">="`` (default: ``s = V >= theta[t]``) or ``">"`` (``s = V > theta[t]``, snnTorch and
        NIR). Ignored (but still checked) in radix mode and for non-firing layers.
    reset : Reset, keyword only
        ``"subtract"`` (default, soft reset: ``V -= theta[t] * s``) or ``"zero"`` (``V = 0``
        after a spike). Radix neurons only subtract (``V -= V & 1``): ``"zero"`` is refused
        with ``fire_mode = "radix"``. Ignored for non-firing layers.
    """

    kind = ""
    _weight_dims = 0

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
    compare: Compare = field(default=Compare.GE, kw_only=True)
    reset: Reset = field(default=Reset.SUBTRACT, kw_only=True)

    def __post_init__(self):
        if not self._weight_dims:
            raise TypeError("NeuronLayer is abstract: build a DenseLayer or a ConvLayer")
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
        try:
            set_(self, "compare", Compare(self.compare))
        except ValueError:
            raise ContractError(
                f"{n}.compare must be '>=' or '>', not {self.compare!r}") from None
        try:
            set_(self, "reset", Reset(self.reset))
        except ValueError:
            raise ContractError(
                f"{n}.reset must be 'subtract' or 'zero', not {self.reset!r}") from None
        if self.reset is Reset.ZERO and self.fire_mode is FireMode.RADIX:
            raise ContractError(
                f"{n}.reset = 'zero' is not defined for fire_mode = 'radix': a radix neuron's "
                "reset clears the digit it just emitted (V -= V & 1) and keeps the rest of the "
                "number; use reset = 'subtract'")

        weight = _as_int_tensor(f"{n}.weight", self.weight, self._weight_dims)
        bias = _as_int_tensor(f"{n}.bias", self.bias, 1)
        theta = _as_int_tensor(f"{n}.theta", self.theta, 1)
        self._check_connectivity(weight, bias)
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

    # --- what a kind supplies ----------------------------------------------------------------

    def _check_connectivity(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Check (and normalize) the kind's own fields against ``weight`` and ``bias``."""
        raise NotImplementedError

    @property
    def fan_in(self) -> int:
        raise NotImplementedError

    @property
    def fan_out(self) -> int:
        raise NotImplementedError

    def current(self, s_in: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Synaptic current of input ``[rows, fan_in]`` as ``[rows, fan_out]``, in ``dtype``."""
        raise NotImplementedError

    def _neuron_bias(self) -> torch.Tensor:
        """``bias`` expanded to one entry per neuron, ``int[fan_out]``."""
        return self.bias

    def reach(self) -> torch.Tensor:
        """``int[fan_in]``: how many neurons an event on each input updates (its fan-out)."""
        return torch.full((self.fan_in,), self.fan_out, dtype=torch.int64)

    def synops(self, events: torch.Tensor) -> torch.Tensor:
        """Synaptic operations ``int[batch]`` of per-input event counts ``int[batch, fan_in]``.

        Every event updates each neuron it reaches: ``sum_j events[:, j] * reach()[j]``.
        """
        return (events * self.reach()).sum(1)

    # --- shared --------------------------------------------------------------------------------

    @property
    def timesteps(self) -> int:
        return self.theta.shape[0]

    def with_(self, **changes) -> NeuronLayer:
        """A copy with some fields replaced (validated again)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields.update(changes)
        return type(self)(**fields)

    @property
    def _max_row_weight(self) -> int:
        """The largest ``sum |weight|`` over the synapses of one neuron (one output channel)."""
        return int(self.weight.reshape(self.weight.shape[0], -1).abs().sum(1).max())

    def _compute_dtype(self, s_in: torch.Tensor, peak: int | None = None) -> torch.dtype:
        """The narrowest dtype in which every value of a run is an exactly represented integer.

        float32 holds every integer below 2**24, float64 below 2**53; membranes, currents and
        their sums must stay below that, and floor division by 2**k is then exact too. ``peak``
        bounds ``|s_in|`` when the caller knows it (1 for spikes). A current is a sum of
        products ``weight * s_in`` over one neuron's synapses, so every partial sum, in whatever
        order a BLAS kernel adds them, is bounded by ``peak * _max_row_weight``.
        """
        if peak is None:
            peak = max(int(s_in.max()), -int(s_in.min())) if s_in.numel() else 0
        bound = peak * self._max_row_weight + int(self.bias.abs().max()) + (1 << (self.v_bits - 1))
        if bound < 2**23:
            return torch.float32
        if bound < 2**52:
            return torch.float64
        return torch.int64

    def run(self, s_in: torch.Tensor, trace: bool = False, *, _peak: int | None = None,
            _raw: bool = False):
        """Run all timesteps.

        ``s_in`` is ``int[batch, T, fan_in]`` (binary spikes, pooled spike counts, or integer
        currents for a direct-coded first layer). Returns ``(spikes, v_final, membranes)``:
        spikes ``int[batch, T, fan_out]`` (zeros for a non-firing layer), the final membrane
        ``int[batch, fan_out]``, and, if ``trace``, the membrane at the end of every timestep
        ``int[batch, T, fan_out]`` (else ``None``). The arithmetic runs in the narrowest exact
        dtype (see :meth:`_compute_dtype`), so it is integer arithmetic at BLAS speed.
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
        currents = currents.reshape(steps, batch, -1).add_(self._neuron_bias().to(dtype))
        v = torch.full((batch, self.fan_out), self.v_init, dtype=dtype)
        spikes = torch.zeros((steps, batch, self.fan_out), dtype=dtype)
        membranes = torch.empty_like(spikes) if trace else None
        divisor = float(1 << self.leak_shift)
        theta = self.theta.tolist()
        strict = self.compare is Compare.GT
        to_zero = self.reset is Reset.ZERO
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
                    if exact_int:
                        s.copy_(v > theta[t] if strict else v >= theta[t])
                    else:
                        (torch.gt if strict else torch.ge)(v, theta[t], out=s)
                    if to_zero:  # a spiking membrane is >= theta >= 1, so this gives +0.0
                        v.mul_(1 - s)
                    else:
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


@dataclass(frozen=True, eq=False)
class DenseLayer(NeuronLayer):
    """One fully connected layer of integrate-and-fire neurons.

    ``weight`` is ``int[out, in]``, ``bias`` is ``int[out]``; every other field is the neuron's
    (see :class:`NeuronLayer`).
    """

    kind = "dense"
    _weight_dims = 2

    def _check_connectivity(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        n = self.name
        if weight.shape[0] == 0 or weight.shape[1] == 0:
            raise ContractError(f"{n}.weight must have at least one row and column, "
                                f"got shape {tuple(weight.shape)}")
        if bias.shape[0] != weight.shape[0]:
            raise ContractError(f"{n}.bias has {bias.shape[0]} entries but weight has "
                                f"{weight.shape[0]} output neurons")

    @property
    def fan_in(self) -> int:
        return self.weight.shape[1]

    @property
    def fan_out(self) -> int:
        return self.weight.shape[0]

    @property
    def input_shape(self) -> tuple[int]:
        """``(fan_in,)``: a dense layer takes any flat vector (a C-major flattened image too)."""
        return (self.fan_in,)

    @property
    def output_shape(self) -> tuple[int]:
        return (self.fan_out,)

    def synops(self, events: torch.Tensor) -> torch.Tensor:
        return events.sum(1) * self.fan_out

    def current(self, s_in: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Synaptic current ``s_in @ weight.T`` of input ``[rows, fan_in]``, in ``dtype``.

        Exact when ``dtype`` comes from :meth:`_compute_dtype`. A layer with another
        connectivity (:class:`ConvLayer`) replaces this method; the neuron dynamics stay in
        :meth:`run`.
        """
        return s_in.to(dtype) @ self.weight.T.to(dtype)


@dataclass(frozen=True, eq=False)
class ConvLayer(NeuronLayer):
    """A 2-D convolution of integrate-and-fire neurons (one neuron per output position).

    The neuron is exactly :class:`DenseLayer`'s (same fields, same :meth:`run`); only the
    current differs. With ``x`` the input of one timestep as ``(C_in, H, W)`` and zero padding::

        current[o, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j]
                                     * x_padded[c, y * stride_h + i, x * stride_w + j]

    which is ``torch.nn.functional.conv2d`` (a cross-correlation, no kernel flip). Input and
    output are flat vectors in PyTorch's C-major order: input ``j = (c * H + y) * W + x``,
    ``fan_in = C_in * H * W``, ``fan_out = C_out * H_out * W_out`` with
    ``H_out = (H + 2 * padding_h - kh) // stride_h + 1`` (a partial last window is dropped, as in
    PyTorch), and likewise ``W_out``.

    Parameters (beside :class:`NeuronLayer`'s)
    ------------------------------------------
    weight : int[C_out, C_in, kh, kw]
        The kernel; it also gives the channel counts and the kernel size.
    bias : int[C_out]
        One bias per output channel.
    input_shape : (C_in, H, W)
        The image the layer is built for (keyword only).
    stride, padding : int or (rows, columns)
        ``stride >= 1``; ``padding >= 0`` zeros on every side (keyword only).

    Exact by construction, batched and fast: the current is an im2col (``unfold``, pure
    indexing) followed by one matrix product, in the dtype :meth:`_compute_dtype` picks. Every
    product and every partial sum of that product is an integer bounded by ``peak * max_o
    sum |weight[o]|`` plus the bias, below ``2**24`` in float32 or ``2**53`` in float64, so the
    BLAS result is exact whatever its summation order; beyond that it runs in int64. (We do not
    call ``conv2d`` itself: a backend may pick Winograd or FFT algorithms, which are not exact.)
    """

    kind = "conv"
    _weight_dims = 4

    name: str = "conv"
    input_shape: tuple[int, int, int] = field(default=None, kw_only=True)
    stride: int | tuple[int, int] = field(default=1, kw_only=True)
    padding: int | tuple[int, int] = field(default=0, kw_only=True)

    def _check_connectivity(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        n = self.name
        set_ = object.__setattr__
        if 0 in weight.shape:
            raise ContractError(f"{n}.weight must be [out_channels, in_channels, kh, kw], none "
                                f"of them 0, got shape {tuple(weight.shape)}")
        if bias.shape[0] != weight.shape[0]:
            raise ContractError(f"{n}.bias has {bias.shape[0]} entries but weight has "
                                f"{weight.shape[0]} output channels")
        if self.input_shape is None:
            raise ContractError(f"{n}.input_shape is missing: give the (channels, height, width) "
                                "the layer is built for")
        shape = _check_shape3(f"{n}.input_shape", self.input_shape)
        stride = _check_pair(f"{n}.stride", self.stride, minimum=1)
        padding = _check_pair(f"{n}.padding", self.padding, minimum=0)
        if weight.shape[1] != shape[0]:
            raise ContractError(f"{n}.weight takes {weight.shape[1]} input channels but "
                                f"input_shape {shape} has {shape[0]}")
        kh, kw = weight.shape[2], weight.shape[3]
        ph, pw = shape[1] + 2 * padding[0], shape[2] + 2 * padding[1]
        if kh > ph or kw > pw:
            raise ContractError(f"{n}.weight kernel {kh}x{kw} does not fit the padded input "
                                f"{ph}x{pw} (input_shape {shape}, padding {padding})")
        set_(self, "input_shape", shape)
        set_(self, "stride", stride)
        set_(self, "padding", padding)

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel(self) -> tuple[int, int]:
        return self.weight.shape[2], self.weight.shape[3]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        (_, h, w), (kh, kw) = self.input_shape, self.kernel
        return (self.out_channels, _window_positions(h, kh, self.stride[0], self.padding[0]),
                _window_positions(w, kw, self.stride[1], self.padding[1]))

    @property
    def fan_in(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def fan_out(self) -> int:
        c, h, w = self.output_shape
        return c * h * w

    def _neuron_bias(self) -> torch.Tensor:
        _, h, w = self.output_shape
        return self.bias.repeat_interleave(h * w)

    def reach(self) -> torch.Tensor:
        """``int[fan_in]``: the output neurons whose receptive field holds each input.

        ``C_out`` times the number of window positions covering the pixel, per axis: a border
        pixel (with padding) or one between strided windows reaches fewer, a pixel in a dropped
        partial window none.
        """
        c, h, w = self.input_shape
        _, h_out, w_out = self.output_shape
        per_axis = []
        for size, n_out, k, s, p in ((h, h_out, self.kernel[0], self.stride[0], self.padding[0]),
                                     (w, w_out, self.kernel[1], self.stride[1], self.padding[1])):
            rows = (torch.arange(n_out)[:, None] * s + torch.arange(k)[None, :] - p).flatten()
            per_axis.append(torch.bincount(rows[(rows >= 0) & (rows < size)], minlength=size))
        plane = per_axis[0][:, None] * per_axis[1][None, :] * self.out_channels
        return plane.expand(c, h, w).reshape(-1)

    def current(self, s_in: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Synaptic current (no bias) of flat input ``[rows, C_in*H*W]``, as ``[rows, fan_out]``.

        Exact when ``dtype`` comes from :meth:`_compute_dtype` (see the class docstring).
        """
        c, h, w = self.input_shape
        _, h_out, w_out = self.output_shape
        rows = s_in.shape[0]
        weight = self.weight.reshape(self.out_channels, -1).to(dtype)
        out = torch.empty((rows, self.fan_out), dtype=dtype)
        taps = weight.shape[1]
        chunk = max(1, _CHUNK_ELEMENTS // (taps * h_out * w_out))
        for start in range(0, rows, chunk):
            x = s_in[start:start + chunk].to(dtype).reshape(-1, c, h, w)
            if dtype.is_floating_point:
                columns = F.unfold(x, self.kernel, padding=self.padding, stride=self.stride)
            else:  # im2col has no int64 kernel: the same columns from strided views
                columns = _windows(x, self.kernel, self.stride, self.padding)
                columns = columns.permute(0, 1, 4, 5, 2, 3).reshape(len(x), taps, -1)
            out[start:start + len(x)] = torch.matmul(weight, columns).reshape(len(x), -1)
        return out


@dataclass(frozen=True, eq=False, kw_only=True)
class SumPoolLayer:
    """Sum pooling: each output is the integer sum of its input over one window. No neurons.

    ``out[c, y, x] = sum_{i < kh, j < kw} x_padded[c, y * stride_h + i, x * stride_w + j]``,
    flat C-major like :class:`ConvLayer` (``H_out = (H + 2 * padding_h - kh) // stride_h + 1``,
    a partial last window dropped as in PyTorch). Pooling binary spikes gives small non-negative
    counts ``0 .. kh * kw``, and the next layer's current is its weight times the count. That
    equals the next layer applied to every input spike at its *pooled address* (the window, or
    windows, holding it): sum pooling followed by a convolution is the convolution applied to
    each spike at its pooled address, which is how the hardware implements pooling (an address
    transform, no arithmetic).

    Average pooling is this layer with the ``1 / (kh * kw)`` scale folded into the next layer by
    whoever converts the model (see ``docs/contract.md``); there is no average pooling layer.

    Parameters (keyword only)
    -------------------------
    kernel : int or (kh, kw)
    input_shape : (C, H, W)
    stride : int or (rows, columns), default the kernel (non-overlapping windows)
    padding : int or (rows, columns), default 0; at most half the kernel (PyTorch's rule)
    """

    kind = "sumpool"

    kernel: int | tuple[int, int]
    input_shape: tuple[int, int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    name: str = "pool"

    def __post_init__(self):
        n = self.name
        set_ = object.__setattr__
        kernel = _check_pair(f"{n}.kernel", self.kernel, minimum=1)
        stride = kernel if self.stride is None else _check_pair(f"{n}.stride", self.stride,
                                                                minimum=1)
        padding = _check_pair(f"{n}.padding", self.padding, minimum=0)
        shape = _check_shape3(f"{n}.input_shape", self.input_shape)
        if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
            raise ContractError(f"{n}.padding {padding} must be at most half the kernel "
                                f"{kernel[0]}x{kernel[1]}")
        ph, pw = shape[1] + 2 * padding[0], shape[2] + 2 * padding[1]
        if kernel[0] > ph or kernel[1] > pw:
            raise ContractError(f"{n}.kernel {kernel[0]}x{kernel[1]} does not fit the padded "
                                f"input {ph}x{pw} (input_shape {shape}, padding {padding})")
        set_(self, "kernel", kernel)
        set_(self, "stride", stride)
        set_(self, "padding", padding)
        set_(self, "input_shape", shape)

    @property
    def area(self) -> int:
        return self.kernel[0] * self.kernel[1]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        c, h, w = self.input_shape
        return (c, _window_positions(h, self.kernel[0], self.stride[0], self.padding[0]),
                _window_positions(w, self.kernel[1], self.stride[1], self.padding[1]))

    @property
    def fan_in(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def fan_out(self) -> int:
        c, h, w = self.output_shape
        return c * h * w

    def with_(self, **changes) -> SumPoolLayer:
        """A copy with some fields replaced (validated again)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields.update(changes)
        return SumPoolLayer(**fields)

    def synops(self, events: torch.Tensor) -> torch.Tensor:
        """Zero: pooling updates no membrane (its events reach the next layer's neurons)."""
        return torch.zeros(events.shape[0], dtype=torch.int64)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Sum-pool flat inputs ``[rows, fan_in]`` to ``[rows, fan_out]``, in ``x``'s dtype.

        ``avg_pool2d`` with ``divisor_override=1``: a window sum divided by one. Exact: a float
        ``x`` holds integers and every partial sum of a window is an integer below ``peak * kh *
        kw``; :meth:`run` switches to int64 when that could reach ``2**24`` (float32) or
        ``2**53`` (float64).
        """
        c, h, w = self.input_shape
        x = x.reshape(x.shape[0], c, h, w)
        return F.avg_pool2d(x, self.kernel, self.stride, self.padding,
                            divisor_override=1).reshape(x.shape[0], -1)

    def run(self, s_in: torch.Tensor, trace: bool = False, *, _peak: int | None = None,
            _raw: bool = False):
        """Pool every timestep of ``s_in`` ``int[batch, T, fan_in]``.

        Returns ``(counts, None, counts if trace else None)`` with ``counts int[batch, T,
        fan_out]``, shaped like :meth:`NeuronLayer.run`'s ``(spikes, v_final, membranes)``: a
        pooling layer has no membrane, so its trace repeats its output there.
        """
        if _raw:
            s_in = s_in.transpose(0, 1)
        if s_in.dim() != 3 or s_in.shape[2] != self.fan_in:
            raise ContractError(f"{self.name}: input must be [batch, T, fan_in={self.fan_in}], "
                                f"got {tuple(s_in.shape)}")
        batch, steps, _ = s_in.shape
        x = s_in.transpose(0, 1).reshape(steps * batch, -1)
        if x.is_floating_point():
            peak = _peak if _peak is not None else (
                int(x.abs().max()) if x.numel() else 0)
            limit = 2**23 if x.dtype == torch.float32 else 2**52
            if x.dtype not in (torch.float32, torch.float64) or peak * self.area >= limit:
                x = x.to(torch.int64)
        counts = self.pool(x).reshape(steps, batch, -1)
        if _raw:
            as_int = counts.to(torch.int64).transpose(0, 1)
            return counts, None, as_int if trace else None
        counts = counts.to(torch.int64).transpose(0, 1)
        return counts, None, counts if trace else None


Layer = DenseLayer | ConvLayer | SumPoolLayer
"""Every layer kind a :class:`Network` accepts."""


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
    """Everything one layer did in one run: what the RTL scoreboard compares.

    For a :class:`SumPoolLayer`, ``spikes`` holds its integer output counts and ``membranes``
    repeats them (it has no membrane); its ``synops`` are zero.
    """

    spikes: torch.Tensor  # int[batch, T, fan_out]
    membranes: torch.Tensor  # int[batch, T, fan_out], end of every timestep
    input_events: torch.Tensor  # int[batch]: input events over all timesteps (docs/contract.md)
    synops: torch.Tensor  # int[batch]: every input event times the neurons it reaches


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


def _check_link(prev, layer) -> None:
    """``layer`` must take exactly what ``prev`` outputs (flat C-major vectors in between)."""
    before, after = prev.output_shape, layer.input_shape
    if len(before) == 1 or len(after) == 1:  # a flat side: only the sizes must agree
        if layer.fan_in == prev.fan_out:
            return
        if isinstance(layer, DenseLayer) and isinstance(prev, DenseLayer):
            raise ContractError(f"{layer.name}.weight takes {layer.fan_in} inputs but "
                                f"{prev.name} has {prev.fan_out} neurons")
        what = "weight" if isinstance(layer, DenseLayer) else f"input_shape {after}"
        source = (f"{prev.name} has {prev.fan_out} neurons" if len(before) == 1 else
                  f"{prev.name} outputs {prev.fan_out} values (shape {before}, flattened "
                  "C-major)")
        raise ContractError(f"{layer.name}.{what} takes {layer.fan_in} inputs but {source}")
    if after[0] != before[0]:
        raise ContractError(f"{layer.name}.input_shape {after} has {after[0]} channels but "
                            f"{prev.name} outputs {before[0]} channels (shape {before})")
    if after != before:
        raise ContractError(f"{layer.name}.input_shape {after} does not match {prev.name}'s "
                            f"output shape {before}")


@dataclass(frozen=True, eq=False)
class Network:
    """A stack of layers run over ``timesteps`` steps, fed by an :class:`Encoder`.

    Layers are :class:`DenseLayer`, :class:`ConvLayer` and :class:`SumPoolLayer`; consecutive
    layers exchange flat C-major vectors (a shaped layer after a shaped one must match its
    ``(C, H, W)``; a dense layer takes any flat vector of the right size). Only the last layer
    may be non-firing, and the last layer must be a neuron layer (its readout is the network's).
    Hardware that maps dense layers only checks :attr:`is_dense` (or calls
    :meth:`require_dense`).
    """

    layers: Sequence[Layer]
    timesteps: int
    encoder: Encoder = field(default_factory=Encoder)

    def __post_init__(self):
        _check_int("timesteps", self.timesteps, minimum=1)
        layers = list(self.layers)
        if not layers:
            raise ContractError("network.layers must hold at least one layer")
        object.__setattr__(self, "layers", layers)
        last = len(layers) - 1
        for k, layer in enumerate(layers):
            if not isinstance(layer, (NeuronLayer, SumPoolLayer)):
                raise ContractError(f"layers[{k}] must be a DenseLayer, ConvLayer or "
                                    f"SumPoolLayer, not {type(layer).__name__}")
            if isinstance(layer, NeuronLayer) and layer.timesteps != self.timesteps:
                raise ContractError(f"{layer.name}.theta has {layer.timesteps} entries but the "
                                    f"network runs {self.timesteps} timesteps")
            if k > 0:
                _check_link(layers[k - 1], layer)
            if isinstance(layer, SumPoolLayer) and k == last:
                raise ContractError(f"{layer.name} is a SumPoolLayer but the last layer must "
                                    "be a neuron layer: pooling has no readout")
            if k < last and isinstance(layer, NeuronLayer) and not layer.fires:
                raise ContractError(f"{layer.name}.fires is False but only the last layer may "
                                    "be non-firing")

    @property
    def n_inputs(self) -> int:
        return self.layers[0].fan_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].fan_out

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kind of every layer: ``"dense"``, ``"conv"`` or ``"sumpool"``."""
        return tuple(layer.kind for layer in self.layers)

    @property
    def is_dense(self) -> bool:
        """True when every layer is a :class:`DenseLayer` (what dense-only hardware maps)."""
        return all(isinstance(layer, DenseLayer) for layer in self.layers)

    def require_dense(self, purpose: str) -> None:
        """Raise :class:`ContractError` naming the first layer that is not dense.

        ``purpose`` names the caller: ``network.require_dense("the accelerator")`` raises
        ``the accelerator maps dense layers only, but layers[0] (conv1) is a conv layer``.
        """
        for k, layer in enumerate(self.layers):
            if not isinstance(layer, DenseLayer):
                raise ContractError(f"{purpose} maps dense layers only, but layers[{k}] "
                                    f"({layer.name}) is a {layer.kind} layer")

    def encode(self, pixels) -> torch.Tensor:
        pixels = _as_int_tensor("pixels", pixels, 2)
        if pixels.shape[1] != self.n_inputs:
            raise ContractError(f"pixels have {pixels.shape[1]} values per image but the "
                                f"network takes {self.n_inputs}")
        return self.encoder.encode(pixels, self.timesteps)

    def trace_frames(self, frames: torch.Tensor, trace: bool = True) -> Trace:
        """Run already-encoded input frames ``int[batch, T, n_in]`` through every layer.

        Input events (docs/contract.md): the first layer's are the non-zero entries of the
        frames. After that every spike is one event, so a pooled count ``n`` is ``n`` events at
        that address, except that direct-coded pixels, pooled or not, are one event per
        non-zero value until the first neuron layer.
        """
        frames = _as_int_tensor("frames", frames, 3)
        layer_traces = []
        x, peak = frames.transpose(0, 1), None  # time-major between layers: contiguous steps
        # Count events as the sum of the entries (spikes, pooled spike counts), or as the
        # non-zero entries (the frames themselves; pooled direct-coded pixels).
        spikes_are_events = self.encoder.kind is not EncoderKind.DIRECT
        v_final = spikes = None
        for k, layer in enumerate(self.layers):
            out, v_final, membranes = layer.run(x, trace=trace, _peak=peak, _raw=True)
            per_input = x.sum(0) if spikes_are_events and k else (x != 0).sum(0)
            per_input = per_input.to(torch.int64)
            spikes = out.to(torch.int64).transpose(0, 1)
            layer_traces.append(LayerTrace(spikes, membranes, per_input.sum(1),
                                           layer.synops(per_input)))
            if isinstance(layer, SumPoolLayer):
                peak = None if peak is None else peak * layer.area
            else:
                peak, spikes_are_events = 1, True
            x = out
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

"""Spiking neurons for training: forward exactly the contract's rule, backward a surrogate.

A neuron is an ``nn.Module`` with explicit state (the membrane ``v``) that :meth:`reset`
clears; trainable neuron parameters (thresholds, ATIF-nu's ``p``) are ``nn.Parameter``\\ s and
fixed ones are buffers. One call of :meth:`ThresholdNeuron.forward` is one timestep of the
contract (docs/contract.md, section 1)::

    V = V + I;  s = V >= theta[t];  V = V - theta[t] * s

The Heaviside step's derivative is replaced in the backward pass by a surrogate (seed 000 uses
the derivative of a sigmoid; others are selectable by name, see :data:`SURROGATES`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "SURROGATES",
    "spike",
    "nu_thresholds",
    "nu_params_from_thresholds",
    "ThresholdNeuron",
    "RadixNeuron",
    "qrelu",
    "round_ste",
    "floor_ste",
]

#: Surrogate derivatives of the Heaviside step ``H(x)``, as functions of ``x`` and ``alpha``.
SURROGATES = {
    # seed 000: sigma'(alpha x) * alpha with sigma the logistic function
    "sigmoid": lambda x, a: a * torch.sigmoid(a * x) * (1 - torch.sigmoid(a * x)),
    # SpikingJelly's ATan: alpha / 2 / (1 + (pi/2 alpha x)^2)
    "atan": lambda x, a: a / 2 / (1 + (math.pi / 2 * a * x) ** 2),
    # triangle (Esser et al.): max(0, 1 - |alpha x|) * alpha
    "triangle": lambda x, a: (1 - (a * x).abs()).clamp(min=0) * a,
    # straight-through box: 1 on |x| < 1/(2 alpha), scaled so that its integral is 1
    "rectangle": lambda x, a: ((a * x).abs() < 0.5).to(x.dtype) * a,
}


class _Spike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, kind):
        ctx.save_for_backward(x)
        ctx.alpha, ctx.kind = alpha, kind
        return (x >= 0).to(x.dtype)  # '>=' as in the contract

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * SURROGATES[ctx.kind](x, ctx.alpha), None, None


def spike(x: torch.Tensor, surrogate: str = "sigmoid", alpha: float = 4.0) -> torch.Tensor:
    """Heaviside ``x >= 0`` with the named surrogate derivative."""
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}, not {surrogate!r}")
    return _Spike.apply(x, alpha, surrogate)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward (half to even, as torch.round), identity gradient."""
    return x + (torch.round(x) - x).detach()


def floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.floor(x) - x).detach()


def nu_thresholds(p: torch.Tensor) -> torch.Tensor:
    """ATIF-nu: per-timestep thresholds ``V_1..V_T`` from the quantizer's steps ``p_1..p_T``.

    ``p_1 > p_2 > ... > p_T > 0`` are the input levels at which a constant input current makes
    the neuron fire ``T, T-1, .., 1`` spikes (``p_k`` gives spikes at timesteps ``k..T``,
    1-based). Seed 000 (eqs 14-19) gives, for T = 4::

        V_4 = T p_4,  V_3 = T (p_3 - p_4),  V_2 = (T-1) p_2 - T (p_3 - p_4),  V_1 = p_1

    Generalized to any ``T`` (the reading that reproduces all four): ``V_1 = p_1`` (``p_1`` is
    the clipping point, the neuron fires at every step from ``p_1`` up); ``V_T = T p_T``; and
    for ``1 < k < T`` the membrane of an input ``p_k`` that first fired at step ``k`` reaches
    the next threshold exactly at step ``k+1``: ``(k+1) p_k - V_k = V_{k+1}``, i.e.
    ``V_k = (k+1) p_k - V_{k+1}``. ``p`` has shape ``[..., T]``.
    """
    steps = p.shape[-1]
    out = [None] * steps
    out[steps - 1] = steps * p[..., steps - 1]
    for k in range(steps - 2, 0, -1):  # 0-based k is the paper's k+1
        out[k] = (k + 2) * p[..., k] - out[k + 1]
    out[0] = p[..., 0]
    return torch.stack(out, dim=-1)


def nu_params_from_thresholds(v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`nu_thresholds` (used to start ATIF-nu from a uniform quantizer)."""
    steps = v.shape[-1]
    p = [None] * steps
    p[0] = v[..., 0]
    p[steps - 1] = v[..., steps - 1] / steps
    for k in range(1, steps - 1):
        p[k] = (v[..., k] + v[..., k + 1]) / (k + 2)
    return torch.stack(p, dim=-1)


def qrelu(z: torch.Tensor, theta: torch.Tensor, timesteps: int, offset: float) -> torch.Tensor:
    """Seed 001's quantized ReLU in spike units, clipped at ``timesteps`` spikes.

    Forward: ``theta / T * clamp(floor(T z / theta + offset), 0, T)``: the spike count of a
    soft-reset IF neuron with threshold ``theta`` and initial membrane ``offset * theta`` fed the
    constant current ``z`` for ``T`` steps, times the value of one spike. Backward: the gradient
    of a ReLU (straight-through), as in the paper.
    """
    count = torch.clamp(torch.floor(timesteps * z / theta + offset), 0, timesteps)
    quantized = theta / timesteps * count
    relu = torch.relu(z)
    return relu + (quantized - relu).detach()


class ThresholdNeuron(nn.Module):
    """Integrate-and-fire neuron with soft reset and per-timestep thresholds.

    Parameters
    ----------
    timesteps : int
    kind : str
        ``"fixed"`` (threshold buffer, the IF baseline), ``"trainable"`` (one trainable
        threshold per layer: ATIF-u) or ``"nu"`` (trainable ``p_1..p_T``, thresholds from
        :func:`nu_thresholds`: ATIF-nu).
    theta : float
        Initial (or fixed) threshold. ATIF-nu starts from the uniform quantizer of this
        threshold.
    v_init_half : bool
        Start the membrane at half the first threshold (rounding quantizer) instead of 0.
    surrogate, alpha :
        Surrogate derivative (see :data:`SURROGATES`) and its sharpness; the surrogate is
        evaluated on ``(V - theta) / theta`` so that its width follows the threshold.

    Members
    -------
    v : Tensor or None
        The membrane; ``None`` after :meth:`reset`.
    """

    def __init__(self, timesteps: int, kind: str = "trainable", theta: float = 1.0,
                 v_init_half: bool = True, surrogate: str = "sigmoid", alpha: float = 4.0):
        super().__init__()
        if kind not in ("fixed", "trainable", "nu"):
            raise ValueError(f"neuron kind must be 'fixed', 'trainable' or 'nu', not {kind!r}")
        if surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {', '.join(SURROGATES)}, "
                             f"not {surrogate!r}")
        self.timesteps, self.kind = timesteps, kind
        self.v_init_half = v_init_half and kind != "nu"
        self.surrogate, self.alpha = surrogate, alpha
        if kind == "fixed":
            self.register_buffer("theta", torch.tensor(float(theta)))
        elif kind == "trainable":
            self.theta = nn.Parameter(torch.tensor(float(theta)))
        else:
            uniform = torch.full((timesteps,), float(theta))
            self.p = nn.Parameter(nu_params_from_thresholds(uniform))
        self.v = None

    def thresholds(self) -> torch.Tensor:
        """Float thresholds of the ``T`` timesteps (kept >= a tiny positive value)."""
        if self.kind == "nu":
            return nu_thresholds(self.p).clamp(min=1e-4)
        return self.theta.clamp(min=1e-4).expand(self.timesteps)

    def amplitude(self) -> torch.Tensor:
        """Value of one output spike for the next layer (folded into its weights)."""
        return self.thresholds().mean()

    def reset(self, v_init: torch.Tensor | float | None = None) -> None:
        """Clear the state; the next step starts from ``v_init`` (``None``: zero)."""
        self.v = v_init

    def forward(self, current: torch.Tensor, theta_t: torch.Tensor) -> torch.Tensor:
        """One timestep: integrate ``current``, fire against ``theta_t``, soft reset."""
        v = current if self.v is None else self.v + current
        s = spike((v - theta_t) / theta_t.detach(), self.surrogate, self.alpha)
        self.v = v - theta_t * s
        return s


class RadixNeuron(nn.Module):
    """Seed 002's base-2 radix neuron with shift leak 1, one timestep per call::

        if t > 0: V = floor(V / 2);  V = V + I;  s = V mod 2 (= V & 1);  V = V - s

    Spikes are read LSB first. The forward is exact for integer-valued currents; the backward
    passes the gradient of the (unwrapped) membrane straight through, which is what the
    ANN-domain training path (:meth:`SpikingMLP._radix_forward`) uses in closed form.

    Members
    -------
    v : Tensor or None
        The membrane; ``None`` after :meth:`reset`.
    t : int
        Timesteps since the last :meth:`reset` (the leak starts at the second).
    """

    def __init__(self):
        super().__init__()
        self.v = None
        self.t = 0

    def reset(self, v_init: torch.Tensor | float | None = None) -> None:
        self.v, self.t = v_init, 0

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        v = 0.0 if self.v is None else self.v
        if self.t > 0:
            v = floor_ste(v / 2)
        v = v + current
        self.t += 1
        s = v.detach() - 2 * torch.floor(v.detach() / 2)
        self.v = v - s
        return s

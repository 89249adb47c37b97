"""Seed 000's single-neuron quantization experiment (sections 3.2-3.4, Figs 3 and 5).

One IF neuron with soft reset receives a constant current ``i ~ N(0, sigma**2)`` for ``T``
steps; its output is decoded from the spike count, ``y = a * count / T``, where ``a`` is the
value of one spike (the threshold for IF / ATIF-u, the mean threshold for ATIF-nu: the same
amplitude the network folds into the next layer's weights, so the decoded value is what the
hardware computes). The loss is the squared error to ``ReLU(i)``, the ANN's noiseless output
(eq 13; the negative half has no gradient either way), and the SQNR (eq 8) is
``10 log10(E[ReLU(i)^2] / E[(ReLU(i) - y)^2])``. Parameters are trained with Adam (lr 1e-3)
through the sigmoid surrogate, one fresh batch of Gaussian inputs per iteration.
"""

from __future__ import annotations

import math

import torch

from .neurons import ThresholdNeuron

__all__ = ["decode", "sqnr_db", "run_sqnr", "fixed_threshold_sqnr"]


def decode(neuron: ThresholdNeuron, current: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Run one neuron per element of ``current`` for ``timesteps`` steps, return ``a*count/T``."""
    theta = neuron.thresholds()
    neuron.reset(theta[0] / 2 if neuron.v_init_half else 0.0)
    count = sum(neuron(current, theta[t]) for t in range(timesteps))
    neuron.reset()
    return neuron.amplitude() * count / timesteps


def sqnr_db(x: torch.Tensor, y: torch.Tensor) -> float:
    signal = torch.relu(x)
    return 10 * math.log10(float((signal ** 2).mean()) / float(((signal - y) ** 2).mean()))


def run_sqnr(kind: str, timesteps: int = 4, sigma: float = 0.1, iterations: int = 3000,
             batch: int = 1024, lr: float = 1e-3, seed: int = 0, eval_size: int = 200_000,
             every: int = 50, surrogate: str = "sigmoid", alpha: float = 4.0) -> dict:
    """Train one neuron (``kind`` = ``fixed``, ``trainable`` (ATIF-u) or ``nu`` (ATIF-nu)).

    Returns ``{"iteration": [...], "sqnr": [...], "thresholds": [[...]], "final": dB}``: the SQNR
    on a fixed evaluation sample every ``every`` iterations, and the thresholds at those points.
    """
    gen = torch.Generator().manual_seed(seed)
    evaluation = torch.randn(eval_size, generator=gen, dtype=torch.float64).float() * sigma
    neuron = ThresholdNeuron(timesteps, kind, theta=1.0, v_init_half=False,
                             surrogate=surrogate, alpha=alpha)
    params = list(neuron.parameters())
    opt = torch.optim.Adam(params, lr=lr) if params else None
    out = {"iteration": [], "sqnr": [], "thresholds": []}

    def record(it):
        with torch.no_grad():
            out["iteration"].append(it)
            out["sqnr"].append(sqnr_db(evaluation, decode(neuron, evaluation, timesteps)))
            out["thresholds"].append(neuron.thresholds().tolist())

    for it in range(iterations + 1):
        if it % every == 0:
            record(it)
        if opt is None or it == iterations:
            continue
        x = torch.randn(batch, generator=gen) * sigma
        loss = ((torch.relu(x) - decode(neuron, x, timesteps)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    out["final"] = out["sqnr"][-1]
    return out


def fixed_threshold_sqnr(timesteps: int, sigma: float = 0.1, theta: float = 1.0,
                         eval_size: int = 200_000, seed: int = 0) -> float:
    """SQNR of a fixed-threshold IF neuron (for the 'T needed to match' comparison)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(eval_size, generator=gen) * sigma
    neuron = ThresholdNeuron(timesteps, "fixed", theta=theta, v_init_half=False)
    with torch.no_grad():
        return sqnr_db(x, decode(neuron, x, timesteps))

"""The cycle model of :class:`spikeforge.hw.accelerator.NetworkAccelerator`: exact compute cycles
per image.

Cycle 0 is the cycle after the image's last pixel is taken: the encoder's ``run`` and the core's
``start``. The encoder (``hw/encoder.py``) issues step ``s``'s ``Z + 1`` slots (``Z`` = the
image's non-zero pixels, then the marker slot) from cycle ``x_s`` on, one per cycle::

    x_0 = 1
    x_s = max(x_{s-1} + Z + 1, c_{s-2} + 1)      at most two steps ahead of the core
    A_s = x_s + Z + 3 + [E_s = 0]                the step is released to the core (its marker
                                                 is in the FIFO; an empty step's marker is the
                                                 FIFO's first entry, one cycle later)

``c_t`` is the cycle the core takes step ``t``'s marker into its input register: ``m_t - G_0``
after a valid spike, ``m_t - 1`` for an empty step (``m_t`` = the marker decoded, pass
``(t, 0)`` of :mod:`spikeforge.sim.core_model`). Layer 0's step ``t`` is decoded from
``A_t + 1`` on. The core's schedule then gives every pass; the ``CYCLES`` register reads
``e_last + ACCELERATOR_TAIL`` (the core's ``done`` cycle, in which the sequencer leaves RUN).
Loading pixels and reading results are not counted: they go at the host's pace.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spikeforge.sim.core_model import (
    QUEUE_DELAY,
    CoreTiming,
    PassTiming,
)
from spikeforge.sim.cycle_model import FIRST_BEAT_DELAY, fire_pass_cycles, groups
from spikeforge.sw.golden import Network, Trace

__all__ = ["NetworkTiming", "network_timing", "worst_case_network_cycles", "ACCELERATOR_TAIL"]

#: Cycles the accelerator's ``CYCLES`` counts after the core's last output marker.
ACCELERATOR_TAIL = 1


@dataclass(frozen=True)
class NetworkTiming:
    """Cycle counts of one image."""

    cycles: int                  # the CYCLES register
    layers: tuple[int, ...]      # layer k's CYCLES register
    core: CoreTiming


def _schedule(G, events, fire, listed: int) -> CoreTiming:
    """The encoder's and the core's recurrences together, pass by pass."""
    T, L = len(events), len(G)
    passes: list[PassTiming] = []
    took: list[int] = []         # c_t
    x = None
    handoff = end = None
    for t in range(T):
        x = 1 if x is None else max(x + listed + 1, took[t - 2] + 1 if t >= 2 else 0)
        released = x + listed + 3 + (events[t][0] == 0)
        for k in range(L):
            if handoff is None:
                first = max(G) + FIRST_BEAT_DELAY
            elif k == 0:
                first = handoff + 1
            else:
                first = max(handoff + 1, end + QUEUE_DELAY + (events[t][k] == 0))
            if k == 0:
                first = max(first, released + 1)
            marker = first + G[k] * events[t][k]
            if k == 0:
                took.append(marker - (G[0] if events[t][0] else 1))
            handoff = marker + 1 if end is None else max(marker + 1, end + 1)
            end = handoff + fire[t][k]
            passes.append(PassTiming(t, k, events[t][k], 0, fire[t][k], first, marker,
                                     handoff, end))
    return CoreTiming(tuple(passes))


def network_timing(network: Network, lanes: int, trace: Trace, pixels) -> list[NetworkTiming]:
    """Exact timing of every image of ``trace`` (``network.trace(pixels)``)."""
    pixels = torch.as_tensor(pixels, dtype=torch.int64).reshape(-1, network.n_inputs)
    L, T = len(network.layers), network.timesteps
    G = [groups(layer.fan_out, lanes) for layer in network.layers]
    timings = []
    for b in range(trace.inputs.shape[0]):
        events = [[0] * L for _ in range(T)]
        fire = [[0] * L for _ in range(T)]
        inputs = trace.inputs[b]
        for k, (layer, layer_trace) in enumerate(zip(network.layers, trace.layers,
                                                     strict=True)):
            outputs = layer_trace.spikes[b]
            for t in range(T):
                events[t][k] = int((inputs[t] != 0).sum())
                fire[t][k] = fire_pass_cycles(outputs[t] if layer.fires
                                              else torch.zeros_like(outputs[t]), lanes)
            inputs = outputs
        core = _schedule(G, events, fire, int((pixels[b] != 0).sum()))
        timings.append(NetworkTiming(core.cycles + ACCELERATOR_TAIL,
                                     tuple(core.layer_cycles(k) for k in range(L)), core))
    return timings


def worst_case_network_cycles(network: Network, lanes: int) -> int:
    """An upper bound of one image's compute cycles: every pixel non-zero, every input and
    neuron spiking at every step (the schedule grows with every event), for testbench
    budgets."""
    L, T = len(network.layers), network.timesteps
    G = [groups(layer.fan_out, lanes) for layer in network.layers]
    events = [[network.n_inputs] + [layer.fan_out for layer in network.layers[:-1]]
              for _ in range(T)]
    fire = [[5 + max(g, layer.fan_out) for g, layer in zip(G, network.layers, strict=True)]
            for _ in range(T)]
    return _schedule(G, events, fire, network.n_inputs).cycles + ACCELERATOR_TAIL

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

from spikeforge.hw.core_layout import core_layout
from spikeforge.sim.core_model import CoreTiming, core_schedule, pass_counts
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


def network_timing(network: Network, lanes: int, trace: Trace, pixels) -> list[NetworkTiming]:
    """Exact timing of every image of ``trace`` (``network.trace(pixels)``)."""
    pixels = torch.as_tensor(pixels, dtype=torch.int64).reshape(-1, network.n_inputs)
    timings = []
    for b in range(trace.inputs.shape[0]):
        layout, events, bad, fire = pass_counts(network, lanes, trace, b)
        core = core_schedule(layout.groups, [x.slots for x in layout.maps], events, fire, bad,
                             listed=int((pixels[b] != 0).sum()))
        timings.append(NetworkTiming(core.cycles + ACCELERATOR_TAIL,
                                     tuple(core.layer_cycles(i)
                                           for i in range(len(layout.maps))), core))
    return timings


def worst_case_network_cycles(network: Network, lanes: int) -> int:
    """An upper bound of one image's compute cycles: every pixel non-zero, every input and
    neuron spiking at every step (the schedule grows with every event), for testbench
    budgets."""
    layout = core_layout(network, lanes)
    T = network.timesteps
    sources = [network.n_inputs] + [x.layer.fan_out for x in layout.maps[:-1]]
    events = [sources for _ in range(T)]
    fire = [[5 + max(x.groups, x.layer.fan_out) for x in layout.maps] for _ in range(T)]
    return core_schedule(layout.groups, [x.slots for x in layout.maps], events, fire,
                         listed=network.n_inputs).cycles + ACCELERATOR_TAIL

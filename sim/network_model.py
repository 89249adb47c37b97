"""The cycle model of :class:`spikeforge.hw.accelerator.NetworkAccelerator`: exact compute cycles
per image.

Cycle 0 is the cycle after the image's last pixel is taken: the encoder's ``run`` and the core's
``start``. The encoder (``hw/encoder.py``) issues step ``s``'s ``Z + 1`` slots (``Z`` = the
image's non-zero pixels, then the marker slot) from cycle ``x_s`` on, one per cycle::

    x_0 = 1
    x_s = max(x_{s-1} + Z + 1, c_{s-1} + 1)      at most one step ahead of the core

and each spike reaches the core's input register as it is made (slot ``i`` written into the
FIFO at ``x_s + i + 2``, shown two cycles later); ``c_t`` is the cycle the core takes step
``t``'s marker. :func:`spikeforge.sim.core_model.core_schedule` follows every beat of every
pass (:func:`encoder_slots` gives each layer-0 spike's slot); the ``CYCLES`` register reads
``e_last + ACCELERATOR_TAIL`` (the core's ``done`` cycle, in which the sequencer leaves RUN).
Loading pixels and reading results are not counted: they go at the host's pace.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spikeforge.hw.core_layout import core_layout
from spikeforge.sim.core_model import CoreTiming, PassWork, core_schedule, pass_work
from spikeforge.sw.golden import Network, Trace

__all__ = ["NetworkTiming", "network_timing", "worst_case_network_cycles", "encoder_slots",
           "ACCELERATOR_TAIL"]

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
        layout, work = pass_work(network, lanes, trace, b)
        core = core_schedule(layout.groups, work,
                             encoder=encoder_slots(pixels[b], trace.inputs[b]))
        timings.append(NetworkTiming(core.cycles + ACCELERATOR_TAIL,
                                     tuple(core.layer_cycles(i)
                                           for i in range(len(layout.maps))), core))
    return timings


def worst_case_network_cycles(network: Network, lanes: int) -> int:
    """An upper bound of one image's compute cycles: every pixel non-zero (with every bit set,
    for direct input), every input and neuron spiking at every step (the schedule grows with
    every event), for testbench budgets."""
    layout = core_layout(network, lanes)
    planes = max(1, layout.value_bits)
    sources = [network.n_inputs] + [x.layer.fan_out for x in layout.maps[:-1]]
    work = [PassWork([x.slots * (planes if i == 0 else 1)] * n, list(range(x.layer.fan_out)),
                     max(x.groups, x.layer.fan_out))
            for i, (x, n) in enumerate(zip(layout.maps, sources, strict=True))]
    every = list(range(network.n_inputs))
    return core_schedule(layout.groups, [work] * network.timesteps,
                         encoder=(network.n_inputs, [every] * network.timesteps)
                         ).cycles + ACCELERATOR_TAIL


def encoder_slots(pixels, frames) -> tuple[int, list[list[int]]]:
    """``(Z, spike_slots)`` of one image for :func:`spikeforge.sim.core_model.core_schedule`:
    its non-zero pixels (the encoder's list, in address order) and, per step, the list
    positions of that step's spikes."""
    pixels = torch.as_tensor(pixels).reshape(-1)
    rank = torch.cumsum(pixels != 0, 0) - 1          # list position of each non-zero pixel
    frames = torch.as_tensor(frames)
    return int((pixels != 0).sum()), [rank[frames[t].reshape(-1) != 0].tolist()
                                      for t in range(frames.shape[0])]

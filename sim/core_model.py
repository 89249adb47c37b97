"""The cycle model of :class:`spikeforge.hw.core.CoreArray`: exact cycles of one inference.

The core runs passes ``p = (t, k)`` in order, timestep-major (``hw/core.py``). Pass ``p`` has
``E_p`` valid and ``B_p`` dropped input spikes (layer ``k``'s input at step ``t``: for ``k = 0``
the encoded frame, else layer ``k - 1``'s output spikes) and a fire pass of
``F_p = 5 + sum_g max(1, k_{p,g})`` cycles over layer ``k``'s ``G_k`` groups (the layer
engine's, :func:`spikeforge.sim.cycle_model.fire_pass_cycles`). With cycle 0 the cycle of
``start``, ``G = max_k G_k``, and ``inputs`` always holding layer 0's next beat::

    a_0 = G + 2                                   first input beat decoded
    a_p = h_{p-1} + 1                 (k = 0)     layer 0's next step: overlaps the FU
    a_p = max(h_{p-1} + 1, e_{p-1} + QUEUE_DELAY + [E_p = 0])   (k > 0)  fed from the spike
                                                  queue once pass p - 1 has closed; an empty
                                                  step's marker, written in cycle e_{p-1}, is
                                                  one cycle later through the queue
    m_p = a_p + G_k * E_p + B_p                   the pass's marker decoded
    h_p = max(m_p + 1, e_{p-1} + 1)               the bank goes to the fire unit
    e_p = h_p + F_p                               the pass's output marker
    cycles = e_{last}

Layer ``k``'s ``CYCLES`` register reads ``e`` of its pass at ``t = T - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spikeforge.sim.cycle_model import FIRST_BEAT_DELAY, fire_pass_cycles, groups

__all__ = ["QUEUE_DELAY", "PassTiming", "CoreTiming", "core_schedule", "core_timing"]

#: Cycles from a pass's output marker to the first beat of the next pass decoded from the
#: spike queue: the input register takes it in the cycle after the marker (the queue's
#: output register already holds the first spike, written a cycle before the marker at the
#: latest), the IU decodes it in the next.
QUEUE_DELAY = 2


@dataclass(frozen=True)
class PassTiming:
    timestep: int
    layer: int
    events: int
    bad: int
    fire: int
    first_beat: int     # a_p
    marker: int         # m_p
    handoff: int        # h_p
    end: int            # e_p


@dataclass(frozen=True)
class CoreTiming:
    passes: tuple[PassTiming, ...]

    @property
    def cycles(self) -> int:
        return self.passes[-1].end

    def layer_cycles(self, layer: int) -> int:
        """What layer ``layer``'s ``CYCLES`` register reads: the end of its last pass."""
        return [p for p in self.passes if p.layer == layer][-1].end


def core_schedule(group_counts, events, fire, bad=None, *, first_input=None) -> CoreTiming:
    """The recurrence of the module docstring over passes.

    ``group_counts[k]`` is ``G_k``; ``events[t][k]``, ``bad[t][k]`` and ``fire[t][k]`` the
    counts of pass ``(t, k)``. ``first_input[t]``, when given, is the earliest cycle layer 0's
    step ``t`` can be decoded (a producer that is not always ready; see
    :mod:`spikeforge.sim.core_accelerator_model`).
    """
    L = len(group_counts)
    T = len(events)
    if bad is None:
        bad = [[0] * L for _ in range(T)]
    passes = []
    handoff = end = None
    for t in range(T):
        for k in range(L):
            if handoff is None:
                first = max(group_counts) + FIRST_BEAT_DELAY
            elif k == 0:
                first = handoff + 1
            else:
                first = max(handoff + 1, end + QUEUE_DELAY + (events[t][k] + bad[t][k] == 0))
            if k == 0 and first_input is not None:
                first = max(first, first_input[t])
            marker = first + group_counts[k] * int(events[t][k]) + int(bad[t][k])
            handoff = max(marker + 1, end + 1) if end is not None else marker + 1
            end = handoff + int(fire[t][k])
            passes.append(PassTiming(t, k, int(events[t][k]), int(bad[t][k]), int(fire[t][k]),
                                     first, marker, handoff, end))
    return CoreTiming(tuple(passes))


def core_timing(network, lanes: int, trace, *, first_input=None) -> list[CoreTiming]:
    """Exact timing of every image of ``trace`` (``network.trace``) on a core of ``lanes``."""
    L, T = len(network.layers), network.timesteps
    G = [groups(layer.fan_out, lanes) for layer in network.layers]
    timings = []
    for b in range(trace.inputs.shape[0]):
        events = [[0] * L for _ in range(T)]
        fire = [[0] * L for _ in range(T)]
        inputs = trace.inputs[b]
        for k, layer_trace in enumerate(trace.layers):
            outputs = layer_trace.spikes[b]
            for t in range(T):
                events[t][k] = int((torch.as_tensor(inputs[t]) != 0).sum())
                fire[t][k] = fire_pass_cycles(outputs[t] if network.layers[k].fires
                                              else torch.zeros_like(outputs[t]), lanes)
            inputs = outputs
        timings.append(core_schedule(G, events, fire,
                                     first_input=None if first_input is None
                                     else first_input[b]))
    return timings

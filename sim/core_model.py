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

from spikeforge.sim.cycle_model import FIRST_BEAT_DELAY, fire_pass_cycles

__all__ = ["QUEUE_DELAY", "PassTiming", "CoreTiming", "core_schedule", "pass_counts",
           "input_planes", "core_timing"]

#: The encoder's first slot after ``start``, its pipeline stages from slot to FIFO write, and
#: the FIFO's latency from write to its output (``hw/encoder.py``, :func:`_encoder_pass`).
ENCODER_FIRST_SLOT = 1
ENCODER_STAGES = 2
FIFO_LATENCY = 2

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


def core_schedule(groups, slots, events, fire, bad=None, *, encoder=None,
                  planes=None) -> CoreTiming:
    """The recurrence of the module docstring over passes.

    ``groups[k]`` is layer ``k``'s neuron groups (``G_k``), ``slots[k]`` the cycles one input
    event costs it (``KH * KW * Gc``; ``G_k`` for a dense layer); ``events[t][k]``,
    ``bad[t][k]`` (dropped events: one cycle each) and ``fire[t][k]`` the counts of pass
    ``(t, k)``. With ``encoder = (Z, spike_slots)`` layer 0's steps come from the
    accelerator's streaming encoder instead of a producer that always has the next beat: ``Z``
    is the image's non-zero pixels (list entries), ``spike_slots[t]`` the list positions of
    step ``t``'s spikes, ascending (:func:`_encoder_pass`). With direct input ``planes[t]``
    gives the set bits of each of step ``t``'s layer-0 events, in order: an event costs
    ``slots[0]`` cycles per set bit (the core adds its weights once per bit).
    """
    L, T = len(groups), len(events)
    if bad is None:
        bad = [[0] * L for _ in range(T)]
    passes = []
    took = []           # the cycle the core's input register took each step's layer-0 marker
    x = None            # the cycle the encoder issues the step's first slot
    handoff = end = marker = None
    for t in range(T):
        for k in range(L):
            e, b = int(events[t][k]), int(bad[t][k])
            if handoff is None:
                first = max(groups) + FIRST_BEAT_DELAY
            elif k == 0:
                first = handoff + 1
            else:
                first = max(handoff + 1, end + QUEUE_DELAY + (e + b == 0))
            costs = [slots[0] * int(p) for p in planes[t]] if k == 0 and planes else None
            if k == 0 and encoder is not None:
                listed, spike_slots = encoder
                x = ENCODER_FIRST_SLOT if x is None else max(x + listed + 1, took[t - 1] + 1)
                free = max(groups) + FIRST_BEAT_DELAY - 1 if marker is None else marker
                first, marker, take = _encoder_pass(
                    x, listed, spike_slots[t], costs or [slots[0]] * len(spike_slots[t]),
                    free, first)
                took.append(take)
            else:
                marker = first + (sum(costs) if costs is not None else slots[k] * e) + b
                if k == 0:
                    # the marker entered the input register with the last event's decode (or
                    # the cycle before, after a one-cycle event or none)
                    last = costs[-1] if costs else slots[0]
                    took.append(marker - (last if e and not b else 1))
            handoff = marker + 1 if end is None else max(marker + 1, end + 1)
            end = handoff + int(fire[t][k])
            passes.append(PassTiming(t, k, e, b, int(fire[t][k]), first, marker, handoff, end))
    return CoreTiming(tuple(passes))


def _encoder_pass(x: int, listed: int, spike_slots, costs, free: int, earliest: int):
    """``(first decode, marker decode, marker taken)`` of a layer-0 pass fed by the encoder.

    The encoder writes slot ``s`` into its FIFO in cycle ``w = x + s + 2`` (two pipeline
    stages; the marker is slot ``listed``), which shows it ``FIFO_LATENCY`` cycles later, or
    the cycle after the entry before it was taken. The input register takes a beat in the
    cycle it shows, once the beat before it is decoded (``free``: the previous beat's
    decode); the IU decodes it the cycle after, once the event before it has had its cycles
    (``costs[i]`` for spike ``i``), and the pass's first beat not before ``earliest``.
    """
    beats = [int(s) for s in spike_slots] + [listed]
    taken = decoded = first = None
    for i, slot in enumerate(beats):
        shows = x + slot + ENCODER_STAGES + FIFO_LATENCY
        if taken is not None:
            shows = max(shows, taken + 1)
        taken = max(shows, free if decoded is None else decoded)
        decoded = max(taken + 1, earliest if decoded is None else decoded + costs[i - 1])
        first = decoded if i == 0 else first
    return first, decoded, taken


def pass_counts(network, lanes: int, trace, b: int = 0):
    """``(layout, events, bad, fire)`` of image ``b`` of ``trace``: per pass ``(t, i)`` of the
    ``i``-th neuron layer, its input events inside the (pooled) input, those in a dropped
    partial pooling window, and its fire-pass cycles over the core's groups."""
    from spikeforge.hw.core_layout import core_layout

    layout = core_layout(network, lanes)
    T, L = network.timesteps, len(layout.maps)
    events = [[0] * L for _ in range(T)]
    bad = [[0] * L for _ in range(T)]
    fire = [[0] * L for _ in range(T)]
    source = trace.inputs[b]
    for i, x in enumerate(layout.maps):
        c, h, w = x.source_shape
        s = x.pool_shift
        rows = (torch.arange(h) >> s) < x.in_shape[1]
        cols = (torch.arange(w) >> s) < x.in_shape[2]
        inside = (rows[:, None] & cols[None, :]).expand(c, h, w).reshape(-1)
        out = trace.layers[x.index].spikes[b]
        for t in range(T):
            hits = torch.as_tensor(source[t]).reshape(-1) != 0
            events[t][i] = int((hits & inside).sum())
            bad[t][i] = int((hits & ~inside).sum())
            fire[t][i] = fire_pass_cycles(x.native(out[t] if x.layer.fires
                                                   else torch.zeros_like(out[t])), lanes)
        source = out
    return layout, events, bad, fire


def input_planes(network, trace, b: int = 0):
    """``planes[t]`` of :func:`core_schedule` for image ``b`` of ``trace``: the set bits of
    each non-zero direct-coded pixel of step ``t``, in address order; ``None`` for spikes."""
    from spikeforge.sw.golden import EncoderKind

    if network.encoder.kind is not EncoderKind.DIRECT:
        return None
    frames = torch.as_tensor(trace.inputs[b])
    bits = torch.arange(network.encoder.pixel_bits)
    return [((f[f != 0][:, None] >> bits) & 1).sum(1).tolist()
            for f in frames.reshape(frames.shape[0], -1)]


def core_timing(network, lanes: int, trace) -> list[CoreTiming]:
    """Exact timing of every image of ``trace`` (``network.trace``) on a core of ``lanes``."""
    timings = []
    for b in range(trace.inputs.shape[0]):
        layout, events, bad, fire = pass_counts(network, lanes, trace, b)
        timings.append(core_schedule(layout.groups, [x.slots for x in layout.maps], events,
                                     fire, bad, planes=input_planes(network, trace, b)))
    return timings

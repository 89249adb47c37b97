"""The cycle model of :class:`spikeforge.hw.core.CoreArray`: exact cycles of one inference.

The core runs passes ``p = (t, k)`` in order, timestep-major (``hw/core.py``). Pass ``p``
integrates its input beats (layer ``k``'s input at step ``t``: for ``k = 0`` the encoded frame,
else layer ``k - 1``'s output spikes of the same step, streamed through the spike queue as the
fire unit makes them) and then fires layer ``k`` over its ``G_k`` groups. Each input beat
``i`` costs ``c_i`` decode cycles (``KH * KW * Gc`` slots; times the set bits of a
direct-coded pixel; one for a beat dropped in a partial pooling window); the fire pass takes
``F_p = 5 + S_p`` cycles, ``S_p = sum_g max(1, k_{p,g})`` being its serializer cycles
(:func:`spikeforge.sim.cycle_model.fire_pass_cycles`). With cycle 0 the cycle of ``start`` and
``G = max_k G_k``::

    beat i of pass p shows at the core's input register in cycle  s_i
        k = 0, encoder:  x_t + slot_i + ENCODER_STAGES + FIFO_LATENCY
        k > 0:           e_{p-1} - S_{p-1} + o_i + FIFO_LATENCY    (o_i: the serializer cycle
                         of spike i of pass p - 1; its marker at o = S_{p-1}, cycle e_{p-1})
    taken_i   = max(s_i, taken_{i-1} + 1, d_{i-1})     the register is free once the beat
                                                       before it is decoded (d_{-1}: the
                                                       previous pass's marker, m_{p-1})
    d_i       = max(taken_i + 1, d_{i-1} + c_{i-1})    decoded; the first beat not before
                                                       h_{p-1} + 1 (the IU's bank is free)
    m_p       = d of the marker
    h_p       = max(m_p + 1, e_{p-1} + 1)              the bank goes to the fire unit
    e_p       = h_p + F_p                              the pass's output marker
    cycles    = e_{last}

So pass ``(t, k + 1)`` integrates layer ``k``'s spikes while the fire unit is still making
them, and layer 0 of step ``t + 1`` overlaps the last layer of step ``t``. A producer that
always has the next beat (a testbench driving the core's ``inputs``) shows every layer-0 beat
at once. Layer ``k``'s ``CYCLES`` register reads ``e`` of its pass at ``t = T - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spikeforge.sim.cycle_model import FIRE_PASS_FIXED, FIRST_BEAT_DELAY

__all__ = ["PassWork", "PassTiming", "CoreTiming", "core_schedule", "pass_work",
           "core_timing", "ENCODER_FIRST_SLOT", "ENCODER_STAGES", "FIFO_LATENCY"]

#: The encoder's first slot after ``start``, its pipeline stages from slot to FIFO write, and
#: the latency of a buffered FIFO (the encoder's, the spike queue) from write to its output.
ENCODER_FIRST_SLOT = 1
ENCODER_STAGES = 2
FIFO_LATENCY = 2


@dataclass(frozen=True)
class PassWork:
    """What pass ``(t, k)`` does, independent of when.

    ``costs[i]``: decode cycles of input beat ``i``, in arrival order; ``offsets[i]``: the
    serializer cycle (from the pass's first) of output spike ``i``, in emission order, the order
    in which the next layer receives them; ``span``: the serializer cycles ``S_p``; ``bad``:
    input beats dropped in a partial pooling window (one cycle each, counted in ``costs``)."""

    costs: list[int]
    offsets: list[int]
    span: int
    bad: int = 0

    @property
    def fire(self) -> int:
        return FIRE_PASS_FIXED + self.span


@dataclass(frozen=True)
class PassTiming:
    timestep: int
    layer: int
    events: int         # input beats, dropped ones included
    bad: int
    fire: int
    first_beat: int     # d of the first beat (the marker's, for an empty pass)
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


def core_schedule(groups, work, *, encoder=None) -> CoreTiming:
    """The recurrence of the module docstring over the passes ``work[t][k]`` (:class:`PassWork`).

    ``groups[k]`` is layer ``k``'s neuron groups (the clear pass walks ``max(groups)``). With
    ``encoder = (Z, spike_slots)`` layer 0's beats come from the accelerator's streaming
    encoder: ``Z`` is the image's non-zero pixels (list entries), ``spike_slots[t]`` the list
    positions of step ``t``'s beats, ascending; it issues step ``t`` from cycle
    ``x_t = max(x_{t-1} + Z + 1, taken(marker of step t - 1) + 1)``, ``x_0 = ENCODER_FIRST_SLOT``
    (one step ahead of the core). Without it every layer-0 beat shows at once.
    """
    T, L = len(work), len(groups)
    start = max(groups) + FIRST_BEAT_DELAY          # the first beat's decode, after the clear
    passes = []
    x = took = prev = None
    marker, handoff, end, span = start - 1, start - 1, None, 0
    for t in range(T):
        for k in range(L):
            w = work[t][k]
            if k == 0 and encoder is not None:
                listed, spike_slots = encoder
                x = ENCODER_FIRST_SLOT if x is None else max(x + listed + 1, took + 1)
                shows = [x + slot + ENCODER_STAGES + FIFO_LATENCY
                         for slot in [*spike_slots[t], listed]]
            elif k == 0:
                shows = [0] * (len(w.costs) + 1)
            else:
                shows = [end - span + o + FIFO_LATENCY for o in [*prev.offsets, span]]
            first, marker, taken = _pass_input(shows, w.costs, marker, handoff + 1)
            if k == 0:
                took = taken
            handoff = marker + 1 if end is None else max(marker + 1, end + 1)
            end, span, prev = handoff + w.fire, w.span, w
            passes.append(PassTiming(t, k, len(w.costs), w.bad, w.fire, first, marker,
                                     handoff, end))
    return CoreTiming(tuple(passes))


def _pass_input(shows, costs, free: int, earliest: int) -> tuple[int, int, int]:
    """``(first decode, marker decode, marker taken)`` of one pass's input beats.

    Beat ``i`` (the last is the marker) shows at the input register in cycle ``shows[i]``, or
    the cycle after the beat before it was taken (a FIFO gives one beat per cycle). The register
    takes it once the beat before it is decoded (``free``: the previous pass's marker); the IU
    decodes it the cycle after, once the beat before it has had its ``costs`` cycles, and the
    pass's first beat not before ``earliest``.
    """
    taken = decoded = first = None
    for i, shown in enumerate(shows):
        if taken is not None:
            shown = max(shown, taken + 1)
        taken = max(shown, free if decoded is None else decoded)
        decoded = max(taken + 1, earliest if decoded is None else decoded + costs[i - 1])
        first = decoded if i == 0 else first
    return first, decoded, taken


def pass_work(network, lanes: int, trace, b: int = 0):
    """``(layout, work)`` of image ``b`` of ``trace``: :class:`PassWork` of every pass
    ``(t, i)`` of the ``i``-th neuron layer on a core of ``lanes``."""
    from spikeforge.hw.core_layout import core_layout

    layout = core_layout(network, lanes)
    T, P = network.timesteps, lanes
    bits = torch.arange(layout.value_bits)          # a direct-coded pixel's bit planes
    work = [[None] * len(layout.maps) for _ in range(T)]
    source = torch.as_tensor(trace.inputs[b])       # [T, ...] in golden (C-major) order
    order = None    # emission order of the previous layer's neurons (golden flat indices)
    for i, x in enumerate(layout.maps):
        c, h, w = x.source_shape
        s = x.pool_shift
        rows = (torch.arange(h) >> s) < x.in_shape[1]
        cols = (torch.arange(w) >> s) < x.in_shape[2]
        inside = (rows[:, None] & cols[None, :]).expand(c, h, w).reshape(-1)
        out = trace.layers[x.index].spikes[b]
        # the core's order of this layer's neurons: group by group, lanes ascending
        flat = torch.arange(x.layer.fan_out)
        native = x.native(flat + 1)
        emit_order = native[native != 0] - 1
        for t in range(T):
            frame = source[t].reshape(-1)
            beats = (frame != 0).nonzero().flatten() if order is None else \
                order[frame[order] != 0]
            costs = torch.where(inside[beats], x.slots, 1)
            if layout.value_bits and i == 0:
                costs = costs * ((frame[beats][:, None] >> bits) & 1).sum(1)
            fired = out[t].reshape(-1) != 0 if x.layer.fires else \
                torch.zeros(x.layer.fan_out, dtype=torch.bool)
            per_group = x.native(fired.to(torch.int64)).reshape(x.groups, P)
            hold = per_group.sum(1).clamp(min=1)
            group_start = torch.cumsum(hold, 0) - hold
            lane_rank = torch.cumsum(per_group, 1) - per_group   # spikes before it in group
            offsets = (group_start[:, None] + lane_rank)[per_group != 0]
            work[t][i] = PassWork(costs.tolist(), offsets.tolist(), int(hold.sum()),
                                  int((~inside[beats]).sum()))
        order = emit_order
        source = out
    return layout, work


def core_timing(network, lanes: int, trace) -> list[CoreTiming]:
    """Exact timing of every image of ``trace`` (``network.trace``) on a core of ``lanes``,
    its layer-0 beats driven at once (not through the encoder)."""
    timings = []
    for b in range(trace.inputs.shape[0]):
        layout, work = pass_work(network, lanes, trace, b)
        timings.append(core_schedule(layout.groups, work))
    return timings

"""The cycle model of :class:`spikeforge.hw.layer.LayerEngine`: exact cycle counts from the layer,
the input spikes and the lane count.

The engine has two units that overlap (``docs/microarchitecture.md``): the integration unit (IU)
spends ``G`` cycles per valid input spike and one per dropped (bad) spike; the fire unit (FU)
closes a timestep in ``5 + sum_g max(1, k_g)`` cycles, ``k_g`` being the output spikes of group
``g``. With cycle 0 the cycle in which ``start`` is high, and the producer and consumer never
stalling::

    a_0     = G + 2                                   first cycle the IU takes an input beat
    p_t     = a_t + G * E_t + B_t                     the marker of step t is taken
    h_t     = max(p_t + 1, f_{t-1})                   the accumulator bank goes to the FU
    e_t     = h_t + 5 + sum_g max(1, k_{t,g})         the FU emits the step's output marker
    f_t     = e_t + 1                                 the FU is free again (f_{-1} = 0)
    a_{t+1} = h_t + 1
    cycles  = e_{T-1}                                 the ``busy`` cycles, what ``cycles`` counts

Every function here is pure and per layer, so a network's model composes from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import torch

__all__ = [
    "StepTiming",
    "LayerSchedule",
    "groups",
    "fire_pass_cycles",
    "FIRE_PASS_FIXED",
    "FIRST_BEAT_DELAY",
    "schedule",
    "layer_schedule",
    "layer_cycles",
    "worst_case_cycles",
]


#: Fixed cycles of a fire pass: the fill of stages R, L, C, F and the marker slot.
FIRE_PASS_FIXED = 5
#: Cycles from ``start`` to the first input beat the IU can take, on top of the ``G``-cycle
#: clear pass: the step into RUN and the input register.
FIRST_BEAT_DELAY = 2


def groups(fan_out: int, lanes: int) -> int:
    """``G = ceil(fan_out / lanes)``."""
    return -(-fan_out // lanes)


def fire_pass_cycles(spikes: Sequence[int] | torch.Tensor, lanes: int) -> int:
    """Cycles of one fire pass, from its first membrane read to its output marker (inclusive).

    ``spikes`` is the layer's binary output of one timestep (``fan_out`` entries): every group
    takes one cycle, or one per output spike if it has more than one; the
    :data:`FIRE_PASS_FIXED` cycles are the pipeline's fill (stages R, L, C, F) and the marker.
    """
    spikes = torch.as_tensor(spikes, dtype=torch.int64).reshape(-1)
    n = spikes.shape[0]
    g = groups(n, lanes)
    padded = torch.zeros(g * lanes, dtype=torch.int64)
    padded[:n] = spikes != 0
    per_group = padded.reshape(g, lanes).sum(1).clamp(min=1)
    return FIRE_PASS_FIXED + int(per_group.sum())


@dataclass(frozen=True)
class StepTiming:
    """When timestep ``t`` happened, in cycles after the ``start`` strobe."""

    events: int       # valid input spikes
    bad: int          # dropped input spikes (address >= fan_in)
    fire: int         # fire-pass length (fire_pass_cycles)
    first_beat: int   # a_t: first cycle the step's first input beat can be taken
    marker: int       # p_t: the step's input marker is taken
    handoff: int      # h_t: the bank goes to the fire unit
    end: int          # e_t: the step's output marker is transferred


@dataclass(frozen=True)
class LayerSchedule:
    groups: int
    steps: list[StepTiming] = field(default_factory=list)

    @property
    def cycles(self) -> int:
        """Busy cycles of the inference: what the engine's ``cycles`` counter reads."""
        return self.steps[-1].end

    @property
    def step_cycles(self) -> list[int]:
        """Cycles between consecutive output markers (the first counts from ``start``)."""
        ends = [0] + [s.end for s in self.steps]
        return [b - a for a, b in pairwise(ends)]


def schedule(groups: int, events: Sequence[int], fire: Sequence[int],
             bad: Sequence[int] | None = None) -> LayerSchedule:
    """Apply the recurrence of the module docstring to per-timestep counts."""
    if bad is None:
        bad = [0] * len(events)
    if not len(events) == len(fire) == len(bad) or not len(events):
        raise ValueError("events, fire and bad need one entry per timestep (at least one)")
    steps = []
    first_beat, fu_free = groups + FIRST_BEAT_DELAY, 0
    for e_t, f_t, b_t in zip(events, fire, bad, strict=True):
        marker = first_beat + groups * int(e_t) + int(b_t)
        handoff = max(marker + 1, fu_free)
        end = handoff + int(f_t)
        steps.append(StepTiming(int(e_t), int(b_t), int(f_t), first_beat, marker, handoff, end))
        fu_free, first_beat = end + 1, handoff + 1
    return LayerSchedule(groups, steps)


def _frames(layer, input_spikes) -> torch.Tensor:
    s_in = torch.as_tensor(input_spikes, dtype=torch.int64)
    if s_in.dim() == 2:
        s_in = s_in[None]
    if s_in.dim() != 3 or s_in.shape[0] != 1 or tuple(s_in.shape[1:]) != (
            layer.timesteps, layer.fan_in):
        raise ValueError(f"input spikes must be [T={layer.timesteps}, fan_in={layer.fan_in}], "
                         f"got {tuple(torch.as_tensor(input_spikes).shape)}")
    return s_in


def layer_schedule(layer, input_spikes, lanes: int, *, bad: Sequence[int] | None = None,
                   output_spikes=None) -> LayerSchedule:
    """The full schedule of one inference of ``layer`` (a :class:`spikeforge.sw.golden.DenseLayer`).

    ``input_spikes`` is ``int[T, fan_in]`` (binary). ``output_spikes`` (``int[T, fan_out]``) may
    be given to save running the golden model; ``bad`` counts dropped spikes per timestep.
    """
    s_in = _frames(layer, input_spikes)
    if output_spikes is None:
        output_spikes = layer.run(s_in)[0][0]
    output_spikes = torch.as_tensor(output_spikes).reshape(layer.timesteps, layer.fan_out)
    events = (s_in[0] != 0).sum(1).tolist()
    fire = [fire_pass_cycles(output_spikes[t], lanes) for t in range(layer.timesteps)]
    return schedule(groups(layer.fan_out, lanes), events, fire, bad)


def layer_cycles(layer, input_spikes, lanes: int, **kwargs) -> int:
    """Exact busy cycles of one inference of ``layer`` on ``lanes`` lanes."""
    return layer_schedule(layer, input_spikes, lanes, **kwargs).cycles


def worst_case_cycles(fan_in: int, fan_out: int, timesteps: int, lanes: int, *,
                      bad_per_step: int = 0) -> int:
    """An upper bound of one inference's busy cycles: every input spikes at every step (plus
    ``bad_per_step`` dropped addresses) and every neuron fires at every step.

    The schedule grows with every event and every output spike, so no inference of the layer
    takes longer with a producer and consumer that never stall; testbenches derive their cycle
    budgets (watchdogs) from it.
    """
    g = groups(fan_out, lanes)
    fire = FIRE_PASS_FIXED + max(g, fan_out)
    return schedule(g, [fan_in] * timesteps, [fire] * timesteps,
                    [bad_per_step] * timesteps).cycles

"""The cycle model of :class:`spikeforge.hw.accelerator.NetworkAccelerator`: exact compute cycles
per image.

The accelerator runs its phases one after another (``hw/accelerator.py``), so an inference's
compute cycles (the ``CYCLES`` register) are a plain sum::

    cycles = T * (n_inputs + 1)          encoder: one slot per pixel and timestep, one marker slot
           + 2                           encoder pipeline drain (two stages)
           + sum_k (2 + C_k)             layer k: a start cycle, C_k busy cycles of its engine
                                         (spikeforge.sim.cycle_model), and the done cycle

``C_k`` depends on layer k's input spikes (events per timestep) and its output spikes (the fire
pass), both of which the golden model gives. Loading pixels and reading results are not counted:
they go at the host's pace.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikeforge.sim.cycle_model import layer_schedule, worst_case_cycles
from spikeforge.sw.golden import Network, Trace

__all__ = ["NetworkTiming", "network_timing", "encoder_cycles", "LAYER_OVERHEAD",
           "worst_case_network_cycles"]

#: Cycles the sequencer adds around every layer engine's busy cycles (start and done).
LAYER_OVERHEAD = 2
#: Cycles the encoder pipeline needs to drain after its last slot.
ENCODER_DRAIN = 2


def encoder_cycles(network: Network) -> int:
    return network.timesteps * (network.n_inputs + 1) + ENCODER_DRAIN


@dataclass(frozen=True)
class NetworkTiming:
    """Cycle counts of one image."""

    encoder: int
    layers: tuple[int, ...]     # busy cycles of each engine, C_k

    @property
    def cycles(self) -> int:
        return self.encoder + sum(c + LAYER_OVERHEAD for c in self.layers)


def network_timing(network: Network, lanes: int, trace: Trace) -> list[NetworkTiming]:
    """Exact timing of every image of ``trace`` (from ``network.trace`` or ``network.run``)."""
    timings = []
    for b in range(trace.inputs.shape[0]):
        inputs = trace.inputs[b]
        per_layer = []
        for layer, layer_trace in zip(network.layers, trace.layers, strict=True):
            outputs = layer_trace.spikes[b]
            per_layer.append(layer_schedule(layer, inputs, lanes, output_spikes=outputs).cycles)
            inputs = outputs
        timings.append(NetworkTiming(encoder_cycles(network), tuple(per_layer)))
    return timings



def worst_case_network_cycles(network: Network, lanes: int) -> int:
    """An upper bound of one image's compute cycles (every input and neuron spiking at every
    step: :func:`spikeforge.sim.cycle_model.worst_case_cycles`), for testbench budgets."""
    return encoder_cycles(network) + sum(
        LAYER_OVERHEAD + worst_case_cycles(layer.fan_in, layer.fan_out, network.timesteps, lanes)
        for layer in network.layers)

"""(c) The fire unit's serializer queue cannot overflow.

Stage F of the layer engine's fire unit hands each group to the serializer S or, while S is
busy, to a queue of ``S_QUEUE`` entries; stage R issues a group only while fewer than
``S_QUEUE`` groups are on their way (``pending``), so the queue never needs a stall
(docs/microarchitecture.md). The harness builds a real, tiny :class:`LayerEngine` (weights and
biases loadable, so they are free too) with every input free: the input stream, the output's
``ready`` (any backpressure), ``start`` at any time and register writes. It asserts that the
queue count never exceeds its depth, that ``pending`` never exceeds it, and that ``pending``
counts exactly the groups in L, C, F and the queue (which also makes the proof inductive):
unbounded.
"""

from __future__ import annotations

from functools import partial

from amaranth.hdl import Signal

from spikeforge.hw import fire as layer  # the serializer queue lives in the fire unit
from spikeforge.hw.layer import LayerEngine
from tests.formal.harness import Harness, Internals, component_inputs
from tests.formal.prove import Check

__all__ = ["QueueHarness", "CHECKS", "small_engine"]


def small_engine(cls=LayerEngine, **kwargs):
    """A layer engine small enough to prove: 2 inputs, 4 neurons on 1 lane (4 groups, so a
    timestep's 4 groups and its marker can fill S and the 4-entry queue), T = 2."""
    params = dict(fan_in=2, fan_out=4, timesteps=2, lanes=1, w_bits=2, v_bits=3, addr_bits=3,
                  loadable=True)
    params.update(kwargs)
    return cls(**params)


class QueueHarness(Harness):
    """``depth`` is the queue depth the assertions hold the engine to (a mutant: one less)."""

    def __init__(self, *, depth=layer.S_QUEUE, reach=None):
        super().__init__(reach=reach)
        self.depth = depth

    def elaborate_harness(self, m):
        self.engine = engine = small_engine()
        inner = Internals(engine)
        m.submodules.engine = inner.fragment
        self.q_count = inner.driven("q_count")
        self.pending = inner.driven("pending")
        self.in_flight = [inner.driven(f"{s}_valid") for s in ("l", "c", "d")]
        # How full the queue has been: for the reachability check.
        self.q_seen = Signal(range(layer.S_QUEUE + 2))
        with m.If(self.q_count > self.q_seen):
            m.d.sync += self.q_seen.eq(self.q_count)
        return component_inputs(engine)

    def properties(self):
        q, p = self.q_count, self.pending
        l_valid, c_valid, d_valid = self.in_flight
        return [
            q <= self.depth,
            p <= self.depth,
            p == l_valid + c_valid + d_valid + q,
        ]

    def reachable(self):
        return {"full": self.q_count == layer.S_QUEUE}


def _build(**kwargs):
    return QueueHarness(**kwargs).build()


CHECKS = [
    Check(name="queue.serializer_queue", kind="proof", build=_build, depth=3, induction=True,
          what=f"q_count <= {layer.S_QUEUE}, pending <= {layer.S_QUEUE}, pending = groups "
               "in L+C+F+queue"),
    Check(name="queue.reach_full", kind="reach", build=partial(_build, reach="full"), depth=24,
          expect="fail", what=f"the queue fills to {layer.S_QUEUE} entries"),
    Check(name="queue.mutant_one_entry_shorter", kind="mutant",
          build=partial(_build, depth=layer.S_QUEUE - 1), depth=24, expect="fail",
          what=f"a queue of {layer.S_QUEUE - 1} entries would overflow"),
]

"""What every formal harness shares: a clock without reset, free inputs, internal signals.

A harness is an Amaranth module that instantiates the real component and adds ``Assert`` and
``Assume`` statements around it; :mod:`tests.formal.prove` converts it to RTLIL and has yosys
prove it. The ``sync`` domain has no reset: the initial state is every signal's ``init``, the
state after power-up (a component's own start or clear strobes are free inputs like any other).
Inputs that the harness does not drive are ports of the top module, so the solver picks them
anew every cycle.
"""

from __future__ import annotations

from amaranth.hdl import Assert, ClockDomain, Fragment, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In

__all__ = ["Harness", "Internals", "component_inputs"]


def component_inputs(component: wiring.Component) -> list[Value]:
    """The values of every ``In`` member of ``component`` (its inputs, free in a proof)."""
    return [Value.cast(value) for _path, member, value in component.signature.flatten(component)
            if member.flow == In]


class Internals:
    """The elaborated fragment of ``dut`` and its internal signals, found by name.

    The layer engine's queue counters, configuration registers and the bridge's FSM state are
    local variables of ``elaborate``; a harness reads them through the fragment's statements
    without any hook in the gateware. The fragment itself is then the harness's submodule.
    """

    def __init__(self, dut, platform=None):
        self.fragment = Fragment.get(dut, platform)
        self._driven: dict[tuple[str, str], list[Signal]] = {}
        self._owner: dict[int, Fragment] = {}   # id(signal) -> the fragment driving it
        pending = [self.fragment]
        while pending:  # the fragment and its subfragments (the engine wraps the core array)
            fragment = pending.pop()
            pending += [sub for sub, *_ in fragment.subfragments]
            for domain, statements in getattr(fragment, "statements", {}).items():
                for statement in statements:
                    for signal in statement._lhs_signals():
                        found = self._driven.setdefault((domain, signal.name), [])
                        if not any(s is signal for s in found):
                            found.append(signal)
                            self._owner[id(signal)] = fragment

    def driven(self, name: str, domain: str = "sync") -> Signal:
        """The one signal called ``name`` that the fragment or a subfragment drives in
        ``domain``."""
        found = self._driven.get((domain, name), [])
        if len(found) != 1:
            raise LookupError(f"{len(found)} signals named {name!r} are driven in the "
                              f"{domain!r} domain of the fragment, not 1")
        return found[0]

    def owner(self, signal: Signal) -> Fragment:
        """The fragment that drives ``signal`` (where a mutant adds its statements)."""
        return self._owner[id(signal)]


class Harness:
    """Base of the harnesses: ``build()`` gives the top module and its ports.

    ``reach`` names one of :meth:`reachable`'s conditions: the harness then asserts that the
    condition never holds, and the check expects that assertion to fail (the condition is
    reachable under the harness's assumptions, so the proof is not vacuous).
    """

    def __init__(self, *, reach: str | None = None):
        self.reach = reach

    def elaborate_harness(self, m: Module) -> list[Value]:
        """Add the component, the assumptions and the properties to ``m``; return the free
        inputs. Subclasses implement it, and :meth:`properties` and :meth:`reachable`."""
        raise NotImplementedError

    def properties(self) -> list[Value]:
        raise NotImplementedError

    def reachable(self) -> dict[str, Value]:
        return {}

    def build(self) -> tuple[Module, list[Value]]:
        m = Module()
        m.domains.sync = cd = ClockDomain("sync", reset_less=True)
        inputs = self.elaborate_harness(m)
        if self.reach is None:
            for prop in self.properties():
                m.d.comb += Assert(prop)
        else:
            m.d.comb += Assert(~self.reachable()[self.reach])
        return m, [cd.clk, *inputs]

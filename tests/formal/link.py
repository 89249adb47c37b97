"""(e) The link bridge's receiver returns to idle once the line goes quiet.

:class:`~spikeforge.hw.link.LinkBridge` takes every byte the UART delivers. Whatever bytes
arrive (any sequence: garbage, a truncated frame, a bad length or CRC, a good frame), once no
byte has arrived for ``timeout_cycles + 1`` cycles the decoder has left every receive state
(``CMD`` .. ``CRC_LO``, ``CHECK``, ``DISCARD``): it is replying, executing a checked request or
idle. The bridge is built with the smallest timeout its constructor allows (and one more), the
host and accelerator sides are free inputs (any backpressure, any ``busy``), and the payload
buffer's contents are free (its outputs are cut: the property cannot depend on them). The harness
also asserts that the inter-byte counter ``idle`` is ``min(quiet, timeout)``, which makes the
proof inductive: unbounded, after any byte sequence.
"""

from __future__ import annotations

from functools import partial

from amaranth.hdl import Const, Signal

from spikeforge.hw.link import LinkBridge
from spikeforge.sw.interface import Command, ErrorCode
from tests.formal.harness import Harness, Internals, component_inputs
from tests.formal.prove import Check

__all__ = ["LinkHarness", "CHECKS"]

RECEIVE_STATES = ("CMD", "LEN_HI", "LEN_LO", "PAYLOAD", "CRC_HI", "CRC_LO", "CHECK", "DISCARD")


def fsm_codes(state: Signal) -> dict[str, int]:
    """The encoding of an Amaranth FSM's state signal, from its decoder (``"NAME/code"``)."""
    codes = {}
    for code in range(1 << len(state)):
        try:
            name = state.decoder(code)
        except KeyError:
            continue
        codes[name.rsplit("/", 1)[0]] = code
    return codes


def _bridge(cls=LinkBridge, timeout=2):
    return cls(n_inputs=2, n_outputs=1, pixel_bits=4, timeout_cycles=timeout)


class _NoTimeout(LinkBridge):
    """Mutant: a bridge whose inter-byte timeout never fires."""

    def elaborate(self, platform):
        inner = Internals(super().elaborate(platform), platform)
        inner.fragment.add_statements("comb", inner.driven("timed_out", "comb").eq(0))
        return inner.fragment


class LinkHarness(Harness):
    """``margin`` is how many quiet cycles past the timeout the claim allows (a mutant: 0).
    ``strengthen`` adds the invariants that make the claim inductive (the mutants leave them
    out, so that only the claim itself can fail)."""

    def __init__(self, *, bridge_cls=LinkBridge, timeout=2, margin=1, strengthen=True,
                 reach=None):
        super().__init__(reach=reach)
        self.bridge_cls, self.timeout, self.margin = bridge_cls, timeout, margin
        self.strengthen = strengthen

    def elaborate_harness(self, m):
        self.bridge = bridge = _bridge(self.bridge_cls, self.timeout)
        inner = Internals(bridge)
        m.submodules.bridge = inner.fragment
        self.state = state = inner.driven("fsm_state")
        self.codes = fsm_codes(state)
        self.idle = inner.driven("idle")
        self.code = inner.driven("code")
        self.is_cmd = [inner.driven(f"is_{c.name.lower()}") for c in Command]
        limit = self.timeout + self.margin
        # Cycles since the last byte was taken, saturating at the claim's limit.
        self.quiet = quiet = Signal(range(limit + 1))
        with m.If(bridge.rx.valid & bridge.rx.ready):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != limit):
            m.d.sync += quiet.eq(quiet + 1)
        self.limit = limit
        return component_inputs(bridge)

    def in_state(self, *names):
        return _any(self.state == self.codes[name] for name in names)

    def properties(self):
        quiet, idle, t = self.quiet, self.idle, self.timeout
        props = [~(quiet == self.limit) | ~self.in_state(*RECEIVE_STATES)]
        if self.strengthen:
            props += [
                idle == _min(quiet, t),            # the bridge's counter follows the line
                ~self.in_state("CHECK") | (quiet == 0),  # CHECK follows the last CRC byte
                # past LEN_LO the command is a known one (so CHECK always moves on)
                ~self.in_state("PAYLOAD", "CRC_HI", "CRC_LO", "CHECK") | _any(self.is_cmd),
            ]
        return props

    def reachable(self):
        return {
            "frame_checked": self.in_state("CHECK"),
            "timeout_reply": self.in_state("REPLY_ERROR") & (self.code == ErrorCode.TIMEOUT),
            "discard_quiet": self.in_state("DISCARD") & (self.quiet == self.timeout),
        }


def _any(values):
    result = Const(0, 1)
    for value in values:
        result = result | value
    return result


def _min(a, b):
    return (a < b).as_unsigned() * a + (a >= b).as_unsigned() * b


def _build(**kwargs):
    return LinkHarness(**kwargs).build()


def _check(name, kind, what, depth, expect="pass", **kwargs):
    return Check(name=f"link.{name}", kind=kind, build=partial(_build, **kwargs), depth=depth,
                 induction=kind == "proof", expect=expect, cut_memories=True, what=what)


CHECKS = [
    *[_check(f"receiver_idle_timeout{t}", "proof",
             f"quiet for timeout + 1 = {t + 1} cycles -> no receive state", 4, timeout=t)
      for t in (2, 3)],
    *[_check(f"reach_{r}", "reach", f"reachable: {r.replace('_', ' ')}", 12, "fail", reach=r)
      for r in ("frame_checked", "timeout_reply", "discard_quiet")],
    _check("mutant_no_timeout", "mutant", "a bridge whose timeout never fires", 12, "fail",
           bridge_cls=_NoTimeout, strengthen=False),
    _check("mutant_claim_at_timeout", "mutant", "claim already at quiet = timeout (too early)",
           12, "fail", margin=0, strengthen=False),
]

"""One lane of the neuron core: the datapath that closes a timestep.

The array (:mod:`spikeforge.hw.layer`) integrates a timestep's input events exactly into a wide
accumulator and then, once per neuron and timestep, runs this datapath on the accumulated
current. It implements steps 1-4 of ``docs/contract.md`` for one neuron::

    base   = v_init                  if first else  v >> leak_shift      (arithmetic shift)
    drive  = bias + current                                              (exact)
    v_sat  = sat(base + drive)                                           (exact, one clamp)
    spike  = v_sat >= theta          (threshold)   or  v_sat[0]  (radix)  (0 if not fires)
    v_next = v_sat - theta * spike   (threshold)   or  v_sat - spike       (radix)

The lines are three components, one per pipeline stage of the layer engine's fire unit, which
registers ``base``/``drive`` and ``v_sat`` between them: :class:`NeuronLeak` (the first two),
:class:`NeuronIntegrate` (the clamp, and beside it whether ``v_sat`` reaches ``theta``: the
threshold compare, taken from the exact sum so that the fire stage holds no comparator) and
:class:`NeuronFire` (the spike and the reset).
:class:`NeuronDatapath` chains the three combinationally.
"""

from __future__ import annotations

import functools

from amaranth.hdl import Module, Mux, Value, signed, unsigned
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FireMode", "NeuronLeak", "NeuronIntegrate", "NeuronFire", "NeuronDatapath",
           "check_width", "signed_bits_for", "drive_bits", "bar_bits", "threshold_bar",
           "threshold_bounds", "threshold_bar_select"]


class FireMode(enum.Enum, shape=unsigned(1)):
    """How a neuron turns its saturated membrane into a spike (``docs/contract.md`` step 3)."""

    THRESHOLD = 0  #: spike when ``V >= theta[t]``, soft reset by ``theta[t]``
    RADIX = 1      #: spike is the least significant bit of ``V``, reset by subtracting it


def refused_is_not_unused(init):
    """Constructor decorator: a component whose constructor raised was never built, so the
    ``UnusedElaboratable`` warning Amaranth would give when it is garbage collected (an error
    under ``-W error``, and in whichever later test the collection happens) is silenced."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except BaseException:
            self._MustUse__silence = True
            raise
    return wrapper


def check_width(name: str, value, minimum: int, maximum: int) -> int:
    """``value`` if it is an integer in ``minimum .. maximum``, else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be in {minimum}..{maximum}, not {value}")
    return value


def signed_bits_for(low: int, high: int) -> int:
    """Smallest two's complement width that holds every integer in ``low .. high``."""
    bits = 1
    while not (-(1 << (bits - 1)) <= low and high <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def drive_bits(v_bits: int, current_bits: int) -> int:
    """Width of ``bias + current``: exact for every ``v_bits`` bias and ``current_bits`` current."""
    return max(v_bits, current_bits) + 1


def bar_bits(v_bits: int, current_bits: int) -> int:
    """Width of :func:`threshold_bar`: one bit more than the exact sum ``base + drive``."""
    return drive_bits(v_bits, current_bits) + 2


def threshold_bar(theta, greater, low, high, v_bits: int, current_bits: int) -> Value:
    """The least exact sum ``total = base + drive`` whose saturation ``sat(total)`` to
    ``low .. high`` reaches ``theta`` (``>=``, or ``>`` with ``greater``): ``theta + greater``
    when it lies in ``low + 1 .. high``; every sum when ``theta + greater <= low`` (a sum
    clamped up to ``low`` reaches it too); no sum when ``theta + greater > high`` (a sum clamped
    down to ``high`` does not). So ``sat(total) >= theta + greater`` exactly when
    ``total >= bar``, for every ``theta``, not only the contract's ``theta >= 1``. It depends on
    the layer and timestep only, so the fire unit registers it once per pass and the lanes
    compare the exact sum beside the clamp (``bar_bits`` wide).

    It is :func:`threshold_bar_select` of ``theta + greater`` and :func:`threshold_bounds`,
    which a pipeline may register apart (the formal proofs check this composition)."""
    above, below = threshold_bounds(theta, greater, low, high)
    return threshold_bar_select(theta + greater, above, below, v_bits, current_bits)


def threshold_bounds(theta, greater, low, high) -> tuple[Value, Value]:
    """``(theta + greater > high, theta + greater <= low)``, each one compare of ``theta``
    itself (no adder before it): ``theta >= high`` or ``theta > high``, ``theta < low`` or
    ``theta <= low``, by ``greater``."""
    above = Mux(greater, theta >= high, theta > high)
    below = Mux(greater, theta < low, theta <= low)
    return above, below


def threshold_bar_select(raised, above, below, v_bits: int, current_bits: int) -> Value:
    """:func:`threshold_bar` from ``raised = theta + greater`` and its two bounds flags: a
    selection, no arithmetic."""
    sum_bits = bar_bits(v_bits, current_bits) - 1
    lowest, above_all = -(1 << (sum_bits - 1)), 1 << (sum_bits - 1)
    return Mux(above, above_all, Mux(below, lowest, raised))


class NeuronLeak(wiring.Component):
    """Leak and the input drive of one timestep (``docs/contract.md`` steps 1-2, before the sum).

    Purely combinational. The two outputs are independent, so a pipeline can register them
    side by side and leave :class:`NeuronIntegrate` one two-operand add and a clamp.

    Parameters
    ----------
    v_bits : int
        Membrane width (signed), 2..32.
    current_bits : int
        Width (signed) of the accumulated synaptic current of one timestep, 1..64.

    Members
    -------
    v : In(signed(v_bits))
        Membrane at the end of the previous timestep (ignored when ``first``).
    first : In(1)
        This is timestep 0: start from ``v_init`` and do not leak.
    v_init : In(signed(v_bits))
    leak_shift : In(range(v_bits + 1))
        Arithmetic right shift applied to ``v`` (not to ``v_init``).
    bias : In(signed(v_bits))
    current : In(signed(current_bits))
        Exact sum of the timestep's weights.
    base : Out(signed(v_bits))
        ``v_init`` if ``first`` else ``v >> leak_shift``.
    drive : Out(signed(drive_bits(v_bits, current_bits)))
        ``bias + current``, exact.
    """

    def __init__(self, v_bits: int = 16, current_bits: int = 16):
        self._v_bits = check_width("Membrane width v_bits", v_bits, 2, 32)
        self._current_bits = check_width("Current width current_bits", current_bits, 1, 64)
        super().__init__({
            "v": In(signed(v_bits)),
            "first": In(1),
            "v_init": In(signed(v_bits)),
            "leak_shift": In(range(v_bits + 1)),
            "bias": In(signed(v_bits)),
            "current": In(signed(current_bits)),
            "base": Out(signed(v_bits)),
            "drive": Out(signed(drive_bits(v_bits, current_bits))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        m.d.comb += [
            self.base.eq(Mux(self.first, self.v_init, self.v >> self.leak_shift)),
            self.drive.eq(self.bias + self.current),
        ]
        return m


class NeuronIntegrate(wiring.Component):
    """Exact integration with one saturation (``docs/contract.md`` step 2), and whether the
    saturated membrane reaches the threshold (the compare of step 3).

    Purely combinational. ``reached`` is ``v_sat >= theta`` (``v_sat > theta`` with
    ``greater``), computed from the exact sum ``total = base + drive`` in parallel with the
    clamp, as ``total >= bar`` with ``bar`` from :func:`threshold_bar`.

    Parameters
    ----------
    v_bits : int
        Membrane width (signed), 2..32.
    current_bits : int
        Width (signed) of the accumulated synaptic current of one timestep, 1..64; the drive
        is ``drive_bits(v_bits, current_bits)`` wide.
    variable_range : bool
        Saturate to the run-time range ``low .. high`` (a narrower layer on a core whose
        membranes are ``v_bits`` wide) instead of the ``v_bits`` range.

    Members
    -------
    base : In(signed(v_bits))
        The leaked membrane (:class:`NeuronLeak`).
    drive : In(signed(drive_bits(v_bits, current_bits)))
        ``bias + current``.
    v_sat : Out(signed(v_bits))
        ``sat(base + drive)``.
    saturated : Out(1)
        The exact sum lay outside the range and was clamped.
    bar : In(signed(bar_bits(v_bits, current_bits)))
        :func:`threshold_bar` of the timestep's threshold, compare and range.
    reached : Out(1)
        ``total >= bar``: ``v_sat`` reaches the threshold under the compare (what
        :class:`NeuronFire` fires on in threshold mode).
    low, high : In(signed(v_bits))
        Only with ``variable_range``: the range (``low <= high``, both within ``v_bits``).
    """

    def __init__(self, v_bits: int = 16, current_bits: int = 16, *,
                 variable_range: bool = False):
        self._v_bits = check_width("Membrane width v_bits", v_bits, 2, 32)
        self._current_bits = check_width("Current width current_bits", current_bits, 1, 64)
        self._variable_range = bool(variable_range)
        bounds = {"low": In(signed(v_bits)), "high": In(signed(v_bits))} \
            if variable_range else {}
        super().__init__({
            "base": In(signed(v_bits)),
            "drive": In(signed(drive_bits(v_bits, current_bits))),
            "v_sat": Out(signed(v_bits)),
            "saturated": Out(1),
            "bar": In(signed(bar_bits(v_bits, current_bits))),
            "reached": Out(1),
            **bounds,
        })

    @property
    def v_bits(self) -> int:
        return self._v_bits

    @property
    def current_bits(self) -> int:
        return self._current_bits

    def elaborate(self, platform) -> Module:
        m = Module()
        if self._variable_range:
            low, high = self.low, self.high
        else:
            low, high = -(1 << (self._v_bits - 1)), (1 << (self._v_bits - 1)) - 1
        # Amaranth widens every addition, so this sum is exact.
        total = self.base + self.drive
        m.d.comb += self.reached.eq(total >= self.bar)
        with m.If(total > high):
            m.d.comb += [self.v_sat.eq(high), self.saturated.eq(1)]
        with m.Elif(total < low):
            m.d.comb += [self.v_sat.eq(low), self.saturated.eq(1)]
        with m.Else():
            m.d.comb += self.v_sat.eq(total)
        return m


class NeuronFire(wiring.Component):
    """Fire and soft reset of a saturated membrane (``docs/contract.md`` steps 3-4), given
    whether it reached the threshold (:class:`NeuronIntegrate`'s ``reached``).

    Purely combinational: a subtractor and multiplexers, no comparator.

    Parameters
    ----------
    v_bits : int
        Membrane width (signed), 2..32.

    Members
    -------
    v_sat : In(signed(v_bits))
        Saturated membrane of this timestep.
    theta : In(signed(v_bits))
        Threshold of this timestep, ``>= 1`` by contract.
    reached : In(1)
        ``v_sat`` reached ``theta`` under the layer's compare (``>=`` or ``>``).
    fire_mode : In(FireMode)
    fires : In(1)
        0: integrate only (no spike, no reset).
    zero_reset : In(1)
        Threshold mode: a spike sets the membrane to 0 (0: subtracts ``theta``). Radix mode
        ignores both (the contract refuses radix with the zero reset).
    spike : Out(1)
    v_next : Out(signed(v_bits))
        Membrane at the end of this timestep (after the reset).
    """

    def __init__(self, v_bits: int = 16):
        self._v_bits = check_width("Membrane width v_bits", v_bits, 2, 32)
        super().__init__({
            "v_sat": In(signed(v_bits)),
            "theta": In(signed(v_bits)),
            "reached": In(1),
            "fire_mode": In(FireMode),
            "fires": In(1),
            "zero_reset": In(1),
            "spike": Out(1),
            "v_next": Out(signed(v_bits)),
        })

    @property
    def v_bits(self) -> int:
        return self._v_bits

    def elaborate(self, platform) -> Module:
        m = Module()
        v_sat = self.v_sat
        m.d.comb += self.v_next.eq(v_sat)
        with m.If(self.fires):
            with m.If(self.fire_mode == FireMode.RADIX):
                m.d.comb += [self.spike.eq(v_sat[0]), self.v_next.eq(v_sat - v_sat[0])]
            with m.Elif(self.reached):
                m.d.comb += [self.spike.eq(1),
                             self.v_next.eq(Mux(self.zero_reset, 0, v_sat - self.theta))]
        return m


class NeuronDatapath(wiring.Component):
    """Leak, exact integration with one saturation, fire and soft reset of one neuron.

    Purely combinational: every output follows the inputs in the same cycle.
    :class:`NeuronLeak`, :class:`NeuronIntegrate` and :class:`NeuronFire` in a chain.

    Parameters
    ----------
    v_bits : int
        Membrane width (signed), 2..32. ``v``, ``v_init``, ``bias``, ``theta`` and ``v_next``
        have this width.
    current_bits : int
        Width (signed) of the accumulated synaptic current of one timestep, 1..64.

    Members
    -------
    v : In(signed(v_bits))
        Membrane at the end of the previous timestep (ignored when ``first``).
    first : In(1)
        This is timestep 0: start from ``v_init`` and do not leak.
    v_init : In(signed(v_bits))
    leak_shift : In(range(v_bits + 1))
        Arithmetic right shift applied to ``v`` (not to ``v_init``).
    bias : In(signed(v_bits))
    current : In(signed(current_bits))
        Exact sum of the timestep's weights.
    theta : In(signed(v_bits))
        Threshold of this timestep, ``>= 1`` by contract.
    fire_mode : In(FireMode)
    fires : In(1)
        0: integrate only (no spike, no reset).
    greater, zero_reset : In(1)
        The compare and reset modes (:class:`NeuronFire`).
    spike : Out(1)
    v_next : Out(signed(v_bits))
        Membrane at the end of this timestep (after the reset).
    saturated : Out(1)
        The exact sum lay outside the ``v_bits`` range and was clamped.
    """

    def __init__(self, v_bits: int = 16, current_bits: int = 16):
        self._v_bits = check_width("Membrane width v_bits", v_bits, 2, 32)
        self._current_bits = check_width("Current width current_bits", current_bits, 1, 64)
        super().__init__({
            "v": In(signed(v_bits)),
            "first": In(1),
            "v_init": In(signed(v_bits)),
            "leak_shift": In(range(v_bits + 1)),
            "bias": In(signed(v_bits)),
            "current": In(signed(current_bits)),
            "theta": In(signed(v_bits)),
            "fire_mode": In(FireMode),
            "fires": In(1),
            "greater": In(1),
            "zero_reset": In(1),
            "spike": Out(1),
            "v_next": Out(signed(v_bits)),
            "saturated": Out(1),
        })

    @property
    def v_bits(self) -> int:
        return self._v_bits

    @property
    def current_bits(self) -> int:
        return self._current_bits

    #: The three stages it chains (the formal proofs swap one for a mutant).
    stage_classes = (NeuronLeak, NeuronIntegrate, NeuronFire)

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.leak = leak = self.stage_classes[0](self._v_bits, self._current_bits)
        m.submodules.integrate = integrate = self.stage_classes[1](self._v_bits,
                                                                   self._current_bits)
        m.submodules.fire = fire = self.stage_classes[2](self._v_bits)
        m.d.comb += [
            leak.v.eq(self.v), leak.first.eq(self.first),
            leak.v_init.eq(self.v_init), leak.leak_shift.eq(self.leak_shift),
            leak.bias.eq(self.bias), leak.current.eq(self.current),
            integrate.base.eq(leak.base), integrate.drive.eq(leak.drive),
            integrate.bar.eq(threshold_bar(
                self.theta, self.greater, -(1 << (self._v_bits - 1)),
                (1 << (self._v_bits - 1)) - 1, self._v_bits, self._current_bits)),
            self.saturated.eq(integrate.saturated),
            fire.v_sat.eq(integrate.v_sat), fire.theta.eq(self.theta),
            fire.reached.eq(integrate.reached),
            fire.fire_mode.eq(self.fire_mode), fire.fires.eq(self.fires),
            fire.zero_reset.eq(self.zero_reset),
            self.spike.eq(fire.spike), self.v_next.eq(fire.v_next),
        ]
        return m

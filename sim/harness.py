"""The shared cocotb harness: bus models, clock and reset, stall inserters, cycle budgets, and the
run's parameters and report.

On the pattern of cocotbext-axi: one model per interface, with an asyncio-like API, reused by
every testbench (:mod:`spikeforge.sim.tb_layer`, :mod:`spikeforge.sim.tb_network`,
``tests/tb_board.py``):

:class:`ClockReset`     the clock, the synchronous reset, and waits bounded in clock cycles
:class:`StreamSource`   drives an Amaranth ``stream.Signature`` (``valid``/``ready``/``payload``)
:class:`StreamSink`     takes beats from one (applying back-pressure), or watches a stream
                        without ``ready`` (an ``always_ready`` stream or a tap)
:class:`RegisterBus`    the ``addr``/``w_data``/``w_en``/``r_en``/``r_data`` register port of
                        an engine (``cfg``) or of the accelerator (``bus``)
:class:`BusWriteMonitor` records every write on such a port, as ``(address, value)``
:class:`WritePort`      a write-only memory port (``addr``/``data``/``en``: the load ports)

``set_pause_generator`` on a source inserts idle cycles (``valid`` low although a beat is
waiting), on a sink back-pressure (``ready`` low); :func:`random_pauses` is the generator the
testbenches use, seeded so that a failure replays.

Timing: every model acts at the falling clock edge. Inputs change there and outputs are sampled
there, half a cycle away from the rising edge at which the design registers them. A handshake
read at the falling edge right after the model drives its own side is the one the next rising
edge sees as long as the design's ``ready`` (of an input stream) or ``valid`` (of an output
stream) does not depend combinationally on the other side within the cycle; that holds for
every stream of the gateware here (they come from registers). Beats queued at a falling edge
are presented from the next falling edge on. A sink with no back-pressure sleeps while ``valid``
is low (an edge trigger, no Python per cycle), so a design left to run free costs nothing.

Parameters come from one JSON file whose path is the plusarg ``+spikeforge_params=<path>``;
:func:`spikeforge.sim.runner.run_tests` writes it (``params=``) and adds the build's port
metadata (``meta``), the simulator (``sim``) and where the report goes (``report``).
Every wait is counted in clock cycles of simulated time, never in wall-clock time.

This module runs inside the simulator process: it imports neither torch nor Amaranth.
"""

from __future__ import annotations

import functools
import json
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import Event, FallingEdge, RisingEdge, with_timeout
from cocotb.utils import get_sim_time

__all__ = ["PARAMS_PLUSARG", "tb_params", "port_metadata", "Report", "BudgetExceeded", "Port",
           "ClockReset", "StreamSource", "StreamSink", "RegisterBus", "BusWriteMonitor",
           "WritePort", "random_pauses"]

#: The plusarg that names the run's parameter file.
PARAMS_PLUSARG = "spikeforge_params"


@functools.cache
def tb_params() -> dict:
    """This run's parameters (the JSON file named by ``+spikeforge_params=<path>``)."""
    path = cocotb.plusargs.get(PARAMS_PLUSARG)
    if not isinstance(path, str):
        raise RuntimeError(f"no +{PARAMS_PLUSARG}=<file> plusarg: start the simulation with "
                           "spikeforge.sim.runner.run_tests(..., params=...)")
    return json.loads(Path(path).read_text())


@functools.cache
def port_metadata() -> dict:
    """The build's port metadata (:mod:`spikeforge.hw.rtl`): ``parameters`` and ``ports``."""
    return json.loads(Path(tb_params()["meta"]).read_text())


class Report:
    """The testbench's JSON report (``params["report"]``), rewritten after every entry.

    ``tests[name]`` holds what a cocotb test measured; ``failures`` the scoreboard's messages;
    ``failed_case`` the first failing random case (``{"seed": ..., "index": ...}``), from which
    the pytest side writes the replay command.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.data: dict = {"tests": {}, "failures": []}

    def test(self, name: str, **values) -> None:
        self.data["tests"][name] = values
        self._write()

    def fail(self, errors: Iterable[str], *, case: dict | None = None) -> None:
        self.data["failures"] += list(errors)
        if case is not None and "failed_case" not in self.data:
            self.data["failed_case"] = case
        self._write()

    def _write(self) -> None:
        if self.path:
            self.path.write_text(json.dumps(self.data, indent=1))


class BudgetExceeded(AssertionError):
    """A wait ran past its cycle budget; the message says where the design was."""


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


class Port:
    """A packed Verilog port with named fields, described by the build's metadata."""

    def __init__(self, handle, info: dict):
        self.handle = handle
        self.info = info

    def pack(self, **values) -> int:
        word = 0
        for name, value in values.items():
            f = self.info["fields"][name]
            word |= (int(value) & ((1 << f["width"]) - 1)) << f["offset"]
        return word

    def unpack(self, word: int, name: str):
        f = self.info["fields"][name]
        raw = (word >> f["offset"]) & ((1 << f["width"]) - 1)
        if "elements" in f:
            e = f["elements"]
            mask = (1 << e["width"]) - 1
            values = [(raw >> (k * e["width"])) & mask for k in range(e["count"])]
            return [_signed(v, e["width"]) if e["signed"] else v for v in values]
        return _signed(raw, f["width"]) if f["signed"] else raw


def random_pauses(seed, probability: float) -> Iterator[bool]:
    """An endless pause pattern: each cycle paused with ``probability``, drawn from
    ``random.Random(seed)``."""
    rng = random.Random(seed)
    while True:
        yield rng.random() < probability


def _read(handle) -> str:
    """A signal's value for a failure message: its integer, or the X/Z text."""
    try:
        value = handle.value
    except AttributeError:
        return "?"
    return str(int(value)) if value.is_resolvable else str(value)


class ClockReset:
    """The clock (``period_ns``) and the active-high synchronous reset of a design."""

    def __init__(self, dut, period_ns: int = 10, *, clk: str = "clk", rst: str = "rst"):
        self.clk = getattr(dut, clk)
        self.rst = getattr(dut, rst)
        self.period_ns = period_ns
        self.rst.value = 1
        self._clock = Clock(self.clk, period_ns, unit="ns")
        self._clock.start()

    async def reset(self, cycles: int = 2, after: int = 1) -> None:
        """Hold reset for ``cycles`` cycles, then run ``after`` cycles (ends at a falling edge)."""
        self.rst.value = 1
        await self.cycles(cycles)
        self.rst.value = 0
        await self.cycles(after)

    async def cycles(self, n: int) -> None:
        for _ in range(n):
            await FallingEdge(self.clk)

    def now(self) -> int:
        """Simulated time in clock cycles."""
        return int(get_sim_time(unit="ns")) // self.period_ns

    async def within(self, awaitable, cycles: int, what: str, state: Callable[[], str]):
        """Await ``awaitable`` for at most ``cycles`` clock cycles of simulated time; past them
        fail with :class:`BudgetExceeded` and ``state()``, where the design was."""
        try:
            return await with_timeout(awaitable, cycles * self.period_ns, "ns")
        except TimeoutError as exc:  # cocotb's SimTimeoutError is a TimeoutError
            raise BudgetExceeded(f"{what}: not done within its budget of {cycles} cycles; "
                                 f"{state()}") from exc


class StreamSource:
    """Drives the stream ``<prefix>__valid/__ready/__payload`` of ``dut``.

    ``send_nowait(beats)`` queues payload words; one is presented per cycle, and taken when
    ``ready`` is high. A pause generator (:meth:`set_pause_generator`) holds ``valid`` low on
    the cycles it yields true for. ``sent`` counts the beats taken.
    """

    def __init__(self, dut, clk, prefix: str):
        self.clk = clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready", None)
        self.payload = getattr(dut, f"{prefix}__payload")
        self.queue: deque[int] = deque()
        self.sent = 0
        self._pause: Iterator[bool] | None = None
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def set_pause_generator(self, generator: Iterable[bool] | None = None) -> None:
        self._pause = iter(generator) if generator is not None else None

    def send_nowait(self, beats: Iterable[int]) -> None:
        self.queue.extend(int(b) for b in beats)
        if self.queue:
            self._idle.clear()
            self._wake.set()

    async def send(self, beats: Iterable[int]) -> None:
        self.send_nowait(beats)

    def idle(self) -> bool:
        """Every queued beat has been taken."""
        return self._idle.is_set()

    async def wait(self) -> None:
        """Until every queued beat has been taken (bound it with :meth:`ClockReset.within`)."""
        await self._idle.wait()

    def clear(self) -> None:
        self.queue.clear()

    async def _run(self) -> None:
        taken = False
        while True:
            await FallingEdge(self.clk)
            if taken:
                self.queue.popleft()
                self.sent += 1
            if not self.queue:
                self.valid.value = 0
                taken = False
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()  # no Python per cycle while there is nothing to send
                continue
            presenting = not (self._pause is not None and next(self._pause))
            if presenting:
                self.payload.value = self.queue[0]
            self.valid.value = int(presenting)
            taken = presenting and (self.ready is None or self.ready.value == 1)


class StreamSink:
    """Takes the beats of the stream ``<prefix>__valid/__ready/__payload`` of ``dut`` into
    :attr:`queue` (payload words, in order).

    A stream without ``ready`` is only watched. A pause generator holds ``ready`` low on the
    cycles it yields true for. While :attr:`active` is false the sink takes nothing (and holds
    ``ready`` low): a monitor switched off costs no simulation time.
    """

    def __init__(self, dut, clk, prefix: str, *, active: bool = True):
        self.clk = clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready", None)
        self.payload = getattr(dut, f"{prefix}__payload")
        self.queue: deque[int] = deque()
        self._pause: Iterator[bool] | None = None
        self._beat = Event()
        self._on = Event()
        self.active = active
        if self.ready is not None:
            self.ready.value = int(active)
        self._task = cocotb.start_soon(self._run())

    @property
    def active(self) -> bool:
        return self._on.is_set()

    @active.setter
    def active(self, on: bool) -> None:
        if on:
            self._on.set()
        else:
            self._on.clear()

    def set_pause_generator(self, generator: Iterable[bool] | None = None) -> None:
        self._pause = iter(generator) if generator is not None else None

    def empty(self) -> bool:
        return not self.queue

    def count(self) -> int:
        return len(self.queue)

    def clear(self) -> None:
        self.queue.clear()

    def recv_nowait(self) -> int:
        return self.queue.popleft()

    async def recv(self) -> int:
        """The next beat (bound the wait with :meth:`ClockReset.within`)."""
        while not self.queue:
            self._beat.clear()
            await self._beat.wait()
        return self.queue.popleft()

    def _take(self) -> None:
        self.queue.append(int(self.payload.value))
        self._beat.set()

    async def _run(self) -> None:
        while True:
            if not self._on.is_set():
                if self.ready is not None:
                    self.ready.value = 0
                await self._on.wait()
            await FallingEdge(self.clk)
            if not self._on.is_set():
                continue
            if self._pause is not None:
                ready = not next(self._pause)
                if self.ready is not None:
                    self.ready.value = int(ready)
                if ready and self.valid.value == 1:
                    self._take()
                continue
            if self.ready is not None:
                self.ready.value = 1
            if self.valid.value == 1:
                self._take()
                continue
            # Nothing offered and no back-pressure to apply: sleep until valid rises.
            await RisingEdge(self.valid)
            if self._on.is_set() and self.clk.value == 0 and self._pause is None:
                # valid rose in the low half of a cycle (driven from an input that changed at
                # the falling edge): it is sampled now, before the rising edge takes it
                self._take()


class RegisterBus:
    """The register port ``<prefix>__addr/__w_data/__w_en/__r_en/__r_data``: one access per
    cycle; a read returns ``r_data`` one cycle after ``r_en``."""

    def __init__(self, dut, clk, prefix: str):
        self.clk = clk
        self.addr = getattr(dut, f"{prefix}__addr")
        self.w_data = getattr(dut, f"{prefix}__w_data")
        self.w_en = getattr(dut, f"{prefix}__w_en")
        self.r_en = getattr(dut, f"{prefix}__r_en")
        self.r_data = getattr(dut, f"{prefix}__r_data")
        self.w_en.value = 0
        self.r_en.value = 0

    async def write(self, address: int, value: int) -> None:
        self.addr.value = address
        self.w_data.value = value & 0xFFFF_FFFF
        self.w_en.value = 1
        await FallingEdge(self.clk)
        self.w_en.value = 0

    async def read(self, address: int, *, signed: bool = False) -> int:
        self.addr.value = address
        self.r_en.value = 1
        await FallingEdge(self.clk)
        self.r_en.value = 0
        value = int(self.r_data.value)
        return _signed(value, 32) if signed else value


class BusWriteMonitor:
    """Appends ``(address, value)`` to :attr:`writes` for every cycle the ``w_en`` of the
    register port ``<prefix>__...`` of ``scope`` is high (sleeping while it is low)."""

    def __init__(self, scope, clk, prefix: str = "bus"):
        self.clk = clk
        self.addr = getattr(scope, f"{prefix}__addr")
        self.w_data = getattr(scope, f"{prefix}__w_data")
        self.w_en = getattr(scope, f"{prefix}__w_en")
        self.writes: list[tuple[int, int]] = []
        self._task = cocotb.start_soon(self._run())

    def clear(self) -> None:
        self.writes.clear()

    async def _run(self) -> None:
        while True:
            await RisingEdge(self.w_en)
            if self.clk.value == 1:  # w_en rose after a rising edge: sample in the low half
                await FallingEdge(self.clk)
            while self.w_en.value == 1:
                self.writes.append((int(self.addr.value), int(self.w_data.value)))
                await FallingEdge(self.clk)


class WritePort:
    """A write-only memory port ``<prefix>__addr/__data/__en``: one word per cycle."""

    def __init__(self, dut, clk, prefix: str):
        self.clk = clk
        self.addr = getattr(dut, f"{prefix}__addr")
        self.data = getattr(dut, f"{prefix}__data")
        self.en = getattr(dut, f"{prefix}__en")
        self.en.value = 0

    async def write(self, words: Iterable[int], start: int = 0) -> None:
        for offset, word in enumerate(words):
            self.addr.value = start + offset
            self.data.value = int(word)
            self.en.value = 1
            await FallingEdge(self.clk)
        self.en.value = 0


def state_of(dut, names: Iterable[str]) -> str:
    """``name=value`` for each signal of ``dut`` (X/Z shown as such, ``?`` when absent)."""
    return " ".join(f"{name}={_read(getattr(dut, name, None))}" for name in names)

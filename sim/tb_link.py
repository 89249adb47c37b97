"""cocotb testbench of the link bridge on its byte-stream side
(:class:`spikeforge.sim.link_campaign.CampaignTop`: the bridge, the mock accelerator and
gateware bus models).

Two tests, each selected by name by the launcher (:func:`spikeforge.sim.runner.run_tests`'s
``testcase``):

``defined_after_reset``
    Holds reset for a few cycles and reports every signal of the design (every level of the
    hierarchy) a few cycles later: the ones that are X or Z (Icarus), and all values, which the
    launcher compares between two random-X seeds (Verilator ``--x-initial unique``). A
    register whose value after reset depends on the simulator is not verified (issue 14).
``fault_campaign``
    ``frames`` malformed frames of seed ``seed``
    (:func:`spikeforge.sim.link_campaign.campaign_steps`), every burst compared with the Python
    model of the bridge (:class:`spikeforge.sim.link_model.LinkModel`): the same reply bytes
    (an error code, or no reply, exactly as the model says), the same register-bus writes (none
    for a bad frame), and afterwards the bridge back in its idle state with nothing left to send.
    Each burst waits for the design's ``settled`` output, which is bounded by its cycle budget
    (``overtime``). Stops at the first mismatch, with the burst and the replay command.

The run's parameters (``seed``, ``frames``) come from the harness's parameter file
(:func:`spikeforge.sim.harness.tb_params`), the design's from the build's metadata; the report
(:class:`spikeforge.sim.harness.Report`) has one entry per test under ``tests``. Torch is not
imported here, nor Amaranth but through the frame generator's module.
"""

from __future__ import annotations

import random
import time

import cocotb
from cocotb.handle import (
    HierarchyArrayObject,
    HierarchyObject,
    LogicArrayObject,
    LogicObject,
    PackedObject,
)
from cocotb.triggers import FallingEdge, RisingEdge

from spikeforge.sim.harness import ClockReset, Report, port_metadata, tb_params

__all__ = ["LinkTB", "replay_command"]


def replay_command(seed: int, frames: int) -> str:
    return f"SPIKEFORGE_SEED={seed} .venv/bin/python -m bench link --frames {frames}"


class LinkTB:
    """Clock, reset and the per-burst driver of :class:`CampaignTop`."""

    def __init__(self, dut):
        self.dut = dut
        self.p = parameters = port_metadata()["parameters"]
        self.reply_bytes = parameters["reply_bytes"]
        self.write_words = parameters["write_words"]
        self.go = 0
        self.replies_seen = 0
        self.writes_seen = 0
        self.idle_state = None
        self._last: dict[str, int] = {}
        self.clock = ClockReset(dut)

    def _set(self, name: str, value: int) -> None:
        if self._last.get(name) != value:  # wide writes cost; most bursts change few inputs
            getattr(self.dut, name).value = value
            self._last[name] = value

    async def reset(self) -> None:
        for name in ("script", "length", "go", "gap_mask", "tight_from", "reset_after",
                     "force_busy", "stall"):
            self._set(name, 0)
        await self.clock.reset(cycles=4, after=4)
        self.idle_state = int(self.dut.bridge.fsm_state.value)  # the FSM's reset state

    async def burst(self, data: bytes, *, tight_from: int, gap_mask: int, stall: int,
                    reset: bool, busy: bool):
        """Send ``data``, wait until the design has settled; return ``(reply, writes, why)``:
        the reply bytes, the register writes (``(addr, data)``) and, if the bridge did not come
        back to idle within its budget, why not (else None)."""
        dut = self.dut
        self._set("script", int.from_bytes(data, "little"))
        self._set("length", len(data))
        self._set("tight_from", tight_from)
        self._set("gap_mask", gap_mask)
        self._set("stall", stall)
        self._set("reset_after", int(reset))
        self._set("force_busy", int(busy))
        self.go ^= 1
        dut.go.value = self.go
        await RisingEdge(dut.settled)
        why = None
        if dut.overtime.value:
            why = f"not settled after {self.p['budget_cycles']} cycles"
        state = int(dut.bridge.fsm_state.value)
        if state != self.idle_state:
            why = f"bridge in state {state}, not its idle state {self.idle_state}"
        if dut.bridge.tx__valid.value:
            why = "bridge still has a reply byte to send"
        reply_count = int(dut.reply_count.value)
        new = reply_count - self.replies_seen
        self.replies_seen = reply_count
        reply = b""
        if new:
            if new > self.reply_bytes:
                why = f"a reply of {new} bytes, longer than any reply"
                new = self.reply_bytes
            tail = int(dut.reply_tail.value)
            reply = bytes((tail >> (8 * i)) & 0xFF for i in reversed(range(new)))
        write_count = int(dut.write_count.value)
        new = write_count - self.writes_seen
        self.writes_seen = write_count
        writes = []
        if new:
            if new > self.write_words:
                why = f"{new} register writes from one burst"
                new = self.write_words
            tail = int(dut.write_tail.value)
            words = [(tail >> (48 * i)) & ((1 << 48) - 1) for i in reversed(range(new))]
            writes = [(w >> 32, w & 0xFFFF_FFFF) for w in words]
        return reply, writes, why


def _walk(handle, prefix=""):
    """Every logic signal below ``handle``: ``(path, handle)``."""
    for key, child in sorted(handle._items(), key=lambda item: str(item[0])):
        name = f"{prefix}{key}"
        if isinstance(child, (HierarchyObject, HierarchyArrayObject)):
            yield from _walk(child, name + ".")
        elif isinstance(child, (LogicObject, LogicArrayObject, PackedObject)):
            yield name, child


@cocotb.test()
async def defined_after_reset(dut):
    """Every signal is 0/1 a few cycles after reset, with the inputs idle."""
    report = Report(tb_params().get("report"))
    tb = LinkTB(dut)
    await tb.reset()
    await FallingEdge(dut.clk)
    values, undefined = {}, []
    for name, handle in _walk(dut):
        text = str(handle.value)
        values[name] = text
        if any(c in text.upper() for c in "XZUW-"):
            undefined.append(f"{name} = {text}")
    if undefined:
        report.fail([f"{len(undefined)} of {len(values)} signals undefined after reset: "
                     f"{', '.join(undefined)}"])
    report.test("defined_after_reset", signals=len(values), undefined=undefined, values=values)
    assert not undefined, f"{len(undefined)} signals undefined after reset: {undefined[:20]}"


@cocotb.test()
async def fault_campaign(dut):
    """Random malformed frames, every one compared with the model (see the module docstring)."""
    from spikeforge.sim.link_campaign import (
        GAP_MASKS,
        STALLS,
        FrameMaker,
        Scoreboard,
        campaign_steps,
    )

    params = tb_params()
    report = Report(params.get("report"))
    seed, frames = int(params["seed"]), int(params["frames"])
    tb = LinkTB(dut)
    p = tb.p
    shape = {k: p[k] for k in ("n_inputs", "pixel_bits", "n_layers", "timesteps")}
    rng = random.Random(seed)
    maker = FrameMaker(rng, **shape)
    board = Scoreboard(n_outputs=p["n_outputs"], **shape)
    await tb.reset()
    began, began_cycles = time.perf_counter(), tb.clock.now()
    bursts = 0
    failure = None
    for bursts, step in enumerate(campaign_steps(rng, maker, frames), 1):
        expected = board.expect(step)
        reply, writes, why = await tb.burst(
            expected.data, tight_from=expected.tight_from, gap_mask=rng.choice(GAP_MASKS),
            stall=rng.choice(STALLS), reset=step.reset, busy=step.busy)
        if why or reply != expected.reply or writes != expected.writes:
            failure = (f"seed {seed}, burst {bursts} ({step.kind}{', reset' if step.reset else ''}"
                       f"{', busy' if step.busy else ''}): sent {expected.data.hex()}\n"
                       f"  reply  {reply.hex() or '-'}\n  model  {expected.reply.hex() or '-'}\n"
                       f"  writes {writes}\n  model  {expected.writes}"
                       + (f"\n  {why}" if why else "")
                       + f"\n  replay: {replay_command(seed, frames)}")
            break
    seconds = time.perf_counter() - began
    counts = {f"{kind}/{outcome}": n for (kind, outcome), n in sorted(board.counts.items())}
    if failure:
        report.fail([failure], case={"seed": seed, "index": bursts})
    report.test("fault_campaign", seed=seed, malformed=board.malformed, bursts=bursts,
                seconds=seconds, cycles=tb.clock.now() - began_cycles, counts=counts,
                malformed_writes=board.malformed_writes)
    assert failure is None, failure

"""The link fault campaign: random malformed frames against the gateware bridge, checked
against the Python model of the bridge.

:class:`CampaignTop` is :class:`~spikeforge.hw.link.LinkBridge` in front of
:class:`~spikeforge.sim.mock_accelerator.MockAccelerator`, driven on its byte-stream side (no
UART, so a simulator runs thousands of frames a second), with the bus models in gateware so that
the testbench (``sim/tb_link.py``) acts once per burst of bytes, not once per clock cycle:

* a *pacer* sends a burst of up to ``script_bytes`` bytes into the bridge's ``rx`` stream with
  random gaps (shorter than the inter-byte timeout) between them, and can reset the bridge alone
  right after the burst (a reset in the middle of a frame);
* a random *stall* holds the bridge's ``tx`` stream back (back-pressure on every reply);
* a *reply capture* and a *write capture* keep the last reply bytes and the last register-bus
  writes, with running counts;
* ``settled`` rises once nothing has moved (no byte, no reply byte, no bus access, no pixel or
  result taken, the accelerator idle or holding a STREAM image's results for the next
  exchange) for longer than the bridge's timeout, or when a burst has taken
  more than ``budget_cycles`` (``overtime``): every wait of the testbench is bounded.

:func:`fault_step` makes the bursts: a good frame (``good``) or one of :data:`FAULTS`.
:class:`Scoreboard` feeds each burst to :class:`~spikeforge.sim.link_model.LinkModel` (its
``feed``, then ``quiet`` or ``reset``) and compares the bridge's reply bytes and bus writes with
the model's; :func:`run_campaign` builds and runs it all (``tests/test_link_campaign.py``,
``python -m bench link``).
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from dataclasses import dataclass, field

from amaranth import Cat, Module, Mux, ResetInserter, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from spikeforge.hw.link import LinkBridge
from spikeforge.sim.link_model import LinkModel, MockBackend
from spikeforge.sim.mock_accelerator import MockAccelerator
from spikeforge.sw.interface import (
    COMMANDS,
    MAX_WORDS,
    SPEC,
    STREAM_RUN_BIT,
    SYNC_REQUEST,
    Command,
    ErrorCode,
    crc16,
    encode_block,
    encode_request,
    encode_stream_image,
    payload_rule,
    pixel_bytes,
    stream_supported,
)

__all__ = ["CampaignTop", "FAULTS", "Step", "FrameMaker", "fault_step", "campaign_steps",
           "Scoreboard", "Expected", "outcome_table", "run_campaign", "CampaignResult"]

#: The malformed bursts, by name:
#:
#: ``flip``      a good frame with 1 to 3 bits flipped anywhere (SYNC, header, payload, CRC)
#: ``truncate``  a good frame cut short (the line then goes quiet)
#: ``length``    a good frame whose ``len`` is wrong (CRC recomputed, so only ``len`` is bad)
#: ``command``   an unknown command byte (good CRC)
#: ``garbage``   1 to 40 random bytes
#: ``sync``      a good frame whose SYNC byte is wrong
#: ``crc``       a good frame with a wrong CRC
#: ``extra``     a good frame with 1 to 4 bytes straight after it (dropped during the reply)
#: ``restart``   a frame cut short and, without a pause, a whole good frame (a host that
#:               restarts in the middle of a frame)
#: ``reset``     a frame cut short, then the bridge is reset (a board reset mid-frame)
#: ``argument``  a ``READ`` of 0 or more than ``MAX_WORDS`` registers, or a ``STREAM`` whose
#:               tokens stand for a pixel too few or too many
#: ``pixel``     a ``RUN`` or a ``STREAM`` with a pixel above ``2**pixel_bits - 1``
#: ``busy``      a ``WRITE`` or ``WRITE_BLOCK`` while the accelerator is busy
FAULTS = ("flip", "truncate", "length", "command", "garbage", "sync", "crc", "extra", "restart",
          "reset", "argument", "pixel", "busy")
#: Share of the bursts that are good frames (they check that the link still works and that
#: nothing changed; they are not counted as malformed frames).
GOOD_SHARE = 0.25
#: A full register audit (a READ of every register the model keeps) every this many bursts.
AUDIT_EVERY = 500
#: Gap masks of the pacer: the gap after a byte is ``random & mask`` cycles.
GAP_MASKS = (0, 0, 1, 3, 7, 31)
#: Tx stall levels: the bridge's ``tx.ready`` is low ``stall`` cycles in 16.
STALLS = (0, 0, 0, 4, 12)
#: Most bytes after a completed frame in one burst: they arrive during its reply.
MAX_TRAILING = 4


def _lfsr_next(m, lfsr):
    """Galois LFSR, x^16 + x^14 + x^13 + x^11 + 1 (maximal length)."""
    m.d.sync += lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0xB400, lfsr >> 1))


class CampaignTop(wiring.Component):
    """The bridge and the mock accelerator with gateware bus models (see the module docstring).

    Parameters
    ----------
    n_inputs, n_outputs, pixel_bits, n_layers, timesteps : int
        The mock accelerator's shape (``pixel_bits < 8`` makes ``PIXEL`` errors possible with
        one-byte pixels).
    timeout_cycles : int
        The bridge's inter-byte timeout; the pacer's gaps stay below it.
    script_bytes : int
        Longest burst the pacer sends.
    budget_cycles : int
        A burst that has not settled this many cycles after it started sets ``overtime``.

    Members
    -------
    script : In(8 * script_bytes)
        The burst, first byte in the low bits.
    length : In(range(script_bytes + 1))
        Bytes of the burst.
    go : In(1)
        Toggle: a change starts the burst.
    gap_mask : In(5)
        Gap after each byte: ``random & gap_mask`` idle cycles ...
    tight_from : In(range(script_bytes + 1))
        ... except after byte ``tight_from - 1`` and later ones: no gap (the bytes after a
        frame that completes inside the burst arrive while its reply is sent).
    reset_after : In(1)
        Reset the bridge (only the bridge) once the burst is sent.
    force_busy : In(1)
        The bridge sees a busy accelerator.
    stall : In(4)
        ``tx.ready`` is low in about ``stall`` of 16 cycles.
    settled, overtime : Out(1)
    reply_count, write_count : Out(32)
        Reply bytes and register writes so far.
    reply_tail : Out(8 * reply_bytes)
        The last reply bytes, the newest in the low bits (``reply_bytes``: the longest reply).
    write_tail : Out(48 * MAX_WORDS)
        The last register writes, ``addr << 32 | data``, the newest in the low bits.
    """

    def __init__(self, *, n_inputs: int = 8, n_outputs: int = 3, pixel_bits: int = 7,
                 n_layers: int = 2, timesteps: int = 4, timeout_cycles: int = 48,
                 script_bytes: int = 544, budget_cycles: int = 1 << 16):
        if timeout_cycles < 40:
            raise ValueError(f"timeout_cycles must be at least 40 (the pacer's gaps reach 31), "
                             f"not {timeout_cycles!r}")
        longest = 4 + 2 + payload_rule(Command.WRITE_BLOCK).max_length
        if script_bytes < 2 * longest:
            raise ValueError(f"script_bytes must hold two of the longest frames ({2 * longest} "
                             f"bytes), not {script_bytes!r}")
        self._parameters = {
            "n_inputs": n_inputs, "n_outputs": n_outputs, "pixel_bits": pixel_bits,
            "n_layers": n_layers, "timesteps": timesteps, "timeout_cycles": timeout_cycles,
            "script_bytes": script_bytes, "budget_cycles": budget_cycles,
            "reply_bytes": 7 + 4 * max(MAX_WORDS, n_outputs + 1), "write_words": MAX_WORDS,
        }
        self.accelerator = MockAccelerator(n_inputs=n_inputs, n_outputs=n_outputs,
                                           pixel_bits=pixel_bits, n_layers=n_layers,
                                           timesteps=timesteps, busy_cycles=5)
        self.bridge = LinkBridge(n_inputs=n_inputs, n_outputs=n_outputs, pixel_bits=pixel_bits,
                                 timeout_cycles=timeout_cycles)
        p = self._parameters
        super().__init__({
            "script": In(8 * script_bytes),
            "length": In(range(script_bytes + 1)),
            "go": In(1),
            "gap_mask": In(5),
            "tight_from": In(range(script_bytes + 1)),
            "reset_after": In(1),
            "force_busy": In(1),
            "stall": In(4),
            "settled": Out(1),
            "overtime": Out(1),
            "reply_count": Out(32),
            "reply_tail": Out(8 * p["reply_bytes"]),
            "write_count": Out(32),
            "write_tail": Out(48 * MAX_WORDS),
        })

    @property
    def parameters(self) -> dict:
        """The elaboration parameters (written into the RTL metadata the testbench reads)."""
        return dict(self._parameters)

    def elaborate(self, platform):
        m = Module()
        p = self._parameters
        bridge_rst = Signal()
        m.submodules.bridge = ResetInserter(bridge_rst)(self.bridge)
        m.submodules.acc = acc = self.accelerator
        bridge = self.bridge
        wiring.connect(m, bridge.bus, acc.bus)
        wiring.connect(m, bridge.pixels, acc.pixels)
        wiring.connect(m, acc.results, bridge.results)
        m.d.comb += bridge.busy.eq(acc.busy | self.force_busy)

        lfsr = Signal(16, init=0xACE1)
        _lfsr_next(m, lfsr)

        # ---- pacer -------------------------------------------------------------------------
        last_go = Signal()
        sending = Signal()
        shreg = Signal(len(self.script))
        left = Signal(range(p["script_bytes"] + 1))
        sent = Signal(range(p["script_bytes"] + 1))
        wait = Signal(5)
        reset_wait = Signal(6)
        resetting = Signal()
        rx_valid = Signal()
        rx_payload = Signal(8)
        m.d.comb += [bridge.rx.valid.eq(rx_valid), bridge.rx.payload.eq(rx_payload),
                     bridge_rst.eq(resetting)]
        m.d.sync += [rx_valid.eq(0), resetting.eq(0)]
        with m.If(self.go != last_go):
            m.d.sync += [last_go.eq(self.go), shreg.eq(self.script), left.eq(self.length),
                         sent.eq(0), wait.eq(0), sending.eq(self.length != 0)]
        with m.Elif(sending):
            with m.If(wait != 0):
                m.d.sync += wait.eq(wait - 1)
            with m.Else():  # rx is always ready (docs/link-protocol.md, rule 4)
                m.d.sync += [rx_valid.eq(1), rx_payload.eq(shreg[:8]), shreg.eq(shreg >> 8),
                             left.eq(left - 1), sent.eq(sent + 1),
                             wait.eq(Mux(sent + 1 >= self.tight_from, 0,
                                         lfsr[:5] & self.gap_mask))]
                with m.If(left == 1):
                    m.d.sync += sending.eq(0)
                    with m.If(self.reset_after):
                        m.d.sync += reset_wait.eq(lfsr[5:10] + 1)  # 1..32 cycles later
        with m.Elif(reset_wait != 0):  # still inside the inter-byte timeout
            m.d.sync += reset_wait.eq(reset_wait - 1)
            with m.If(reset_wait == 1):
                m.d.sync += resetting.eq(1)

        # ---- tx stall, captures ------------------------------------------------------------
        m.d.comb += bridge.tx.ready.eq(lfsr[10:14] >= self.stall)
        reply_count, reply_tail = self.reply_count, self.reply_tail
        with m.If(bridge.tx.valid & bridge.tx.ready):
            m.d.sync += [reply_count.eq(reply_count + 1),
                         reply_tail.eq(Cat(bridge.tx.payload, reply_tail[:-8]))]
        write_count, write_tail = self.write_count, self.write_tail
        with m.If(bridge.bus.w_en):
            m.d.sync += [write_count.eq(write_count + 1),
                         write_tail.eq(Cat(bridge.bus.w_data, bridge.bus.addr,
                                           write_tail[:-48]))]

        # ---- settled -----------------------------------------------------------------------
        active = Signal()
        m.d.comb += active.eq(sending | rx_valid | (reset_wait != 0) | resetting
                              | bridge.tx.valid | bridge.bus.w_en | bridge.bus.r_en
                              | bridge.pixels.valid
                              | (acc.results.valid & acc.results.ready)
                              | (acc.busy & ~acc.results.valid)  # computing, not waiting
                              | (self.go != last_go))
        # Longer than any pause of a working bridge: the timeout before an error reply, the
        # few cycles between the words of a WRITE_BLOCK or a READ.
        limit = p["timeout_cycles"] + 24
        quiet = Signal(range(limit + 1))
        with m.If(active):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != limit):
            m.d.sync += quiet.eq(quiet + 1)
        since = Signal(range(p["budget_cycles"] + 1))
        with m.If(self.go != last_go):
            m.d.sync += since.eq(0)
        with m.Elif(since != p["budget_cycles"]):
            m.d.sync += since.eq(since + 1)
        m.d.comb += [self.overtime.eq(since == p["budget_cycles"]),
                     self.settled.eq((quiet == limit) | self.overtime)]
        return m


# ---- bursts ------------------------------------------------------------------------------------

@dataclass
class Step:
    """One burst: ``data`` sent back to back (gaps below the timeout), then the line goes quiet
    (or, with ``reset``, the bridge is reset); ``busy``: the accelerator looks busy."""

    kind: str
    data: bytes
    reset: bool = False
    busy: bool = False


class FrameMaker:
    """Random good request frames at the registers the mock accelerator and the model share
    (``CYCLES``, ``SYNOPS`` and ``SPIKES`` are not read: the mock counts real cycles and spikes,
    the model does not)."""

    def __init__(self, rng: random.Random, *, n_inputs: int, pixel_bits: int, n_layers: int,
                 timesteps: int, spec=SPEC):
        self.rng, self.n_inputs, self.pixel_bits = rng, n_inputs, pixel_bits
        a = spec.address
        self.writable = [a("STATUS")] + [a(name, k) for k in range(n_layers)
                                         for name in ("LEAK_SHIFT", "V_INIT")]
        self.writable += [a("THETA", k, t) for k in range(n_layers) for t in range(timesteps)]
        unmapped = [a("N_INPUTS"), a("ID") + 0x80, spec.layer_base + spec.layer_stride * 7]
        self.write_targets = [*self.writable, a("ID"), a("N_LAYERS"), a("SYNOPS", 0), *unmapped]
        #: (first address, most registers) of the READs: runs of registers the model keeps
        self.read_runs = [(a("ID"), 2), (a("N_LAYERS"), 1), *[(a("LEAK_SHIFT", k), 2)
                                                               for k in range(n_layers)],
                          *[(a("THETA", k, 0), timesteps) for k in range(n_layers)],
                          *[(u, MAX_WORDS) for u in unmapped]]
        self.audit_runs = [(a("ID"), 2), *[(a("LEAK_SHIFT", k), 2) for k in range(n_layers)],
                           *[(a("THETA", k, 0), timesteps) for k in range(n_layers)]]

    def pixels(self, bad: bool = False) -> bytes:
        rng, top = self.rng, (1 << self.pixel_bits) - 1
        values = [rng.randrange(top + 1) for _ in range(self.n_inputs)]
        if bad:
            width = 8 * pixel_bytes(self.pixel_bits)
            for i in rng.sample(range(self.n_inputs), rng.randrange(1, min(3, self.n_inputs) + 1)):
                values[i] = rng.randrange(top + 1, 1 << width)
        fmt = "B" if pixel_bytes(self.pixel_bits) == 1 else "H"
        return struct.pack(f">{self.n_inputs}{fmt}", *values)

    def stream(self, bad: str | None = None) -> bytes:
        """A STREAM of a mostly-zero image; ``bad``: ``"literal"`` (a pixel above the range) or
        ``"count"`` (tokens for a pixel too few or too many)."""
        rng, top = self.rng, (1 << self.pixel_bits) - 1
        values = [rng.choice([0, 0, rng.randrange(top + 1)]) for _ in range(self.n_inputs)]
        tokens = bytearray(encode_stream_image(values, self.pixel_bits))
        if bad == "literal":
            tokens[rng.randrange(len(tokens))] = rng.randrange(top + 1,
                                                                  1 << STREAM_RUN_BIT)
        elif bad == "count":
            if rng.random() < 0.5:
                tokens += encode_stream_image([rng.choice([0, 1])], self.pixel_bits)
            elif len(tokens) > 1:
                tokens.pop(rng.randrange(len(tokens)))
            else:
                tokens = bytearray(encode_stream_image([0] * (self.n_inputs - 1),
                                                       self.pixel_bits))
        return encode_request(Command.STREAM, bytes(tokens))

    def read(self, address: int, count: int) -> bytes:
        return encode_request(Command.READ, struct.pack(">HB", address, count))

    def write(self, busy_target: bool = False) -> bytes:
        rng = self.rng
        targets = self.writable if busy_target else self.write_targets
        value = rng.choice([rng.randrange(1 << 32), rng.randrange(64), 16])
        return encode_request(Command.WRITE, struct.pack(">HI", rng.choice(targets), value))

    def block(self) -> bytes:
        rng = self.rng
        count = rng.choice([1, 2, 3, 7, 16, MAX_WORDS - 1, MAX_WORDS])
        words = [rng.choice([rng.randrange(1 << 32), rng.randrange(64)]) for _ in range(count)]
        return encode_request(Command.WRITE_BLOCK,
                              encode_block(rng.choice(self.write_targets), words))

    def good(self) -> bytes:
        rng = self.rng
        kinds = ["info", "read", "read", "write", "write", "run", "run", "block"]
        if stream_supported(self.pixel_bits):
            kinds += ["stream", "stream", "flush"]
        kind = rng.choice(kinds)
        if kind == "stream":
            return self.stream()
        if kind == "flush":
            return encode_request(Command.STREAM)
        if kind == "info":
            return encode_request(Command.INFO)
        if kind == "read":
            address, most = rng.choice(self.read_runs)
            return self.read(address, rng.randrange(1, most + 1))
        if kind == "write":
            return self.write()
        if kind == "run":
            return encode_request(Command.RUN, self.pixels())
        return self.block()

    def audit(self) -> list[bytes]:
        """READs of every register the model keeps."""
        return [self.read(address, count) for address, count in self.audit_runs]


def _with_length(frame: bytes, length: int) -> bytes:
    """``frame`` with its ``len`` field replaced (and the CRC made good again)."""
    cmd, payload = frame[1], frame[4:-2]
    body = bytes([cmd]) + struct.pack(">H", length) + payload
    return bytes([SYNC_REQUEST]) + body + struct.pack(">H", crc16(body))


def fault_step(kind: str, maker: FrameMaker) -> Step:
    """One burst of ``kind`` (``"good"`` or one of :data:`FAULTS`)."""
    rng = maker.rng
    if kind == "good":
        return Step(kind, maker.good())
    if kind == "garbage":
        return Step(kind, bytes(rng.randrange(256) for _ in range(rng.randrange(1, 41))))
    if kind == "argument":
        address, _ = rng.choice(maker.read_runs)
        return Step(kind, maker.read(address, rng.choice([0, MAX_WORDS + 1,
                                                           rng.randrange(MAX_WORDS + 1, 256)])))
    streams = stream_supported(maker.pixel_bits)
    if kind == "argument" and streams and rng.random() < 0.3:
        return Step(kind, maker.stream(bad="count"))
    # (with 7-bit pixels every literal token is in range)
    if kind == "pixel" and streams and maker.pixel_bits < 7 and rng.random() < 0.5:
        return Step(kind, maker.stream(bad="literal"))
    if kind == "pixel":
        return Step(kind, encode_request(Command.RUN, maker.pixels(bad=True)))
    if kind == "busy":
        frame = maker.write(busy_target=True) if rng.random() < 0.5 else maker.block()
        return Step(kind, frame, busy=True)
    if kind == "command":
        known = {int(c) for c in Command}
        cmd = rng.choice([c for c in range(256) if c not in known])
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 3, 6, 8])))
        return Step(kind, encode_request(cmd, payload))
    frame = bytearray(maker.good())
    if kind == "flip":
        for bit in rng.sample(range(8 * len(frame)), rng.randrange(1, 4)):
            frame[bit // 8] ^= 1 << (bit % 8)
    elif kind == "truncate":
        frame = frame[:rng.randrange(1, len(frame))]
    elif kind == "length":
        length = struct.unpack(">H", frame[2:4])[0]
        rule = payload_rule(Command(frame[1]), n_inputs=maker.n_inputs,
                            pixel_bits=maker.pixel_bits)
        wrong = [v for v in {length + 1, length - 1, max(0, length - 4), length + 4, 0, 0xFFFF,
                             rng.randrange(1 << 16), rng.randrange(300)}
                 if 0 <= v <= 0xFFFF and not rule.accepts(v)]
        frame = bytearray(_with_length(bytes(frame), rng.choice(sorted(wrong))))
    elif kind == "sync":
        frame[0] = rng.choice([b for b in range(256) if b != SYNC_REQUEST])
    elif kind == "crc":
        good = struct.unpack(">H", frame[-2:])[0]
        frame[-2:] = struct.pack(">H", good ^ rng.randrange(1, 1 << 16))
    elif kind == "extra":
        frame += bytes(rng.randrange(256) for _ in range(rng.randrange(1, MAX_TRAILING + 1)))
    elif kind == "restart":
        frame = frame[:rng.randrange(1, len(frame))] + maker.good()
    elif kind == "reset":
        return Step(kind, bytes(frame[:rng.randrange(1, len(frame))]), reset=True)
    else:
        raise ValueError(f"Unknown fault kind {kind!r}; choose one of {', '.join(FAULTS)}")
    return Step(kind, bytes(frame))


def campaign_steps(rng: random.Random, maker: FrameMaker, malformed: int):
    """Bursts until ``malformed`` malformed ones have been made: good frames in between
    (:data:`GOOD_SHARE`) and a register audit every :data:`AUDIT_EVERY` bursts and at the
    end."""
    made = index = 0
    while made < malformed:
        index += 1
        if index % AUDIT_EVERY == 0:
            for frame in maker.audit():
                yield Step("audit", frame)
        if rng.random() < GOOD_SHARE:
            yield fault_step("good", maker)
        else:
            made += 1
            yield fault_step(rng.choice(FAULTS), maker)
    for frame in maker.audit():
        yield Step("audit", frame)


# ---- scoreboard --------------------------------------------------------------------------------

@dataclass
class Expected:
    """What the model says a burst does: the bytes actually sent (a frame that completes inside
    the burst is followed by at most :data:`MAX_TRAILING` bytes), from which byte on there is no
    gap, the reply bytes and the register writes."""

    data: bytes
    tight_from: int
    reply: bytes
    writes: list[tuple[int, int]]


class Scoreboard:
    """The model's side of the campaign, and the counts by burst kind and outcome."""

    def __init__(self, *, n_inputs: int, n_outputs: int, pixel_bits: int, n_layers: int,
                 timesteps: int):
        self.model = LinkModel(MockBackend(n_inputs=n_inputs, n_outputs=n_outputs,
                                           pixel_bits=pixel_bits, n_layers=n_layers,
                                           timesteps=timesteps))
        #: (kind, outcome) -> bursts; outcome is an error code name, "OK" or "ignored"
        self.counts: Counter[tuple[str, str]] = Counter()
        #: malformed bursts (not "good" or "audit") whose model execution wrote registers
        self.malformed_writes = 0

    def expect(self, step: Step) -> Expected:
        model, backend = self.model, self.model.backend
        replies, writes = len(model.replies), len(backend.writes)
        backend.busy = step.busy
        used = model.feed(step.data)
        data = step.data[:used + MAX_TRAILING] if used < len(step.data) else step.data
        if step.reset:
            model.reset()
        else:
            model.quiet()
        backend.busy = False
        reply = b"".join(model.replies[replies:])
        del model.replies[:]
        new_writes = backend.writes[writes:]
        outcome = "ignored" if not reply else ErrorCode(reply[2]).name
        self.counts[step.kind, outcome] += 1
        if step.kind not in ("good", "audit", "extra") and new_writes:
            self.malformed_writes += 1
        return Expected(data, used, reply, new_writes)

    @property
    def malformed(self) -> int:
        return sum(n for (kind, _), n in self.counts.items() if kind in FAULTS)


def outcome_table(counts: dict[tuple[str, str], int]) -> str:
    """Bursts per kind and outcome, as a text table (one row per kind)."""
    kinds = [k for k in ("good", "audit", *FAULTS) if any(c[0] == k for c in counts)]
    outcomes = [c.name for c in ErrorCode if c is not ErrorCode.OK] + ["OK", "ignored"]
    outcomes = [o for o in outcomes if any(c[1] == o for c in counts)]
    width = max(len(o) for o in [*outcomes, "total"]) + 1
    lines = ["kind".ljust(9) + "".join(o.rjust(width) for o in ["total", *outcomes])]
    for kind in kinds:
        row = [counts.get((kind, o), 0) for o in outcomes]
        lines.append(kind.ljust(9) + "".join(str(v).rjust(width) for v in [sum(row), *row]))
    return "\n".join(lines)


# ---- launcher ----------------------------------------------------------------------------------

@dataclass
class CampaignResult:
    seed: int
    malformed: int
    bursts: int
    seconds: float
    cycles: int
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    malformed_writes: int = 0
    simulator: str = "verilator"

    @property
    def frames_per_second(self) -> float:
        return self.bursts / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (f"link fault campaign on {self.simulator}: {self.malformed} malformed frames "
                f"({self.bursts} bursts with the good frames and audits), 0 mismatches, "
                f"{self.malformed_writes} malformed frames wrote a register; "
                f"{self.seconds:.1f} s, {self.frames_per_second:.0f} bursts/s, "
                f"{self.cycles} cycles; seed {self.seed}")


def run_campaign(malformed: int, seed: int, *, sim: str | None = None, x: str | None = None,
                 **top_args) -> CampaignResult:
    """Build :class:`CampaignTop` (cached) and run ``malformed`` malformed frames of seed
    ``seed`` through it on ``sim``; raises :class:`spikeforge.sim.runner.TestFailure` on the
    first mismatch (its message holds the burst, both replies and the replay command)."""
    from spikeforge.sim.runner import build, run_tests

    built = build(CampaignTop(**top_args), "link_campaign", sim=sim, x=x)
    report = run_tests(built, "spikeforge.sim.tb_link", testcase="fault_campaign",
                       params={"seed": seed, "frames": malformed})["tests"]["fault_campaign"]
    counts = {tuple(key.split("/")): n for key, n in report["counts"].items()}
    return CampaignResult(seed=seed, malformed=report["malformed"], bursts=report["bursts"],
                          seconds=report["seconds"], cycles=report["cycles"], counts=counts,
                          malformed_writes=report["malformed_writes"], simulator=built.sim)


# Commands whose frames the generator makes (a guard against a new command the maker ignores).
assert set(COMMANDS) == set(Command)

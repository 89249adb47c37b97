"""cocotb testbench of the board top (:class:`spikeforge.hw.boards.LinkTop`: UART in,
accelerator, UART out).

The host side is the real host client, :class:`spikeforge.sw.link.LinkClient`, unchanged: it
runs in a thread started with :func:`cocotb.task.bridge`, and its transport,
:class:`spikeforge.sw.uart_transport.CocotbUartTransport`, hands each ``write``/``read`` back
to the simulation with :func:`cocotb.task.resume`, where the cocotbext-uart models
``UartSource``/``UartSink`` drive and watch the serial lines. The fault injection uses the same
UART models with hand-made bad frames. The harness's
:class:`spikeforge.sim.harness.BusWriteMonitor` records every write on the register bus between
the bridge and the accelerator (``TB.writes``), so a test sees exactly which writes a frame
caused, whatever the accelerator; clock and reset are the harness's
:class:`~spikeforge.sim.harness.ClockReset`. One cocotb test is one scenario; each host-client
scenario also runs with idle time on the line (``idle``: random gaps of up to two byte times
between the bytes the host sends, shorter than the bridge's frame timeout, so the frames must
come through unchanged). A UART has no back-pressure.

The run's parameters (:func:`spikeforge.sim.harness.tb_params`, written by
tests/test_board_sim.py): ``divisor``, ``clock_ns``, ``timeout_cycles``, ``images`` and
``expected`` (``[[scores...], prediction]`` per image, from the Python model of the
accelerator under test), ``threshold_address`` (a read/write register whose reset value is
``threshold_reset``), ``seed`` (of the random block-write words; failures name it), and
``op_budget_cycles``: the longest one link transaction may take, retries included (from the
line's byte time, the client's timeout and the accelerator's cycle model, see
tests/test_board_sim.py). Every host call waits at most that many simulated cycles per
transaction it makes, then fails with the state it was in; no wait is in wall-clock time.

It lives in tests/, not in spikeforge.sim: it drives the host client, an application, which the
simulation layer may not import (docs/layers.md). cocotb's runner puts pytest's ``sys.path`` on
the simulator's ``PYTHONPATH``, so it loads as ``tests.tb_board``.
"""

from __future__ import annotations

import random
import struct

import cocotb
from cocotb.task import bridge
from cocotb.triggers import Timer
from cocotbext.uart import UartSink, UartSource

from spikeforge.sim.harness import BudgetExceeded, BusWriteMonitor, ClockReset, tb_params
from spikeforge.sw.link import (
    ID_MAGIC,
    MAX_WORDS,
    Command,
    ErrorCode,
    LinkClient,
    decode_reply,
    encode_block,
    encode_request,
    register_address,
)
from spikeforge.sw.uart_transport import CocotbUartTransport

__all__ = ["TB"]


def _gaps(rng: random.Random, longest_ns: int):
    """Idle time before each byte: none for two bytes in three, else up to ``longest_ns``."""
    while True:
        yield rng.randrange(1, longest_ns) if rng.random() < 1 / 3 else 0


class TB:
    """Clock and reset, the UART models, the host client on them, and the bus write monitor.

    ``idle`` puts random gaps (up to two byte times, from ``seed``) before each byte the host
    client sends."""

    def __init__(self, dut, *, idle: bool = False):
        self.dut = dut
        self.cfg = tb_params()
        clock_ns = self.cfg["clock_ns"]
        self.baud = 1e9 / (clock_ns * self.cfg["divisor"])
        self.byte_ns = 10 * clock_ns * self.cfg["divisor"]
        self.timeout_ns = self.cfg["timeout_cycles"] * clock_ns
        self.clock = ClockReset(dut, clock_ns)
        self.source = UartSource(dut.rx, baud=self.baud)
        self.sink = UartSink(dut.tx, baud=self.baud)
        # One client second = 200 byte times of the simulated line (>> the device timeout).
        scale = 200 * self.byte_ns / 1e9
        gaps = _gaps(random.Random(f"{self.cfg['seed']}/idle"), 2 * self.byte_ns) if idle else None
        self.transport = CocotbUartTransport(self.source, self.sink, time_scale=scale, gaps=gaps)
        self.client = LinkClient(self.transport, timeout=1.0, retries=2)
        # with gaps a transaction's bytes take up to three times as long on the line
        self.op_ns = self.cfg["op_budget_cycles"] * clock_ns * (3 if idle else 1)
        self.doing = "reset"
        self.bus = BusWriteMonitor(dut.bridge, self.clock.clk, "bus")
        self.writes = self.bus.writes

    def state(self) -> str:
        """Where the link is, for a budget that ran out."""
        dut = self.dut
        busy = dut.accelerator.busy.value if hasattr(dut, "accelerator") else "?"
        return (f"during {self.doing}: {self.sink.count()} reply bytes waiting unread, "
                f"{len(self.writes)} bus writes seen, accelerator busy={busy}")

    async def reset(self):
        await self.clock.reset(cycles=5, after=5)

    async def host(self, function, *args, ops: int = 16):
        """Run ``function(client, *args)`` in a thread, as a host program would: at most
        ``ops`` link transactions' budget of simulated time."""
        self.doing = getattr(function, "__name__", "host call")
        cycles = ops * self.op_ns // self.clock.period_ns
        try:
            return await self.clock.within(bridge(function)(self.client, *args), cycles,
                                           f"host call ({ops} transactions)", self.state)
        except BudgetExceeded as exc:
            raise AssertionError(str(exc)) from exc

    async def send_raw(self, data: bytes):
        await self.source.write(data)
        await self.source.wait()

    async def raw_reply(self):
        """One reply frame read straight off the line (for fault injection)."""
        data = bytearray()
        limit = self.timeout_ns + 60 * self.byte_ns
        while True:
            await self.sink.wait(timeout=int(limit), timeout_unit="ns")
            if self.sink.empty():
                raise AssertionError(f"no reply; got {bytes(data).hex()}")
            data += self.sink.read_nowait()
            if len(data) >= 5 and len(data) >= 7 + struct.unpack(">H", data[3:5])[0]:
                return decode_reply(bytes(data))

    async def quiet(self):
        """Wait until the line has been idle longer than the device's timeout."""
        await Timer(int(self.timeout_ns + 4 * self.byte_ns), unit="ns")


def _classify_all(client, images):
    return [client.classify(image) for image in images]


@cocotb.test()
@cocotb.parametrize(idle=[False, True])
async def test_classify_matches_model(dut, idle):
    """The real host client classifies every test image through UART, bridge and accelerator."""
    tb = TB(dut, idle=idle)
    await tb.reset()
    assert await tb.host(lambda c: c.identify()) == ID_MAGIC
    info = await tb.host(lambda c: c.info())
    assert (info.n_inputs, info.n_outputs) == (tb.cfg["n_inputs"], tb.cfg["n_outputs"])
    for layer, chunks in tb.cfg["weight_chunks"].items():
        await tb.host(lambda c, k=int(layer), w=chunks: c.load_weights(k, w))
    results = await tb.host(_classify_all, tb.cfg["images"], ops=2 * len(tb.cfg["images"]) + 4)
    expected = [(scores, best) for scores, best in tb.cfg["expected"]]
    assert results == expected
    counters = await tb.host(lambda c: c.read_counters())
    assert counters.cycles > 0 and counters.status == 0


def _bad_frames(cfg):
    address, value = cfg["threshold_address"], 0x1234
    good = encode_request(Command.WRITE, struct.pack(">HI", address, value))
    frames = []
    for bit in (0, 9, 17, 26, 40, 60, len(good) * 8 - 1):  # SYNC, cmd, len, payload, CRC
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        frames.append((f"bit {bit} flipped", bytes(flipped), None))
    frames += [
        ("truncated", good[:6], ErrorCode.TIMEOUT),
        ("wrong length", good[:2] + b"\x00\x05" + good[4:9] + good[10:], ErrorCode.LENGTH),
        ("length too long", good[:2] + b"\xff\xff" + good[4:], ErrorCode.LENGTH),
        ("unknown command", encode_request(0x66, b""), ErrorCode.COMMAND),
        ("garbage", bytes([0x00, 0xFF, 0x13, 0x5A, 0x37]), ErrorCode.SYNC),
        ("bad CRC", good[:-2] + bytes([good[-2] ^ 0xFF, good[-1]]), ErrorCode.CRC),
    ]
    # WRITE_BLOCK: none of these may write a word.
    rng = random.Random(cfg["seed"])
    words = [rng.randrange(1 << 32) for _ in range(12)]
    block = encode_block(address, words)
    good = encode_request(Command.WRITE_BLOCK, block)
    bit = rng.randrange(6 * 8, (len(good) - 2) * 8)  # in the words
    flipped = bytearray(good)
    flipped[bit // 8] ^= 1 << (bit % 8)
    frames += [
        (f"block: bit {bit} flipped (seed {cfg['seed']})", bytes(flipped), ErrorCode.CRC),
        ("block: len not 2 + 4 * count", encode_request(Command.WRITE_BLOCK, block[:-2]),
         ErrorCode.LENGTH),
        ("block: count 0", encode_request(Command.WRITE_BLOCK, block[:2]), ErrorCode.LENGTH),
        (f"block: count {MAX_WORDS + 1}", encode_request(
            Command.WRITE_BLOCK, block[:2] + bytes(4 * (MAX_WORDS + 1))), ErrorCode.LENGTH),
        ("block: truncated", good[:len(good) // 2], ErrorCode.TIMEOUT),
    ]
    return frames


@cocotb.test()
async def test_fault_injection(dut):
    """Every bad frame gets an error reply, none changes state, the next good frame works."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    address = cfg["threshold_address"]
    image, (scores, best) = cfg["images"][0], cfg["expected"][0]
    block = [0x600D_F00D, 0xFFFF_FFFF, cfg["threshold_reset"]]
    for name, frame, code in _bad_frames(cfg):
        tb.writes.clear()
        await tb.send_raw(frame)
        reply = await tb.raw_reply()
        assert reply.code != ErrorCode.OK, f"{name}: accepted"
        if code is not None:
            assert reply.code == code, f"{name}: error {reply.code}, expected {code}"
        await tb.quiet()
        assert tb.sink.empty(), f"{name}: more than one reply"
        assert tb.writes == [], f"{name}: register writes {tb.writes}"
        # State intact, link alive: the very next good frames are answered correctly.
        assert await tb.host(lambda c: c.read_register(address)) == cfg["threshold_reset"], name
        assert await tb.host(lambda c: c.classify(image)) == (scores, best), name
        await tb.host(lambda c: c.write_block(address, block))
        assert tb.writes == [(address, word) for word in block], name

    # A corrupted RUN frame never reaches the accelerator: its counters still describe the last
    # good image.
    before = await tb.host(lambda c: c.read_counters())
    other = [(p + 1) % (1 << (8 if cfg["pixel_bytes"] == 1 else 16)) for p in image]
    bad_run = bytearray(encode_request(Command.RUN, bytes(other) if cfg["pixel_bytes"] == 1
                                       else struct.pack(f">{len(other)}H", *other)))
    bad_run[6] ^= 0x10
    await tb.send_raw(bytes(bad_run))
    assert (await tb.raw_reply()).code == ErrorCode.CRC
    await tb.quiet()
    assert await tb.host(lambda c: c.read_counters()) == before

    # Garbage right before a good frame, with no pause: the client sees the error and resends.
    await tb.source.write(b"\x11\x22")
    assert await tb.host(lambda c: c.read_register(address)) == cfg["threshold_reset"]
    await tb.quiet()
    tb.sink.clear()

    # The host dies half way through a RUN frame: the device times out and says so.
    run = encode_request(Command.RUN, bytes(image) if cfg["pixel_bytes"] == 1
                         else struct.pack(f">{len(image)}H", *image))
    await tb.send_raw(run[: len(run) // 2])
    assert (await tb.raw_reply()).code == ErrorCode.TIMEOUT
    assert await tb.host(lambda c: c.classify(image)) == (scores, best)

    # The board is reset in the middle of a frame: it comes back answering good frames.
    await tb.send_raw(run[: len(run) // 2])
    await tb.reset()
    await tb.quiet()
    tb.sink.clear()
    assert await tb.host(lambda c: c.classify(image)) == (scores, best)
    status = await tb.host(lambda c: c.read_register(register_address("STATUS")))
    assert status == 0


@cocotb.test()
@cocotb.parametrize(idle=[False, True])
async def test_thresholds_over_the_link(dut, idle):
    """Thresholds and leak shifts are written and read back through the link."""
    tb = TB(dut, idle=idle)
    await tb.reset()
    address = tb.cfg["threshold_address"]

    def program(client):
        client.write_register(address, 77)
        client.write_leak_shift(0, 1)
        return client.read_register(address), client.read_leak_shift(0)

    assert await tb.host(program) == (77, 1)


@cocotb.test()
@cocotb.parametrize(idle=[False, True])
async def test_block_write_over_the_link(dut, idle):
    """write_block's words reach the register bus exactly, in order, all at the one address."""
    tb = TB(dut, idle=idle)
    await tb.reset()
    cfg = tb.cfg
    address, seed = cfg["threshold_address"], cfg["seed"]
    rng = random.Random(seed)
    # Two frames (MAX_WORDS, then the rest); the last word restores the register.
    words = [rng.randrange(1 << 32) for _ in range(MAX_WORDS + 20)] + [cfg["threshold_reset"]]
    await tb.host(lambda c: c.write_block(address, words))
    assert tb.writes == [(address, word) for word in words], f"seed {seed}"
    assert await tb.host(lambda c: c.read_register(address)) == cfg["threshold_reset"]
    image, (scores, best) = cfg["images"][0], cfg["expected"][0]
    assert await tb.host(lambda c: c.classify(image)) == (scores, best)

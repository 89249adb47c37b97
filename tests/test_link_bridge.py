# amaranth: UnusedElaboratable=no
"""The gateware frame decoder/encoder (hw/link.py) and the UART (hw/uart.py), in the Amaranth
simulator, against the mock accelerator and the host-side protocol code of sw/link.py."""

import os
import random
import struct

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from spikeforge.hw.link import LinkBridge
from spikeforge.hw.uart import UARTRx, UARTTx, uart_divisor
from spikeforge.sim.mock_accelerator import MockRegisters, mock_classify
from spikeforge.sw.interface import SYNC_REQUEST, encode_stream_image, info_words
from spikeforge.sw.link import (
    ID_MAGIC,
    MAX_WORDS,
    Command,
    ErrorCode,
    decode_reply,
    encode_block,
    encode_request,
    register_address,
)
from tests.link_harness import BridgeBench, split_replies

THETA00 = register_address("THETA", 0, 0)
V_INIT0 = register_address("V_INIT", 0)


def read(addr, count=1):
    return encode_request(Command.READ, struct.pack(">HB", addr, count))


def write(addr, value):
    return encode_request(Command.WRITE, struct.pack(">HI", addr, value & 0xFFFFFFFF))


def run(pixels):
    return encode_request(Command.RUN, bytes(pixels))


def write_block(addr, words):
    return encode_request(Command.WRITE_BLOCK, encode_block(addr, words))


def signed32(value):
    return value - (1 << 32) if value >> 31 else value


def replies(bench, steps):
    return [decode_reply(f) for f in split_replies(bench.run(steps))]


def test_info_read_write():
    bench = BridgeBench()
    names = ("ID", "STATUS", "CYCLES", "N_LAYERS")
    r = replies(bench, [encode_request(Command.INFO),
                        *(read(register_address(name)) for name in names),
                        write(THETA00, 1234), read(THETA00)])
    assert [x.code for x in r] == [0] * 7
    assert r[0].words() == list(info_words(pixel_bits=8, n_inputs=8, n_outputs=3))
    assert [x.words() for x in r[1:5]] == [[ID_MAGIC], [0], [0], [2]]
    assert r[5].payload == b"" and r[5].command == Command.WRITE
    assert r[6].words() == [1234]


def test_run_matches_model():
    bench = BridgeBench(n_inputs=8, n_outputs=3)
    images = [[1, 2, 3, 4, 5, 6, 7, 8], [200, 0, 0, 9, 0, 0, 255, 1]]
    r = replies(bench, [run(images[0]), write(V_INIT0, -7), run(images[1])])
    regs = MockRegisters()
    expected0 = mock_classify(images[0], 3, regs)
    regs.v_init[0] = -7
    expected1 = mock_classify(images[1], 3, regs)
    for reply, (scores, best) in zip((r[0], r[2]), (expected0, expected1), strict=True):
        values = [v - (1 << 32) if v >> 31 else v for v in reply.words()]
        assert (values[:-1], values[-1]) == (scores, best)


def test_two_byte_pixels_and_bad_pixel():
    bench = BridgeBench(n_inputs=4, n_outputs=2, pixel_bits=10)
    good = struct.pack(">4H", 1023, 5, 0, 1)
    bad = struct.pack(">4H", 1024, 5, 0, 1)
    r = replies(bench, [encode_request(Command.RUN, bad), encode_request(Command.RUN, good),
                        read(register_address("STATUS"))])
    assert r[0].code == ErrorCode.PIXEL
    assert r[1].code == 0 and r[1].words()[:2] == [1023, 6]
    assert r[2].words() == [0]  # the bad image never reached the accelerator


@pytest.mark.parametrize("pixel_bits", [8, 10])  # buffer slots of one byte and of two
def test_write_block_reaches_the_bus_in_order(pixel_bits):
    seed = int(os.environ["SPIKEFORGE_SEED"])
    rng = random.Random(seed)
    blocks = [(THETA00, [rng.randrange(1 << 32) for _ in range(MAX_WORDS)]),
              (0xA55A, [rng.randrange(1 << 32)]),
              (V_INIT0, [rng.randrange(1 << 32) for _ in range(rng.randrange(2, MAX_WORDS))])]
    image = [rng.randrange(1 << pixel_bits) for _ in range(4)]
    bench = BridgeBench(n_inputs=4, n_outputs=2, pixel_bits=pixel_bits)
    r = replies(bench, [*(write_block(a, w) for a, w in blocks), read(THETA00),
                        encode_request(Command.RUN, struct.pack(">4H" if pixel_bits > 8 else
                                                                ">4B", *image))])
    assert [(x.command, x.code, x.payload) for x in r[:3]] == [(Command.WRITE_BLOCK, 0, b"")] * 3
    assert bench.writes == [(a, x) for a, w in blocks for x in w], f"seed {seed}"
    assert r[3].words() == [blocks[0][1][-1]]
    # The buffer that held the blocks holds the next image as before.
    regs = MockRegisters()
    regs.v_init[0] = signed32(blocks[2][1][-1])
    scores, best = mock_classify(image, 2, regs)
    assert [signed32(v) for v in r[4].words()] == [*scores, best], f"seed {seed}"


def stream(pixels, pixel_bits=4):
    return encode_request(Command.STREAM, encode_stream_image(pixels, pixel_bits))


FLUSH = encode_request(Command.STREAM)


def test_stream_replies_with_the_previous_image():
    """Each STREAM reply carries the image before it; the flush the last; meanwhile the
    accelerator is busy, so RUN and WRITE are refused and change nothing."""
    rng = random.Random(int(os.environ["SPIKEFORGE_SEED"]))
    # zero runs longer than a token holds, a lone zero, all zeros, no zeros
    images = [[rng.choice([0, 0, 0, rng.randrange(16)]) for _ in range(200)],
              [0] * 200, [15] * 200, [0, 3] * 100, [0] * 129 + [7] * 71]
    bench = BridgeBench(n_inputs=200, n_outputs=3, pixel_bits=4)
    r = replies(bench, [*(stream(image) for image in images),
                        run(images[0]), write(V_INIT0, -7), FLUSH, FLUSH])
    assert [x.code for x in r] == [0] * 5 + [ErrorCode.BUSY] * 2 + [0, 0]
    assert r[0].payload == b"" and r[-1].payload == b""
    regs = MockRegisters()
    for reply, image in zip([*r[1:5], r[7]], images, strict=True):
        scores, best = mock_classify(image, 3, regs)
        assert [signed32(v) for v in reply.words()] == [*scores, best]
    assert bench.writes == []


@pytest.mark.parametrize("fault", ["literal", "short", "long", "wraps", "unsupported"])
def test_bad_stream_image_is_refused(fault):
    pixel_bits = 8 if fault == "unsupported" else 4
    bench = BridgeBench(n_inputs=8, n_outputs=2, pixel_bits=pixel_bits)
    image = [0, 1, 2, 0, 0, 0, 9, 3]
    tokens = {"literal": bytes([0x82, 16, 0x84]), "short": bytes([0x86]),
              "long": bytes([0x87, 1]), "unsupported": bytes([0x87, 1]),
              # 264 pixels: 8 modulo 256, so a pixel count that wrapped would pass
              "wraps": bytes([0xFF, 0xFF, 0x87])}[fault]
    code = {"literal": ErrorCode.PIXEL, "short": ErrorCode.ARGUMENT,
            "long": ErrorCode.ARGUMENT, "wraps": ErrorCode.ARGUMENT,
            "unsupported": ErrorCode.COMMAND}[fault]
    r = replies(bench, [encode_request(Command.STREAM, tokens), run(image),
                        read(register_address("STATUS"))])
    assert r[0].code == code and r[0].payload == b""
    scores, best = mock_classify(image, 2, MockRegisters())
    assert [signed32(v) for v in r[1].words()] == [*scores, best]  # nothing went in
    assert r[2].words() == [0]


BLOCK = [0x0102_0304 * k for k in range(1, 9)]


@pytest.mark.parametrize("fault", ["crc", "length", "command", "truncated", "garbage", "sync",
                                   "count", "busy", "block_crc", "block_length", "block_count_0",
                                   "block_count_65", "block_truncated", "block_busy"])
def test_bad_frame_is_refused_and_state_kept(fault):
    bench = BridgeBench()
    frame = write(THETA00, 999)
    block = write_block(THETA00, [999] * 9)
    bad = {
        "crc": frame[:-1] + bytes([frame[-1] ^ 0x04]),
        "length": frame[:3] + bytes([frame[3] + 1]) + frame[4:],
        "command": bytes([SYNC_REQUEST, 0x7E]) + frame[2:],
        "truncated": frame[:5],
        "garbage": b"\x00\x13\x37\xff",
        "sync": bytes([SYNC_REQUEST ^ 1]) + frame[1:],
        "count": read(THETA00, 0),
        "busy": [("busy", 1), frame, ("busy", 0)],
        "block_crc": block[:17] + bytes([block[17] ^ 0x20]) + block[18:],
        "block_length": encode_request(Command.WRITE_BLOCK, encode_block(THETA00, [9] * 2)[:-1]),
        "block_count_0": encode_request(Command.WRITE_BLOCK, struct.pack(">H", THETA00)),
        "block_count_65": encode_request(Command.WRITE_BLOCK,
                                         struct.pack(">H65I", THETA00, *range(65))),
        "block_truncated": block[:21],
        "block_busy": [("busy", 1), block, ("busy", 0)],
    }[fault]
    code = {"crc": ErrorCode.CRC, "length": ErrorCode.LENGTH, "command": ErrorCode.COMMAND,
            "truncated": ErrorCode.TIMEOUT, "garbage": ErrorCode.SYNC, "sync": ErrorCode.SYNC,
            "count": ErrorCode.ARGUMENT, "busy": ErrorCode.BUSY}
    code.update({f"block_{name}": code[name] for name in ("crc", "truncated", "busy")})
    code.update({"block_length": ErrorCode.LENGTH, "block_count_0": ErrorCode.LENGTH,
                 "block_count_65": ErrorCode.LENGTH})
    steps = bad if isinstance(bad, list) else [bad]
    r = replies(bench, [*steps, read(THETA00), write_block(THETA00, BLOCK), read(THETA00)])
    assert len(r) == 4
    assert r[0].code == code[fault] and r[0].payload == b""
    assert r[1].code == 0 and r[1].words() == [16]  # threshold untouched, link alive
    assert r[2].code == 0 and r[3].words() == [BLOCK[-1]]  # the next block goes through
    assert bench.writes == [(THETA00, w) for w in BLOCK]  # and nothing but it reached the bus


def test_bytes_split_by_gaps_shorter_than_timeout_are_one_frame():
    bench = BridgeBench(timeout_cycles=60)
    r = replies(bench, [(read(register_address("ID")), 50)])
    assert r[0].words() == [ID_MAGIC]


# ---- UART ------------------------------------------------------------------------------------

def test_uart_divisor_checks():
    assert uart_divisor(12e6, 115200) == 104
    with pytest.raises(ValueError, match="too slow"):
        uart_divisor(1e6, 1_000_000)
    with pytest.raises(ValueError, match="off at"):
        uart_divisor(1000, 220)


@pytest.mark.parametrize("divisor", [4, 9])
def test_uart_loopback(divisor):
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    sent = [0x00, 0xFF, 0xA5, 0x5A, 0x01, 0x80, 0x3C]
    got = []
    sim = Simulator(m)
    sim.add_clock(1e-8)

    async def sink(ctx):
        ctx.set(rx.data.ready, 1)
        async for _, _, valid, payload, ferr in ctx.tick().sample(
                rx.data.valid, rx.data.payload, rx.frame_error):
            assert not ferr
            if valid:
                got.append(payload)

    async def source(ctx):
        for value in sent:
            ctx.set(tx.data.payload, value)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
            ctx.set(tx.data.valid, 0)
        await ctx.tick().repeat(divisor * 12)

    sim.add_process(sink)
    sim.add_testbench(source)
    sim.run()
    assert got == sent


def test_uart_rx_ignores_glitch_and_flags_framing_error():
    divisor = 8
    rx = UARTRx(divisor)
    events = []
    sim = Simulator(rx)
    sim.add_clock(1e-8)

    async def watch(ctx):
        ctx.set(rx.data.ready, 1)
        async for _, _, valid, payload, ferr in ctx.tick().sample(
                rx.data.valid, rx.data.payload, rx.frame_error):
            if valid:
                events.append(payload)
            if ferr:
                events.append("ferr")

    async def line(ctx):
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(20)
        ctx.set(rx.rx, 0)  # a 2-cycle glitch: not a start bit
        await ctx.tick().repeat(2)
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(40)
        for bit in [0] + [0] * 8 + [0] * 3:  # a break: 0x00 with a low stop bit
            ctx.set(rx.rx, bit)
            await ctx.tick().repeat(divisor)
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(40)
        for bit in [0, 1, 0, 1, 0, 0, 1, 0, 1, 1]:  # 0xA5
            ctx.set(rx.rx, bit)
            await ctx.tick().repeat(divisor)
        await ctx.tick().repeat(20)

    sim.add_process(watch)
    sim.add_testbench(line)
    sim.run()
    assert events == ["ferr", 0xA5]


def test_bridge_parameter_errors():
    with pytest.raises(ValueError, match=r"pixel_bits must be an integer in 1\.\.16, not 17"):
        LinkBridge(n_inputs=4, n_outputs=2, pixel_bits=17, timeout_cycles=10)
    with pytest.raises(ValueError, match="does not fit a 16-bit frame length"):
        LinkBridge(n_inputs=40000, n_outputs=2, pixel_bits=12, timeout_cycles=10)

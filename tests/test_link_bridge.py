# amaranth: UnusedElaboratable=no
"""The gateware frame decoder/encoder (hw/link.py) and the UART (hw/uart.py), in the Amaranth
simulator, against the mock accelerator and the host-side protocol code of sw/link.py."""

import struct

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from hw.link import LinkBridge
from hw.uart import UARTRx, UARTTx, uart_divisor
from sim.mock_accelerator import MockRegisters, mock_classify
from sw.link import ID_MAGIC, Command, ErrorCode, decode_reply, encode_request, register_address
from tests.link_harness import BridgeBench, split_replies

THETA00 = register_address("THETA", 0, 0)
V_INIT0 = register_address("V_INIT", 0)


def read(addr, count=1):
    return encode_request(Command.READ, struct.pack(">HB", addr, count))


def write(addr, value):
    return encode_request(Command.WRITE, struct.pack(">HI", addr, value & 0xFFFFFFFF))


def run(pixels):
    return encode_request(Command.RUN, bytes(pixels))


def replies(bench, steps):
    return [decode_reply(f) for f in split_replies(bench.run(steps))]


def test_info_read_write():
    bench = BridgeBench()
    r = replies(bench, [encode_request(Command.INFO), read(0, 4), write(THETA00, 1234),
                        read(THETA00)])
    assert [x.code for x in r] == [0, 0, 0, 0]
    assert r[0].words() == [(1 << 24) | (8 << 16) | 8, (3 << 16) | 64]
    assert r[1].words() == [ID_MAGIC, 0, 0, 2]
    assert r[2].payload == b"" and r[2].command == Command.WRITE
    assert r[3].words() == [1234]


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


@pytest.mark.parametrize("fault", ["crc", "length", "command", "truncated", "garbage", "sync",
                                   "count"])
def test_bad_frame_is_refused_and_state_kept(fault):
    bench = BridgeBench()
    frame = write(THETA00, 999)
    bad = {
        "crc": frame[:-1] + bytes([frame[-1] ^ 0x04]),
        "length": frame[:3] + bytes([frame[3] + 1]) + frame[4:],
        "command": bytes([0xA5, 0x7E]) + frame[2:],
        "truncated": frame[:5],
        "garbage": b"\x00\x13\x37\xff",
        "sync": bytes([0xA4]) + frame[1:],
        "count": read(THETA00, 0),
    }[fault]
    code = {"crc": ErrorCode.CRC, "length": ErrorCode.LENGTH, "command": ErrorCode.COMMAND,
            "truncated": ErrorCode.TIMEOUT, "garbage": ErrorCode.SYNC, "sync": ErrorCode.SYNC,
            "count": ErrorCode.ARGUMENT}[fault]
    r = replies(bench, [bad, read(THETA00)])
    assert len(r) == 2
    assert r[0].code == code and r[0].payload == b""
    assert r[1].code == 0 and r[1].words() == [16]  # threshold untouched, link alive


def test_bytes_split_by_gaps_shorter_than_timeout_are_one_frame():
    bench = BridgeBench(timeout_cycles=60)
    r = replies(bench, [(read(0), 50)])
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

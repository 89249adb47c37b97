"""The host link at the FTDI's speed: 3 Mbaud on both boards (issue 12, item 7).

One default, :data:`spikeforge.sw.interface.BAUD`, read by the board tops and the host client;
the divisor and rate error at each board's clock; the receiver's sampling window
(:func:`spikeforge.hw.uart.rx_tolerance`) checked in the Amaranth simulator at its edges; and the
whole link (UART, bridge, mock accelerator) on the RTL simulator at each board's clock and
divisor with a host at exactly 3 Mbaud, and 2.5 % off either way, every reply equal to the
model's (sim/tb_link_uart.py). The line's images/s ceiling is the spec's arithmetic.
"""

from __future__ import annotations

import inspect
import math
import os

import pytest
from amaranth.sim import Simulator

from spikeforge.hw.boards import BOARDS, BoardTop, LinkTop, load_board_spec
from spikeforge.hw.uart import UARTRx, rx_tolerance, uart_divisor
from spikeforge.sim.mock_accelerator import MockAccelerator
from spikeforge.sim.runner import build, default_simulator, run_tests, simulator_missing
from spikeforge.sw.interface import BAUD, link_images_per_second, run_frame_bytes
from spikeforge.sw.link import SerialTransport

#: The boards' clocks (constraints/<board>.toml) and the divisors they give at BAUD.
CLOCKS = {"icebreaker": (30e6, 10), "ulx3s": (100e6, 33)}


def test_one_default_rate():
    assert BAUD == 3_000_000
    for board in BOARDS:
        assert load_board_spec(board).baud == BAUD
    assert inspect.signature(SerialTransport.open).parameters["baud"].default == BAUD


@pytest.mark.parametrize("board", BOARDS)
def test_board_divisor_and_rate_error(board):
    clock, divisor = CLOCKS[board]
    top = BoardTop(board, lambda: MockAccelerator())
    assert (top.clock_hz, top.divisor) == (clock, divisor)
    error = clock / divisor / BAUD - 1
    # iCEBreaker: 30 MHz / 10 = 3.000 Mbaud exactly; ULX3S: 100 MHz / 33 = 3.0303 Mbaud, +1.01 %
    assert error == pytest.approx({"icebreaker": 0.0, "ulx3s": 0.010101}[board], abs=1e-6)
    slowest, fastest = rx_tolerance(divisor, clock)
    # a host 4 % off either way is still read (the FTDIs make 3 Mbaud exactly)
    assert slowest < BAUD * 0.96 and fastest > BAUD * 1.04


def test_rx_tolerance_values():
    assert rx_tolerance(10, 30e6) == pytest.approx((30e6 / (95 / 9), 30e6 / 9.6))
    assert rx_tolerance(33, 100e6) == pytest.approx((100e6 / (313 / 9), 100e6 / 31.4))
    with pytest.raises(ValueError, match="UART divisor must be an integer >= 4"):
        rx_tolerance(3, 1e6)
    assert uart_divisor(100e6, BAUD) == 33


def _received_at(divisor: int, bit_cycles: float, phase: float) -> bool:
    """Whether UARTRx reads four bytes sent back to back with a bit time of ``bit_cycles``
    clock cycles, the first start edge ``phase`` of a cycle after a clock edge."""
    data = (0x55, 0xAA, 0x0F, 0xF0)  # every bit sampled a bit early or late shows
    bits = [level for b in data for level in (0, *((b >> i) & 1 for i in range(8)), 1)]
    rx = UARTRx(divisor)
    got, errors = [], []
    sim = Simulator(rx)
    sim.add_clock(1e-8)

    async def line(ctx):
        ctx.set(rx.data.ready, 1)
        start = 20 + phase
        for cycle in range(int(start + len(bits) * bit_cycles) + 3 * divisor):
            k = math.floor((cycle - start) / bit_cycles)  # the bit the next edge samples
            ctx.set(rx.rx, bits[k] if 0 <= k < len(bits) else 1)
            await ctx.tick()
            if ctx.get(rx.data.valid):
                got.append(ctx.get(rx.data.payload))
            if ctx.get(rx.frame_error):
                errors.append(cycle)

    sim.add_testbench(line)
    sim.run()
    return got == list(data) and not errors


@pytest.mark.parametrize("board", BOARDS)
def test_rx_tolerance_holds_at_its_edges(board):
    """Just inside rx_tolerance's window every line phase is read; just outside some is not."""
    clock, divisor = CLOCKS[board]
    slowest, fastest = rx_tolerance(divisor, clock)
    phases = [p / 8 for p in range(8)]
    for baud, inside in ((slowest * 1.005, True), (fastest * 0.995, True),
                         (slowest * 0.99, False), (fastest * 1.01, False)):
        read = [_received_at(divisor, clock / baud, p) for p in phases]
        assert all(read) if inside else not all(read), (board, baud, read)


def test_link_ceiling_at_the_default_rate():
    """A 784-pixel 8-bit RUN is 790 bytes out and 51 back (10 scores and the class): at 3 Mbaud
    the line carries at most 356.7 images a second (13.7 at the old 115200)."""
    assert run_frame_bytes(n_inputs=784, pixel_bits=8, n_outputs=10) == (790, 51)
    assert link_images_per_second(n_inputs=784, pixel_bits=8, n_outputs=10) == \
        pytest.approx(3e6 / 8410)
    assert link_images_per_second(n_inputs=784, pixel_bits=8, n_outputs=10, baud=115200) == \
        pytest.approx(13.698, abs=1e-3)


SIM = default_simulator()


@pytest.mark.parametrize("board", BOARDS)
def test_link_at_3_mbaud(board):
    """The whole link at the board's clock and divisor: a host at exactly BAUD and at
    BAUD +- 2.5 % gets every reply right (INFO, READs and WRITE_BLOCKs of 64 words, RUNs, ...);
    at +- 10 % it does not (the check can fail)."""
    if simulator_missing(SIM):
        pytest.skip(f"{SIM}: {simulator_missing(SIM)}")
    clock, divisor = CLOCKS[board]
    accelerator = MockAccelerator(n_inputs=16, n_outputs=4, pixel_bits=8)
    timeout_cycles = 8 * 10 * divisor  # 8 byte times: the boards' 10 ms would be 3,000
    built = build(LinkTop(accelerator, divisor=divisor, timeout_cycles=timeout_cycles),
                  f"link_top_{divisor}", sim=SIM)
    rates = [BAUD, BAUD * 0.975, BAUD * 1.025, BAUD * 0.9, BAUD * 1.1]
    report = run_tests(built, "spikeforge.sim.tb_link_uart", testcase="line_rates", params={
        "clock_ps": 2 * round(5e11 / clock), "timeout_cycles": timeout_cycles, "n_inputs": 16,
        "n_outputs": 4, "pixel_bits": 8, "rates": rates, "frames": 12,
        "seed": int(os.environ["SPIKEFORGE_SEED"])})
    results = report["tests"]["line_rates"]["results"]
    ok = {r["baud"]: r["ok"] for r in results}
    assert ok == {BAUD: True, BAUD * 0.975: True, BAUD * 1.025: True, BAUD * 0.9: False,
                  BAUD * 1.1: False}, results

"""A small 8N1 UART for the host link (receiver and transmitter).

Both halves run in the ``sync`` domain and count ``divisor`` clock cycles per bit
(``divisor = round(clk_freq / baud)``, :func:`uart_divisor`; the transmitter's rate is
``clk_freq / divisor`` exactly). The receiver synchronises the line through two flip-flops,
qualifies a start bit at its centre (a glitch shorter than half a bit is ignored) and samples
bit ``i`` (0 the start bit, 9 the stop bit) ``divisor // 2 + i * divisor`` cycles after the start
edge, plus up to one cycle for where the edge falls in a clock cycle: within a cycle of the centre
of its own bit time. :func:`rx_tolerance` gives the line rates it therefore reads correctly.
"""


from amaranth import C, Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "uart_divisor", "rx_tolerance"]


def uart_divisor(clk_freq: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_freq``; refuses a rate error above 2 %."""
    if baud <= 0:
        raise ValueError(f"Baud rate must be positive, not {baud!r}")
    divisor = round(clk_freq / baud)
    if divisor < 4:
        raise ValueError(f"Clock {clk_freq:.0f} Hz is too slow for {baud} baud "
                         f"(divisor {divisor} < 4)")
    error = abs(clk_freq / divisor - baud) / baud
    if error > 0.02:
        raise ValueError(f"Baud rate {baud} is {error:.1%} off at {clk_freq:.0f} Hz (limit 2 %)")
    return divisor


def rx_tolerance(divisor: int, clk_freq: float) -> tuple[float, float]:
    """``(slowest, fastest)``: the line rates in baud, exclusive of the fastest, whose every bit
    :class:`UARTRx` at ``divisor`` samples inside the bit, at ``clk_freq`` and whatever the
    line's phase to the clock.

    Bit ``i`` is sampled ``s = divisor // 2 + i * divisor + e`` cycles after the start edge,
    ``0 < e <= 1``; with the line's bit time ``T`` cycles it must hold that
    ``i * T <= s < (i + 1) * T`` for ``i = 0 .. 9``, and the stop bit (``i = 9``) bounds ``T`` on
    both sides. Tolerance of a byte, not of a frame: every start bit resynchronises the receiver.
    """
    _check_divisor(None, divisor)
    half = divisor // 2
    slowest_t = (half + 9 * divisor) / 9            # the stop bit sampled at its very start
    fastest_t = (half + 9 * divisor + 1) / 10       # ... or at its very end
    return clk_freq / slowest_t, clk_freq / fastest_t


def _check_divisor(component, divisor):
    if not isinstance(divisor, int) or divisor < 4:
        if component is not None:
            component._MustUse__silence = True  # refused: not an unused elaboratable
        raise ValueError(f"UART divisor must be an integer >= 4, not {divisor!r}")


class UARTRx(wiring.Component):
    """UART receiver, 8 data bits, no parity, 1 stop bit, LSB first.

    Members
    -------
    rx : In(1)
        The serial line (idle high). It may be asynchronous to ``sync``.
    data : Out(stream.Signature(8))
        Received bytes. A byte not taken before the next one completes is overwritten and
        ``overrun`` pulses.
    frame_error : Out(1)
        Pulses for one cycle when a stop bit reads 0 (the byte is dropped; the receiver waits for
        the line to go idle again before it looks for the next start bit).
    overrun : Out(1)
        Pulses for one cycle when a byte is lost because ``data`` was not taken in time.
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor: int):
        _check_divisor(self, divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        d = self._divisor

        sync_ff = Signal(2, init=0b11)
        m.d.sync += sync_ff.eq(Cat(self.rx, sync_ff[0]))
        line = sync_ff[1]

        timer = Signal(range(d + 1))
        bit = Signal(range(9))
        shreg = Signal(8)

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        m.d.sync += [self.frame_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.next = "IDLE"  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), shreg.eq(Cat(shreg[1:], line)), bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                    m.d.sync += self.overrun.eq(self.data.valid & ~self.data.ready)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.frame_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """UART transmitter, 8N1, LSB first.

    Members
    -------
    data : In(stream.Signature(8))
        Bytes to send; one is taken whenever the transmitter is idle.
    tx : Out(1)
        The serial line (idle high).
    busy : Out(1)
        A byte is being shifted out.
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, divisor: int):
        _check_divisor(self, divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        timer = Signal(range(d))
        shreg = Signal(10, init=0x3FF)
        count = Signal(range(11))

        m.d.comb += [self.tx.eq(shreg[0]), self.busy.eq(count != 0)]
        m.d.comb += self.data.ready.eq(count == 0)
        with m.If(count == 0):
            with m.If(self.data.valid):
                m.d.sync += [
                    shreg.eq(Cat(C(0, 1), self.data.payload, C(1, 1))),
                    count.eq(10),
                    timer.eq(d - 1),
                ]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], C(1, 1))), count.eq(count - 1), timer.eq(d - 1)]
        return m

"""Board tops: the accelerator behind the UART host link, on the iCEBreaker and the ULX3S.

:class:`LinkTop` is the whole design minus pins and clocking (UART rx -> :class:`LinkBridge`
-> accelerator -> UART tx); it is what the cocotb board simulation runs. :class:`BoardTop`
puts a :class:`LinkTop` on a board: the board oscillator feeds a PLL (settings computed here,
targets in ``constraints/<board>.toml``), the PLL lock drives the reset, the UART pins and two
LEDs (busy, link error) come from the amaranth-boards platform.

Every top takes the accelerator as a *factory* (a callable returning a fresh component with the
members of docs/host-interface.md and ``n_inputs``/``n_outputs``/``pixel_bits`` attributes), so
swapping the mock for ``NetworkAccelerator`` is one argument.
"""


import importlib.resources
import math
from collections.abc import Callable
from dataclasses import dataclass

import tomllib
from amaranth import ClockDomain, Elaboratable, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from spikeforge.hw.link import LinkBridge
from spikeforge.hw.uart import UARTRx, UARTTx, uart_divisor
from spikeforge.sw.interface import BAUD

__all__ = [
    "LinkTop",
    "BoardTop",
    "BoardSpec",
    "load_board_spec",
    "ice40_pll_config",
    "ecp5_pll_config",
    "make_platform",
    "BOARDS",
]

#: The board constraint files, package data of :mod:`spikeforge.constraints`.
CONSTRAINTS = importlib.resources.files("spikeforge.constraints")
BOARDS = ("icebreaker", "ulx3s")


def _accelerator_param(accelerator, name, value):
    """``n_inputs``/``n_outputs``/``pixel_bits`` of an accelerator: an attribute of that name,
    else an entry of its ``parameters`` dict (``NetworkAccelerator``)."""
    if value is not None:
        return value
    found = getattr(accelerator, name, None)
    if found is None:
        found = (getattr(accelerator, "parameters", None) or {}).get(name)
    if found is None:
        raise ValueError(
            f"Accelerator {type(accelerator).__name__} has no attribute {name!r}; pass {name}=")
    return int(found)


class LinkTop(wiring.Component):
    """UART link plus accelerator.

    Members
    -------
    rx : In(1)   serial line from the host (idle high)
    tx : Out(1)  serial line to the host
    busy : Out(1)  an inference is in flight
    error : Out(1)  pulses on every error reply
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    error: Out(1)

    def __init__(self, accelerator, *, divisor: int, timeout_cycles: int,
                 n_inputs: int | None = None, n_outputs: int | None = None,
                 pixel_bits: int | None = None):
        self.accelerator = accelerator
        self.uart_rx = UARTRx(divisor)
        self.uart_tx = UARTTx(divisor)
        self.bridge = LinkBridge(
            n_inputs=_accelerator_param(accelerator, "n_inputs", n_inputs),
            n_outputs=_accelerator_param(accelerator, "n_outputs", n_outputs),
            pixel_bits=_accelerator_param(accelerator, "pixel_bits", pixel_bits),
            timeout_cycles=timeout_cycles,
        )
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = rx = self.uart_rx
        m.submodules.uart_tx = tx = self.uart_tx
        m.submodules.bridge = bridge = self.bridge
        m.submodules.accelerator = acc = self.accelerator
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        wiring.connect(m, rx.data, bridge.rx)
        wiring.connect(m, bridge.tx, tx.data)
        wiring.connect(m, bridge.bus, acc.bus)
        wiring.connect(m, bridge.pixels, acc.pixels)
        wiring.connect(m, acc.results, bridge.results)
        m.d.comb += [bridge.busy.eq(acc.busy), self.busy.eq(acc.busy), self.error.eq(bridge.error)]
        return m


# ---- board description -----------------------------------------------------------------------

@dataclass(frozen=True)
class BoardSpec:
    """What ``constraints/<board>.toml`` says about a board."""

    board: str
    device: str
    family: str  # "ice40" | "ecp5"
    osc_hz: float
    clock_hz: float  # PLL target (the timing requirement)
    baud: int
    timeout_ms: float
    lut_name: str
    resources: dict[str, int]  # what the device has: LUTs/LCs, FFs, EBR, SPRAM, DSP
    ebr_bits: int
    spram_bits: int
    max_port_bits: int  # widest block-RAM read port
    nextpnr_opts: str = ""  # the board's placer and router options, after the seed

    @property
    def required_mhz(self) -> float:
        return self.clock_hz / 1e6


def load_board_spec(board: str, *, clock_hz: float | None = None) -> BoardSpec:
    if board not in BOARDS:
        raise ValueError(f"Unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    with (CONSTRAINTS / f"{board}.toml").open("rb") as f:
        raw = tomllib.load(f)
    return BoardSpec(
        board=board,
        device=raw["device"],
        family=raw["family"],
        osc_hz=float(raw["osc_hz"]),
        clock_hz=float(clock_hz if clock_hz is not None else raw["clock_hz"]),
        baud=int(raw.get("baud", BAUD)),  # the link's rate: the spec's, unless the board says
        timeout_ms=float(raw["timeout_ms"]),
        lut_name=raw["resources"]["lut_name"],
        resources={k: int(v) for k, v in raw["resources"].items() if k != "lut_name"},
        ebr_bits=int(raw["memory"]["ebr_bits"]),
        spram_bits=int(raw["memory"].get("spram_bits", 0)),
        max_port_bits=int(raw["memory"]["max_port_bits"]),
        nextpnr_opts=str(raw.get("nextpnr_opts", "")),
    )


def make_platform(board: str):
    if board == "icebreaker":
        from amaranth_boards.icebreaker import ICEBreakerPlatform

        return ICEBreakerPlatform()
    if board == "ulx3s":
        from amaranth_boards.ulx3s import ULX3S_85F_Platform

        return ULX3S_85F_Platform()
    raise ValueError(f"Unknown board {board!r}; choose one of {', '.join(BOARDS)}")


# ---- PLL settings ----------------------------------------------------------------------------

def ice40_pll_config(f_in: float, f_out: float) -> dict:
    """SB_PLL40 settings (as ``icepll`` computes them) for the achievable frequency nearest
    ``f_out``; refuses targets outside the PLL's 16..275 MHz output range."""
    if not 16e6 <= f_out <= 275e6:
        raise ValueError(f"iCE40 PLL output must be 16..275 MHz, not {f_out / 1e6:g} MHz")
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                f = f_vco / (1 << divq)
                if best is None or abs(f - f_out) < abs(best["f_out"] - f_out):
                    best = {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "f_out": f, "f_pfd": f_pfd}
    if best is None:
        raise ValueError(f"No iCE40 PLL setting makes {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    f_pfd = best.pop("f_pfd")
    best["FILTER_RANGE"] = next(i for i, top in enumerate((17e6, 26e6, 44e6, 66e6, 101e6), 1)
                                if f_pfd < top) if f_pfd < 101e6 else 6
    return best


def ecp5_pll_config(f_in: float, f_out: float) -> dict:
    """EHXPLLL settings (as ``ecppll`` computes them, CLKOP feedback) nearest ``f_out``."""
    if not 3.125e6 <= f_out <= 400e6:
        raise ValueError(f"ECP5 PLL output must be 3.125..400 MHz, not {f_out / 1e6:g} MHz")
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if f_pfd < 3.125e6:
            break
        for clkfb_div in range(1, 81):
            f = f_pfd * clkfb_div
            dividers = [d for d in range(1, 129) if 400e6 <= f * d <= 800e6]
            if not dividers:
                continue
            clkop_div = min(dividers, key=lambda d: abs(f * d - 600e6))  # VCO mid-range
            if best is None or abs(f - f_out) < abs(best["f_out"] - f_out) - 1:
                best = {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div, "CLKOP_DIV": clkop_div,
                        "CLKOP_CPHASE": clkop_div - 1, "f_out": f}
    if best is None:
        raise ValueError(f"No ECP5 PLL setting makes {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    return best


def system_clock_hz(spec: BoardSpec, use_pll: bool = True) -> float:
    """The clock a :class:`BoardTop` of ``spec`` runs at: what its PLL makes of
    ``spec.clock_hz`` (or the oscillator). ``ValueError`` if no PLL setting makes it."""
    if not use_pll or spec.clock_hz == spec.osc_hz:
        return spec.osc_hz
    config = ice40_pll_config if spec.family == "ice40" else ecp5_pll_config
    return config(spec.osc_hz, spec.clock_hz)["f_out"]


def clock_below(board: str, mhz: float, *, step_mhz: float = 0.5) -> float:
    """The highest clock at most ``mhz``, in ``step_mhz`` steps, that the board's PLL makes
    and at which the UART's divisor stays within its rate limit (3 Mbaud needs a clock near a
    multiple of 3 MHz below ~75 MHz): what a rebuild after missed timing asks for."""
    candidate = math.floor(mhz / step_mhz) * step_mhz
    while candidate >= 1:
        spec = load_board_spec(board, clock_hz=candidate * 1e6)
        try:
            uart_divisor(system_clock_hz(spec), spec.baud)
            return candidate
        except ValueError:
            candidate -= step_mhz
    raise ValueError(f"no clock at or below {mhz:g} MHz runs the {board} link")


class BoardTop(Elaboratable):
    """A :class:`LinkTop` on a board, clocked by the PLL at ``spec.clock_hz`` (or straight from
    the oscillator when ``use_pll`` is false or the target equals the oscillator)."""

    def __init__(self, board: str, accelerator_factory: Callable[[], wiring.Component], *,
                 clock_hz: float | None = None, use_pll: bool = True):
        self.spec = load_board_spec(board, clock_hz=clock_hz)
        self.use_pll = use_pll and self.spec.clock_hz != self.spec.osc_hz
        if self.use_pll:
            if self.spec.family == "ice40":
                self.pll = ice40_pll_config(self.spec.osc_hz, self.spec.clock_hz)
            else:
                self.pll = ecp5_pll_config(self.spec.osc_hz, self.spec.clock_hz)
            self.clock_hz = system_clock_hz(self.spec)
        else:
            self.pll = None
            self.clock_hz = self.spec.osc_hz
        self.accelerator_factory = accelerator_factory
        self.divisor = uart_divisor(self.clock_hz, self.spec.baud)
        self.timeout_cycles = int(self.clock_hz * self.spec.timeout_ms / 1000)

    def _clocking(self, m, platform):
        spec = self.spec
        m.domains.sync = cd_sync = ClockDomain("sync")
        default_clk = platform.default_clk
        if not self.use_pll:
            clk_pin = platform.request(default_clk, 0, dir="-")
            m.submodules.clk_buffer = clk = io.Buffer("i", clk_pin)
            m.d.comb += cd_sync.clk.eq(clk.i)
            platform.add_clock_constraint(cd_sync.clk, self.clock_hz)
            return
        locked = Signal()
        if spec.family == "ice40":
            clk_pad = platform.request(default_clk, 0, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=self.pll["DIVR"], p_DIVF=self.pll["DIVF"], p_DIVQ=self.pll["DIVQ"],
                p_FILTER_RANGE=self.pll["FILTER_RANGE"],
                i_PACKAGEPIN=clk_pad.io,
                i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=cd_sync.clk,
                o_LOCK=locked,
            )
        else:
            clk_pin = platform.request(default_clk, 0, dir="-")
            m.submodules.clk_buffer = clk = io.Buffer("i", clk_pin)
            p = self.pll
            m.submodules.pll = Instance(
                "EHXPLLL",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"],
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
                p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0,
                p_FEEDBK_PATH="CLKOP",
                a_FREQUENCY_PIN_CLKI=f"{spec.osc_hz / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{p['f_out'] / 1e6:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
                i_RST=0, i_STDBY=0, i_CLKI=clk.i, i_CLKFB=cd_sync.clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
                i_PLLWAKESYNC=0, i_ENCLKOP=0,
                o_CLKOP=cd_sync.clk, o_LOCK=locked,
            )
        platform.add_clock_constraint(cd_sync.clk, self.clock_hz)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")

    def elaborate(self, platform):
        m = Module()
        self._clocking(m, platform)
        m.submodules.link = link = LinkTop(
            self.accelerator_factory(), divisor=self.divisor, timeout_cycles=self.timeout_cycles)
        def buffer(name, direction, port):
            m.submodules[name] = buf = io.Buffer(direction, port)
            return buf

        # Every subsignal raw (the ULX3S UART also has rts/dtr, left unused).
        uart_pins = {io.name: "-" for io in platform.lookup("uart", 0).ios}
        uart = platform.request("uart", 0, dir=uart_pins)
        uart_rx = buffer("uart_rx_buffer", "i", uart.rx)
        uart_tx = buffer("uart_tx_buffer", "o", uart.tx)
        m.d.comb += [link.rx.eq(uart_rx.i), uart_tx.o.eq(link.tx)]
        if self.spec.board == "ulx3s":
            # The ULX3S routes the FTDI's RX through a buffer that must be enabled.
            enable = buffer("uart_tx_enable", "o", platform.request("uart_tx_enable", 0, dir="-"))
            m.d.comb += enable.o.eq(1)
        led_busy = buffer("led_busy", "o", platform.request("led", 0, dir="-"))
        led_error = buffer("led_error", "o", platform.request("led", 1, dir="-"))
        stretch = Signal(range(max(2, int(self.clock_hz // 20))))  # error LED on for 50 ms
        with m.If(link.error):
            m.d.sync += stretch.eq((1 << len(stretch)) - 1)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        m.d.comb += [led_busy.o.eq(link.busy), led_error.o.eq(stretch != 0)]
        return m

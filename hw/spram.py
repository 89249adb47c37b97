"""A weight memory that maps onto the iCE40 UltraPlus single-port RAM (``SB_SPRAM256KA``).

:class:`WeightStore` has the read port the layer engine uses on its weight ROM (an
``amaranth.lib.memory.Memory`` synchronous read port with ``en``) and a write port to load the
weights after configuration, since SPRAM has no initial contents in the bitstream. With
``spram=False`` it is a plain ``Memory``; with ``spram=True`` it is built from up to four
``SB_SPRAM256KA`` (16 bits x 16K words each). Both behave the same cycle for cycle, so a design
can be simulated with either and built with the one the device needs. ``docs/spram.md`` has the
bank arrangement and the resource counts.

:class:`SPRAMModel` is a behavioural model of one ``SB_SPRAM256KA``; a :class:`WeightStore`
elaborated without a platform (Amaranth's simulator, Verilog export for Verilator) uses it in
place of each primitive, so the banking, masking and output logic is what gets simulated.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["SPRAM_WIDTH", "SPRAM_DEPTH", "UP5K_SPRAMS", "spram_count", "SPRAMModel",
           "WeightStore"]

#: Geometry of one ``SB_SPRAM256KA``.
SPRAM_WIDTH, SPRAM_DEPTH = 16, 16384
#: ``SB_SPRAM256KA`` blocks on an iCE40UP5K.
UP5K_SPRAMS = 4


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Weight store {name} must be an integer, not {value!r}")
    if value < 1:
        raise ValueError(f"Weight store {name} must be a positive integer, not {value}")
    return value


def spram_count(width: int, depth: int) -> tuple[int, int]:
    """``(columns, rows)`` of ``SB_SPRAM256KA`` for a ``width`` x ``depth`` memory:
    ``ceil(width / 16)`` side by side, ``ceil(depth / 16384)`` banks deep."""
    _check_size("width", width)
    _check_size("depth", depth)
    return -(-width // SPRAM_WIDTH), -(-depth // SPRAM_DEPTH)


class SPRAMModel(wiring.Component):
    """Behavioural model of one ``SB_SPRAM256KA`` (16 bits x 16384 words), clocked by ``sync``.

    The members are the primitive's ports, in lower case. It follows yosys's simulation model
    (``techlibs/ice40/cells_sim.v``), which was checked against Lattice's model and the hardware
    for the hold behaviour (YosysHQ/yosys#1773). At each clock edge:

    - ``chipselect & ~wren``: ``dataout`` takes the word at ``address`` (read latency 1);
    - ``chipselect & wren``: the nibbles of ``datain`` whose ``maskwren`` bit is set are written
      at ``address``, and ``dataout`` becomes undefined;
    - ``~chipselect``: nothing happens; ``dataout`` keeps its value;
    - ``standby``: no access, ``dataout`` becomes undefined;
    - ``sleep`` or ``~poweroff`` (active low): ``dataout`` is 0 at once and stays 0 until the
      next read after they are released.

    An undefined ``dataout`` reads as the bitwise inverse of the last word read, so logic that
    passes it on fails every comparison with the word it should hold. The contents are 0 after
    reset (undefined on the device) and are not cleared by ``poweroff``.
    """

    def __init__(self):
        super().__init__({
            "address": In(14),
            "datain": In(16),
            "maskwren": In(4),
            "wren": In(1),
            "chipselect": In(1),
            "standby": In(1),
            "sleep": In(1),
            "poweroff": In(1, init=1),
            "dataout": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = memory = Memory(shape=unsigned(SPRAM_WIDTH), depth=SPRAM_DEPTH,
                                              init=[])
        write = memory.write_port(granularity=4)
        read = memory.read_port()
        off = self.sleep | ~self.poweroff
        access = self.chipselect & ~self.standby & ~off
        m.d.comb += [
            write.addr.eq(self.address), write.data.eq(self.datain),
            write.en.eq(Mux(access & self.wren, self.maskwren, 0)),
            read.addr.eq(self.address), read.en.eq(access & ~self.wren),
        ]
        undefined = Signal(init=1)
        zero = Signal()
        with m.If(off):
            m.d.sync += [zero.eq(1), undefined.eq(0)]
        with m.Elif(self.standby | (self.chipselect & self.wren)):
            m.d.sync += [zero.eq(0), undefined.eq(1)]
        with m.Elif(self.chipselect):
            m.d.sync += [zero.eq(0), undefined.eq(0)]
        with m.If(off | zero):
            m.d.comb += self.dataout.eq(0)
        with m.Elif(undefined):
            m.d.comb += self.dataout.eq(~read.data)
        with m.Else():
            m.d.comb += self.dataout.eq(read.data)
        return m


class WeightStore(wiring.Component):
    """A ``width`` x ``depth`` single-port RAM with the read behaviour of a ``Memory`` read port.

    Parameters
    ----------
    width, depth : int
        Word width and word count, both positive. With ``spram=True`` the memory takes
        ``ceil(width / 16) * ceil(depth / 16384)`` SPRAMs, at most the UP5K's 4.
    spram : bool
        Build it from ``SB_SPRAM256KA`` (iCE40 UltraPlus only) instead of a ``Memory``.
        Elaborated without a platform, each SPRAM is a :class:`SPRAMModel`.

    Members
    -------
    read_addr : In(unsigned(ceil_log2(depth)))
        Word to read (at least 1 bit).
    read_en : In(1)
        Read ``read_addr`` at the next clock edge.
    read_data : Out(unsigned(width))
        The word read by the last clock edge that had ``read_en`` (and not ``write_en``); it
        holds its value through any number of cycles without a read, writes included. 0 until
        the first read.
    write_addr : In(unsigned(ceil_log2(depth)))
    write_data : In(unsigned(width))
    write_en : In(1)
        Write ``write_data`` at ``write_addr`` at the next clock edge.

    There is one address port: a cycle with ``write_en`` is a write, whatever ``read_en`` says,
    and its read is dropped (``read_data`` holds, as in any cycle without a read). A read in the
    cycle after a write to the same word returns the new word. The contents after configuration
    are undefined (0 in simulation), and addresses ``>= depth`` are undefined.
    """

    def __init__(self, width: int, depth: int, *, spram: bool):
        columns, rows = spram_count(width, depth)
        if not isinstance(spram, bool):
            raise TypeError(f"spram must be a bool, not {spram!r}")
        if spram and columns * rows > UP5K_SPRAMS:
            raise ValueError(
                f"A {width} x {depth} weight store needs {columns * rows} SB_SPRAM256KA "
                f"({columns} wide x {rows} deep); the iCE40UP5K has {UP5K_SPRAMS}")
        self._width, self._depth, self._spram = width, depth, spram
        self._columns, self._rows = columns, rows
        addr_bits = max(1, ceil_log2(depth))
        super().__init__({
            "read_addr": In(unsigned(addr_bits)),
            "read_en": In(1),
            "read_data": Out(unsigned(width)),
            "write_addr": In(unsigned(addr_bits)),
            "write_data": In(unsigned(width)),
            "write_en": In(1),
        })

    @property
    def width(self) -> int:
        return self._width

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def spram(self) -> bool:
        return self._spram

    @property
    def spram_blocks(self) -> int:
        """``SB_SPRAM256KA`` used (0 without ``spram``)."""
        return self._columns * self._rows if self._spram else 0

    def elaborate(self, platform):
        if self._spram:
            return self._elaborate_spram(platform)
        m = Module()
        m.submodules.memory = memory = Memory(shape=unsigned(self._width), depth=self._depth,
                                              init=[])
        read = memory.read_port()
        write = memory.write_port()
        m.d.comb += [
            # Gating the read keeps the single-port contract (and lets yosys see a single-port
            # RAM, as amaranth-lang/amaranth-soc#100 does for SPRAM inference).
            read.addr.eq(self.read_addr), read.en.eq(self.read_en & ~self.write_en),
            self.read_data.eq(read.data),
            write.addr.eq(self.write_addr), write.data.eq(self.write_data),
            write.en.eq(self.write_en),
        ]
        return m

    def _elaborate_spram(self, platform):
        if platform is not None:
            device = getattr(platform, "device", "")
            if not str(device).startswith("iCE40UP"):
                raise ValueError(f"SB_SPRAM256KA exists only on iCE40 UltraPlus devices, not "
                                 f"{device!r}; use spram=False")
        m = Module()
        width, rows = self._width, self._rows
        address = Signal.like(self.read_addr)
        reading = Signal()
        m.d.comb += [
            address.eq(Mux(self.write_en, self.write_addr, self.read_addr)),
            reading.eq(self.read_en & ~self.write_en),
        ]
        spram_address = Signal(ceil_log2(SPRAM_DEPTH))
        row = Signal(max(1, ceil_log2(rows)))
        m.d.comb += [spram_address.eq(address), row.eq(address[ceil_log2(SPRAM_DEPTH):])]
        datain = []
        for c in range(self._columns):
            datain.append(Signal(SPRAM_WIDTH, name=f"datain_{c}"))
            m.d.comb += datain[c].eq(self.write_data[c * SPRAM_WIDTH:][:SPRAM_WIDTH])
        dataout = []
        for r in range(rows):
            select = Signal(name=f"chipselect_{r}")
            m.d.comb += select.eq((self.read_en | self.write_en) & (row == r))
            words = []
            for c in range(self._columns):
                bits = min(SPRAM_WIDTH, width - c * SPRAM_WIDTH)
                out = Signal(SPRAM_WIDTH, name=f"dataout_{r}_{c}")
                ports = {
                    "address": spram_address,
                    "datain": datain[c],
                    # Nibbles past `width` are never written (nor read).
                    "maskwren": Const((1 << -(-bits // 4)) - 1, 4),
                    "wren": self.write_en,
                    "chipselect": select,
                    "dataout": out,
                }
                self._add_spram(m, f"spram_{r}_{c}", platform, ports)
                words.append(out[:bits])
            dataout.append(Cat(*words))

        # The SPRAM's output is undefined after a write, so the word read is kept here: `fresh`
        # says the outputs hold the word of the last edge's read, from bank `last_row`.
        fresh = Signal()
        last_row = Signal.like(row)
        held = Signal(width)
        current = Signal(width)
        m.d.sync += [fresh.eq(reading), last_row.eq(row), held.eq(self.read_data)]
        with m.Switch(last_row):
            for r in range(rows):
                with m.Case(r):
                    m.d.comb += current.eq(dataout[r])
        m.d.comb += self.read_data.eq(Mux(fresh, current, held))
        return m

    @staticmethod
    def _add_spram(m, name, platform, ports):
        if platform is None:
            m.submodules[name] = model = SPRAMModel()
            m.d.comb += [
                model.address.eq(ports["address"]), model.datain.eq(ports["datain"]),
                model.maskwren.eq(ports["maskwren"]), model.wren.eq(ports["wren"]),
                model.chipselect.eq(ports["chipselect"]), ports["dataout"].eq(model.dataout),
            ]
        else:
            m.submodules[name] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=ports["address"], i_DATAIN=ports["datain"],
                i_MASKWREN=ports["maskwren"], i_WREN=ports["wren"],
                i_CHIPSELECT=ports["chipselect"], i_CLOCK=ClockSignal("sync"),
                i_STANDBY=Const(0), i_SLEEP=Const(0), i_POWEROFF=Const(1),
                o_DATAOUT=ports["dataout"])

"""Synthesis for the boards: memory fit check, the yowasp yosys/nextpnr build, the report.

Three steps, each usable alone; :func:`synthesize` chains them for an export folder (it is
what ``spikeforge synth`` runs):

1. :func:`plan_memories` / :func:`check_fit` map every memory of the network (weight ROMs in the
   layout of docs/rom-layout.md, the per-lane state memories, the link's payload buffer) onto the
   device's block RAM *before* synthesis. On the UP5K, weight ROMs that do not fit in EBR go to
   SPRAM (largest first). A network that cannot fit is refused with :class:`FitError`, whose
   message says what it needs and what the device has. It suggests no configuration: logic is
   not estimated before synthesis, so no lane count can be promised to fit (docs/synthesis.md).
2. :func:`build_bitstream` elaborates a board top with amaranth-boards and runs yosys, nextpnr
   and the packer from the yowasp packages, one step at a time, reporting progress.
3. :func:`parse_reports` reads nextpnr's ``--report`` JSON (utilisation, Fmax) and yosys's
   statistics (LUTs, flip-flops) into a :class:`SynthReport`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spikeforge.hw.accelerator import NetworkAccelerator, spike_buffer_depths, spike_entry_bits
from spikeforge.hw.boards import BoardTop, clock_below, load_board_spec, make_platform
from spikeforge.hw.core import ECP5_DISTRIBUTED_DEPTH
from spikeforge.hw.core_layout import core_layout
from spikeforge.hw.layer import check_lanes, current_bits
from spikeforge.hw.link import buffer_slots
from spikeforge.sim.mock_accelerator import MockAccelerator
from spikeforge.sim.toolchain import ensure_tools
from spikeforge.sw.export import load_manifest, require_hardware_support
from spikeforge.sw.golden import Network
from spikeforge.sw.interface import pixel_bytes

__all__ = [
    "MemoryUse",
    "FitReport",
    "FitError",
    "SynthError",
    "SynthReport",
    "block_count",
    "plan_memories",
    "check_fit",
    "build_bitstream",
    "parse_reports",
    "accelerator_factory",
    "check_export_fit",
    "synthesize",
]

#: Block RAM aspect ratios (width, depth) a ROM/RAM can be cut into.
_EBR_SHAPES = {
    "ice40": ((16, 256), (8, 512), (4, 1024), (2, 2048)),  # SB_RAM40_4K
    "ecp5": ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384)),  # DP16KD
}
_SPRAM_SHAPE = (16, 16384)  # SB_SPRAM256KA
#: Memories below this many bits are left to logic (yosys maps them to flip-flops); above it,
#: yosys's memory_libmap puts even shallow memories into EBR on iCE40.
LOGIC_MEMORY_BITS = 128
#: ROMs up to this many bits become logic (yosys turns small constant tables into LUTs).
LOGIC_ROM_BITS = 1024
#: ECP5 memories this shallow go to distributed (LUT) RAM, as yosys maps them.
ECP5_LUTRAM_DEPTH = 64


class FitError(ValueError):
    """The network does not fit the device; the message says what would."""


class SynthError(RuntimeError):
    """A synthesis tool failed; the message holds the tail of its log."""


def block_count(family: str, width: int, depth: int, shapes=None) -> int:
    """Blocks of one kind needed for a ``width`` x ``depth`` memory (best aspect ratio)."""
    shapes = shapes or _EBR_SHAPES[family]
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in shapes)


@dataclass
class MemoryUse:
    name: str
    width: int
    depth: int
    kind: str = "EBR"  # "EBR", "SPRAM" or "logic"
    blocks: int = 0
    rom: bool = False
    #: Memories of ``width / slices`` bits side by side (hw/weight_rom.py: one per lane), each
    #: mapped onto block RAM on its own.
    slices: int = 1
    #: On the ECP5 this deep or less, distributed RAM whatever the synthesizer would choose
    #: (hw/core.py state_ram_attrs).
    distributed_depth: int = 0

    @property
    def bits(self) -> int:
        return self.width * self.depth


@dataclass
class FitReport:
    board: str
    device: str
    memories: list[MemoryUse]
    ebr_used: int
    ebr_available: int
    spram_used: int
    spram_available: int
    layers: int = 1

    @property
    def fits(self) -> bool:
        return self.ebr_used <= self.ebr_available and self.spram_used <= self.spram_available

    @property
    def spram_layers(self) -> list[int]:
        """Layers whose weights this plan puts in SPRAM (loaded over the link after
        configuration): all of them when the core's one weight store is there."""
        in_spram = any(x.kind == "SPRAM" and x.name == "core.weights" for x in self.memories)
        return list(range(self.layers)) if in_spram else []

    @property
    def rom_bits(self) -> int:
        return sum(x.bits for x in self.memories if x.rom)

    def lines(self) -> list[str]:
        out = [f"{'memory':<18} {'width':>6} {'depth':>7} {'kbit':>8}  mapped to"]
        for x in self.memories:
            where = f"{x.blocks} {x.kind}" if x.kind != "logic" else "logic"
            out.append(f"{x.name:<18} {x.width:>6} {x.depth:>7} {x.bits / 1024:>8.1f}  {where}")
        out.append(f"EBR {self.ebr_used}/{self.ebr_available}"
                   + (f", SPRAM {self.spram_used}/{self.spram_available}"
                      if self.spram_available else ""))
        if any(x.kind == "SPRAM" for x in self.memories):
            layers = ", ".join(map(str, self.spram_layers))
            out.append(f"note: the weights of layer {layers} go to SPRAM, which the bitstream "
                       "cannot initialise: `spikeforge run --export DIR` loads them over the "
                       "link (docs/synthesis.md)")
        return out


def _memories(network: Network, lanes: int, w_bits: int | None = None) -> list[MemoryUse]:
    """Every memory the design holds, as the core array (hw/core.py, laid out by
    hw/core_layout.py) and the encoder (hw/encoder.py) hold them: the weight store exactly,
    the state memories by their widths and depths. ``w_bits`` caps every layer's weight width
    (what the plan would be with narrower weights)."""
    P = lanes
    layout = core_layout(network, lanes)
    widest = layout.w_bits if w_bits is None else min(layout.w_bits, w_bits)
    current = max(current_bits(x.rows * x.pool_area, min(x.layer.w_bits, widest))
                  for x in layout.maps)
    out = [MemoryUse("core.weights", P * widest, sum(layout.weight_words), rom=True, slices=P),
           MemoryUse("core.bias", P * layout.v_bits, layout.total_bias_words, rom=True),
           MemoryUse("core.vmem", P * layout.v_bits, layout.total_groups,
                     distributed_depth=ECP5_DISTRIBUTED_DEPTH)]
    out += [MemoryUse(f"core.acc{bank}", P * current, max(layout.groups),
                      distributed_depth=ECP5_DISTRIBUTED_DEPTH) for bank in range(2)]
    encoder_depth, queue_depth = spike_buffer_depths(network)
    queue_bits = layout.c_bits + layout.y_bits + layout.x_bits + 1
    out.append(MemoryUse("core.queue", queue_bits, queue_depth))
    pixel_bits = network.encoder.pixel_bits
    entry_bits = spike_entry_bits(network)
    out.append(MemoryUse("encoder.entries", entry_bits - 1 + pixel_bits, network.n_inputs))
    if network.encoder.kind.value == "rate":
        out.append(MemoryUse("encoder.rate_state", pixel_bits + 1, network.n_inputs))
    out.append(MemoryUse("encoder.fifo", entry_bits, encoder_depth))
    # The link's payload buffer (hw/link.py): a RUN image or the longest WRITE_BLOCK payload.
    out.append(MemoryUse("link.buffer", 8 * pixel_bytes(pixel_bits),
                         buffer_slots(network.n_inputs, pixel_bits)))
    return out


def plan_memories(network: Network, lanes: int, spec, *, w_bits: int | None = None) -> FitReport:
    """Map the memories of ``network`` (a golden :class:`~spikeforge.sw.golden.Network`) at
    ``lanes`` lanes onto ``spec``'s block RAM (a :class:`spikeforge.hw.boards.BoardSpec`).

    ``w_bits`` plans as if every layer's weights were at most that wide; the sizes come from
    the network itself, never from a second description."""
    check_lanes(lanes)
    family = spec.family
    memories = _memories(network, lanes, w_bits)
    ebr = 0
    for x in memories:
        slice_bits = x.bits // x.slices
        if (slice_bits < LOGIC_MEMORY_BITS or (x.rom and slice_bits <= LOGIC_ROM_BITS)
                or (family == "ecp5"
                    and x.depth <= max(ECP5_LUTRAM_DEPTH, x.distributed_depth))):
            x.kind, x.blocks = "logic", 0
        else:
            x.kind, x.blocks = "EBR", x.slices * block_count(family, x.width // x.slices,
                                                            x.depth)
            ebr += x.blocks
    spram = 0
    spram_available = spec.resources.get("spram", 0)
    if ebr > spec.resources["ebr"] and spram_available:
        # Move weight ROMs to SPRAM, largest first, until the rest fits in EBR.
        for x in sorted((x for x in memories if x.rom and x.kind == "EBR"), key=lambda x: -x.bits):
            if ebr <= spec.resources["ebr"]:
                break
            need = block_count(family, x.width, x.depth, (_SPRAM_SHAPE,))
            if spram + need > spram_available:
                continue
            ebr -= x.blocks
            spram += need
            x.kind, x.blocks = "SPRAM", need
    return FitReport(spec.board, spec.device, memories, ebr, spec.resources["ebr"], spram,
                     spram_available, len(network.layers))


def check_fit(network: Network, lanes: int, spec, *, name: str = "network") -> FitReport:
    """:func:`plan_memories`, raising :class:`FitError` if the memories do not fit.

    ``name`` is how the message calls the network (an export folder's name, say). The message
    gives the need and what the device has, and offers no configuration that "would fit": the
    plan covers memory only, and logic (which once needed 5,930 of the UP5K's 5,280 cells at a
    lane count the memory plan accepted) is checked by synthesis alone."""
    report = plan_memories(network, lanes, spec)
    if report.fits:
        return report
    need = f"{report.ebr_used} EBR"
    if report.spram_available:
        need += f" + {report.spram_used} SPRAM"
    have = f"{report.ebr_available} EBR"
    if report.spram_available:
        have += f" + {report.spram_available} SPRAM"
    widest = max(x.w_bits for x in network.layers)
    synapses = sum(x.fan_in * x.fan_out for x in network.layers)
    raise FitError(
        f"{name} ({synapses} synapses, {report.rom_bits / 1024:.0f} kbit of ROM at "
        f"lanes={lanes}, w_bits={widest}) does not fit the {spec.device}: it needs {need}, "
        f"the device has {have}; fewer lanes or narrower weights need less memory (`spikeforge "
        "synth --check-only --lanes N` plans another lane count), but logic is not estimated "
        "before synthesis, so no configuration is offered as fitting")


# ---- the build -------------------------------------------------------------------------------

@dataclass
class SynthReport:
    board: str
    device: str
    lut_name: str
    luts: int
    luts_available: int
    ffs: int
    ffs_available: int
    ebr: int
    ebr_available: int
    spram: int
    spram_available: int
    dsp: int
    dsp_available: int
    fmax_mhz: float
    required_mhz: float
    bitstream: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    #: "abc9" (yosys's default), or "abc" where ABC9 hit its reintegration assertion
    #: (:data:`ABC9_REINTEGRATION_BUG`) and the LUTs were mapped again without it
    lut_mapper: str = "abc9"

    @property
    def timing_met(self) -> bool:
        return self.fmax_mhz >= self.required_mhz

    def rows(self) -> list[tuple[str, str, str, str]]:
        def pct(a, b):
            return f"{100 * a / b:.0f}%" if b else "-"
        items = [(self.lut_name, self.luts, self.luts_available),
                 ("flip-flops", self.ffs, self.ffs_available),
                 ("EBR", self.ebr, self.ebr_available)]
        if self.spram_available:
            items.append(("SPRAM", self.spram, self.spram_available))
        items.append(("DSP", self.dsp, self.dsp_available))
        return [(name, str(used), str(have), pct(used, have)) for name, used, have in items]

    def format(self) -> str:
        lines = [f"{self.board} ({self.device})",
                 f"  {'resource':<12} {'used':>7} {'of':>7} {'':>5}"]
        lines += [f"  {a:<12} {b:>7} {c:>7} {d:>5}" for a, b, c, d in self.rows()]
        verdict = "met" if self.timing_met else "NOT MET"
        lines.append(f"  Fmax {self.fmax_mhz:.2f} MHz, required {self.required_mhz:.2f} MHz: "
                     f"timing {verdict}")
        if self.lut_mapper != "abc9":
            lines.append(f"  LUTs mapped with yosys's {self.lut_mapper}: its ABC9 failed an "
                         "assertion (a yosys bug)")
        if self.bitstream:
            lines.append(f"  bitstream {self.bitstream}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "bitstream"}
        out["bitstream"] = str(self.bitstream) if self.bitstream else None
        out["timing_met"] = self.timing_met
        return out


_NEXTPNR_NAMES = {
    "ice40": {"luts": "ICESTORM_LC", "ebr": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP"},
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "ebr": "DP16KD", "dsp": "MULT18X18D"},
}


def _yosys_cells(log: str) -> dict[str, int]:
    """Cell counts of the whole design from a yosys log (its last statistics listing)."""
    marker = "=== design hierarchy ==="
    text = log[log.rindex(marker):] if marker in log else log
    cells: dict[str, int] = {}
    for match in re.finditer(r"^\s+(\d+)\s+([A-Za-z_$][\w$]*)\s*$", text, re.MULTILINE):
        cells[match.group(2)] = int(match.group(1))
    return cells


def parse_reports(spec, report_json: Path, yosys_log: Path | None = None) -> SynthReport:
    """A :class:`SynthReport` from nextpnr's ``--report`` file (and yosys's log for FFs)."""
    data = json.loads(Path(report_json).read_text())
    util = data.get("utilization", {})
    names = _NEXTPNR_NAMES[spec.family]

    def used(key):
        return int(util.get(names.get(key, ""), {}).get("used", 0))

    def available(key, default):
        return int(util.get(names.get(key, ""), {}).get("available", default))

    ffs = used("ffs")
    if "ffs" not in names and yosys_log is not None and Path(yosys_log).exists():
        cells = _yosys_cells(Path(yosys_log).read_text(errors="replace"))
        ffs = sum(n for name, n in cells.items() if name.startswith("SB_DFF"))
    fmax = data.get("fmax", {})
    clock = fmax.get("sync") or fmax.get("clk") or (next(iter(fmax.values())) if fmax else None)
    if clock is None:
        raise SynthError(f"{report_json} has no Fmax entry (is the design clocked?)")
    return SynthReport(
        board=spec.board, device=spec.device, lut_name=spec.lut_name,
        luts=used("luts"), luts_available=available("luts", spec.resources["luts"]),
        ffs=ffs, ffs_available=available("ffs", spec.resources["ffs"]),
        ebr=used("ebr"), ebr_available=available("ebr", spec.resources["ebr"]),
        spram=used("spram"), spram_available=available("spram", spec.resources.get("spram", 0)),
        dsp=used("dsp"), dsp_available=available("dsp", spec.resources["dsp"]),
        fmax_mhz=float(clock["achieved"]), required_mhz=float(clock["constraint"]),
    )


def _step_name(argv0: str) -> str:
    for key in ("yosys", "nextpnr", "pack"):
        if key in argv0:
            return key
    return argv0


#: What yosys's ABC9 prints when its reintegration fails (seen with YoWASP yosys 0.65 and 0.70
#: on ULX3S board tops, which ones depending on the netlist and the version).
ABC9_REINTEGRATION_BUG = "Assert `GetSize(conn.first) == GetSize(conn.second)' failed"


def _ecp5_script_without_abc9(script: str) -> str:
    """The yosys script ``script`` with ``synth_ecp5``'s LUT mapping done by ABC instead of
    ABC9: the same passes before and after ``map_luts``, ``abc -dress -lut 4:7`` in between
    (yosys's ECP5 flow before ABC9)."""
    lines = []
    for line in script.splitlines():
        if line.strip().startswith("synth_ecp5"):
            synth = line.strip()
            lines += [f"{synth} -run begin:map_luts",
                      "techmap -map +/lattice/latches_map.v", "abc -dress -lut 4:7", "clean",
                      f"{synth} -run map_cells:"]
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def build_bitstream(top, board: str, out_dir, *, name: str = "top", spec=None,
                    progress: Callable[[str], None] | None = None, seed: int = 1) -> SynthReport:
    """Elaborate ``top`` for ``board`` and run yosys, nextpnr and the packer (yowasp tools).

    Writes everything under ``out_dir`` (the bitstream is ``<name>.bin`` on iCE40,
    ``<name>.bit`` on ECP5). Timing failure is not an error: the report says so.
    """
    ensure_tools()
    spec = spec or load_board_spec(board)
    say = progress or (lambda message: None)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    platform = make_platform(board)
    report_json = out / f"{name}.report.json"
    if report_json.exists():
        report_json.unlink()
    say("elaborating")
    start = time.monotonic()
    plan = platform.build(top, name=name, build_dir=str(out), do_build=False,
                          nextpnr_opts=f"--report {name}.report.json --seed {seed} "
                                       f"--timing-allow-fail {spec.nextpnr_opts}".rstrip(),
                          synth_opts="-abc9" if spec.family == "ice40" else "")
    plan.extract(str(out))
    commands = json.loads((out / f"build_{name}.json").read_text())["commands"]
    lut_mapper = "abc9"
    seconds = {"elaborate": time.monotonic() - start}
    env = os.environ.copy()
    tools = {"yosys": env["YOSYS"], "nextpnr-ice40": env["NEXTPNR_ICE40"],
             "nextpnr-ecp5": env["NEXTPNR_ECP5"], "icepack": env["ICEPACK"],
             "ecppack": env["ECPPACK"]}
    for argv in commands:
        tool = tools.get(argv[0], argv[0])
        if shutil.which(tool) is None:
            raise SynthError(f"{tool} not found: install the synthesis tools "
                             f"(pip install -e '.[synth]')")
        step = _step_name(argv[0])
        say(f"{step}: {' '.join(argv)}")
        start = time.monotonic()
        result = subprocess.run([tool, *argv[1:]], cwd=out, env=env, capture_output=True,
                                text=True)
        rpt = out / f"{name}.rpt"
        if (step == "yosys" and result.returncode != 0 and spec.family == "ecp5"
                and rpt.exists() and ABC9_REINTEGRATION_BUG in rpt.read_text(errors="replace")):
            say("yosys: ABC9 failed its reintegration assertion (a yosys bug); mapping the "
                "LUTs again with ABC")
            (out / f"{name}_abc.ys").write_text(
                _ecp5_script_without_abc9((out / argv[-1]).read_text()))
            result = subprocess.run([tool, *argv[1:-1], f"{name}_abc.ys"],   # same log
                                    cwd=out, env=env, capture_output=True, text=True)
            lut_mapper = "abc"
        seconds[step] = time.monotonic() - start
        if result.returncode != 0:
            log = {"yosys": f"{name}.rpt", "nextpnr": f"{name}.tim"}.get(step)
            text = (out / log).read_text(errors="replace") if log and (out / log).exists() else ""
            tail = "\n".join((text or result.stdout + result.stderr).splitlines()[-25:])
            overflow = re.search(r"Failed to expand region .* of (\d+) (\w+)", text)
            if overflow:
                need, kind = int(overflow.group(1)), overflow.group(2)
                raise SynthError(f"{argv[0]} failed: the design needs {need} {kind}, the "
                                 f"{spec.device} has {spec.resources['luts']} "
                                 "(fewer lanes or a smaller network take fewer)\n" + tail)
            raise SynthError(f"{argv[0]} failed (exit {result.returncode}):\n{tail}")
        say(f"{step}: done in {seconds[step]:.1f} s")
    report = parse_reports(spec, report_json, out / f"{name}.rpt")
    report.bitstream = out / (f"{name}.bin" if spec.family == "ice40" else f"{name}.bit")
    report.seconds = seconds
    report.lut_mapper = lut_mapper
    (out / f"{name}.summary.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    return report


# ---- an export folder to a bitstream (``spikeforge synth``) -----------------------------------

def accelerator_factory(network: Network, lanes: int, *, mock: bool = False,
                        spram_layers: tuple[int, ...] | list[int] = ()) -> Callable[[], object]:
    """A zero-argument callable returning a fresh accelerator for ``network`` at ``lanes``
    lanes, what :class:`~spikeforge.hw.boards.BoardTop` elaborates.

    The one place that knows how to construct the real
    :class:`~spikeforge.hw.accelerator.NetworkAccelerator`; ``spram_layers`` are the layers
    whose weights the memory plan put in SPRAM. With ``mock`` it is the
    :class:`~spikeforge.sim.mock_accelerator.MockAccelerator` sized like the network (link
    bring-up without the real accelerator; ``lanes`` is then unused).
    """
    if mock:
        return lambda: MockAccelerator(
            n_inputs=network.n_inputs, n_outputs=network.n_outputs,
            pixel_bits=network.encoder.pixel_bits, n_layers=len(network.layers),
            timesteps=network.timesteps)
    spram_layers = tuple(spram_layers)
    return lambda: NetworkAccelerator(network, lanes, spram_layers=spram_layers)


def check_export_fit(export_dir, board: str, *, clock_mhz: float | None = None,
                     lanes: int | None = None) -> FitReport:
    """The memory plan of the export in ``export_dir`` on ``board`` (:func:`check_fit`).

    The export is verified on load (:class:`~spikeforge.sw.export.ExportError`, or
    :class:`OSError` for an unreadable folder); ``lanes`` overrides the export's lane count and
    ``clock_mhz`` the board's PLL target (``constraints/BOARD.toml``). Raises :class:`FitError`,
    naming the export folder, what it needs and what the device has, if it does not fit, and
    :class:`ValueError` for an unknown board or a lane count below 1.
    """
    return _plan_export(export_dir, board, clock_mhz, lanes)[3]


def _plan_export(export_dir, board, clock_mhz, lanes):
    """``(manifest, spec, lanes, plan)`` of an export on a board. An export the hardware cannot
    run (:class:`~spikeforge.sw.export.UnsupportedNetworkError`) is refused first, ``--mock``
    builds included: the memory plan sizes the real accelerator's memories."""
    manifest = load_manifest(export_dir)
    require_hardware_support(manifest.network, str(export_dir))
    spec = load_board_spec(board, clock_hz=clock_mhz * 1e6 if clock_mhz else None)
    lanes = manifest.lanes if lanes is None else lanes
    plan = check_fit(manifest.network, lanes, spec, name=Path(manifest.folder).name)
    return manifest, spec, lanes, plan


#: A build that misses the clock it was asked for is rebuilt at this share of the Fmax it
#: reached, at most :data:`RETRIES` times (nextpnr's Fmax moves by a few percent with the
#: constraint and the placement).
RETRY_MARGIN = 0.95
RETRIES = 2
#: Suffix of a bitstream whose build missed timing: it must not look like a good one.
TIMING_FAILED_SUFFIX = ".timing-failed"


def _mark_timing(report: SynthReport) -> SynthReport:
    """Rename the bitstream of a build that missed timing to ``NAME.TIMING_FAILED_SUFFIX``
    (and remove such a file left by an earlier build that met it)."""
    bitstream = report.bitstream
    if bitstream is None:
        return report
    failed = bitstream.with_name(bitstream.name + TIMING_FAILED_SUFFIX)
    if report.timing_met:
        failed.unlink(missing_ok=True)
    elif bitstream.exists():
        bitstream.replace(failed)
        report.bitstream = failed
    return report


def synthesize(export_dir, board: str, out_dir=None, *, clock_mhz: float | None = None,
               insist_clock: bool = False, lanes: int | None = None, mock: bool = False,
               seed: int = 1, progress: Callable[[str], None] | None = None,
               on_plan: Callable[[FitReport], None] | None = None) -> SynthReport:
    """Fit check, bitstream and report for the export in ``export_dir`` on ``board``.

    :func:`check_export_fit` first (its errors, before anything is written; ``on_plan(plan)``
    is called with the memory plan once it fits), then the board top around
    :func:`accelerator_factory`'s accelerator (``mock`` for the mock one) is built with
    :func:`build_bitstream` into ``out_dir`` (default ``synth-BOARD`` beside the export),
    placed with nextpnr ``seed``; ``progress(message)`` hears every step.

    The clock: ``clock_mhz`` (default: the board's constraint). If the build misses it and
    ``insist_clock`` is false, it is rebuilt at :data:`RETRY_MARGIN` of the Fmax it reached (at
    most :data:`RETRIES` times), and the report says the clock it met. A bitstream that still
    misses timing is renamed
    ``top.bin.timing-failed`` (``.bit`` on the ECP5), so it never looks like a good one.
    Returns the :class:`SynthReport` (also written as ``top.summary.json``); missed timing is
    not an error (``report.timing_met``), a tool failure is a :class:`SynthError`.
    """
    manifest, _spec, lanes, plan = _plan_export(export_dir, board, clock_mhz, lanes)
    if on_plan is not None:
        on_plan(plan)
    factory = accelerator_factory(manifest.network, lanes, mock=mock,
                                  spram_layers=plan.spram_layers)
    out = Path(out_dir) if out_dir is not None else \
        Path(export_dir).resolve().parent / f"synth-{board}"

    return build_at_met_clock(board, factory, out, clock_mhz=clock_mhz, progress=progress,
                              seed=seed, insist_clock=insist_clock)


def build_at_met_clock(board: str, factory, out, *, clock_mhz: float | None = None,
                       progress=None, seed: int = 1, insist_clock: bool = False) -> SynthReport:
    """Build the board top of ``factory`` (a callable returning the accelerator) at
    ``clock_mhz`` (default: the board's), and, unless ``insist_clock``, rebuild at
    :data:`RETRY_MARGIN` of the Fmax reached (at most :data:`RETRIES` times, at a clock the
    UART divides within its limit) until timing is met. A bitstream that still misses timing
    is renamed ``*.timing-failed``."""
    out = Path(out)

    def build(mhz: float | None) -> SynthReport:
        clock_hz = mhz * 1e6 if mhz else None
        top = BoardTop(board, factory, clock_hz=clock_hz)
        board_spec = load_board_spec(board, clock_hz=clock_hz)
        return build_bitstream(top, board, out, spec=board_spec, progress=progress, seed=seed)

    report = build(clock_mhz)
    for _ in range(0 if insist_clock else RETRIES):
        if report.timing_met:
            break
        # 0.5 MHz steps, at a clock the UART divides to within its rate limit
        retry = clock_below(board, report.fmax_mhz * RETRY_MARGIN)
        if progress is not None:
            progress(f"timing missed at {report.required_mhz:g} MHz (Fmax "
                     f"{report.fmax_mhz:.1f}): rebuilding at {retry:g} MHz")
        report = build(retry)
    return _mark_timing(report)

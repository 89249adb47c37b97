"""Board top in simulation (cocotb + cocotbext-uart on ``$SPIKEFORGE_SIM``, Verilator by default;
the network case also on the other simulator), driven by the real host client.

Two accelerators sit behind the same link: the real ``NetworkAccelerator`` running a small
two-layer network (expected results from the golden model, ``spikeforge.sw.golden``), and the
mock of sim/mock_accelerator.py (expected results from its Python twin). The testbench is
tests/tb_board.py; it receives the images, the expected results and a read/write register with
its reset value as the run's parameters (sim/runner.py, ``run_tests(params=...)``).
"""

import os
import random

import pytest
import torch

from spikeforge.hw.boards import LinkTop
from spikeforge.sim.mock_accelerator import MockAccelerator, MockRegisters, mock_classify
from spikeforge.sim.network_model import worst_case_network_cycles
from spikeforge.sim.runner import build, default_simulator, run_tests, simulator_missing
from spikeforge.sim.toolchain import ensure_tools
from spikeforge.sw.golden import DenseLayer, Encoder, Network
from spikeforge.sw.interface import MAX_WORDS, pixel_bytes
from spikeforge.sw.link import register_address

SIM = default_simulator()
OTHER = "icarus" if SIM == "verilator" else "verilator"
#: Attempts of one transaction by the testbench's client (LinkClient(retries=2)) and its reply
#: timeout in byte times of the line (tests/tb_board.py: one client second = 200 byte times).
ATTEMPTS, CLIENT_TIMEOUT_BYTES = 3, 200


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
    network = small_network()

    def model(images):
        trace = network.run(torch.tensor(images, dtype=torch.int64))
        outputs, predictions = trace.output.tolist(), trace.prediction.tolist()
        return [[row, int(p)] for row, p in zip(outputs, predictions, strict=True)]

    accelerator = NetworkAccelerator(network, 4, spram_layers=spram_layers)
    # the core's one weight store: in SPRAM, every layer's part of it is loaded
    chunks = accelerator.layout.weight_chunks() if accelerator.spram_layers else {}
    return (accelerator, network.n_inputs,
            network.n_outputs, 4, model, int(network.layers[0].theta[0]), chunks,
            worst_case_network_cycles(network, 4))


def mock_case():
    accelerator = MockAccelerator(n_inputs=16, n_outputs=4, pixel_bits=8, busy_cycles=30)

    def model(images):
        return [list(mock_classify(image, 4, MockRegisters())) for image in images]

    return accelerator, 16, 4, 8, model, MockRegisters().theta[0][0], {}, 30 + 16


def op_budget_cycles(byte_cycles: int, compute_cycles: int, timeout_cycles: int) -> int:
    """The longest one link transaction can take, every retry included: per attempt the
    longest request and reply frames (a full WRITE_BLOCK), the client's reply timeout and the
    accelerator's worst case (cycle model), plus the device's own frame timeout."""
    frame = 9 + 4 * MAX_WORDS
    return (ATTEMPTS * ((2 * frame + CLIENT_TIMEOUT_BYTES) * byte_cycles + compute_cycles)
            + timeout_cycles)


@pytest.mark.parametrize("case, sim", [("network", SIM), ("network_spram", SIM), ("mock", SIM),
                                       ("network", OTHER)],
                         ids=["network", "network_spram", "mock", f"network-{OTHER}"])
def test_board_top_in_simulation(case, sim):
    ensure_tools()
    if simulator_missing(sim):
        pytest.skip(f"{sim}: {simulator_missing(sim)}")
    cases = {"network": network_case, "mock": mock_case,
             # layer 0's weights in (modelled) SPRAM: the host loads them over the link first
             "network_spram": lambda: network_case(spram_layers=[0])}
    accelerator, n_inputs, n_outputs, pixel_bits, model, theta_reset, weight_chunks, \
        compute_cycles = cases[case]()
    divisor, clock_ns = 8, 10
    timeout_cycles = divisor * 10 * 6  # six byte times
    top = LinkTop(accelerator, divisor=divisor, timeout_cycles=timeout_cycles)
    built = build(top, "link_top", sim=sim)  # cached by Verilog hash under sim_build/

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
        "op_budget_cycles": op_budget_cycles(10 * divisor, compute_cycles, timeout_cycles),
    }

    # a failing cocotb test raises TestFailure with its message and the run's folder
    report = run_tests(built, "tests.tb_board", params=config)
    assert len(report["cocotb"]) == 7, report["cocotb"]  # 4 scenarios, 3 of them also idle

"""``spikeforge sim --weights spram``: the UP5K bitstream's SPRAM weight store in simulation.

The board top (UART, link bridge, accelerator) with its weights in SPRAM starts with the weight
store empty; the host client loads the export's weights over the link
(spikeforge.sw.run.load_weights, as on the board) and classifies digits images through the link.
Every prediction, score, counter and cycle count, and every spike and membrane of the traced
images, must equal the golden and cycle models; without the load the same run must not.
"""

from __future__ import annotations

import pytest
import torch

from spikeforge.cli import main
from spikeforge.sim.network_check import compare
from spikeforge.sim.runner import default_simulator, simulator_missing
from spikeforge.sim.toolchain import ensure_tools
from spikeforge.sw.data import load_dataset
from spikeforge.sw.export import export_network, load_network
from spikeforge.sw.golden import DenseLayer, Encoder, Network, SumPoolLayer
from spikeforge.sw.simulate import simulate_link

LANES = 4


def small_network() -> Network:
    """64 rate-coded digits pixels -> 16 firing neurons -> 10 membrane readouts, T = 4."""
    g = torch.Generator().manual_seed(1)
    hidden = DenseLayer(weight=torch.randint(-8, 8, (16, 64), generator=g),
                        bias=torch.randint(-2, 3, (16,), generator=g), theta=[12] * 4,
                        w_bits=4, v_bits=12, name="hidden")
    out = DenseLayer(weight=torch.randint(-8, 8, (10, 16), generator=g),
                     bias=torch.zeros(10, dtype=torch.int64), theta=[6] * 4, w_bits=4,
                     v_bits=12, fires=False, name="out")
    return Network([hidden, out], 4, Encoder("rate", 4))


def _needs_simulator():
    ensure_tools()
    sim = default_simulator()
    if simulator_missing(sim):
        pytest.skip(f"{sim}: {simulator_missing(sim)}")
    pytest.importorskip("cocotbext.uart")


def test_sim_with_spram_weights_equals_the_golden_model_and_fails_without_the_load(
        tmp_path, capsys):
    _needs_simulator()
    folder = export_network(small_network(), tmp_path / "export", lanes=LANES)
    assert main(["sim", str(folder), "--weights", "spram", "--limit", "12", "--trace", "4",
                 "--raster", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "weights of layer 0, 1" in out and "SPRAM, loaded over the link" in out
    assert "mismatches (any field)" in out and "RTL = golden (predictions)" in out
    assert "100.00%" in out and (tmp_path / "r.png").exists()

    # the same design and images without the weight load: SPRAM holds zeros
    network = load_network(folder)
    pixels, _ = load_dataset("digits", split="test")
    pixels = pixels[:12]
    report = simulate_link(folder, network, LANES, pixels, trace=4, load_weights=False)
    assert report["loaded"] == [] and report["spram_layers"] == [0, 1]
    comparison = compare(network, LANES, pixels, report)
    what = {m.what for m in comparison.mismatches}
    print(f"\nwithout the weight load: {len(comparison.mismatches)} mismatches ({sorted(what)})")
    assert "scores" in what and "layer 1 membranes" in what
    loaded = simulate_link(folder, network, LANES, pixels, trace=4)
    assert loaded["loaded"] == [0, 1] and compare(network, LANES, pixels, loaded).ok

    # streamed as `spikeforge run` does (STREAM: each reply the image before): the same results
    streamed = simulate_link(folder, network, LANES, pixels, stream=True)
    golden = network.run(torch.as_tensor(pixels, dtype=torch.int64))
    assert [r["prediction"] for r in streamed["results"]] == golden.prediction.tolist()
    assert [r["scores"] for r in streamed["results"]] == golden.output.tolist()
    assert streamed["stream_sim_ns"] > 0


def test_sim_spram_refusals_are_one_line(tmp_path, capsys, monkeypatch):
    folder = export_network(small_network(), tmp_path / "export", lanes=LANES)
    import spikeforge.sw.simulate as simulate

    real = simulate.importlib.util.find_spec
    monkeypatch.setattr(simulate.importlib.util, "find_spec",
                        lambda name, *a: None if name == "cocotbext" else real(name, *a))
    assert main(["sim", str(folder), "--weights", "spram"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("spikeforge sim: error: weights='spram' drives the board's UART with "
                          "cocotbext-uart, which is not installed") and err.count("\n") == 1
    monkeypatch.undo()
    pool = SumPoolLayer(kernel=2, input_shape=(1, 8, 8), name="pool0")
    hidden, out = small_network().layers
    hidden = hidden.with_(weight=hidden.weight[:, :pool.fan_out])
    pooled = Network([pool, hidden, out], 4, Encoder("direct", 4))   # what the core refuses
    export_network(pooled, tmp_path / "pooled", lanes=LANES)
    assert main(["sim", str(tmp_path / "pooled"), "--weights", "spram"]) == 1
    err = capsys.readouterr().err
    assert "pooling of direct-coded pixels" in err and err.count("\n") == 1

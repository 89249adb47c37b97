"""An snnTorch network onto the RTL through NIR, end to end, as docs/nir.md tells a user to do it.

A 64-32-10 network trained as a float ANN in the test and given integer weights and thresholds
(tests/test_nir.py's ``trained_ann`` and ``_integer``) is built from snnTorch ``Leaky(beta=1)``
neurons with the zero reset, exported with snnTorch's own ``export_to_nir``, written to a
``.nir`` file, imported and exported by ``spikeforge from-nir``, and run on the RTL in
Verilator by ``sf.simulate`` (``simulate_export``) on the digits test set, every image traced.
The RTL must agree with the golden model on every spike, membrane, score, counter and cycle
count, and the golden model with snnTorch's own network on every spike of every layer: so the
RTL fires exactly snnTorch's spikes. ``sf.from_torch`` on the same module gives the same
network.

The figures docs/nir.md quotes are printed by ``pytest tests/test_nir_rtl.py -s``.
"""

from __future__ import annotations

import pytest
import torch

import spikeforge as sf
from spikeforge.cli import main
from spikeforge.sim.runner import default_simulator, simulator_missing
from spikeforge.sim.toolchain import ensure_tools
from spikeforge.sw.golden import Compare, Reset, argmax_lowest
from spikeforge.sw.nir import write_graph
from tests.test_nir import (
    _agreement,
    _integer,
    _run_snntorch,
    _snntorch_dense,
    _snntorch_export,
    assert_same_network,
    trained_ann,
)

T = 16
LANES = 8


@pytest.fixture(scope="module")
def snn():
    return pytest.importorskip("snntorch")


def test_snntorch_network_through_nir_runs_on_the_rtl_with_snntorchs_spikes(snn, tmp_path,
                                                                           capsys):
    ensure_tools()
    sim = default_simulator()
    if simulator_missing(sim):
        pytest.skip(f"{sim}: {simulator_missing(sim)}")
    model = _snntorch_dense(snn, _integer(trained_ann(*sf.load_dataset("digits",
                                                                     split="train"))), "zero")
    write_graph(_snntorch_export(snn, model, torch.zeros(1, 64)), tmp_path / "snn.nir")
    assert main(["from-nir", str(tmp_path / "snn.nir"), "--out", str(tmp_path / "export"),
                 "-T", str(T), "--lanes", str(LANES)]) == 0
    assert "exact" in capsys.readouterr().out
    network = sf.load(tmp_path / "export")
    assert all((layer.reset, layer.compare) == (Reset.ZERO, Compare.GT)
               for layer in network.layers)

    pixels, labels = sf.load_dataset("digits", split="test")
    theirs, counts = _run_snntorch(snn, model, network.encode(pixels))
    golden_agree = _agreement(theirs, network, pixels)
    assert golden_agree == [len(pixels)] * 2
    snntorch_accuracy = (argmax_lowest(counts.to(torch.int64)) == labels).double().mean().item()

    summary = sf.simulate(tmp_path / "export", pixels=pixels, labels=labels, trace=len(pixels),
                          progress=False)
    print(f"\nsnnTorch Leaky(beta=1, zero) 64-32-10, T={T} -> export_to_nir -> spikeforge "
          f"from-nir -> RTL ({sim}, {LANES} lanes), {len(pixels)} digits test images: "
          f"snnTorch = golden on every spike of {golden_agree} images per layer; RTL = golden "
          f"on {summary.traced} traced images with {summary.mismatches} mismatches, "
          f"predictions {summary.agreement:.2%}; accuracy snnTorch {snntorch_accuracy:.2%}, "
          f"golden {summary.golden_accuracy:.2%}, RTL {summary.rtl_accuracy:.2%}")
    assert summary.images == summary.traced == len(pixels)
    assert summary.mismatches == 0, summary.mismatch_report
    assert summary.agreement == 1.0
    assert summary.rtl_accuracy == summary.golden_accuracy == snntorch_accuracy

    # the shortcut without NIR: the same network, layer names aside
    direct, _ = sf.from_torch(model, timesteps=T, progress=False)

    def renamed(net):
        return sf.Network([layer.with_(name=f"l{k}") for k, layer in enumerate(net.layers)],
                          net.timesteps, net.encoder)

    assert_same_network(renamed(direct), renamed(network))

"""Train, export, elaborate from the export folder, run on the RTL: the main job, end to end."""

import pytest
import torch

from spikeforge.cli import main
from spikeforge.sim.network_check import compare, simulate
from spikeforge.sim.runner import default_simulator, simulator_missing
from spikeforge.sw.data import load_dataset
from spikeforge.sw.export import export_network, load_manifest
from spikeforge.sw.train import TrainConfig, integer_network, train

# on $SPIKEFORGE_SIM (`make test SIM=icarus`), Verilator by default
pytestmark = pytest.mark.skipif(simulator_missing(default_simulator()) is not None,
                                reason=f"{default_simulator()}: "
                                       f"{simulator_missing(default_simulator())}")


@pytest.fixture(scope="module")
def trained_export(tmp_path_factory):
    """A quickly trained digits network (rate-coded, as the hardware encodes), exported."""
    folder = tmp_path_factory.mktemp("e2e")
    config = TrainConfig(encoder="rate", epochs=3, ann_epochs=6)
    checkpoint = train(config, out=folder / "checkpoint.pt")
    return export_network(integer_network(checkpoint), folder / "export", lanes=8)


def test_digits_test_set_on_the_rtl_equals_the_golden_model(trained_export):
    """All 360 test images: predictions, scores, counters and cycles; 50 traced in full."""
    manifest = load_manifest(trained_export)
    network = manifest.network
    pixels, labels = load_dataset("digits", split="test")
    report = simulate(network, manifest.lanes, pixels, trace=50)
    result = compare(network, manifest.lanes, pixels, report)
    assert result.ok, result.summary()
    assert result.images == 360 and result.traced == 50
    golden = network.predict(pixels)
    assert result.predictions == golden.tolist()
    # the trained network is a real classifier, not a degenerate one that always agrees
    assert (golden == labels).double().mean() > 0.8


def test_spikeforge_sim_command_reports_agreement(trained_export, capsys):
    assert main(["sim", str(trained_export), "--limit", "40", "--trace", "5"]) == 0
    out = capsys.readouterr().out
    assert "RTL = golden (predictions)" in out and "100.00%" in out
    raster = trained_export.parent / f"{trained_export.name}-raster-digits-test.png"
    assert raster.stat().st_size > 1000  # named after the export and the data, not raster.png
    assert f"spike raster of image 0: {raster}" in out


@pytest.mark.parametrize("command", ["sim", "rtl"])
def test_lanes_zero_is_refused_not_read_as_the_default(trained_export, tmp_path, command,
                                                       capsys):
    argv = [command, str(trained_export), "--lanes", "0"]
    argv += ["--out", str(tmp_path / "rtl")] if command == "rtl" else ["--limit", "2"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"spikeforge {command}: error: ") and "0" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "rtl").exists()


def test_sim_refuses_images_of_another_size_before_building(trained_export, monkeypatch,
                                                             capsys):
    """A new user once waited 11 minutes: MNIST images fed to a digits network."""
    import spikeforge.sw.simulate as simulate_module

    def no_build(*args, **kwargs):
        raise AssertionError("the accelerator must not be built for images it cannot take")

    monkeypatch.setattr(simulate_module, "build_accelerator", no_build)
    monkeypatch.setattr("spikeforge.cli.sim.load_dataset",
                        lambda *a, **k: (torch.zeros(3, 784, dtype=torch.int64),
                                         torch.zeros(3, dtype=torch.int64)))
    assert main(["sim", str(trained_export), "--dataset", "mnist5k"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"spikeforge sim: error: the images have 784 pixels each but the network of "
        f"{trained_export} takes 64 inputs")


def test_spikeforge_rtl_writes_verilog_and_metadata(trained_export, tmp_path):
    assert main(["rtl", str(trained_export), "--out", str(tmp_path), "--name", "acc"]) == 0
    assert "module acc(" in (tmp_path / "acc.v").read_text()
    assert '"n_inputs": 64' in (tmp_path / "acc.json").read_text()


def test_a_tampered_export_is_refused_before_elaboration(trained_export, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(trained_export, bad)
    hex_file = bad / "layer0.hex"
    hex_file.write_text(hex_file.read_text().replace("0", "1", 1))
    assert main(["rtl", str(bad), "--out", str(tmp_path / "rtl")]) == 1
    assert "layer0.hex" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_network_full_trace_on_the_rtl(tmp_path):
    """test-long: the demo's full training, every image traced spike by spike."""
    from spikeforge.sw.demo import demo_config

    checkpoint = train(demo_config(), out=tmp_path / "checkpoint.pt")
    network = integer_network(checkpoint)
    pixels, _ = load_dataset("digits", split="test")
    report = simulate(network, 8, pixels, trace=len(pixels))
    result = compare(network, 8, pixels, report)
    assert result.ok and result.traced == 360, result.summary()
    assert torch.equal(torch.tensor(result.predictions), network.predict(pixels))

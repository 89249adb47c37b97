"""Networks the golden model runs but the hardware cannot: a note at export time, and `sim`,
`rtl` and `synth` refuse them with one line and exit status 1 before building anything."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spikeforge.sw.rtl
import spikeforge.sw.simulate
import spikeforge.sw.synth
from spikeforge.cli import main
from spikeforge.sw.data import write_idx
from spikeforge.sw.export import (
    ExportError,
    UnsupportedNetworkError,
    export_network,
    hardware_support,
    load_network,
    require_hardware_support,
)
from spikeforge.sw.golden import ConvLayer, DenseLayer, Encoder, Network, SumPoolLayer


def dense_network(encoder="rate") -> Network:
    layer = DenseLayer(weight=[[1, -1, 2, 0], [0, 1, -2, 1], [1, 1, 1, 1]], bias=[0, 0, 0],
                       theta=[2, 2], fires=False, w_bits=3, v_bits=10, name="fc")
    return Network([layer], 2, Encoder(encoder, 4))


def conv_network(pool_kernel: int = 3) -> Network:
    """A conv network the core array cannot run (a 3x3 pooling window), or with
    ``pool_kernel=2`` one it runs."""
    conv = ConvLayer(weight=torch.ones(2, 1, 2, 2, dtype=torch.int64), bias=[0, 0],
                     theta=[2, 2], w_bits=3, v_bits=10, input_shape=(1, 4, 4), name="conv1")
    pool = SumPoolLayer(kernel=pool_kernel, input_shape=conv.output_shape, name="pool1")
    fc = DenseLayer(weight=torch.ones(3, pool.fan_out, dtype=torch.int64), bias=[0] * 3,
                    theta=[1, 1], fires=False, w_bits=3, v_bits=10, name="fc")
    return Network([conv, pool, fc], 2, Encoder("rate", 4))


def pooled_direct_network() -> Network:
    """Direct-coded pixels summed by a pooling layer before the first neuron layer: the core
    sends each pixel, where the contract counts the pooled value as one event."""
    pool = SumPoolLayer(kernel=2, input_shape=(1, 4, 4), name="pool0")
    fc = DenseLayer(weight=torch.ones(3, pool.fan_out, dtype=torch.int64), bias=[0] * 3,
                    theta=[1, 1], fires=False, w_bits=3, v_bits=10, name="fc")
    return Network([pool, fc], 2, Encoder("direct", 4))


@pytest.fixture
def exports(tmp_path):
    return {"dense": export_network(dense_network(), tmp_path / "dense", lanes=2),
            "direct": export_network(pooled_direct_network(), tmp_path / "direct", lanes=2),
            "conv": export_network(conv_network(), tmp_path / "conv", lanes=2)}


def test_hardware_support_names_every_reason():
    assert hardware_support(dense_network()) == []
    assert hardware_support(dense_network("radix")) == []
    assert hardware_support(dense_network("direct")) == []
    assert hardware_support(pooled_direct_network()) == [
        "layers[0] (pool0): pooling of direct-coded pixels is not implemented in the core "
        "array (it sends each pixel, the contract counts a pooled value as one event)"]
    assert hardware_support(conv_network(pool_kernel=2)) == []
    assert hardware_support(conv_network()) == [
        "layers[1] (pool1): the core array pools with square, non-overlapping, unpadded "
        "power-of-two windows, not kernel (3, 3) stride (3, 3) padding (0, 0)"]
    assert hardware_support(Network(conv_network().layers, 2, Encoder("direct", 4))) == \
        hardware_support(conv_network())
    with pytest.raises(UnsupportedNetworkError, match=r"^out/x cannot run on the current "
                                                      r"hardware: layers\[0\] \(pool0\): "
                                                      r"pooling of direct-coded .*spikeforge eval"):
        require_hardware_support(pooled_direct_network(), "out/x")
    assert issubclass(UnsupportedNetworkError, ExportError)
    require_hardware_support(dense_network())  # no error


def test_hardware_support_agrees_with_the_accelerator():
    """What hardware_support accepts, the accelerator elaborates from; what it refuses, the
    accelerator refuses too, with the same reason."""
    from spikeforge.hw.accelerator import NetworkAccelerator

    NetworkAccelerator(dense_network(), 2)
    NetworkAccelerator(conv_network(pool_kernel=2), 2)
    with pytest.raises(ValueError, match="pools with square"):
        NetworkAccelerator(conv_network(), 2)
    NetworkAccelerator(dense_network("direct"), 2)
    with pytest.raises(ValueError, match="pooling of direct-coded pixels"):
        NetworkAccelerator(pooled_direct_network(), 2)


def test_export_notes_an_unsupported_network_but_writes_it(exports, tmp_path, capsys):
    for name in ("direct", "conv"):
        assert main(["export", str(exports[name]), "--out", str(tmp_path / f"{name}4"),
                     "--lanes", "4"]) == 0
        out, err = capsys.readouterr()
        notes = [line for line in err.splitlines() if "note:" in line]
        assert len(notes) == 1 and len(err.strip().splitlines()) == 1, err
        assert "cannot run on the current hardware" in notes[0]
        assert "spikeforge eval" in notes[0]
        assert f"-> {tmp_path / f'{name}4'}" in out
        assert load_network(tmp_path / f"{name}4").kinds == load_network(exports[name]).kinds
    assert main(["export", str(exports["dense"]), "--out", str(tmp_path / "dense4"),
                 "--lanes", "4"]) == 0
    assert capsys.readouterr().err == ""


def _no_build(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("built something for a network the hardware cannot run")
    monkeypatch.setattr(spikeforge.sw.simulate, "build_accelerator", boom)
    monkeypatch.setattr(spikeforge.sw.simulate, "simulate", boom)
    monkeypatch.setattr(spikeforge.sw.rtl, "NetworkAccelerator", boom)
    monkeypatch.setattr(spikeforge.sw.rtl, "generate_verilog", boom)
    monkeypatch.setattr(spikeforge.sw.synth, "check_fit", boom)
    monkeypatch.setattr(spikeforge.sw.synth, "build_bitstream", boom)
    monkeypatch.setattr(spikeforge.sw.synth, "BoardTop", boom)


@pytest.mark.parametrize("kind", ["direct", "conv"])
@pytest.mark.parametrize("command", [
    ["sim", "{export}", "--dataset", "{dataset}", "--limit", "2", "--raster", "{tmp}/r.png"],
    ["rtl", "{export}", "--out", "{tmp}/rtl"],
    ["synth", "{export}", "--board", "icebreaker", "--out", "{tmp}/synth"],
    ["synth", "{export}", "--board", "ulx3s", "--check-only"],
    ["synth", "{export}", "--board", "icebreaker", "--mock", "--out", "{tmp}/mock"],
])
def test_sim_rtl_synth_refuse_before_building(exports, tmp_path, monkeypatch, capsys, kind,
                                               command):
    _no_build(monkeypatch)
    dataset = tmp_path / "data"
    if command[0] == "sim":  # a dataset of the network's size, so the export is what fails
        _write_idx_dataset(dataset, load_network(exports[kind]).n_inputs)
    argv = [part.format(export=exports[kind], tmp=tmp_path, dataset=dataset) for part in command]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"spikeforge {command[0]}: error: {exports[kind]} cannot run on the "
                          "current hardware: ")
    assert ("pooling of direct-coded" if kind == "direct" else "power-of-two windows") in err
    assert not (tmp_path / "rtl").exists() and not (tmp_path / "synth").exists()
    assert not (tmp_path / "r.png").exists() and not (tmp_path / "mock").exists()


def _write_idx_dataset(folder, n_inputs: int) -> None:
    """A 3-image MNIST-format folder whose images have ``n_inputs`` pixels (1 x n)."""
    folder.mkdir()
    images = np.arange(3 * n_inputs, dtype=np.uint8).reshape(3, 1, n_inputs)
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.array([0, 1, 2], dtype=np.uint8))

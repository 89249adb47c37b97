"""`spikeforge eval`: golden-model accuracy, SynOps and spikes of an export, and its errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import spikeforge as sf
from spikeforge.cli import main
from spikeforge.sw.data import write_idx
from spikeforge.sw.evaluate import (
    EvalError,
    default_out_dir,
    evaluate_export,
    evaluate_network,
)
from spikeforge.sw.export import ExportError, export_network
from spikeforge.sw.golden import ConvLayer, DenseLayer, Encoder, Network, SumPoolLayer

#: Four 4-pixel images (4-bit pixels) and their labels; see ``tiny_network``.
PIXELS = [[3, 3, 0, 0], [0, 0, 2, 2], [1, 0, 0, 1], [5, 0, 0, 0]]
LABELS = [0, 1, 1, 0]


def tiny_network() -> Network:
    """Class 0 sums pixels 0, 1; class 1 sums pixels 2, 3; direct input, membrane readout, T=2.

    Scores: [12, 0], [0, 8], [2, 2] (a tie: the lowest index, 0), [10, 0]: predictions
    0, 1, 0, 0 against labels 0, 1, 1, 0, so 3 of 4 correct. SynOps (direct coding: one event
    per non-zero pixel and step, reaching both neurons): 2*2*2, 8, 8, 1*2*2 = 8, 8, 8, 4.
    """
    layer = DenseLayer(weight=[[1, 1, 0, 0], [0, 0, 1, 1]], bias=[0, 0], theta=[1, 1],
                       fires=False, w_bits=3, v_bits=12, name="readout")
    return Network([layer], 2, Encoder("direct", 4))


def write_dataset(folder, pixels, labels) -> None:
    """An MNIST-format folder (test = t10k, and train) holding these 4-bit pixels (x 16)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = (np.asarray(pixels, dtype=np.uint8) * 16)[:, None, :]
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", np.asarray(labels, dtype=np.uint8))


def test_known_accuracy_synops_and_confusion():
    report = evaluate_network(tiny_network(), PIXELS, LABELS)
    assert (report.images, report.correct, report.accuracy) == (4, 3, 0.75)
    assert report.predictions.tolist() == [0, 1, 0, 0]
    assert report.confusion.tolist() == [[2, 0], [1, 1]]
    assert report.synops.tolist() == [8, 8, 8, 4] and report.synops_mean == 7.0
    (layer,) = report.layers
    assert (layer.name, layer.kind, layer.fan_out, layer.synops_mean, layer.spikes_mean,
            layer.fires) == ("readout", "dense", 2, 7.0, 0.0, False)


def conv_net(seed=0) -> Network:
    rng = random.Random(seed)
    conv = ConvLayer(weight=torch.tensor([[[[rng.randint(-3, 3) for _ in range(3)]
                                            for _ in range(3)]] for _ in range(3)]),
                     bias=[1, 0, -1], theta=[3, 3, 3], w_bits=3, v_bits=10,
                     input_shape=(1, 6, 6), padding=1, name="conv1")
    pool = SumPoolLayer(kernel=2, input_shape=conv.output_shape, name="pool1")
    fc = DenseLayer(weight=[[rng.randint(-7, 7) for _ in range(pool.fan_out)] for _ in range(4)],
                    bias=[0] * 4, theta=[1, 1, 1], fires=False, w_bits=4, v_bits=16, name="fc")
    return Network([conv, pool, fc], 3, Encoder("rate", 4))


def test_conv_report_matches_the_golden_trace_in_any_batch_size():
    network = conv_net()
    pixels = torch.randint(0, 16, (37, 36), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 4, (37,), generator=torch.Generator().manual_seed(1))
    trace = network.run(pixels)
    reports = [evaluate_network(network, pixels, labels, batch_size=b) for b in (1, 5, 256)]
    for report in reports:
        assert torch.equal(report.predictions, trace.prediction)
        assert report.correct == int((trace.prediction == labels).sum())
        assert torch.equal(report.synops, sum(layer.synops for layer in trace.layers))
        for mine, theirs in zip(report.layers, trace.layers, strict=True):
            assert mine.synops_total == int(theirs.synops.sum())
            assert mine.spikes_total == int(theirs.spikes.sum())
        assert int(report.confusion.sum()) == 37
    assert [x.kind for x in reports[0].layers] == ["conv", "sumpool", "dense"]
    assert reports[0].layers[1].synops_total == 0  # pooling updates no membrane
    assert reports[0].layers[1].spikes_total == reports[0].layers[0].spikes_total


def test_evaluate_export_and_the_public_api(tmp_path):
    folder = export_network(conv_net(), tmp_path / "conv", lanes=2, metadata={"run": 1})
    pixels = torch.randint(0, 16, (5, 36), generator=torch.Generator().manual_seed(2))
    report = sf.evaluate(folder, pixels, torch.zeros(5, dtype=torch.int64))
    assert sf.evaluate is evaluate_export
    assert report.export_dir == folder and report.metadata == {"run": 1}
    assert torch.equal(report.predictions, conv_net().predict(pixels))


def test_bad_images_and_labels_are_one_line_errors():
    network = tiny_network()
    for pixels, labels, fragment in [
            ([[1, 2, 3]], [0], "the images have 3 pixels each but the network takes 4 inputs"),
            (PIXELS, [0, 1], "4 images but 2 labels"),
            ([[16, 0, 0, 0]], [0], "pixels must lie in 0..15"),
            ([[0.5, 0, 0, 0]], [0], "pixels must hold integers"),
            (PIXELS, [0, 1, -1, 0], "labels must be >= 0")]:
        with pytest.raises(EvalError, match=fragment) as info:
            evaluate_network(network, pixels, labels)
        assert "\n" not in str(info.value)


def test_default_out_dir_is_beside_the_export_and_distinct_per_run(tmp_path):
    a = export_network(tiny_network(), tmp_path / "a", lanes=1)
    b = export_network(tiny_network(), tmp_path / "b", lanes=1)
    first = default_out_dir(a, "digits", "test")
    assert first.parent == tmp_path and first.name.startswith("a-eval-digits-test-")
    assert default_out_dir(a, "digits", "test") == first
    others = {default_out_dir(b, "digits", "test"), default_out_dir(a, "digits", "val"),
              default_out_dir(a, "mnist", "test", tmp_path / "m1"),
              default_out_dir(a, "mnist", "test", tmp_path / "m2"), first}
    assert len(others) == 5
    export_network(tiny_network(), a, lanes=2)  # the same folder, another export
    assert default_out_dir(a, "digits", "test") != first


def test_command_prints_tables_and_writes_the_confusion_png(tmp_path, capsys):
    export = export_network(tiny_network(), tmp_path / "export", lanes=2)
    write_dataset(tmp_path / "data", PIXELS, LABELS)
    out = tmp_path / "report"
    assert main(["eval", str(export), "--dataset", str(tmp_path / "data"), "--out",
                 str(out)]) == 0
    printed = capsys.readouterr().out
    assert "75.00%" in printed and "readout" in printed and "7.0" in printed
    assert str(out / "confusion.png") in printed.replace("\n", "")
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    numbers = json.loads((out / "eval.json").read_text())
    assert numbers["accuracy"] == 0.75 and numbers["confusion"] == [[2, 0], [1, 1]]
    assert numbers["layers"][0]["synops_per_image"] == 7.0
    # the default folder, beside the export
    assert main(["eval", str(export), "--dataset", "mnist", "--data-root",
                 str(tmp_path / "data"), "--limit", "2"]) == 0
    written = default_out_dir(export, "mnist", "test", str(tmp_path / "data"))
    assert (written / "confusion.png").is_file()
    assert str(written) in capsys.readouterr().out.replace("\n", "")
    assert json.loads((written / "eval.json").read_text())["images"] == 2


def test_command_errors_exit_1_with_one_line(tmp_path, capsys):
    export = export_network(tiny_network(), tmp_path / "export", lanes=2)
    for argv, fragment in [
            (["eval", str(export), "--dataset", "cifar"], "unknown dataset 'cifar'"),
            (["eval", str(tmp_path / "none"), "--dataset", "digits"],
             "export folder is missing"),
            (["eval", str(export), "--dataset", "digits"],
             "the images have 64 pixels each but the network takes 4 inputs"),
            (["eval", str(export), "--dataset", "digits", "--split", "dev"],
             "split must be one of"),
            (["eval", str(export), "--dataset", "mnist"], "--data-root DIR"),
            (["eval", str(export), "--dataset", "digits", "--limit", "0"],
             "--limit must be positive")]:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("spikeforge eval: error: ") and fragment in err, err
        assert len(err.strip().splitlines()) == 1
    (export / "layer0.hex").write_text("00\n")
    assert main(["eval", str(export), "--dataset", "digits"]) == 1
    assert "layer0.hex" in capsys.readouterr().err
    with pytest.raises(ExportError):
        evaluate_export(export, PIXELS, LABELS)
    assert not [p for p in tmp_path.iterdir() if "-eval-" in p.name]

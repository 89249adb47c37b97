"""Training ends in the integer golden model, bit-exactly, for every method; checkpoints are
atomic, resumable, deterministic, and refuse bad input with a message that names the problem."""

import os
from pathlib import Path

import pytest
import torch

from spikeforge.cli import main as cli_main
from spikeforge.sw.data import DatasetError, load_dataset
from spikeforge.sw.golden import Network
from spikeforge.sw.train import (
    METHODS,
    CheckpointError,
    ConfigError,
    TrainConfig,
    integer_network,
    load_checkpoint,
    train,
)
from spikeforge.sw.train.checkpoint import save_checkpoint
from tests.reference import run_network_float64

TINY = dict(ann_epochs=1, epochs=1, hidden=(16,))


def command_main(argv: list[str]) -> int:
    """``spikeforge train ARGV`` in this process."""
    return cli_main(["train", *argv])


def tiny(method, **changes):
    return TrainConfig(method=method, **{**TINY, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    return {m: train(tiny(m), out=folder / f"{m}.pt") for m in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_hardware_mode_equals_golden_on_whole_test_set(trained, method):
    ckpt = load_checkpoint(trained[method])
    network = integer_network(ckpt)
    assert isinstance(network, Network)
    model = ckpt.model()
    x, y = load_dataset("digits", split="test")
    assert len(y) == 360
    frames = model.encode(x)
    assert torch.equal(frames.to(torch.int64), network.encode(x))
    hw_out, _ = run_network_float64(model.compile(), frames, model.timesteps)
    trace = network.run(x)
    assert torch.equal(hw_out, trace.output)  # every output membrane / count, not only argmax
    hw_pred = model(frames, mode="hardware")
    best = hw_pred.max(1, keepdim=True).values
    pred = torch.where(hw_pred == best, torch.arange(hw_pred.shape[1]), 99).min(1).values
    assert torch.equal(pred, network.predict(x))
    assert ckpt.metrics["test_int"] == ckpt.metrics["test_hardware"]


@pytest.mark.parametrize("method", METHODS)
def test_integer_network_respects_contract_widths(trained, method):
    network = integer_network(trained[method])
    for layer in network.layers:
        assert layer.w_bits == 4
        low = -(1 << (layer.w_bits - 1)) + 1
        assert int(layer.weight.min()) >= low and int(layer.weight.max()) <= -low
        assert layer.v_bits <= 24 and int(layer.theta.min()) >= 1
    assert not network.layers[-1].fires
    if method == "radix":
        assert all(layer.leak_shift == 1 for layer in network.layers)
        assert network.layers[0].fire_mode.value == "threshold"
        assert network.encoder.kind.value == "radix"
    else:
        assert network.encoder.kind.value == "rate"  # the default: what the boards encode


@pytest.mark.parametrize("bits", [2, 3, 6, 8])
def test_weight_widths(tmp_path, bits):
    path = train(tiny("atif-u", w_bits=bits), out=tmp_path / "c.pt")
    network = integer_network(path)
    qmax = (1 << (bits - 1)) - 1
    assert all(layer.w_bits == bits and int(layer.weight.abs().max()) <= qmax
               for layer in network.layers)


def test_atif_nu_thresholds_differ_per_timestep(trained):
    theta = integer_network(trained["atif-nu"]).layers[0].theta
    assert theta.shape == (4,)


def test_deterministic_with_seed(tmp_path):
    a = load_checkpoint(train(tiny("atif-u"), out=tmp_path / "a.pt"))
    b = load_checkpoint(train(tiny("atif-u"), out=tmp_path / "b.pt"))
    for key in a.model_state:
        assert torch.equal(a.model_state[key], b.model_state[key]), key
    c = load_checkpoint(train(tiny("atif-u", seed=1), out=tmp_path / "c.pt"))
    assert not torch.equal(a.model_state["linears.0.weight"], c.model_state["linears.0.weight"])


class _Stop(Exception):
    pass


def test_resume_gives_the_uninterrupted_result(tmp_path):
    config = tiny("atif-u", ann_epochs=2, epochs=3)
    full = load_checkpoint(train(config, out=tmp_path / "full.pt"))

    seen = []

    def stop_after_three(record):
        seen.append(record)
        if len(seen) == 3:  # dies inside the snn phase, after its first epoch
            raise _Stop

    path = tmp_path / "part.pt"
    with pytest.raises(_Stop):
        train(config, out=path, progress=stop_after_three)
    part = load_checkpoint(path)
    assert not part.finished and (part.phase, part.epoch) == (1, 1)
    with pytest.raises(CheckpointError, match="unfinished training run"):
        integer_network(part)
    resumed = load_checkpoint(train(out=path, resume=True))
    assert resumed.finished
    for key in full.model_state:
        assert torch.allclose(full.model_state[key], resumed.model_state[key]), key
    assert full.metrics["test_int"] == resumed.metrics["test_int"]


def test_corrupt_checkpoint_is_refused(tmp_path, trained):
    path = tmp_path / "bad.pt"
    data = Path(trained["atif-u"]).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"bad\.pt.*corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"bad\.pt.*corrupt"):
        integer_network(path)
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="corrupt"):
        integer_network(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        integer_network(tmp_path / "missing.pt")
    torch.save({"format": "something-else"}, path)
    with pytest.raises(CheckpointError, match="not a spikeforge checkpoint"):
        load_checkpoint(path)
    torch.save({"format": "spikeforge-checkpoint", "version": 99}, path)
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(path)


def test_save_is_atomic(tmp_path, trained, monkeypatch):
    ckpt = load_checkpoint(trained["if"])
    path = tmp_path / "c.pt"
    save_checkpoint(ckpt, path)
    before = path.read_bytes()

    def broken(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(ckpt, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


@pytest.mark.parametrize("changes, message", [
    ({"method": "snn-magic"}, "method must be one of"),
    ({"w_bits": 1}, "w_bits must be an integer from 2 to 8"),
    ({"w_bits": 9}, "w_bits must be an integer from 2 to 8"),
    ({"timesteps": 0}, "timesteps must be"),
    ({"encoder": "radix"}, "needs method 'radix'"),
    ({"surrogate": "tanh"}, "surrogate must be one of"),
])
def test_bad_config_names_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**changes)


@pytest.mark.parametrize("argv, message", [
    (["--method", "bogus"], "method must be one of"),
    (["--w-bits", "12"], "w_bits must be an integer from 2 to 8"),
    (["--dataset", "mnist", "--data-root", "{tmp}/none"], "does not exist"),
    (["--resume"], "does not exist"),
    (["--config", "{tmp}/missing.toml"], "cannot read config file"),
])
def test_command_errors_leave_no_checkpoint(tmp_path, capsys, argv, message):
    out = tmp_path / "run.pt"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert command_main([*argv, "--out", str(out), "--quiet"]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert list(tmp_path.iterdir()) == []


def test_command_corrupt_checkpoint_resume(tmp_path, capsys):
    out = tmp_path / "run.pt"
    out.write_bytes(b"\x00" * 100)
    assert command_main(["--resume", "--out", str(out), "--quiet"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_command_trains_from_config_file(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[train]\nmethod = "if"\nann_epochs = 1\nepochs = 1\nhidden = [8]\n'
                      "timesteps = 2\nw_bits = 3\n")
    out = tmp_path / "run.pt"
    assert command_main(["--config", str(config), "--seed", "3", "--out", str(out)]) == 0
    ckpt = load_checkpoint(out)
    assert (ckpt.config.method, ckpt.config.timesteps, ckpt.config.w_bits, ckpt.config.seed) \
        == ("if", 2, 3, 3)
    err = capsys.readouterr().err
    assert "epoch   1/1" in err
    assert integer_network(out).timesteps == 2


def test_unknown_config_key(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"methd": "if"}')
    from spikeforge.sw.train import load_config
    with pytest.raises(ConfigError, match=r"unknown configuration key.*methd"):
        load_config(path)


def test_missing_dataset_in_train(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        train(tiny("if", dataset="mnist", data_root=str(tmp_path / "x")), out=tmp_path / "c.pt")
    assert not (tmp_path / "c.pt").exists()


@pytest.mark.parametrize("method", ["if", "atif-nu"])
def test_rate_coded_input_is_bit_exact_too(tmp_path, method):
    ckpt = load_checkpoint(train(tiny(method, encoder="rate", timesteps=3), out=tmp_path / "r.pt"))
    network = integer_network(ckpt)
    assert network.encoder.kind.value == "rate"
    x, _ = load_dataset("digits", split="test")
    hw_out, _ = run_network_float64(ckpt.model().compile(), network.encode(x).float(), 3)
    assert torch.equal(hw_out, network.run(x).output)


def write_mnist_like(folder) -> None:
    """A tiny MNIST-format IDX folder: 60 train and 20 test 28x28 images whose brightness
    follows the label."""
    import numpy as np

    from spikeforge.sw.data import write_idx

    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images = (rng.random((n, 28, 28)) * 40 + labels[:, None, None] * 20).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)


def test_trains_on_mnist_format_idx_folder(tmp_path):
    write_mnist_like(tmp_path)
    path = train(tiny("atif-u", dataset="mnist", data_root=str(tmp_path)), out=tmp_path / "m.pt")
    network = integer_network(path)
    assert network.n_inputs == 784
    x, _ = load_dataset("mnist", root=tmp_path, split="test")
    assert network.predict(x).shape == (20,)


def test_checkpoint_scales_and_metadata(trained):
    import json

    ckpt = load_checkpoint(trained["atif-u"])
    network = integer_network(ckpt)
    assert len(ckpt.scales) == len(network.layers)
    assert all(isinstance(s, float) and s > 0 for s in ckpt.scales)
    meta = json.loads(json.dumps(ckpt.metadata))
    assert meta["training"]["config"]["method"] == "atif-u"
    assert meta["training"]["metrics"]["test_int"] == ckpt.metrics["test_int"]


# --- defaults that reach the hardware, honest baselines, and the command's refusals ----------

def test_default_encoder_is_rate_which_the_boards_run():
    assert TrainConfig().encoder_kind == "rate"
    assert TrainConfig(method="atif-u").encoder_kind == "rate"
    assert TrainConfig(method="radix", hidden=()).encoder_kind == "radix"


def test_command_help_shows_every_option_with_its_default(capsys):
    import argparse

    from spikeforge.cli.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    undocumented = [a.dest for a in parser._actions if not a.help]
    assert undocumented == []
    with pytest.raises(SystemExit):
        command_main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = TrainConfig()
    for flag, value in (("--lr", f"{defaults.lr:g}"), ("--seed", defaults.seed),
                        ("--batch-size", defaults.batch_size), ("--epochs", defaults.epochs),
                        ("--method", defaults.method), ("--arch", defaults.arch),
                        ("--timesteps", defaults.timesteps), ("--w-bits", defaults.w_bits)):
        assert flag in text
        assert f"(default {value})" in text, flag
    assert "(default rate" in text  # --encoder


@pytest.mark.parametrize("where", ["folder", "below-file"])
def test_command_refuses_an_out_path_it_cannot_write(tmp_path, capsys, where):
    if where == "folder":
        out, message = tmp_path, "is a folder"
    else:
        (tmp_path / "file").write_text("x")
        out, message = tmp_path / "file" / "run.pt", "which is a file, not a folder"
    assert command_main(["--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if where == "folder" else ["file"])


def test_command_resume_refuses_flags_that_differ_from_the_stored_run(trained, capsys):
    path = str(trained["if"])
    assert command_main(["--resume", "--out", path, "--method", "atif-u", "--epochs", "3",
                         "-T", "4", "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--method atif-u" in err and "--epochs 3" in err and "stored: if" in err
    assert "-T 4" not in err  # timesteps 4 is the stored value: not a conflict
    # flags equal to the stored settings are fine (the run is finished: nothing to do)
    assert command_main(["--resume", "--out", path, "--method", "if", "--epochs", "1",
                         "--quiet"]) == 0


def test_float_ann_baseline_is_independent_of_t_encoder_and_method(tmp_path):
    a = load_checkpoint(train(tiny("if", timesteps=2, encoder="direct"), out=tmp_path / "a.pt"))
    b = load_checkpoint(train(tiny("atif-u", timesteps=5), out=tmp_path / "b.pt"))
    for key in ("test_float_ann", "val_float_ann"):
        assert a.metrics[key] == b.metrics[key], key
    assert a.metrics["float_ann_epochs"] == 1
    # the final weights run as an ANN on the encoded input do depend on T and the encoder
    assert "test_final_ann" in a.metrics
    none = load_checkpoint(train(tiny("if", baseline_epochs=0), out=tmp_path / "c.pt"))
    assert "test_float_ann" not in none.metrics


def test_command_prints_the_float_ann_baseline(tmp_path, capsys):
    out = tmp_path / "run.pt"
    assert command_main(["--hidden", "8", "--ann-epochs", "1", "--epochs", "1", "--out",
                         str(out), "--quiet"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    ckpt = load_checkpoint(out)
    assert "float ANN baseline (same arch, raw pixels)" in text
    assert f"{ckpt.metrics['test_float_ann']:.2%}" in text
    assert integer_network(out).encoder.kind.value == "rate"


def _as_old_checkpoint(path: Path) -> None:
    """Rewrite a checkpoint the way runs before architectures stored it: no ``arch`` in the
    config, ``encoder`` left unset (then meaning direct), no layer kinds, no input shape."""
    data = torch.load(path, weights_only=True)
    for key in ("arch", "baseline_epochs"):
        del data["config"][key]
    data["config"]["encoder"] = None
    for layer in data["network"]["layers"]:
        del layer["kind"]
    del data["input_shape"]
    torch.save(data, path)


def test_checkpoints_from_before_architectures_load_and_export(tmp_path):
    from spikeforge.sw.export import export_network, load_manifest

    path = train(tiny("atif-u", encoder="direct"), out=tmp_path / "old.pt")
    _as_old_checkpoint(path)
    ckpt = load_checkpoint(path)
    assert ckpt.config.arch == "mlp" and ckpt.config.encoder_kind == "direct"
    network = integer_network(ckpt)
    assert network.encoder.kind.value == "direct" and network.is_dense
    model = ckpt.model()
    x, _ = load_dataset("digits", split="test")
    assert torch.equal(model(model.encode(x), mode="hardware").to(torch.int64),
                       network.run(x).output)
    folder = export_network(network, tmp_path / "export", lanes=2, metadata=ckpt.metadata,
                            scales=ckpt.scales)
    assert torch.equal(load_manifest(folder).network.predict(x), network.predict(x))

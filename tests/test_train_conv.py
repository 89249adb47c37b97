"""Convolutional spiking networks: the architecture grammar and presets, training with every
method, and the bit-exactness of the trained network (trainer's hardware mode = golden model =
an independent float64 reference) on all 360 digits test images."""

import pytest
import torch
import torch.nn.functional as F

from spikeforge.sw.data import load_dataset
from spikeforge.sw.golden import ConvLayer, SumPoolLayer
from spikeforge.sw.train import (
    METHODS,
    ConfigError,
    SpikingNet,
    TrainConfig,
    integer_network,
    load_checkpoint,
    resolve_arch,
    train,
)
from spikeforge.sw.train.arch import BOARDS, arch_spec, memory_report
from tests.reference import run_conv_network, run_layers_float64
from tests.test_train_convert import write_mnist_like

#: A small conv net that trains in about a second per method on digits.
ARCH = "c4k3p1-p2-c6k3p1-p2-f10"
KINDS = ("conv", "sumpool", "conv", "sumpool", "dense")
TINY = dict(arch=ARCH, ann_epochs=3, epochs=1, baseline_epochs=1)


def tiny(method, **changes):
    changes = {**TINY, **changes}
    if method == "radix":  # trains from scratch (no ANN phase): give it the ANN's epochs
        changes["epochs"] = changes["ann_epochs"]
    return TrainConfig(method=method, **changes)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("conv")
    return {m: train(tiny(m), out=folder / f"{m}.pt") for m in METHODS}


@pytest.fixture(scope="module")
def digits_test():
    x, y = load_dataset("digits", split="test")
    assert len(y) == 360
    return x, y


# --- the grammar and the presets ---------------------------------------------------------------

def _shapes(spec, shape=(1, 8, 8)):
    return [s.out_shape for s in resolve_arch(spec, shape, 10)]


def test_presets_on_digits_and_mnist_shapes():
    assert _shapes(arch_spec("conv", classes=10)) == [
        (8, 8, 8), (8, 4, 4), (16, 4, 4), (16, 2, 2), (10,)]
    assert _shapes(arch_spec("conv", classes=10), (1, 28, 28)) == [
        (8, 28, 28), (8, 14, 14), (16, 14, 14), (16, 7, 7), (10,)]
    # seed 001: three 3x3 convolutions, each followed by 2x2 average pooling, then dense
    seed = resolve_arch(arch_spec("seed001", classes=10), (1, 8, 8), 10)
    assert [s.kind for s in seed] == ["conv", "pool"] * 3 + ["dense"]
    assert all(s.kernel == 3 for s in seed if s.kind == "conv")
    assert all(s.kernel == 2 for s in seed if s.kind == "pool")
    assert seed[-2].out_shape == (12, 1, 1)
    assert _shapes(arch_spec("seed001", classes=10), (1, 28, 28))[-2] == (12, 3, 3)
    assert arch_spec("mlp", (128,), 10) == "f128-f10"
    assert TrainConfig().spec == "f128-f{classes}"


def test_grammar_defaults_and_options():
    stages = resolve_arch("c5-c3k5s2p2-p3s1-f7-f10", (2, 9, 9), 10)
    assert [(s.kind, s.size, s.kernel, s.stride, s.padding) for s in stages[:3]] == [
        ("conv", 5, 3, 1, 0), ("conv", 3, 5, 2, 2), ("pool", 0, 3, 1, 0)]
    assert [s.out_shape for s in stages] == [(5, 7, 7), (3, 4, 4), (3, 2, 2), (7,), (10,)]


@pytest.mark.parametrize("arch, message", [
    ("c8k3-x2-f10", r"arch token 2 'x2' is not a layer: tokens joined by '-'"),
    ("c8k3--f10", "empty token at position 2"),
    ("c8k3k5-f10", r"arch token 1 'c8k3k5': 'k' is given twice"),
    ("c0-f10", "at least 1 output channel"),
    ("c8k3p3-f10", "padding 3 must be smaller than the kernel 3"),
    ("f64-c8-f10", r"arch token 2 'c8': a conv layer needs an image, but 'f64'"),
    ("c8-f64-p2-f10", r"arch token 3 'p2': a pool layer needs an image"),
    ("c8-p2", "must end with the output layer fN"),
    ("", "arch is empty"),
    ("f10", "has only its output layer, but method 'if' needs at least one hidden layer"),
])
def test_bad_arch_is_refused_naming_the_token(arch, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(arch=arch)


@pytest.mark.parametrize("arch, message", [
    ("c8k9-f10", r"arch token 1 'c8k9': the 9x9 kernel does not fit its 8x8 input"),
    ("c8k3-c8k3-c8k3-c8k3-f10", r"arch token 4 'c8k3': the 3x3 kernel does not fit its 2x2"),
    ("c8k5-c8k7p1-f10", r"token 2 'c8k7p1': the 7x7 kernel does not fit its 4x4 input "
                        r"\(padded by 1: 6x6\)"),
    ("c8p1-p2-p2-p2-p2-f10", r"arch token 5 'p2': the 2x2 pooling window does not fit its 1x1"),
    ("c8-f64", r"arch token 2 'f64': the output layer has 64 neurons but the data has 10 "
               "classes"),
])
def test_arch_that_does_not_fit_the_image_is_refused(arch, message):
    config = TrainConfig(arch=arch)  # the syntax is fine; the image size decides
    with pytest.raises(ConfigError, match=message):
        SpikingNet(config, 64, 10)


def test_hidden_belongs_to_mlp_and_w_bits_per_layer():
    with pytest.raises(ConfigError, match="hidden sets the hidden widths of arch 'mlp' only"):
        TrainConfig(arch="conv", hidden=(64,))
    assert TrainConfig(hidden=(32,)).replace(arch="conv").hidden is None
    assert TrainConfig(arch="conv", w_bits=[8, 4, 2]).layer_bits(3) == (8, 4, 2)
    with pytest.raises(ConfigError, match="w_bits gives 2 widths but arch 'conv' has 3"):
        TrainConfig(arch="conv", w_bits=(8, 4))
    with pytest.raises(ConfigError, match="w_bits must be an integer from 2 to 8"):
        TrainConfig(arch="conv", w_bits=(8, 4, 9))


def test_command_arch_errors_are_one_line(tmp_path, capsys):
    from spikeforge.cli import main

    out = tmp_path / "run.pt"
    assert main(["train", "--arch", "c8k9-f10", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "arch token 1 'c8k9': the 9x9 kernel does not fit its 8x8 input" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_conv_preset_fits_both_boards_even_at_the_widest_words():
    """8-bit weights and 32-bit membranes (the contract's widest) on MNIST's 28x28 images:
    weights plus membranes stay below the UP5K's EBR + SPRAM and the ECP5 85F's EBR."""
    for shape in ((1, 8, 8), (1, 28, 28)):
        stages = resolve_arch(arch_spec("conv", classes=10), shape, 10)
        bits = 0
        for s in stages:
            if s.kind == "conv":
                bits += (s.size * s.in_shape[0] * s.kernel ** 2 + s.size) * 8
            elif s.kind == "dense":
                bits += (s.fan_in + 1) * s.size * 8
            bits += s.fan_out * 32 if s.is_neuron else 0
        assert bits < BOARDS["UP5K"]["ebr"] + BOARDS["UP5K"]["spram"]
        assert bits < BOARDS["ECP5-85F"]["ebr"]


def test_conv_wide_preset_parses_with_the_documented_shapes_and_budget():
    """``conv-wide`` is ``conv`` with 16 and 32 channels (docs/training.md, Presets). On 28x28
    images its weights and membranes exceed the UP5K's EBR even at 4-bit weights and 8-bit
    membranes, but fit its EBR + SPRAM and the 85F's EBR at the widest words."""
    spec = arch_spec("conv-wide", classes=10)
    assert spec == "c16k3p1-p2-c32k3p1-p2-f10"
    assert TrainConfig(arch="conv-wide").spec == "c16k3p1-p2-c32k3p1-p2-f{classes}"
    assert _shapes(spec) == [(16, 8, 8), (16, 4, 4), (32, 4, 4), (32, 2, 2), (10,)]
    assert _shapes(spec, (1, 28, 28)) == [
        (16, 28, 28), (16, 14, 14), (32, 14, 14), (32, 7, 7), (10,)]
    stages = resolve_arch(spec, (1, 28, 28), 10)

    def bits(w_bits, v_bits):
        total = 0
        for s in stages:
            if s.kind == "conv":
                total += s.size * s.in_shape[0] * s.kernel ** 2 * w_bits + s.size * v_bits
            elif s.kind == "dense":
                total += s.fan_in * s.size * w_bits + s.size * v_bits
            total += s.fan_out * v_bits if s.is_neuron else 0
        return total

    assert bits(4, 8) > BOARDS["UP5K"]["ebr"]
    assert bits(8, 32) < BOARDS["UP5K"]["ebr"] + BOARDS["UP5K"]["spram"]
    assert bits(8, 32) < BOARDS["ECP5-85F"]["ebr"]


# --- average pooling: sum pooling in the integer network, 1/k^2 folded into the next layer --------

def test_average_pool_is_sum_pool_with_the_scale_in_the_next_layer(trained):
    model = load_checkpoint(trained["if"]).model()
    counts = torch.randint(0, 5, (3, 4 * 8 * 8)).float()  # spike counts of layer 0
    conv = model.linears[1]
    ann = model.ann_layer(1, counts)  # float ANN: average pooling, float weights
    summed = F.avg_pool2d(counts.reshape(3, 4, 8, 8), 2, divisor_override=1).reshape(3, -1)
    folded = F.conv2d(summed.reshape(3, 4, 4, 4), conv.weight / 4, conv.bias, 1, 1)
    assert torch.allclose(ann, folded.reshape(3, -1), atol=1e-5)
    # the integer weights quantize W * a_0 / 4 (a_0: the spike amplitude of layer 0)
    q = model.quantized(1)
    w_eff = conv.weight.detach() * model.neurons[0].amplitude().detach() / 4
    qmax = 2 ** (model.bits[1] - 1) - 1
    assert torch.equal(q["weight_int"], torch.clamp(torch.round(w_eff / q["scale"]), -qmax, qmax))
    network = model.to_network()
    assert isinstance(network.layers[1], SumPoolLayer) and network.layers[1].kernel == (2, 2)
    assert torch.equal(network.layers[2].weight, q["weight_int"].to(torch.int64))


# --- every method trains a conv net, and the integer network is bit-exact ----------------------

@pytest.mark.parametrize("method", METHODS)
def test_conv_hardware_mode_equals_golden_and_reference(trained, digits_test, method):
    x, y = digits_test
    ckpt = load_checkpoint(trained[method])
    network = integer_network(ckpt)
    assert network.kinds == KINDS
    model = ckpt.model()
    frames = model.encode(x)
    assert torch.equal(frames.to(torch.int64), network.encode(x))
    trace = network.run(x)
    hardware = model(frames, mode="hardware")
    assert torch.equal(hardware.to(torch.int64), trace.output)  # every membrane, not argmax
    best = hardware.max(1, keepdim=True).values
    pred = torch.where(hardware == best, torch.arange(10), 99).min(1).values
    assert torch.equal(pred, network.predict(x))
    # the independent float64 reference (conv as its dense matrix, pooling as a 0/1 matrix)
    reference, outputs = run_layers_float64(model.compile(), frames, model.timesteps)
    assert torch.equal(reference, trace.output)
    for k, (got, want) in enumerate(zip(trace.layers, outputs, strict=True)):
        assert torch.equal(got.spikes, want), network.layers[k].name
    assert ckpt.metrics["test_int"] == ckpt.metrics["test_hardware"]
    assert ckpt.metrics["test_int"] == float((network.predict(x) == y).float().mean())
    assert len(torch.unique(trace.output, dim=0)) > 10  # not a constant network
    if method != "radix":
        assert ckpt.metrics["test_int"] > 0.2  # learned something (chance: 0.1)


def test_conv_golden_equals_the_scalar_reference_image_by_image(trained, digits_test):
    x, _ = digits_test
    network = integer_network(trained["atif-u"])
    frames = network.encode(x[:3])
    trace = network.trace(x[:3])
    layers = []
    for layer in network.layers:
        if isinstance(layer, SumPoolLayer):
            layers.append({"kind": "sumpool", "input_shape": layer.input_shape,
                           "kernel": layer.kernel, "stride": layer.stride})
            continue
        spec = {"kind": layer.kind, "weight": layer.weight.tolist(),
                "bias": layer.bias.tolist(), "theta": layer.theta.tolist(),
                "leak_shift": layer.leak_shift, "fire_mode": layer.fire_mode.value,
                "v_init": layer.v_init, "fires": layer.fires, "v_bits": layer.v_bits}
        if isinstance(layer, ConvLayer):
            spec.update(input_shape=layer.input_shape, stride=layer.stride,
                        padding=layer.padding)
        layers.append(spec)
    for i in range(3):
        outputs, readout = run_conv_network(layers, frames[i].tolist())
        assert readout == trace.output[i].tolist()
        for k, (spikes, _, events, synops) in enumerate(outputs):
            assert spikes == trace.layers[k].spikes[i].tolist()
            assert events == int(trace.layers[k].input_events[i])
            assert synops == int(trace.layers[k].synops[i])


@pytest.mark.parametrize("method", METHODS)
def test_conv_membranes_fit_their_v_bits_bound(trained, digits_test, method):
    """v_bits holds |v_init| + T * max(|b| + sum|W| * in_max), in_max being the pooled
    count bound (4 after a 2x2 pool), so no membrane ever saturates."""
    network = integer_network(trained[method])
    trace = network.trace(digits_test[0])
    in_max = 1
    for k, layer in enumerate(network.layers):
        if isinstance(layer, SumPoolLayer):
            in_max *= layer.area
            continue
        rows = layer.weight.reshape(layer.weight.shape[0], -1).abs().sum(1)
        current = int((layer.bias.abs() + rows * in_max).max())
        T = network.timesteps
        bound = abs(layer.v_init) + (2 * (current + int(layer.theta.max())) + 1
                                     if layer.leak_shift else T * current)
        assert layer.v_bits == max(8, max(bound, int(layer.theta.max())).bit_length() + 1)
        peak = int(trace.layers[k].membranes.abs().max())
        assert peak < 2 ** (layer.v_bits - 1) - 1
        in_max = 1


@pytest.mark.parametrize("method", ["radix", "ptl"])
def test_conv_methods_keep_their_integer_form(trained, method):
    network = integer_network(trained[method])
    neurons = [layer for layer in network.layers if not isinstance(layer, SumPoolLayer)]
    assert not neurons[-1].fires and all(layer.fires for layer in neurons[:-1])
    if method == "radix":
        assert network.encoder.kind.value == "radix"
        assert all(layer.leak_shift == 1 for layer in neurons)
        assert all(layer.fire_mode.value == "threshold" for layer in neurons)
    else:
        assert network.encoder.kind.value == "rate"
        assert all(layer.leak_shift == 0 for layer in neurons)


def test_conv_weight_widths_per_layer(tmp_path, digits_test):
    path = train(tiny("atif-u", w_bits=(2, 8, 3), ann_epochs=1), out=tmp_path / "w.pt")
    network = integer_network(path)
    neurons = [layer for layer in network.layers if not isinstance(layer, SumPoolLayer)]
    assert [layer.w_bits for layer in neurons] == [2, 8, 3]
    for layer in neurons:
        assert int(layer.weight.abs().max()) <= 2 ** (layer.w_bits - 1) - 1
    model = load_checkpoint(path).model()
    x = digits_test[0]
    assert torch.equal(model(model.encode(x), mode="hardware").to(torch.int64),
                       network.run(x).output)


def test_conv_qrelu_synop_loss_counts_reach_through_pooling(tmp_path):
    """The SynOp estimate of the QReLU counts is the golden model's hidden synops when the
    counts are the SNN's (every spike reaches the next conv at its pooled address)."""
    model = load_checkpoint(train(tiny("qrelu", synop_target=500.0, ann_epochs=1),
                                  out=tmp_path / "q.pt")).model()
    x, _ = load_dataset("digits", split="val")
    network = model.to_network()
    trace = network.run(x[:50])
    counts = [trace.layers[0].spikes.sum(1).float(), trace.layers[2].spikes.sum(1).float()]
    estimate = model.synops_estimate(counts)
    golden = trace.layers[2].synops + trace.layers[4].synops
    assert torch.equal(estimate.to(torch.int64), golden)


def test_conv_checkpoint_scales_and_metadata(trained):
    ckpt = load_checkpoint(trained["atif-u"])
    network = integer_network(ckpt)
    assert len(ckpt.scales) == len(network.layers)
    assert [s is None for s in ckpt.scales] == [k == "sumpool" for k in network.kinds]
    assert ckpt.metadata["training"]["arch"] == ARCH
    assert ckpt.arch == ARCH and ckpt.input_shape == (1, 8, 8)
    assert {"test_float_ann", "val_float_ann", "test_final_ann"} <= set(ckpt.metrics)
    rows = memory_report(network)
    assert [r["kind"] for r in rows] == list(KINDS)
    assert rows[0]["weight_bits"] == 4 * 1 * 3 * 3 * 4  # the kernel is stored once
    assert rows[0]["membrane_bits"] == 4 * 8 * 8 * network.layers[0].v_bits


def test_conv_resume_gives_the_uninterrupted_result(tmp_path):
    config = tiny("atif-u", ann_epochs=2, epochs=2)
    full = load_checkpoint(train(config, out=tmp_path / "full.pt"))

    class Stop(Exception):
        pass

    def stop_after_three(record):  # dies inside the snn phase, after its first epoch
        seen.append(record)
        if len(seen) == 3:
            raise Stop

    seen: list = []
    path = tmp_path / "part.pt"
    with pytest.raises(Stop):
        train(config, out=path, progress=stop_after_three)
    assert (load_checkpoint(path).phase, load_checkpoint(path).epoch) == (1, 1)
    resumed = load_checkpoint(train(out=path, resume=True))
    for key in full.model_state:
        assert torch.allclose(full.model_state[key], resumed.model_state[key]), key
    assert full.metrics["test_int"] == resumed.metrics["test_int"]
    assert torch.equal(integer_network(full).layers[0].weight,
                       integer_network(resumed).layers[0].weight)


def test_conv_trains_on_28x28_images(tmp_path):
    write_mnist_like(tmp_path)
    path = train(TrainConfig(method="if", arch="conv", ann_epochs=1, epochs=1,
                             baseline_epochs=1, dataset="mnist", data_root=str(tmp_path)),
                 out=tmp_path / "m.pt")
    network = integer_network(path)
    assert network.n_inputs == 784 and network.layers[0].input_shape == (1, 28, 28)
    assert network.layers[-1].fan_in == 16 * 7 * 7
    x, _ = load_dataset("mnist", root=tmp_path, split="test")
    model = load_checkpoint(path).model()
    assert torch.equal(model(model.encode(x), mode="hardware").to(torch.int64),
                       network.run(x).output)


@pytest.mark.parametrize("T", [3, 4])
def test_one_layer_radix_with_pooling_keeps_the_closed_form(T):
    """Seed 002's ANN domain (floor(A / 2**(T-1)), A = b (2**T - 1) + W X) with sum pooling
    before the layer equals the integer network: pooling is linear, like reading the trains."""
    torch.manual_seed(T)
    model = SpikingNet(TrainConfig(method="radix", arch="p2-f10", timesteps=T), 64, 10)
    with torch.no_grad():
        model.linears[0].bias.uniform_(-2, 2)
    pixels = torch.randint(0, 16, (40, 64))
    frames = model.encode(pixels)
    with torch.no_grad():
        ann = model(frames, mode="ann")
    hardware = model(frames, mode="hardware")
    scaled = torch.round(ann.double() * 2 ** (T - 1))
    assert torch.equal(torch.div(scaled, 2 ** (T - 1), rounding_mode="floor").float(), hardware)
    assert model.to_network().kinds == ("sumpool", "dense")

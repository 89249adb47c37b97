"""Convolution and sum pooling in the golden model, against plain-loop references and PyTorch."""

import random

import pytest
import torch
import torch.nn.functional as F

from spikeforge.sw.golden import (
    ContractError,
    ConvLayer,
    DenseLayer,
    Encoder,
    Network,
    SumPoolLayer,
    signed_range,
)
from tests import reference

# --- random cases ----------------------------------------------------------------------------


def random_geometry(rng: random.Random, max_size=7):
    """Input shape, kernel, stride and padding that fit (kernel 1..5, stride 1..2, pad 0..2)."""
    shape = (rng.randint(1, 3), rng.randint(1, max_size), rng.randint(1, max_size))
    padding = (rng.randint(0, 2), rng.randint(0, 2))
    stride = (rng.randint(1, 2), rng.randint(1, 2))
    most = (min(5, shape[1] + 2 * padding[0]), min(5, shape[2] + 2 * padding[1]))
    if rng.random() < 0.5:  # square kernel, given as an int where stride/padding allow it
        k = rng.randint(1, min(most))
        kernel = (k, k)
    else:
        kernel = (rng.randint(1, most[0]), rng.randint(1, most[1]))
    def as_int(pair):
        return pair[0] if pair[0] == pair[1] and rng.random() < 0.5 else pair

    return shape, kernel, as_int(stride), as_int(padding)


def random_conv(rng: random.Random, timesteps, geometry=None, **overrides) -> ConvLayer:
    shape, kernel, stride, padding = geometry or random_geometry(rng)
    w_bits = overrides.pop("w_bits", rng.randint(2, 8))
    v_bits = overrides.pop("v_bits", rng.randint(5, 12))
    out_channels = overrides.pop("out_channels", rng.randint(1, 3))
    w_low, w_high = signed_range(w_bits)
    v_low, v_high = signed_range(v_bits)
    fields = dict(
        weight=torch.randint(w_low, w_high + 1, (out_channels, shape[0], *kernel),
                             generator=torch.Generator().manual_seed(rng.randint(0, 2**31))),
        bias=[rng.randint(max(v_low, -8), min(v_high, 8)) for _ in range(out_channels)],
        theta=[rng.randint(1, min(v_high, 40)) for _ in range(timesteps)],
        leak_shift=rng.choice([0, 0, 1, 2]),
        fire_mode=rng.choice(["threshold", "threshold", "radix"]),
        v_init=rng.randint(max(v_low, -10), min(v_high, 10)),
        fires=rng.random() > 0.2,
        w_bits=w_bits, v_bits=v_bits,
        input_shape=shape, stride=stride, padding=padding,
    )
    fields.update(overrides)
    return ConvLayer(**fields)


def neuron_fields(layer):
    return dict(leak_shift=layer.leak_shift, fire_mode=layer.fire_mode.value,
                v_init=layer.v_init, fires=layer.fires, v_bits=layer.v_bits)


def as_dict(layer) -> dict:
    """A golden layer as the plain lists and ints of ``reference.run_conv_network``."""
    if isinstance(layer, SumPoolLayer):
        return dict(kind="sumpool", kernel=layer.kernel, stride=layer.stride,
                    padding=layer.padding, input_shape=layer.input_shape)
    fields = dict(kind=layer.kind, weight=layer.weight.tolist(), bias=layer.bias.tolist(),
                  theta=layer.theta.tolist(), **neuron_fields(layer))
    if isinstance(layer, ConvLayer):
        fields.update(input_shape=layer.input_shape, stride=layer.stride, padding=layer.padding)
    return fields


def random_inputs(rng: random.Random, batch, timesteps, n, *, top=1):
    density = rng.uniform(0.2, 0.95)
    return [[[rng.randint(1, top) if rng.random() < density else 0 for _ in range(n)]
             for _ in range(timesteps)] for _ in range(batch)]


def conv_case(seed):
    rng = random.Random(seed)
    timesteps = rng.randint(1, 6)
    layer = random_conv(rng, timesteps)
    return layer, random_inputs(rng, 2, timesteps, layer.fan_in)


def check_conv_against(layer, inputs, run_reference, what=""):
    """The golden layer's spikes and membranes equal ``run_reference(sample)`` on every sample."""
    spikes, v_final, membranes = layer.run(torch.tensor(inputs), trace=True)
    for b, sample in enumerate(inputs):
        want_spikes, want_membranes = run_reference(sample)
        assert spikes[b].tolist() == want_spikes, f"{what}: spikes, sample {b}"
        assert membranes[b].tolist() == want_membranes, f"{what}: membranes, sample {b}"
        assert v_final[b].tolist() == want_membranes[-1], f"{what}: final membrane"


def conv_reference(layer):
    return lambda sample: reference.run_conv_layer(
        layer.weight.tolist(), layer.bias.tolist(), layer.theta.tolist(), sample,
        input_shape=layer.input_shape, stride=layer.stride, padding=layer.padding,
        **neuron_fields(layer))


SEEDS = range(60)


# --- the scalar reference ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_conv_layer_matches_the_scalar_reference(seed):
    layer, inputs = conv_case(seed)
    check_conv_against(layer, inputs, conv_reference(layer), f"seed {seed}, {layer}")


def _saturates(layer, inputs) -> bool:
    """True if the v_bits clamp changed some membrane (against the same layer, unbounded)."""
    unbounded = conv_reference(layer.with_(v_bits=32))
    bounded = conv_reference(layer)
    return any(unbounded(sample) != bounded(sample) for sample in inputs)


def test_the_random_cases_cover_every_field_and_hit_saturation():
    """The seeds above are not a vacuous sample: every option occurs, saturation often."""
    cases = [conv_case(seed) for seed in SEEDS]
    layers = [layer for layer, _ in cases]
    saturated = sum(_saturates(layer, inputs) for layer, inputs in cases)
    assert saturated >= 10, f"only {saturated} of {len(cases)} cases hit the v_bits clamp"
    assert {layer.stride[0] for layer in layers} == {1, 2}
    assert {layer.padding[0] for layer in layers} == {0, 1, 2}
    assert {layer.kernel[0] for layer in layers} == {1, 2, 3, 4, 5}
    assert any(layer.kernel[0] != layer.kernel[1] for layer in layers)
    assert {layer.in_channels for layer in layers} == {1, 2, 3}
    assert {layer.out_channels for layer in layers} == {1, 2, 3}
    assert {layer.fire_mode.value for layer in layers} == {"threshold", "radix"}
    assert {layer.fires for layer in layers} == {True, False}
    assert {layer.leak_shift for layer in layers} == {0, 1, 2}
    assert any(layer.v_init < 0 for layer in layers) and any(layer.v_init > 0 for layer in layers)
    assert any((layer.output_shape[1] - 1) * layer.stride[0] + layer.kernel[0] <
               layer.padding[0] + layer.input_shape[1] for layer in layers), \
        "no case drops a pixel row (a partial last window)"


@pytest.mark.parametrize("seed", range(8))
def test_conv_saturation_matches_the_reference(seed):
    """Dense all-ones input, large weights and narrow membranes: the clamp is hit every time."""
    rng = random.Random(2000 + seed)
    timesteps = rng.randint(2, 6)
    geometry = ((2, 5, 5), (3, 3), 1, 1)
    weight = torch.full((2, 2, 3, 3), 100 if seed % 2 else -100)
    weight[1] *= -1
    layer = random_conv(rng, timesteps, geometry, w_bits=8, v_bits=rng.randint(5, 7),
                        out_channels=2, weight=weight)
    inputs = [[[1] * layer.fan_in for _ in range(timesteps)]]
    assert _saturates(layer, inputs)
    check_conv_against(layer, inputs, conv_reference(layer), f"seed {seed}")
    _, _, membranes = layer.run(torch.tensor(inputs), trace=True)
    low, high = signed_range(layer.v_bits)
    assert membranes.min() >= low and membranes.max() <= high


@pytest.mark.parametrize("seed", range(40))
def test_sum_pool_matches_the_scalar_reference(seed):
    rng = random.Random(seed)
    shape = (rng.randint(1, 3), rng.randint(1, 9), rng.randint(1, 9))
    kernel = (rng.randint(1, min(3, shape[1])), rng.randint(1, min(3, shape[2])))
    stride = rng.choice([None, (rng.randint(1, 3), rng.randint(1, 3)), rng.randint(1, 2)])
    padding = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2))
    pool = SumPoolLayer(kernel=kernel, stride=stride, padding=padding, input_shape=shape)
    timesteps = rng.randint(1, 4)
    inputs = random_inputs(rng, 3, timesteps, pool.fan_in, top=rng.choice([1, 4]))
    counts, v_final, membranes = pool.run(torch.tensor(inputs), trace=True)
    assert v_final is None and torch.equal(membranes, counts)
    for b, sample in enumerate(inputs):
        want = [reference.sum_pool(frame, shape, kernel, stride, padding) for frame in sample]
        assert counts[b].tolist() == want, f"seed {seed}, {pool}"
    # PyTorch's own pooling gives the same windows
    x = torch.tensor(inputs, dtype=torch.float64).reshape(-1, *shape)
    torch_sum = F.avg_pool2d(x, kernel, pool.stride, padding) * pool.area
    assert pool.output_shape == tuple(torch_sum.shape[1:])


# --- PyTorch's convolution ---------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(30))
def test_conv_current_equals_torch_conv2d(seed):
    rng = random.Random(seed)
    layer = random_conv(rng, 1, w_bits=8, v_bits=32, fires=False, v_init=0, leak_shift=0)
    x = torch.tensor(random_inputs(rng, 4, 1, layer.fan_in, top=rng.choice([1, 15])))[:, 0]
    want = F.conv2d(x.to(torch.float64).reshape(-1, *layer.input_shape),
                    layer.weight.to(torch.float64), layer.bias.to(torch.float64),
                    stride=layer.stride, padding=layer.padding)
    assert layer.output_shape == tuple(want.shape[1:])
    want = want.reshape(len(x), -1)
    for dtype in (torch.float32, torch.float64, torch.int64):  # every exact path
        got = layer.current(x, dtype) + layer.bias.repeat_interleave(layer.fan_out //
                                                                      layer.out_channels)
        assert torch.equal(got.to(torch.float64), want), (seed, dtype)
    # and the whole neuron: one step, no saturation, no firing, final membrane = conv2d + bias
    _, v_final, _ = layer.run(x[:, None, :])
    assert torch.equal(v_final.to(torch.float64), want)


def test_conv_reach_counts_the_neurons_each_input_feeds():
    """reach() equals the plain loops and the gradient of sum(conv2d(x, ones)) w.r.t. x."""
    rng = random.Random(7)
    for _ in range(30):
        layer = random_conv(rng, 1)
        want = reference.conv_reach(layer.out_channels, layer.kernel, layer.input_shape,
                                    layer.stride, layer.padding)
        assert layer.reach().tolist() == want
        x = torch.zeros((1, *layer.input_shape), dtype=torch.float64, requires_grad=True)
        ones = torch.ones((layer.out_channels, layer.in_channels, *layer.kernel),
                          dtype=torch.float64)
        F.conv2d(x, ones, stride=layer.stride, padding=layer.padding).sum().backward()
        assert x.grad.flatten().to(torch.int64).tolist() == want


def test_conv_reach_with_padding_and_stride_by_hand():
    # 1x3x3 input, 2 channels, 3x3 kernel, padding 1: every 3x3 output sees a pixel once per
    # window covering it; the corner is covered by 4 windows, the edge by 6, the centre by 9.
    layer = ConvLayer(torch.ones((2, 1, 3, 3), dtype=torch.int64), [0, 0], [1],
                      input_shape=(1, 3, 3), padding=1)
    assert layer.reach().reshape(3, 3).tolist() == [[8, 12, 8], [12, 18, 12], [8, 12, 8]]
    # stride 2, no padding, 5 wide, 3 kernel: windows at 0..2 and 2..4, column 2 is in both
    layer = ConvLayer(torch.ones((1, 1, 1, 3), dtype=torch.int64), [0], [1],
                      input_shape=(1, 1, 6), stride=2)
    assert layer.output_shape == (1, 1, 2)
    assert layer.reach().tolist() == [1, 1, 2, 1, 1, 0]  # column 5: in a dropped window


# --- order and batch independence --------------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
def test_batch_order_and_batch_size_never_change_a_sample(seed):
    rng = random.Random(seed)
    timesteps = rng.randint(1, 6)
    layer = random_conv(rng, timesteps)
    x = torch.tensor(random_inputs(rng, 9, timesteps, layer.fan_in))
    spikes, v_final, membranes = layer.run(x, trace=True)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(seed))
    p_spikes, p_v, p_membranes = layer.run(x[perm], trace=True)
    assert torch.equal(p_spikes, spikes[perm]) and torch.equal(p_membranes, membranes[perm])
    assert torch.equal(p_v, v_final[perm])
    for b in (0, 4):
        alone = layer.run(x[b:b + 1], trace=True)
        assert torch.equal(alone[0], spikes[b:b + 1]) and torch.equal(alone[2], membranes[b:b + 1])


@pytest.mark.parametrize("seed", range(10))
def test_the_order_of_events_within_a_timestep_never_matters(seed):
    """A step's current is the sum of each event's own current, added in any order; and the
    float32, float64 and int64 paths (different summation orders) give the same run."""
    rng = random.Random(seed)
    timesteps = rng.randint(1, 5)
    layer = random_conv(rng, timesteps)
    x = torch.tensor(random_inputs(rng, 3, timesteps, layer.fan_in))
    frame = x[0, 0]
    events = frame.nonzero().flatten().tolist()
    rng.shuffle(events)
    total = torch.zeros(layer.fan_out, dtype=torch.int64)
    for j in events:
        one = torch.zeros((1, layer.fan_in), dtype=torch.int64)
        one[0, j] = frame[j]
        total += layer.current(one, torch.int64)[0]
    assert torch.equal(total, layer.current(frame[None], torch.int64)[0])

    runs = []
    for dtype in (torch.float32, torch.float64, torch.int64):
        forced = type("Forced", (ConvLayer,),
                      {"_compute_dtype": lambda self, s, p=None, d=dtype: d})
        runs.append(forced(**{k: getattr(layer, k) for k in layer.__dataclass_fields__})
                    .run(x, trace=True))
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            assert torch.equal(a, b)
        assert other[0].dtype == torch.int64


@pytest.mark.parametrize("seed", range(6))
def test_permuting_input_channels_never_changes_outputs(seed):
    rng = random.Random(seed)
    timesteps = rng.randint(1, 5)
    layer = random_conv(rng, timesteps, geometry=((3, 6, 5), (3, 2), 1, 1))
    x = torch.tensor(random_inputs(rng, 4, timesteps, layer.fan_in))
    perm = torch.randperm(3, generator=torch.Generator().manual_seed(seed))
    permuted = layer.with_(weight=layer.weight[:, perm])
    x_perm = x.reshape(4, timesteps, 3, 30)[:, :, perm].reshape(4, timesteps, -1)
    for a, b in zip(layer.run(x, trace=True), permuted.run(x_perm, trace=True), strict=True):
        assert torch.equal(a, b)


# --- whole networks ----------------------------------------------------------------------------

def lenet(rng, timesteps, last, encoder=None, pool_stride=None):
    """conv(1->2, k3) -> pool 2 -> conv(2->3, k2, pad 1) -> dense(-> 4) on 1x8x8 images.

    Mostly excitatory kernels and low thresholds, so that every layer fires and the pooling
    layer passes counts above one.
    """
    gen = torch.Generator().manual_seed(rng.randint(0, 2**31))
    conv1 = random_conv(rng, timesteps, ((1, 8, 8), (3, 3), 1, 0), out_channels=2,
                        weight=torch.randint(-2, 6, (2, 1, 3, 3), generator=gen), w_bits=4,
                        theta=[rng.randint(2, 8) for _ in range(timesteps)], fires=True,
                        fire_mode="threshold", name="conv1", v_bits=10)
    pool = SumPoolLayer(kernel=2, stride=pool_stride, input_shape=conv1.output_shape,
                        name="pool1")
    conv2 = random_conv(rng, timesteps, (pool.output_shape, (2, 2), 1, 1), out_channels=3,
                        weight=torch.randint(-3, 6, (3, 2, 2, 2), generator=gen), w_bits=4,
                        theta=[rng.randint(2, 8) for _ in range(timesteps)], fires=True,
                        fire_mode="threshold", name="conv2", v_bits=10)
    fc = DenseLayer(weight=torch.randint(-8, 8, (4, conv2.fan_out), generator=gen),
                    bias=[0, 1, -1, 2], theta=[rng.randint(1, 6) for _ in range(timesteps)],
                    w_bits=4, name="fc", **last)
    return Network([conv1, pool, conv2, fc], timesteps, encoder or Encoder("rate", 4))


def check_network_against_reference(net, pixels):
    trace = net.trace(pixels)
    assert len(trace.layers) == len(net.layers)
    for b in range(len(pixels)):
        outputs, readout = reference.run_conv_network(
            [as_dict(k) for k in net.layers], trace.inputs[b].tolist(),
            direct=net.encoder.kind.value == "direct")
        for k, (spikes, membranes, events, synops) in enumerate(outputs):
            got = trace.layers[k]
            assert got.spikes[b].tolist() == spikes, f"layer {k}, sample {b}"
            if membranes is not None:
                assert got.membranes[b].tolist() == membranes, f"layer {k}, sample {b}"
            assert got.input_events[b].item() == events, f"layer {k} events, sample {b}"
            assert got.synops[b].item() == synops, f"layer {k} synops, sample {b}"
        assert trace.output[b].tolist() == readout
        best = max(readout)
        assert trace.prediction[b].item() == readout.index(best)  # ties: the lowest index
    run = net.run(pixels)
    assert torch.equal(run.output, trace.output) and all(lt.membranes is None for lt in run.layers)
    assert torch.equal(net.predict(pixels), trace.prediction)
    return trace


@pytest.mark.parametrize("last", [dict(fires=False), dict(fire_mode="threshold"),
                                  dict(fire_mode="radix", leak_shift=1)],
                         ids=["membrane", "count", "radix"])
@pytest.mark.parametrize("seed", range(3))
def test_conv_pool_conv_dense_network_end_to_end(seed, last):
    rng = random.Random(seed)
    timesteps = rng.randint(2, 5)
    net = lenet(rng, timesteps, last)
    assert net.kinds == ("conv", "sumpool", "conv", "dense") and not net.is_dense
    pixels = torch.randint(0, 16, (4, 64), generator=torch.Generator().manual_seed(seed))
    trace = check_network_against_reference(net, pixels)
    pooled = trace.layers[1].spikes
    assert pooled.max() >= 2, "the pooling layer should pass counts, not only single spikes"
    assert trace.layers[1].synops.sum() == 0
    assert torch.equal(trace.layers[2].input_events, pooled.sum((1, 2)))


@pytest.mark.parametrize("encoder", [Encoder("rate", 4), Encoder("radix", 4), Encoder("direct", 4)])
def test_conv_dense_network_end_to_end(encoder):
    rng = random.Random(11)
    conv = random_conv(rng, 3, ((2, 5, 4), (3, 3), 2, 1), out_channels=3, fires=True,
                       v_bits=12, name="conv")
    gen = torch.Generator().manual_seed(3)
    fc = DenseLayer(weight=torch.randint(-8, 8, (5, conv.fan_out), generator=gen), bias=[0] * 5,
                    theta=[3, 3, 3], w_bits=4, fires=False, name="fc")
    net = Network([conv, fc], 3, encoder)
    pixels = torch.randint(0, 16, (6, conv.fan_in), generator=torch.Generator().manual_seed(1))
    trace = check_network_against_reference(net, pixels)
    if encoder.kind.value == "direct":  # a pixel is one event carrying its value
        assert torch.equal(trace.layers[0].input_events, (trace.inputs != 0).sum((1, 2)))


@pytest.mark.parametrize("kind", ["direct", "rate"])
def test_pooling_the_input_frames_and_a_non_firing_conv_readout(kind):
    rng = random.Random(5)
    pool = SumPoolLayer(kernel=(2, 3), stride=(2, 1), input_shape=(1, 6, 7), name="pool0")
    conv = random_conv(rng, 4, (pool.output_shape, (2, 2), 1, 0), out_channels=2, fires=False,
                       name="readout", v_bits=14)
    net = Network([pool, conv], 4, Encoder(kind, 4))
    pixels = torch.randint(0, 16, (3, pool.fan_in), generator=torch.Generator().manual_seed(2))
    trace = check_network_against_reference(net, pixels)
    assert trace.output.shape == (3, conv.fan_out)
    pooled = trace.layers[0].spikes
    assert pooled.max() >= 2
    want = (pooled != 0).sum((1, 2)) if kind == "direct" else pooled.sum((1, 2))
    assert torch.equal(trace.layers[1].input_events, want)


def test_sum_pool_then_layer_equals_the_layer_at_the_pooled_address():
    """Pooling is an address transform: each spike, sent alone to its window's address, adds up
    to the same current as the pooled counts (docs/contract.md)."""
    rng = random.Random(3)
    pool = SumPoolLayer(kernel=2, input_shape=(2, 6, 6))
    conv = random_conv(rng, 1, (pool.output_shape, (2, 2), 1, 1), v_bits=20)
    spikes = torch.tensor(random_inputs(rng, 1, 1, pool.fan_in))[0, 0]
    pooled = pool.pool(spikes[None])[0]
    by_address = torch.zeros(conv.fan_out, dtype=torch.int64)
    for j in spikes.nonzero().flatten().tolist():
        c, rest = divmod(j, 36)
        y, x = divmod(rest, 6)
        address = (c * 3 + y // 2) * 3 + x // 2
        event = torch.zeros((1, conv.fan_in), dtype=torch.int64)
        event[0, address] = 1
        by_address += conv.current(event, torch.int64)[0]
    assert torch.equal(by_address, conv.current(pooled[None], torch.int64)[0])


def test_dense_networks_are_unchanged_and_say_so():
    layer = DenseLayer(weight=[[1, 1]], bias=[0], theta=[1, 1], name="fc1")
    net = Network([layer], timesteps=2)
    assert net.is_dense and net.kinds == ("dense",)
    net.require_dense("the accelerator")
    conv = ConvLayer(torch.ones((1, 1, 1, 2), dtype=torch.int64), [0], [1, 1],
                     input_shape=(1, 1, 2), name="conv1")
    mixed = Network([conv, layer.with_(weight=[[1]])], timesteps=2)
    with pytest.raises(ContractError, match=r"^the accelerator maps dense layers only, but "
                       r"layers\[0\] \(conv1\) is a conv layer$"):
        mixed.require_dense("the accelerator")


# --- bad input names the field -----------------------------------------------------------------

CONV = dict(weight=torch.ones((2, 1, 3, 3), dtype=torch.int64), bias=[0, 0], theta=[1, 1],
            input_shape=(1, 5, 5), name="c1")


@pytest.mark.parametrize("changes, message", [
    (dict(bias=[0]), r"c1\.bias has 1 entries but weight has 2 output channels"),
    (dict(input_shape=(2, 5, 5)), r"c1\.weight takes 1 input channels but input_shape "
                                  r"\(2, 5, 5\) has 2"),
    (dict(input_shape=(1, 2, 5)), r"c1\.weight kernel 3x3 does not fit the padded input 2x5"),
    (dict(input_shape=(1, 5, 1), padding=(1, 0)), r"c1\.weight kernel 3x3 does not fit the "
                                                  r"padded input 7x1"),
    (dict(input_shape=(1, 5)), r"c1\.input_shape must be \(channels, height, width\)"),
    (dict(input_shape=(1, 0, 5)), r"c1\.input_shape must be \(channels, height, width\)"),
    (dict(input_shape=None), r"c1\.input_shape is missing"),
    (dict(stride=0), r"c1\.stride must be >= 1"),
    (dict(stride=(1, 2, 3)), r"c1\.stride must be an integer or a pair"),
    (dict(padding=-1), r"c1\.padding must be >= 0"),
    (dict(padding=1.5), r"c1\.padding must be an integer or a pair"),
    (dict(weight=torch.ones((2, 1, 3))), r"c1\.weight must have 4 dimension\(s\)"),
    (dict(weight=torch.ones((2, 1, 0, 3))), r"c1\.weight must be \[out_channels, in_channels"),
    (dict(weight=torch.full((2, 1, 3, 3), 9), w_bits=4),
     r"c1\.weight\[0, 0, 0, 0\] = 9 does not fit w_bits = 4"),
    (dict(bias=[0, 300], v_bits=8), r"c1\.bias\[1\] = 300 does not fit v_bits = 8"),
    (dict(theta=[0, 1]), r"c1\.theta\[0\] = 0 must be >= 1"),
    (dict(fire_mode="burst"), r"c1\.fire_mode must be 'threshold' or 'radix'"),
    (dict(leak_shift=17), r"c1\.leak_shift must be <= 16"),
])
def test_bad_conv_parameters_name_the_field(changes, message):
    with pytest.raises(ContractError, match=message):
        ConvLayer(**{**CONV, **changes})


@pytest.mark.parametrize("changes, message", [
    (dict(kernel=0), r"p1\.kernel must be >= 1"),
    (dict(kernel=(2, 2, 2)), r"p1\.kernel must be an integer or a pair"),
    (dict(stride=0), r"p1\.stride must be >= 1"),
    (dict(padding=2), r"p1\.padding \(2, 2\) must be at most half the kernel 2x2"),
    (dict(kernel=3, input_shape=(1, 2, 5)), r"p1\.kernel 3x3 does not fit the padded input 2x5"),
    (dict(input_shape=[4, 4]), r"p1\.input_shape must be \(channels, height, width\)"),
])
def test_bad_pooling_parameters_name_the_field(changes, message):
    with pytest.raises(ContractError, match=message):
        SumPoolLayer(**{**dict(kernel=2, input_shape=(1, 4, 4), name="p1"), **changes})


def test_bad_networks_name_the_field():
    c1 = ConvLayer(**CONV)  # (1, 5, 5) -> (2, 3, 3)
    pool = SumPoolLayer(kernel=2, input_shape=(2, 3, 3), name="p1")  # -> (2, 1, 1)
    fc = DenseLayer(weight=[[1, 1]], bias=[0], theta=[1, 1], name="fc")
    with pytest.raises(ContractError, match=r"p1\.input_shape \(3, 3, 3\) has 3 channels but "
                       r"c1 outputs 2 channels \(shape \(2, 3, 3\)\)"):
        Network([c1, pool.with_(input_shape=(3, 3, 3)), fc], 2)
    with pytest.raises(ContractError, match=r"p1\.input_shape \(2, 4, 3\) does not match c1's "
                       r"output shape \(2, 3, 3\)"):
        Network([c1, pool.with_(input_shape=(2, 4, 3)), fc], 2)
    c2 = ConvLayer(weight=torch.ones((1, 4, 1, 1), dtype=torch.int64), bias=[0], theta=[1, 1],
                   input_shape=(4, 3, 3), name="c2")
    with pytest.raises(ContractError, match=r"c2\.input_shape \(4, 3, 3\) has 4 channels but c1 "
                       r"outputs 2 channels"):
        Network([c1, c2], 2)
    with pytest.raises(ContractError, match=r"fc\.weight takes 2 inputs but c1 outputs 18 values "
                       r"\(shape \(2, 3, 3\), flattened C-major\)"):
        Network([c1, fc], 2)
    wide = DenseLayer(weight=torch.ones((12, 2), dtype=torch.int64), bias=[0] * 12, theta=[1, 1],
                      name="fc0")
    with pytest.raises(ContractError, match=r"c1\.input_shape \(1, 5, 5\) takes 25 inputs but "
                       r"fc0 has 12 neurons"):
        Network([wide, c1], 2)
    with pytest.raises(ContractError, match=r"p1 is a SumPoolLayer but the last layer must be a "
                       r"neuron layer"):
        Network([c1, pool], 2)
    with pytest.raises(ContractError, match=r"c1\.fires is False but only the last layer may be "
                       r"non-firing"):
        Network([c1.with_(fires=False), pool, fc], 2)
    with pytest.raises(ContractError, match=r"c1\.theta has 2 entries but the network runs 3"):
        Network([c1], 3)
    with pytest.raises(ContractError, match=r"layers\[0\] must be a DenseLayer, ConvLayer or "
                       r"SumPoolLayer, not dict"):
        Network([CONV], 2)
    with pytest.raises(ContractError, match=r"c1: input must be \[batch, T=2, fan_in=25\]"):
        c1.run(torch.zeros((1, 2, 24), dtype=torch.int64))
    with pytest.raises(ContractError, match=r"p1: input must be \[batch, T, fan_in=18\]"):
        pool.run(torch.zeros((1, 2, 9), dtype=torch.int64))
    Network([c1, pool, fc], 2)  # and the right shapes are accepted


# --- the checks can fail -----------------------------------------------------------------------

def test_a_wrong_reference_or_a_wrong_layer_is_caught():
    """The comparison above is not vacuous: an off-by-one padding in the reference, or a layer
    that flips its kernel (true convolution instead of PyTorch's cross-correlation), fails it."""
    rng = random.Random(1)
    layer = random_conv(rng, 3, ((2, 6, 6), (3, 2), 1, 1), v_bits=16, fires=True)
    inputs = random_inputs(rng, 2, 3, layer.fan_in)
    check_conv_against(layer, inputs, conv_reference(layer))  # the right reference passes

    def off_by_one_padding(sample):  # pads 2 columns on the left and 0 on the right
        shifted = [[frame[j - 1] if j % 6 else 0 for j in range(len(frame))] for frame in sample]
        return conv_reference(layer)(shifted)

    with pytest.raises(AssertionError):
        check_conv_against(layer, inputs, off_by_one_padding)

    class FlippedKernel(ConvLayer):
        def current(self, s_in, dtype):
            flipped = self.with_(weight=self.weight.flip(2, 3))
            return ConvLayer.current(flipped, s_in, dtype)

    mutant = FlippedKernel(**{k: getattr(layer, k) for k in layer.__dataclass_fields__})
    with pytest.raises(AssertionError):
        check_conv_against(mutant, inputs, conv_reference(layer))

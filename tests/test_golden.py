"""The integer golden model against the papers, an independent scalar model and sinabs."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.sw.golden import (
    ContractError,
    DenseLayer,
    Encoder,
    FireMode,
    Network,
    argmax_lowest,
    signed_range,
)
from tests import reference


def random_layer(rng: random.Random, fan_in, fan_out, timesteps, **overrides):
    w_bits = overrides.pop("w_bits", rng.randint(2, 8))
    v_bits = overrides.pop("v_bits", rng.randint(6, 16))
    w_low, w_high = signed_range(w_bits)
    v_low, v_high = signed_range(v_bits)
    fields = dict(
        weight=[[rng.randint(w_low, w_high) for _ in range(fan_in)] for _ in range(fan_out)],
        bias=[rng.randint(max(v_low, -8), min(v_high, 8)) for _ in range(fan_out)],
        theta=[rng.randint(1, min(v_high, 40)) for _ in range(timesteps)],
        leak_shift=rng.choice([0, 0, 1, 2]),
        fire_mode=rng.choice(["threshold", "threshold", "radix"]),
        v_init=rng.randint(max(v_low, -20), min(v_high, 20)),
        w_bits=w_bits, v_bits=v_bits,
    )
    fields.update(overrides)
    return DenseLayer(**fields)


def as_lists(layer: DenseLayer):
    return dict(weight=layer.weight.tolist(), bias=layer.bias.tolist(), theta=layer.theta.tolist(),
                leak_shift=layer.leak_shift, fire_mode=layer.fire_mode.value,
                v_init=layer.v_init, fires=layer.fires, v_bits=layer.v_bits)


# --- seed 002, section IV-C --------------------------------------------------------------------

def test_radix_worked_example_of_seed_002():
    """Weight 2, input train 1,0,1 (LSB first, = 5) gives output train 0,1,0,1 (= 10)."""
    layer = DenseLayer(weight=[[2]], bias=[0], theta=[1, 1, 1, 1], leak_shift=1,
                       fire_mode=FireMode.RADIX)
    frames = torch.tensor([[[1], [0], [1], [0]]])
    spikes, _, _ = layer.run(frames)
    assert spikes[0, :, 0].tolist() == [0, 1, 0, 1]
    assert layer.readout(spikes, None).item() == 10


def test_radix_encoder_feeds_the_worked_example():
    net = Network([DenseLayer(weight=[[2]], bias=[0], theta=[1] * 4, leak_shift=1,
                              fire_mode="radix")], timesteps=4, encoder=Encoder("radix", 4))
    trace = net.trace([[5]])
    assert trace.inputs[0, :, 0].tolist() == [1, 0, 1, 0]
    assert trace.output.tolist() == [[10]]


# --- seed 000, eq. 7: soft-reset IF is a uniform quantizer -----------------------------------

@settings(max_examples=300, deadline=None)
@given(current=st.integers(0, 300), theta=st.integers(1, 100), timesteps=st.integers(1, 16),
       as_bias=st.booleans())
def test_soft_reset_if_is_the_uniform_quantizer(current, theta, timesteps, as_bias):
    """spike count = min(T, floor(T * I / theta)) for a constant non-negative current I."""
    if as_bias:
        layer = DenseLayer(weight=[[0]], bias=[current], theta=[theta] * timesteps, v_bits=16)
        frames = torch.zeros((1, timesteps, 1), dtype=torch.int64)
    else:  # the same current arriving as a direct-coded input through weight 1
        layer = DenseLayer(weight=[[1]], bias=[0], theta=[theta] * timesteps, v_bits=16)
        frames = torch.full((1, timesteps, 1), current, dtype=torch.int64)
    spikes, _, _ = layer.run(frames)
    assert spikes.sum().item() == min(timesteps, (timesteps * current) // theta)


# --- an independent scalar model -------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_layer_matches_the_scalar_reference(seed):
    rng = random.Random(seed)
    fan_in, fan_out, timesteps = rng.randint(1, 12), rng.randint(1, 9), rng.randint(1, 16)
    layer = random_layer(rng, fan_in, fan_out, timesteps, fires=rng.random() > 0.2)
    inputs = [[[int(rng.random() < 0.5) for _ in range(fan_in)] for _ in range(timesteps)]
              for _ in range(3)]
    spikes, v_final, membranes = layer.run(torch.tensor(inputs), trace=True)
    for b, sample in enumerate(inputs):
        want_spikes, want_membranes = reference.run_layer(inputs=sample, **as_lists(layer))
        assert spikes[b].tolist() == want_spikes, f"seed {seed}"
        assert membranes[b].tolist() == want_membranes, f"seed {seed}"
        assert v_final[b].tolist() == want_membranes[-1]


def test_saturation_happens_once_per_timestep_and_matches_the_reference():
    """+100 then -100 within one step leaves V unchanged; over 3 steps of +100 it clamps at 127."""
    layer = DenseLayer(weight=[[100, -100, 100]], bias=[0], theta=[127] * 3, w_bits=8, v_bits=8,
                       fires=False)
    frames = torch.tensor([[[1, 1, 0], [0, 0, 1], [0, 0, 1]]])
    _, v_final, membranes = layer.run(frames, trace=True)
    assert membranes[0, :, 0].tolist() == [0, 100, 127]
    assert v_final.tolist() == [[127]]
    low_layer = layer.with_(weight=[[-100, -100, -100]])
    _, _, membranes = low_layer.run(torch.ones((1, 3, 3), dtype=torch.int64), trace=True)
    assert membranes[0, :, 0].tolist() == [-128, -128, -128]
    want = reference.run_layer(inputs=frames[0].tolist(), **as_lists(layer))[1]
    assert want == [[0], [100], [127]]


@pytest.mark.parametrize("seed", range(10))
def test_saturating_layers_match_the_reference(seed):
    rng = random.Random(1000 + seed)
    fan_in, fan_out, timesteps = rng.randint(4, 16), rng.randint(1, 6), rng.randint(2, 10)
    layer = random_layer(rng, fan_in, fan_out, timesteps, w_bits=8, v_bits=rng.randint(5, 8),
                         theta=[rng.randint(1, 15) for _ in range(timesteps)])
    inputs = [[[1] * fan_in for _ in range(timesteps)]]
    spikes, _, membranes = layer.run(torch.tensor(inputs), trace=True)
    low, high = signed_range(layer.v_bits)
    want_spikes, want_membranes = reference.run_layer(inputs=inputs[0], **as_lists(layer))
    assert spikes[0].tolist() == want_spikes
    assert membranes[0].tolist() == want_membranes
    assert membranes.min() >= low and membranes.max() <= high


def test_negative_membranes_in_radix_mode_emit_their_twos_complement_lsb():
    layer = DenseLayer(weight=[[-3]], bias=[0], theta=[1, 1, 1], leak_shift=1, fire_mode="radix")
    spikes, _, membranes = layer.run(torch.tensor([[[1], [0], [0]]]), trace=True)
    # -3 -> LSB 1, V = -4; >>1 = -2 -> LSB 0; >>1 = -1 -> LSB 1, V = -2
    assert spikes[0, :, 0].tolist() == [1, 0, 1]
    assert membranes[0, :, 0].tolist() == [-4, -2, -2]


# --- an existing SNN library: sinabs IAF with MembraneSubtract and single spikes -------------

@pytest.mark.parametrize("seed", range(12))
def test_spikes_equal_sinabs_iaf(seed):
    sinabs_layers = pytest.importorskip("sinabs.layers")
    from sinabs.activation import MembraneSubtract, SingleSpike

    rng = random.Random(seed)
    torch.manual_seed(seed)
    fan_in, fan_out, timesteps = rng.randint(1, 20), rng.randint(1, 20), rng.randint(1, 16)
    theta = rng.randint(1, 12)
    layer = DenseLayer(weight=torch.randint(-8, 8, (fan_out, fan_in)), bias=[0] * fan_out,
                       theta=[theta] * timesteps, w_bits=4, v_bits=24)
    frames = (torch.rand(8, timesteps, fan_in) < 0.4).to(torch.int64)
    ours, _, _ = layer.run(frames)

    iaf = sinabs_layers.IAF(spike_threshold=torch.tensor(float(theta)), spike_fn=SingleSpike,
                            reset_fn=MembraneSubtract(), min_v_mem=None)
    current = frames.to(torch.float64) @ layer.weight.T.to(torch.float64)
    theirs = iaf(current.float())
    assert torch.equal(ours, theirs.to(torch.int64))


def test_threshold_comparison_is_greater_or_equal():
    layer = DenseLayer(weight=[[5]], bias=[0], theta=[5], v_bits=8)
    spikes, _, _ = layer.run(torch.tensor([[[1]]]))
    assert spikes.item() == 1


# --- order independence ------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
def test_permuting_inputs_never_changes_outputs(seed):
    rng = random.Random(seed)
    timesteps = rng.randint(1, 8)
    first = random_layer(rng, 16, 8, timesteps, v_bits=rng.randint(5, 10))
    second = random_layer(rng, 8, 4, timesteps, fire_mode="threshold")
    net = Network([first, second], timesteps, Encoder("rate", 4))
    pixels = torch.randint(0, 16, (20, 16))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(seed))
    permuted = Network([first.with_(weight=first.weight[:, perm]), second], timesteps,
                       Encoder("rate", 4))
    a, b = net.trace(pixels), permuted.trace(pixels[:, perm])
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert torch.equal(la.spikes, lb.spikes)
        assert torch.equal(la.membranes, lb.membranes)
    assert torch.equal(a.output, b.output)


# --- encoders --------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(pixel_bits=st.integers(1, 8), timesteps=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_rate_encoder_is_a_rounding_uniform_quantizer(pixel_bits, timesteps, seed):
    x_max = 2**pixel_bits - 1
    pixels = torch.randint(0, x_max + 1, (1, 32), generator=torch.Generator().manual_seed(seed))
    frames = Encoder("rate", pixel_bits).encode(pixels, timesteps)
    assert set(frames.unique().tolist()) <= {0, 1}
    want = [min(timesteps, (timesteps * x + x_max // 2) // x_max) for x in pixels[0].tolist()]
    assert frames.sum(1)[0].tolist() == want


@settings(max_examples=100, deadline=None)
@given(pixel_bits=st.integers(1, 8), timesteps=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_radix_encoder_aligns_the_pixel_at_the_last_timestep(pixel_bits, timesteps, seed):
    """The train read LSB first is the pixel scaled to T bits: x >> (q - T), or x << (T - q)."""
    pixels = torch.randint(0, 2**pixel_bits, (1, 16), generator=torch.Generator().manual_seed(seed))
    frames = Encoder("radix", pixel_bits).encode(pixels, timesteps)
    assert set(frames.unique().tolist()) <= {0, 1}
    value = (frames[0] * (2 ** torch.arange(timesteps))[:, None]).sum(0)
    shift = pixel_bits - timesteps
    want = [x >> shift if shift >= 0 else x << -shift for x in pixels[0].tolist()]
    assert value.tolist() == want


def test_direct_encoder_repeats_the_pixel():
    frames = Encoder("direct", 8).encode(torch.tensor([[0, 7, 255]]), 3)
    assert frames.tolist() == [[[0, 7, 255]] * 3]


def test_argmax_ties_go_to_the_lowest_index():
    assert argmax_lowest(torch.tensor([[1, 3, 3, 0], [2, 2, 2, 2], [-5, -1, -1, -9]])).tolist() \
        == [1, 0, 1]


def test_non_firing_output_layer_is_read_by_membrane():
    net = Network([DenseLayer(weight=[[1, 0], [0, 1]], bias=[0, 0], theta=[1, 1]),
                   DenseLayer(weight=[[3, -1], [-1, 3]], bias=[0, 0], theta=[1, 1], fires=False)],
                  timesteps=2, encoder=Encoder("direct", 2))
    trace = net.trace([[1, 0], [0, 1]])
    assert trace.output.tolist() == [[6, -2], [-2, 6]]
    assert trace.prediction.tolist() == [0, 1]
    assert trace.layers[1].spikes.sum() == 0


def test_synops_count_input_events_times_fan_out():
    net = Network([DenseLayer(weight=[[1, 1]] * 3, bias=[0] * 3, theta=[1, 1])], timesteps=2,
                  encoder=Encoder("radix", 2))
    trace = net.trace([[3, 1]])  # planes: t0 = (1, 1), t1 = (1, 0): three events
    assert trace.layers[0].synops.tolist() == [9]


# --- bad parameters name the field -----------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    (dict(weight=[[8]], w_bits=4), r"layer\.weight\[0, 0\] = 8 does not fit w_bits = 4"),
    (dict(w_bits=9), r"layer\.w_bits must be <= 8"),
    (dict(w_bits=1), r"layer\.w_bits must be >= 2"),
    (dict(theta=[0, 1]), r"layer\.theta\[0\] = 0 must be >= 1"),
    (dict(theta=[200, 1], v_bits=8), r"layer\.theta\[0\] = 200 does not fit v_bits = 8"),
    (dict(bias=[1, 2]), r"layer\.bias has 2 entries but weight has 1"),
    (dict(bias=[300], v_bits=8), r"layer\.bias\[0\] = 300 does not fit v_bits = 8"),
    (dict(v_init=-129, v_bits=8), r"layer\.v_init = -129 does not fit v_bits = 8"),
    (dict(leak_shift=-1), r"layer\.leak_shift must be >= 0"),
    (dict(fire_mode="burst"), r"layer\.fire_mode must be 'threshold' or 'radix'"),
    (dict(weight=[[0.5]]), r"layer\.weight must hold integers"),
    (dict(fires=1), r"layer\.fires must be a bool"),
])
def test_bad_layer_parameters_name_the_field(changes, message):
    fields = dict(weight=[[1]], bias=[0], theta=[1, 1])
    fields.update(changes)
    with pytest.raises(ContractError, match=message):
        DenseLayer(**fields)


def test_bad_network_parameters_name_the_field():
    layer = DenseLayer(weight=[[1, 1]], bias=[0], theta=[1, 1], name="fc1")
    with pytest.raises(ContractError, match=r"fc1\.theta has 2 entries but the network runs 3"):
        Network([layer], timesteps=3)
    with pytest.raises(ContractError, match=r"fc2\.weight takes 2 inputs but fc1 has 1 neurons"):
        Network([layer, layer.with_(name="fc2")], timesteps=2)
    with pytest.raises(ContractError, match=r"fc1\.fires is False but only the last layer"):
        Network([layer.with_(weight=[[1]], fires=False), layer.with_(name="fc2", weight=[[1]])], 2)
    with pytest.raises(ContractError, match=r"encoder\.kind must be"):
        Encoder("poisson")
    net = Network([layer], timesteps=2, encoder=Encoder("rate", 4))
    with pytest.raises(ContractError, match=r"pixels must lie in 0\.\.15"):
        net.predict([[16, 0]])
    with pytest.raises(ContractError, match=r"pixels have 3 values per image but the network"):
        net.predict([[1, 2, 3]])

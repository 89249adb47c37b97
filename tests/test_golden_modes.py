"""The threshold comparison (``>=``/``>``) and reset (``subtract``/``zero``) modes of the golden
model, against the scalar reference of ``tests/reference.py`` (``run_layer_modes``)."""

import random
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.sw.golden import (
    Compare,
    ContractError,
    ConvLayer,
    DenseLayer,
    Encoder,
    Network,
    Reset,
    SumPoolLayer,
    signed_range,
)
from tests import reference

MODES = [(c, r) for c in (">=", ">") for r in ("subtract", "zero")]


def random_fields(rng: random.Random, fan_in, fan_out, timesteps, **overrides):
    w_bits = overrides.pop("w_bits", rng.randint(2, 8))
    v_bits = overrides.pop("v_bits", rng.randint(4, 16))
    w_low, w_high = signed_range(w_bits)
    v_low, v_high = signed_range(v_bits)
    fields = dict(
        weight=[[rng.randint(w_low, w_high) for _ in range(fan_in)] for _ in range(fan_out)],
        bias=[rng.randint(max(v_low, -8), min(v_high, 8)) for _ in range(fan_out)],
        theta=[rng.randint(1, min(v_high, 40)) for _ in range(timesteps)],
        leak_shift=rng.choice([0, 0, 1, 2]),
        v_init=rng.randint(max(v_low, -20), min(v_high, 20)),
        w_bits=w_bits, v_bits=v_bits,
    )
    fields.update(overrides)
    return fields


def reference_kwargs(layer: DenseLayer) -> dict:
    return dict(leak_shift=layer.leak_shift, fire_mode=layer.fire_mode.value,
                v_init=layer.v_init, fires=layer.fires, v_bits=layer.v_bits,
                compare=layer.compare.value, reset=layer.reset.value)


# --- defaults: today's behaviour ---------------------------------------------------------------

def test_defaults_are_ge_and_subtract():
    layer = DenseLayer(weight=[[1]], bias=[0], theta=[1])
    assert layer.compare is Compare.GE and layer.compare == ">="
    assert layer.reset is Reset.SUBTRACT and layer.reset == "subtract"
    conv = ConvLayer(weight=torch.ones(1, 1, 1, 1), bias=[0], theta=[1], input_shape=(1, 2, 2))
    assert (conv.compare, conv.reset) == (Compare.GE, Reset.SUBTRACT)


def test_default_modes_reproduce_the_original_reference():
    rng = random.Random(5)
    for _ in range(30):
        fields = random_fields(rng, 5, 4, 6, fire_mode=rng.choice(["threshold", "radix"]))
        layer = DenseLayer(**fields)
        frames = [[rng.randint(0, 1) for _ in range(5)] for _ in range(6)]
        spikes, _, membranes = layer.run(torch.tensor([frames]), trace=True)
        kwargs = reference_kwargs(layer)
        del kwargs["compare"], kwargs["reset"]
        expected = reference.run_layer(fields["weight"], fields["bias"], fields["theta"],
                                       frames, **kwargs)
        assert (spikes[0].tolist(), membranes[0].tolist()) == expected


def test_modes_are_keyword_only():
    with pytest.raises(TypeError):
        DenseLayer([[1]], [0], [1], 0, "threshold", 0, True, 8, 16, "fc", ">")


# --- against the scalar reference ---------------------------------------------------------------

@settings(max_examples=250, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), mode=st.sampled_from(MODES),
       fan_in=st.integers(1, 6), fan_out=st.integers(1, 5), timesteps=st.integers(1, 8),
       direct=st.booleans(), fires=st.booleans())
def test_dense_modes_match_the_scalar_reference(seed, mode, fan_in, fan_out, timesteps, direct,
                                                fires):
    rng = random.Random(seed)
    compare, reset = mode
    fields = random_fields(rng, fan_in, fan_out, timesteps, compare=compare, reset=reset,
                           fires=fires)
    layer = DenseLayer(**fields)
    peak = 15 if direct else 1
    frames = [[rng.randint(0, peak) for _ in range(fan_in)] for _ in range(timesteps)]
    spikes, v_final, membranes = layer.run(torch.tensor([frames]), trace=True)
    expected_spikes, expected_membranes = reference.run_layer_modes(
        fields["weight"], fields["bias"], fields["theta"], frames, **reference_kwargs(layer))
    assert spikes[0].tolist() == expected_spikes
    assert membranes[0].tolist() == expected_membranes
    assert v_final[0].tolist() == expected_membranes[-1]


@pytest.mark.parametrize("mode", MODES)
def test_radix_ignores_compare_and_keeps_its_reset(mode):
    compare, _ = mode
    rng = random.Random(11)
    fields = random_fields(rng, 4, 3, 5, fire_mode="radix", compare=compare)
    layer = DenseLayer(**fields)
    frames = [[rng.randint(0, 1) for _ in range(4)] for _ in range(5)]
    spikes, _, membranes = layer.run(torch.tensor([frames]), trace=True)
    assert (spikes[0].tolist(), membranes[0].tolist()) == reference.run_layer_modes(
        fields["weight"], fields["bias"], fields["theta"], frames, **reference_kwargs(layer))
    default = DenseLayer(**{**fields, "compare": ">="})
    assert torch.equal(default.run(torch.tensor([frames]))[0], spikes)


@pytest.mark.parametrize("mode", MODES)
def test_conv_modes_match_the_scalar_reference(mode):
    compare, reset = mode
    rng = random.Random(hash(mode) % 1000)
    shape = (2, 5, 4)
    weight = [[[[rng.randint(-4, 3) for _ in range(3)] for _ in range(3)] for _ in range(2)]
              for _ in range(3)]
    fields = dict(weight=weight, bias=[rng.randint(-2, 2) for _ in range(3)],
                  theta=[rng.randint(1, 6) for _ in range(6)], leak_shift=1, v_init=2,
                  w_bits=4, v_bits=8, compare=compare, reset=reset)
    layer = ConvLayer(**fields, input_shape=shape, stride=(1, 2), padding=1)
    batch = [[[rng.randint(0, 1) for _ in range(layer.fan_in)] for _ in range(6)]
             for _ in range(3)]
    spikes, _, membranes = layer.run(torch.tensor(batch), trace=True)
    for b, frames in enumerate(batch):
        matrix = reference.conv_as_dense(weight, shape, (1, 2), 1)
        per_channel = len(matrix) // 3
        dense_bias = [x for x in fields["bias"] for _ in range(per_channel)]
        expected = reference.run_layer_modes(matrix, dense_bias, fields["theta"], frames,
                                             leak_shift=1, v_init=2, v_bits=8,
                                             compare=compare, reset=reset)
        assert spikes[b].tolist() == expected[0]
        assert membranes[b].tolist() == expected[1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("magnitude", [1, 2**22, 2**40])
def test_modes_are_exact_in_every_compute_dtype(mode, magnitude):
    """Small inputs run in float32, larger ones in float64, huge ones in int64."""
    compare, reset = mode
    rng = random.Random(magnitude)
    fields = random_fields(rng, 3, 4, 5, v_bits=32, w_bits=8, compare=compare, reset=reset,
                           theta=[rng.randint(1, 2**20) for _ in range(5)])
    layer = DenseLayer(**fields)
    frames = [[rng.randint(0, magnitude) for _ in range(3)] for _ in range(5)]
    spikes, _, membranes = layer.run(torch.tensor([frames]), trace=True)
    assert (spikes[0].tolist(), membranes[0].tolist()) == reference.run_layer_modes(
        fields["weight"], fields["bias"], fields["theta"], frames, **reference_kwargs(layer))


# --- the semantics spelled out -----------------------------------------------------------------

def test_ge_fires_at_theta_and_gt_one_above():
    frames = torch.tensor([[[3], [0], [1]]])
    ge = DenseLayer(weight=[[1]], bias=[0], theta=[3, 3, 3])
    gt = ge.with_(compare=">")
    assert ge.run(frames)[0][0, :, 0].tolist() == [1, 0, 0]
    assert gt.run(frames)[0][0, :, 0].tolist() == [0, 0, 1]


def test_zero_reset_forgets_the_excess_and_subtract_keeps_it():
    frames = torch.tensor([[[5], [1], [0]]])
    subtract = DenseLayer(weight=[[1]], bias=[0], theta=[3, 3, 3])
    zero = subtract.with_(reset="zero")
    spikes, _, membranes = subtract.run(frames, trace=True)
    assert spikes[0, :, 0].tolist() == [1, 1, 0] and membranes[0, :, 0].tolist() == [2, 0, 0]
    spikes, _, membranes = zero.run(frames, trace=True)
    assert spikes[0, :, 0].tolist() == [1, 0, 0] and membranes[0, :, 0].tolist() == [0, 1, 1]


def test_zero_reset_is_zero_not_v_init():
    layer = DenseLayer(weight=[[1]], bias=[0], theta=[2, 2], v_init=1, reset="zero")
    _, _, membranes = layer.run(torch.tensor([[[1], [0]]]), trace=True)
    assert membranes[0, :, 0].tolist() == [0, 0]


@pytest.mark.parametrize("mode", MODES)
def test_no_reset_leaves_the_v_bits_range(mode):
    """Saturated membranes at both ends of the range, every mode: the reset stays in range."""
    compare, reset = mode
    low, high = signed_range(6)
    layer = DenseLayer(weight=[[127, -128]], bias=[0], theta=[1, high, 7, 1], w_bits=8, v_bits=6,
                       compare=compare, reset=reset)
    frames = torch.tensor([[[1, 0], [1, 0], [0, 1], [1, 1]]])
    _, _, membranes = layer.run(frames, trace=True)
    assert membranes.min() >= low and membranes.max() <= high


def test_gt_at_the_top_of_the_range_never_fires():
    high = signed_range(8)[1]
    layer = DenseLayer(weight=[[127]], bias=[0], theta=[high] * 3, w_bits=8, v_bits=8,
                       compare=">")
    assert layer.run(torch.ones((1, 3, 1), dtype=torch.int64))[0].sum() == 0


def test_modes_in_a_network_and_its_readout():
    hidden = DenseLayer(weight=[[2, 1], [1, 2]], bias=[0, 0], theta=[2] * 4, reset="zero",
                        compare=">", name="hidden")
    out = DenseLayer(weight=[[3, 0], [0, 3]], bias=[0, 0], theta=[3] * 4, name="out")
    net = Network([hidden, out], timesteps=4, encoder=Encoder("direct", 2))
    trace = net.trace([[1, 0], [1, 3]])
    for k, layer in enumerate(net.layers):
        inputs = trace.inputs if k == 0 else trace.layers[k - 1].spikes
        for b in range(2):
            spikes, membranes = reference.run_layer_modes(
                layer.weight.tolist(), layer.bias.tolist(), layer.theta.tolist(),
                inputs[b].tolist(), **reference_kwargs(layer))
            assert trace.layers[k].spikes[b].tolist() == spikes
            assert trace.layers[k].membranes[b].tolist() == membranes


def test_pool_network_with_modes():
    conv = ConvLayer(weight=torch.ones(1, 1, 2, 2, dtype=torch.int64), bias=[0], theta=[1] * 3,
                     input_shape=(1, 4, 4), reset="zero", compare=">")
    pool = SumPoolLayer(kernel=3, input_shape=(1, 3, 3))
    dense = DenseLayer(weight=[[1]], bias=[0], theta=[2] * 3, reset="zero")
    net = Network([conv, pool, dense], timesteps=3)
    trace = net.trace(torch.full((1, 16), 15))
    assert trace.layers[0].spikes.shape == (1, 3, 9)
    assert trace.output.tolist() == [[3]]


# --- validation names the field ----------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"compare": ">>"}, "fc.compare must be '>=' or '>', not '>>'"),
    ({"compare": None}, "fc.compare must be '>=' or '>', not None"),
    ({"reset": "hard"}, "fc.reset must be 'subtract' or 'zero', not 'hard'"),
    ({"reset": 0}, "fc.reset must be 'subtract' or 'zero', not 0"),
    ({"reset": "zero", "fire_mode": "radix"}, "fc.reset = 'zero' is not defined for fire_mode "
                                              "= 'radix'"),
])
def test_bad_modes_are_refused_naming_the_field(changes, message):
    with pytest.raises(ContractError, match="^" + re.escape(message)):
        DenseLayer(weight=[[1]], bias=[0], theta=[1], name="fc", **changes)


def test_radix_zero_is_refused_for_conv_too():
    with pytest.raises(ContractError, match=r"^conv1\.reset = 'zero'"):
        ConvLayer(weight=torch.ones(1, 1, 1, 1), bias=[0], theta=[1], input_shape=(1, 2, 2),
                  fire_mode="radix", reset="zero", name="conv1")


def test_modes_accept_enums_and_survive_with_():
    layer = DenseLayer(weight=[[1]], bias=[0], theta=[1], compare=Compare.GT, reset=Reset.ZERO)
    copy = layer.with_(theta=[2])
    assert (copy.compare, copy.reset) == (Compare.GT, Reset.ZERO)
    assert isinstance(layer.with_(compare=">=").compare, Compare)

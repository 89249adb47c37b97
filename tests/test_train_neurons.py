"""The training neurons: forward is the contract's rule, backward a surrogate; ATIF-nu's
threshold formulas; QReLU; the radix closed form; seed 000's SQNR experiment."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.sw.golden import DenseLayer, Encoder, Network
from spikeforge.sw.train import TrainConfig
from spikeforge.sw.train.model import SpikingMLP, weight_scale
from spikeforge.sw.train.neurons import (
    SURROGATES,
    ThresholdNeuron,
    nu_params_from_thresholds,
    nu_thresholds,
    qrelu,
    spike,
)
from spikeforge.sw.train.sqnr import fixed_threshold_sqnr, run_sqnr
from tests.reference import run_network_float64


def test_nu_thresholds_equal_paper_formulas_at_t4():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        p1, p2, p3, p4 = torch.rand(4, generator=gen, dtype=torch.float64).sort(
            descending=True).values.tolist()
        T = 4
        paper = [p1, (T - 1) * p2 - T * (p3 - p4), T * (p3 - p4), T * p4]  # eqs 15, 19, 17, 14
        got = nu_thresholds(torch.tensor([p1, p2, p3, p4], dtype=torch.float64))
        assert torch.allclose(got, torch.tensor(paper, dtype=torch.float64))


@given(st.integers(1, 16), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_nu_inverse_and_general_t(T, seed):
    v = torch.rand(T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 0.1
    p = nu_params_from_thresholds(v)
    assert torch.allclose(nu_thresholds(p), v)
    assert torch.isclose(nu_thresholds(p)[-1], T * p[-1])  # eq 14 for any T
    assert torch.isclose(nu_thresholds(p)[0], p[0])  # eq 15 for any T


def test_nu_uniform_start_is_the_if_neuron():
    for T in (1, 2, 4, 7):
        p = nu_params_from_thresholds(torch.full((T,), 0.5))
        assert torch.allclose(nu_thresholds(p), torch.full((T,), 0.5))
        assert (p[:-1] > p[1:]).all()  # p1 > p2 > ... > pT


def test_nu_boundaries_meaning_for_the_last_two_steps():
    """Input p_T fires once (at the last step); input p_{T-1} fires at the last two steps."""
    T = 4
    p = torch.tensor([1.0, 0.7, 0.4, 0.2], dtype=torch.float64)
    neuron = ThresholdNeuron(T, "nu", v_init_half=False)
    with torch.no_grad():
        neuron.p.copy_(p.float())
    theta = neuron.thresholds().detach().double()
    for value, expected in ((p[3] + 1e-6, [0, 0, 0, 1]), (p[2] + 1e-6, [0, 0, 1, 1])):
        v, spikes = 0.0, []
        for t in range(T):
            v += float(value)
            s = int(v >= theta[t])
            v -= s * float(theta[t])
            spikes.append(s)
        assert spikes == expected


def test_spike_uses_ge_and_surrogates():
    x = torch.tensor([-0.5, 0.0, 0.5], requires_grad=True)
    for name in SURROGATES:
        s = spike(x, name, 4.0)
        assert s.tolist() == [0.0, 1.0, 1.0]
        (g,) = torch.autograd.grad(s.sum(), x)
        assert g[1] > 0 and g[1] >= g[0] and g[1] >= g[2]
    (g,) = torch.autograd.grad(spike(x, "sigmoid", 4.0).sum(), x)
    assert math.isclose(float(g[1]), 1.0)  # alpha * sigma'(0) = 4 / 4
    with pytest.raises(ValueError, match="surrogate must be one of"):
        spike(x, "tanh")


@pytest.mark.parametrize("v_init_half", [False, True])
def test_threshold_neuron_is_the_contract(v_init_half):
    """Integer currents through ThresholdNeuron equal the golden layer, spike for spike."""
    T, n = 6, 50
    gen = torch.Generator().manual_seed(1)
    theta = torch.randint(1, 9, (T,), generator=gen)
    currents = torch.randint(-6, 12, (3, T, n), generator=gen)
    v_init = int(theta[0]) // 2 if v_init_half else 0
    layer = DenseLayer(weight=torch.eye(n, dtype=torch.int64), bias=torch.zeros(n),
                       theta=theta, v_init=v_init, w_bits=2, v_bits=16)
    golden_spikes, golden_v, _ = layer.run(currents)
    neuron = ThresholdNeuron(T, "fixed", v_init_half=v_init_half)
    neuron.reset(float(v_init))
    got = torch.stack([neuron(currents[:, t].float(), theta[t].float()) for t in range(T)], 1)
    assert torch.equal(got.to(torch.int64), golden_spikes)
    assert torch.equal(neuron.v.to(torch.int64), golden_v)
    neuron.reset()
    assert neuron.v is None


def test_trainable_threshold_gets_paper_gradient():
    """dL/dVth = -dL/dz * sigma'(q) (eq 12), with q normalised by the threshold."""
    neuron = ThresholdNeuron(1, "trainable", theta=1.0, v_init_half=False, alpha=1.0)
    current = torch.tensor([0.8])
    neuron.reset(0.0)
    z = neuron(current, neuron.thresholds()[0])
    (g,) = torch.autograd.grad(z.sum(), neuron.theta)
    q = (0.8 - 1.0) / 1.0
    sig = torch.sigmoid(torch.tensor(q))
    # z = H((V - th) / th): dz/dth = sigma'(q) * (-1 / th) (th detached in the denominator)
    assert math.isclose(float(g), float(-sig * (1 - sig)), rel_tol=1e-5)


def test_qrelu_forward_is_if_count_and_backward_is_relu():
    z = torch.linspace(-1, 3, 81, requires_grad=True)
    theta, T = torch.tensor(2.0), 4
    y = qrelu(z, theta, T, 0.5)
    neuron = ThresholdNeuron(T, "fixed", theta=2.0, v_init_half=True)
    neuron.reset(1.0)
    with torch.no_grad():
        count = sum(neuron(z.detach(), theta) for _ in range(T))
    assert torch.allclose(y.detach(), count * theta / T)
    (g,) = torch.autograd.grad(y.sum(), z)
    assert torch.equal(g, (z.detach() > 0).float())


def test_radix_worked_example_seed_002():
    """Weight 2, input train 1,0,1 (LSB first: 5) -> output train 0,1,0,1 (= 10)."""
    layer = DenseLayer(weight=[[2]], bias=[0], theta=[1] * 4, leak_shift=1, fire_mode="radix",
                       w_bits=4, v_bits=8)
    frames = torch.tensor([[[1], [0], [1], [0]]])
    spikes, _, _ = layer.run(frames)
    assert spikes[0, :, 0].tolist() == [0, 1, 0, 1]
    out, _ = run_network_float64([dict(weight=layer.weight, bias=layer.bias, theta=layer.theta,
                               leak_shift=1, fire_mode="radix", v_init=0, fires=True,
                               v_bits=8)], frames, 4)
    assert out.tolist() == [[10]]


@pytest.mark.parametrize("T", [3, 4, 6])
def test_radix_closed_form_equals_hardware(T):
    """ANN domain of seed 002 (floor(A / 2**(T-1)) at the non-firing leak-1 output, A =
    b (2**T - 1) + W X) equals the integer network for random weights."""
    torch.manual_seed(T)
    config = TrainConfig(method="radix", timesteps=T, hidden=(), w_bits=4)
    model = SpikingMLP(config, 64, 10)
    with torch.no_grad():
        model.linears[0].bias.uniform_(-2, 2)
    pixels = torch.randint(0, 16, (40, 64))
    frames = model.encode(pixels)
    with torch.no_grad():
        ann = model(frames, mode="ann")  # A / 2**(T-1) in integer units, without the floor
    hardware = model(frames, mode="hardware")
    scaled = torch.round(ann.double() * 2 ** (T - 1))  # = A, an integer
    assert torch.equal(torch.div(scaled, 2 ** (T - 1), rounding_mode="floor").float(), hardware)
    golden = model.to_network().run(pixels).output
    assert torch.equal(golden, hardware.to(torch.int64))


def test_weight_scale_minimises_error():
    w = torch.randn(200, 50)
    for bits in (2, 4, 8):
        s = weight_scale(w, bits)
        qmax = 2 ** (bits - 1) - 1
        err = ((torch.clamp(torch.round(w / s), -qmax, qmax) * s - w) ** 2).sum()
        plain = w.abs().max() / qmax
        err_plain = ((torch.round(w / plain) * plain - w) ** 2).sum()
        assert err <= err_plain + 1e-6


def test_sqnr_experiment_seed_000():
    """Trained threshold: >= 10 dB over Vth = 1; non-uniform: about 3 dB more (T = 4)."""
    kw = dict(iterations=2000, batch=512, eval_size=50_000, every=500)
    fixed = run_sqnr("fixed", **kw)["final"]
    uniform = run_sqnr("trainable", **kw)
    nonuniform = run_sqnr("nu", **kw)["final"]
    assert uniform["final"] - fixed >= 10
    assert 2.0 <= nonuniform - uniform["final"] <= 5.0
    assert uniform["thresholds"][-1][0] < 0.3  # Vth decreased towards sigma (Fig. 3B)
    assert abs(fixed_threshold_sqnr(20, eval_size=50_000) - uniform["final"]) < 1.5  # "T = 20"


def test_network_encoder_matches_model_frames():
    config = TrainConfig(method="if", hidden=(8,), encoder="rate", timesteps=5)
    model = SpikingMLP(config, 64, 10)
    pixels = torch.randint(0, 16, (7, 64))
    net = Network([DenseLayer(weight=torch.zeros(10, 64), bias=torch.zeros(10), theta=[1] * 5)],
                  5, Encoder("rate", 4))
    assert torch.equal(model.encode(pixels).to(torch.int64), net.encode(pixels))


def test_radix_neuron_module_equals_golden():
    from spikeforge.sw.train.neurons import RadixNeuron

    T, n = 6, 40
    gen = torch.Generator().manual_seed(2)
    currents = torch.randint(-9, 12, (3, T, n), generator=gen)
    layer = DenseLayer(weight=torch.eye(n, dtype=torch.int64), bias=torch.zeros(n),
                       theta=[1] * T, leak_shift=1, fire_mode="radix", v_init=3, w_bits=2,
                       v_bits=16)
    spikes, v_final, _ = layer.run(currents)
    neuron = RadixNeuron()
    neuron.reset(3.0)
    got = torch.stack([neuron(currents[:, t].float()) for t in range(T)], 1)
    assert torch.equal(got.to(torch.int64), spikes)
    assert torch.equal(neuron.v.to(torch.int64), v_final)


def test_quantizer_refuses_a_membrane_that_does_not_fit():
    from spikeforge.sw.train.model import QuantizationError

    config = TrainConfig(method="atif-u", hidden=(8,), v_bits_max=8, w_bits=8)
    model = SpikingMLP(config, 64, 10)
    with pytest.raises(QuantizationError, match=r"layer0: the membrane needs \d+ bits"):
        model.to_network()


@pytest.mark.parametrize("T", [2, 4, 5])
def test_radix_mod_closed_form_of_a_radix_layer(T):
    """A radix-mode layer emits the low T bits of A = c + b (2**T - 1) + W X (docs)."""
    gen = torch.Generator().manual_seed(T)
    w = torch.randint(-7, 8, (9, 20), generator=gen)
    b = torch.randint(-3, 4, (9,), generator=gen)
    layer = DenseLayer(weight=w, bias=b, theta=[1] * T, leak_shift=1, fire_mode="radix",
                       v_init=5, w_bits=4, v_bits=24)
    frames = torch.randint(0, 2, (30, T, 20), generator=gen)
    spikes, _, _ = layer.run(frames)
    x = (frames * (1 << torch.arange(T))[None, :, None]).sum(1)
    a = 5 + b * ((1 << T) - 1) + x @ w.T
    assert torch.equal(layer.readout(spikes, None), a % (1 << T))

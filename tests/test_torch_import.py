"""``sf.from_torch`` (spikeforge.sw.torch_import): torch Sequentials as golden networks.

The ReLU path is the trainer's conversion (Threshold LayerNorm, the trainer's quantization): a
small network whose conversion can be worked out by hand must give exactly that network, and a
trained one keeps its accuracy. The spiking path goes through NIR: integer-weight snnTorch and
sinabs Sequentials fire the library's own spikes, layer by layer, on the digits test set. Every
refusal is one line naming the module by index and type.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.sw.golden import Compare, DenseLayer, Encoder, Network, Reset
from spikeforge.sw.torch_import import TorchImportError, from_torch
from tests.test_nir import _agreement, _quiet, _run_sequential, _run_snntorch, assert_same_network

T = 16


@pytest.fixture(scope="module")
def digits():
    return sf.load_dataset("digits", split="train"), sf.load_dataset("digits", split="test")


def _linear(weight, bias=None) -> nn.Linear:
    weight = torch.as_tensor(weight, dtype=torch.float32)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not False)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not False:
            linear.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else
                              torch.as_tensor(bias, dtype=torch.float32))
    return linear


def _random_linear(generator, n_in, n_out) -> nn.Linear:
    return _linear(torch.randint(-3, 4, (n_out, n_in), generator=generator),
                   torch.randint(-1, 2, (n_out,), generator=generator))


# --- the conversion path (ReLU) ------------------------------------------------------------------

def test_relu_network_converts_to_the_network_worked_out_by_hand():
    """Inputs 0 or 1 (pixels 0 and 15, T = 4), percentile 100: layer 0's activations peak at
    1.0, its threshold. 4-bit weights: max |w| = 0.5 gives scale 0.5/7 (no clipping is better),
    so w = +-7, theta = round(1.0 / scale) = 14, v_init = theta // 2; layer 1's input unit is
    one spike worth theta = 1.0, its weights +-1 become +-7. v_bits: |V| <= 7 + 4 * 14 = 63."""
    module = nn.Sequential(_linear([[0.5, 0.5, 0, 0], [0, 0.5, -0.5, 0], [0.5, 0, 0, 0.5]]),
                           nn.ReLU(), _linear([[1, -1, 0], [0, 1, 1]]))
    calibration = torch.tensor([[15, 15, 0, 0], [0, 15, 0, 15], [15, 0, 15, 15],
                                [15, 15, 15, 15]])
    network, report = from_torch(module, calibration=calibration, timesteps=4, w_bits=4,
                                 percentile=100, progress=False)
    expected = Network([
        DenseLayer(weight=[[7, 7, 0, 0], [0, 7, -7, 0], [7, 0, 0, 7]], bias=[0, 0, 0],
                   theta=[14] * 4, v_init=7, w_bits=4, v_bits=8, name="layer0"),
        DenseLayer(weight=[[7, -7, 0], [0, 7, 7]], bias=[0, 0], theta=[1] * 4, fires=False,
                   w_bits=4, v_bits=8, name="layer1"),
    ], 4, Encoder("rate", 4))
    assert_same_network(network, expected)
    assert report.path == "conversion"
    assert report.scales == pytest.approx([0.5 / 7, 1 / 7])
    assert "threshold 1 -> theta=14" in str(report)


def test_relu_networks_keep_their_accuracy_after_conversion(digits):
    """A dense and a conv (average pooling) ReLU network trained here on digits: converted at
    T = 16 with 8-bit weights, the golden network stays within 3 points of the float one."""
    (pixels, labels), (test_pixels, test_labels) = digits
    torch.manual_seed(0)
    dense = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10))
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(64, 10))
    x = pixels.float() / 15
    for module, inputs in ((dense, x), (conv, x.reshape(-1, 1, 8, 8))):
        optimizer = torch.optim.Adam(module.parameters(), lr=0.02)
        for _ in range(150):
            optimizer.zero_grad()
            nn.functional.cross_entropy(module(inputs), labels).backward()
            optimizer.step()
        network, report = from_torch(module, calibration=pixels, labels=labels, timesteps=T,
                                     progress=False)
        shape = (-1, 1, 8, 8) if network.kinds[0] == "conv" else (-1, 64)
        with torch.no_grad():
            before = (module.eval()(test_pixels.float().reshape(shape) / 15).argmax(1)
                      == test_labels).float().mean().item()
        after = (network.predict(test_pixels) == test_labels).float().mean().item()
        print(f"\n{network.kinds}: float {before:.1%} -> golden {after:.1%} (digits test)\n"
              f"{report}")
        assert report.accuracy is not None and after > before - 0.03
    assert network.kinds == ("conv", "sumpool", "dense")


# --- the spiking path (NIR) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def snn():
    return pytest.importorskip("snntorch")


@pytest.mark.parametrize("reset", ["zero", "subtract"])
def test_snntorch_integer_sequential_fires_the_librarys_spikes(snn, digits, reset):
    g = torch.Generator().manual_seed(0)
    module = nn.Sequential(
        _random_linear(g, 64, 32),
        snn.Leaky(beta=1.0, threshold=5.0, init_hidden=True, reset_mechanism=reset),
        _random_linear(g, 32, 10),
        snn.Leaky(beta=1.0, threshold=3.0, init_hidden=True, reset_mechanism=reset))
    network, report = from_torch(module, timesteps=T, progress=False)
    assert report.path == "spiking" and report.nir.exact
    assert all((layer.reset, layer.compare) == (Reset(reset), Compare.GT)
               for layer in network.layers)
    _, (pixels, _) = digits
    theirs, counts = _run_snntorch(snn, module, network.encode(pixels))
    agree = _agreement(theirs, network, pixels)
    print(f"\nsnnTorch Leaky(beta=1, {reset}) -> from_torch: spikes equal on {agree} of "
          f"{len(pixels)} images per layer")
    assert agree == [len(pixels)] * 2
    assert torch.equal(counts.to(torch.int64), network.run(pixels).output)


def test_snntorch_conv_with_average_pooling(snn, digits):
    g = torch.Generator().manual_seed(4)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-2, 4, (4, 1, 3, 3), generator=g))
        conv.bias.zero_()
    module = nn.Sequential(
        conv, snn.Leaky(beta=1.0, threshold=4.0, init_hidden=True, reset_mechanism="zero"),
        nn.AvgPool2d(2), nn.Flatten(), _random_linear(g, 64, 10),
        snn.Leaky(beta=1.0, threshold=2.0, init_hidden=True, reset_mechanism="zero"))
    network, report = from_torch(module, input_shape=(1, 8, 8), timesteps=8, progress=False)
    assert network.kinds == ("conv", "sumpool", "dense") and report.nir.exact
    _, (pixels, _) = digits
    frames = network.encode(pixels).reshape(len(pixels), 8, 1, 8, 8)
    assert _agreement(_run_snntorch(snn, module, frames)[0], network, pixels) == \
        [len(pixels)] * 2


def test_sinabs_sequential_with_sum_pooling_fires_the_librarys_spikes(digits):
    pytest.importorskip("sinabs")
    import sinabs.layers as sl
    from sinabs.activation import MembraneSubtract, SingleSpike

    def iaf(threshold):
        return sl.IAFSqueeze(num_timesteps=T, spike_threshold=torch.tensor(threshold),
                             spike_fn=SingleSpike, reset_fn=MembraneSubtract(), min_v_mem=None)

    g = torch.Generator().manual_seed(5)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-2, 4, (4, 1, 3, 3), generator=g))
        conv.bias.copy_(torch.tensor([0.0, 1, -1, 0]))
    module = nn.Sequential(conv, iaf(4.0), sl.SumPool2d(2), nn.Flatten(),
                           _random_linear(g, 64, 10), iaf(3.0))
    network, report = from_torch(module, input_shape=(1, 8, 8), timesteps=T, progress=False)
    assert network.kinds == ("conv", "sumpool", "dense") and report.nir.exact
    assert all((layer.reset, layer.compare) == (Reset.SUBTRACT, Compare.GE)
               for layer in network.layers if layer.kind != "sumpool")
    _, (pixels, _) = digits
    with _quiet():
        theirs = _run_sequential(module, network.encode(pixels), (1, 8, 8))
    assert _agreement(theirs, network, pixels) == [len(pixels)] * 2
    assert "module 0 (Conv2d) + module 1 (IAFSqueeze): conv, exact" in str(report)


# --- refusals ------------------------------------------------------------------------------------

def _refusals():
    snn = pytest.importorskip("snntorch")
    import sinabs.layers as sl
    from sinabs.activation import MembraneSubtract, SingleSpike

    fc = nn.Linear(4, 2)
    calibration = torch.zeros(3, 4, dtype=torch.int64)
    return [
        (nn.Linear(4, 2), {}, r"^from_torch takes an nn\.Sequential, not Linear$"),
        (nn.Sequential(fc, nn.Sigmoid()), {},
         r"^module 1 \(Sigmoid\) is not supported: from_torch takes Linear, Conv2d, "),
        (nn.Sequential(nn.Sequential(fc, nn.Tanh())), {}, r"^module 0\.1 \(Tanh\) is not "),
        (nn.Sequential(fc, nn.ReLU(), nn.Linear(2, 2)), {},
         r"^a ReLU network is converted by setting each layer's threshold .* calibration="),
        (nn.Sequential(fc, nn.ReLU(), nn.Linear(2, 2), nn.ReLU()),
         {"calibration": calibration}, r"^module 3 \(ReLU\): follows the last layer"),
        (nn.Sequential(fc, nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)),
         {"calibration": calibration}, r"^module 0 \(Linear\): has no ReLU after it"),
        (nn.Sequential(fc, nn.ReLU(), nn.Linear(2, 3),
                       snn.Leaky(beta=1.0, init_hidden=True)), {"calibration": calibration},
         r"^module 3 \(Leaky\): a ReLU network .* cannot also hold"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(72, 10)),
         {"calibration": torch.zeros(3, 64, dtype=torch.int64)},
         r"^module 2 \(Linear\): gets an image of shape \(2, 6, 6\): put an nn\.Flatten\(\)"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(beta=1.0, init_hidden=True)), {},
         r"^module 0 \(Conv2d\): the input image's size is unknown: pass input_shape"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), snn.Leaky(beta=1.0, init_hidden=True)),
         {"input_shape": (1, 8, 8)}, r"^module 0 \(Conv2d\): groups = 1 and dilation = \(2, 2\)"),
        (nn.Sequential(fc, snn.Leaky(beta=0.9, init_hidden=True)), {},
         r"^module 1 \(Leaky\): its time constant gives a decay of 0\.9 per step"),
        (nn.Sequential(fc, snn.Leaky(beta=1.0, init_hidden=True, reset_mechanism="subtract",
                                     reset_delay=False)), {},
         r"^module 1 \(Leaky\): reset_mechanism 'subtract' with reset_delay=False"),
        (nn.Sequential(fc, snn.Leaky(beta=1.0, init_hidden=True, reset_mechanism="none")), {},
         r"^module 1 \(Leaky\): reset_mechanism 'none'"),
        (nn.Sequential(fc, snn.Leaky(beta=1.0, init_hidden=True, reset_mechanism="zero"),
                       nn.Linear(2, 2), snn.Leaky(beta=1.0, init_hidden=True)), {},
         r"^module 3 \(Leaky\): resets by 'subtract' but module 1 \(Leaky\) by 'zero'"),
        (nn.Sequential(fc, sl.IAF()), {},
         r"^module 1 \(IAF\): spike_fn MultiSpike can fire several spikes in one step"),
        (nn.Sequential(fc, sl.IAF(reset_fn=MembraneSubtract(), min_v_mem=-1.0,
                                  spike_fn=SingleSpike)), {},
         r"^module 1 \(IAF\): min_v_mem = -1: spikeforge membranes have no floor$"),
        (nn.Sequential(nn.Linear(4, 3), snn.Leaky(beta=1.0, init_hidden=True),
                       nn.AvgPool2d(2)), {}, r"^module 2 \(AvgPool2d\): needs an image"),
        (nn.Sequential(nn.Linear(5, 3), snn.Leaky(beta=1.0, init_hidden=True),
                       nn.Linear(4, 2)), {}, r"^module 2 \(Linear\): takes 4 inputs but gets 3"),
    ]


def test_refusals_are_one_line_naming_the_module():
    pytest.importorskip("sinabs")
    for module, options, message in _refusals():
        with pytest.raises(TorchImportError, match=message) as error:
            from_torch(module, progress=False, **options)
        assert "\n" not in str(error.value)


def test_the_api_name_is_from_torch():
    assert sf.from_torch is from_torch

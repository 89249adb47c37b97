"""NIR import and export (``spikeforge.sw.nir``, docs/nir.md), against snnTorch and sinabs.

Three parts: the golden round trip ``from_nir(to_nir(net)) == net``; hand-built graphs for every
node kind and every refusal; and the real clients: networks built (and trained) in snnTorch and
sinabs go through NIR into spikeforge and fire the library's own spikes, layer by layer, on the
digits test set, and spikeforge networks go through :func:`to_nir` into each library.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import types
import warnings

import numpy as np
import pytest
import torch

from spikeforge.cli import main
from spikeforge.sw.golden import (
    Compare,
    ConvLayer,
    DenseLayer,
    Encoder,
    Network,
    Reset,
    SumPoolLayer,
    argmax_lowest,
)
from spikeforge.sw.nir import (
    NO_LEAK_TAU,
    SNNTORCH_DT,
    NirError,
    from_nir,
    read_graph,
    to_nir,
    write_graph,
)

nir = pytest.importorskip("nir")


def assert_same_network(a: Network, b: Network) -> None:
    assert (a.timesteps, a.encoder) == (b.timesteps, b.encoder)
    assert len(a.layers) == len(b.layers)
    for k, (x, y) in enumerate(zip(a.layers, b.layers, strict=True)):
        assert type(x) is type(y), k
        for name in x.__dataclass_fields__:
            u, v = getattr(x, name), getattr(y, name)
            same = torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v
            assert same, f"layers[{k}].{name}: {u!r} != {v!r}"


def _graph(*nodes, names=None):
    """A chain graph from nodes (Input and Output added), named n0, n1, ... unless given."""
    names = names or [f"n{k}" for k in range(len(nodes))]
    shape = nodes[0].input_type["input"] if hasattr(nodes[0], "input_type") else None
    all_nodes = {"input": nir.Input(input_type={"input": np.array(shape)}), **dict(
        zip(names, nodes, strict=True)), "output": nir.Output(output_type={"output": np.array(
            [1])})}
    order = ["input", *names, "output"]
    return nir.NIRGraph(nodes=all_nodes, edges=list(itertools.pairwise(order)))


def _if(n, threshold=1.0, r=1.0):
    return nir.IF(r=np.full(n, r), v_threshold=np.full(n, float(threshold)))


def _affine(weight, bias=None):
    weight = np.asarray(weight, dtype=np.float64)
    bias = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    return nir.Affine(weight=weight, bias=bias)


# --- the golden round trip ---------------------------------------------------------------------

def _dense_net() -> Network:
    g = torch.Generator().manual_seed(1)
    hidden = DenseLayer(weight=torch.randint(-8, 8, (6, 10), generator=g),
                        bias=torch.randint(-3, 4, (6,), generator=g), theta=[3, 4, 5, 6],
                        leak_shift=1, v_init=2, w_bits=4, v_bits=12, name="fc 1",
                        compare=">", reset="zero")
    radix = DenseLayer(weight=torch.randint(-2, 2, (5, 6), generator=g), bias=[0] * 5,
                       theta=[1] * 4, fire_mode="radix", leak_shift=1, w_bits=2, name="digits")
    out = DenseLayer(weight=torch.randint(-128, 128, (3, 5), generator=g), bias=[1, -1, 0],
                     theta=[7] * 4, fires=False, v_bits=20, name="fc.out")
    return Network([hidden, radix, out], 4, Encoder("radix", 4))


def _conv_net() -> Network:
    g = torch.Generator().manual_seed(2)
    conv = ConvLayer(weight=torch.randint(-3, 4, (3, 2, 3, 2), generator=g), bias=[0, 1, -1],
                     theta=[2] * 5, input_shape=(2, 7, 6), stride=(2, 1), padding=(1, 0),
                     name="conv1", w_bits=3)
    conv2 = ConvLayer(weight=torch.randint(-3, 4, (2, 3, 2, 2), generator=g), bias=[0, 0],
                      theta=[3] * 5, input_shape=conv.output_shape, name="conv2", reset="zero",
                      compare=">=")
    dense = DenseLayer(weight=torch.randint(-3, 4, (4, conv2.fan_out), generator=g),
                       bias=[0] * 4, theta=[2] * 5, name="fc")
    return Network([conv, conv2, dense], 5, Encoder("direct", 3))


def _pool_net() -> Network:
    g = torch.Generator().manual_seed(3)
    conv = ConvLayer(weight=torch.randint(-4, 5, (4, 1, 3, 3), generator=g), bias=[0] * 4,
                     theta=[3] * 6, input_shape=(1, 8, 8), padding=1, name="conv")
    pool = SumPoolLayer(kernel=3, stride=2, padding=1, input_shape=(4, 8, 8), name="pool")
    dense = DenseLayer(weight=torch.randint(-4, 5, (10, pool.fan_out), generator=g),
                       bias=[0] * 10, theta=[5] * 6, name="fc")
    return Network([conv, pool, dense], 6)


@pytest.mark.parametrize("build", [_dense_net, _conv_net, _pool_net],
                         ids=["dense", "conv", "pool"])
def test_golden_round_trip_field_by_field(build, tmp_path):
    net = build()
    graph = to_nir(net)
    back, report = from_nir(graph)
    assert_same_network(net, back)
    assert report.exact and report.assumed == []
    write_graph(graph, tmp_path / "net.nir")
    again, _ = from_nir(tmp_path / "net.nir")
    assert_same_network(net, again)
    pixels = torch.randint(0, net.encoder.pixel_max + 1, (5, net.n_inputs))
    assert torch.equal(net.run(pixels).output, again.run(pixels).output)


def test_round_trip_keeps_scales_and_explicit_arguments_win():
    net = _dense_net()
    _, report = from_nir(to_nir(net, scales=[0.25, None, 2.0]))
    assert report.scales == [0.25, 1.0, 2.0]
    other, _ = from_nir(to_nir(net), timesteps=4, encoder="rate", v_bits=24)
    assert other.encoder == Encoder("rate", 4)
    assert {layer.v_bits for layer in other.layers} == {24}


def test_to_nir_chooses_nodes_the_libraries_read():
    graph = to_nir(_pool_net())
    kinds = [type(graph.nodes[b]).__name__ for _, b in graph.edges]
    assert kinds == ["Conv2d", "LIF", "SumPool2d", "Flatten", "Affine", "LIF", "Output"]
    lif = graph.nodes["conv_lif"]
    assert np.all(lif.tau == NO_LEAK_TAU) and np.all(lif.r * SNNTORCH_DT / lif.tau == 1.0)
    assert 1 - SNNTORCH_DT / NO_LEAK_TAU == 1.0  # snnTorch's beta
    assert torch.exp(-1.0 / torch.tensor(NO_LEAK_TAU, dtype=torch.float32)) == 1.0  # sinabs
    assert np.all(lif.v_threshold == 3.0)  # subtract: the integer threshold itself
    zero = to_nir(_dense_net()).nodes["fc_1_lif"]
    assert np.all(zero.v_threshold == 3.5)  # zero reset, V > 3: halfway to the next integer
    assert zero.metadata["spikeforge"]["theta"] == [3, 4, 5, 6]


# --- graphs built by hand: every node kind -------------------------------------------------------

def test_integer_affine_if_imports_exactly_with_documented_defaults():
    graph = _graph(_affine([[1, -2, 3], [0, 4, -4]], [1, 0]), _if(2, 3))
    net, report = from_nir(graph)
    layer = net.layers[0]
    assert layer.weight.tolist() == [[1, -2, 3], [0, 4, -4]] and layer.bias.tolist() == [1, 0]
    assert (layer.compare, layer.reset, layer.theta.tolist()) == (Compare.GE, Reset.SUBTRACT,
                                                                  [3] * 4)
    assert report.exact and report.layers[0].w_bits == 4 and layer.v_bits == 16
    assert net.timesteps == 4 and net.encoder == Encoder("rate", 4)
    assert report.assumed == ["T = 4", "encoder = rate", "pixel_bits = 4"]
    assert "exact" in str(report)


def test_float_weights_are_quantized_per_layer_with_the_error_reported():
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 6))
    graph = _graph(_affine(weight, [0.1] * 4), _if(4, 1.3))
    net, report = from_nir(graph, w_bits=4)
    layer, info = net.layers[0], report.layers[0]
    assert not report.exact and info.w_bits == 4 and layer.weight.abs().max() == 7
    scale = np.abs(weight).max() / 7
    assert info.scale == pytest.approx(scale)
    assert info.weight_error == pytest.approx(np.abs(weight - scale * layer.weight.numpy()).max())
    assert 0 < info.weight_error <= scale / 2 + 1e-12
    assert layer.theta[0] == round(1.3 / scale)
    assert "quantized to w_bits=4" in info.line()


def test_linear_scale_and_flatten_fold_into_dense_synapses():
    flatten = nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=0, end_dim=-1)
    linear = nir.Linear(weight=np.array([[1.0, 2, 0, -1]]))
    pre = nir.Scale(scale=np.array([1.0, 1, 2, 3]))
    post = nir.Scale(scale=np.array([2.0]))
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 2, 2])}), "flat": flatten,
             "pre": pre, "lin": linear, "post": post, "if": _if(1, 2),
             "output": nir.Output(output_type={"output": np.array([1])})}
    order = list(nodes)
    net, report = from_nir(nir.NIRGraph(nodes=nodes, edges=list(
        itertools.pairwise(order))))
    assert net.layers[0].weight.tolist() == [[2, 4, 0, -6]]
    assert report.layers[0].nodes == ("lin", "pre", "post", "if")


def test_avgpool_with_integer_weights_scales_bias_and_threshold():
    conv = nir.Conv2d(input_shape=(4, 4), weight=np.ones((1, 1, 1, 1)), stride=1, padding=0,
                      dilation=1, groups=1, bias=np.zeros(1))
    pool = nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]),
                         padding=np.array([0, 0]))
    flatten = nir.Flatten(input_type={"input": np.array([1, 2, 2])}, start_dim=0, end_dim=-1)
    dense = _affine([[1, 1, 1, 1]], [1])
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 4, 4])}), "c": conv,
             "ci": _if(16, 1), "p": pool, "f": flatten, "d": dense, "di": _if(1, 2),
             "output": nir.Output(output_type={"output": np.array([1])})}
    order = list(nodes)
    net, report = from_nir(nir.NIRGraph(nodes=nodes, edges=list(
        itertools.pairwise(order))))
    assert isinstance(net.layers[1], SumPoolLayer) and report.exact
    assert net.layers[2].theta[0] == 8 and net.layers[2].bias.tolist() == [4]


def test_conv_same_padding_and_bias_per_channel():
    conv = nir.Conv2d(input_shape=None, weight=np.ones((2, 1, 3, 3)), stride=1, padding="same",
                      dilation=1, groups=1, bias=np.array([0.0, 1.0]))
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 5, 5])}), "c": conv,
             "n": _if(50, 2), "output": nir.Output(output_type={"output": np.array([50])})}
    net, _ = from_nir(nir.NIRGraph(nodes=nodes, edges=[("input", "c"), ("c", "n"),
                                                        ("n", "output")]))
    assert net.layers[0].padding == (1, 1) and net.layers[0].output_shape == (2, 5, 5)


def test_lif_leak_maps_to_a_shift_by_the_time_constant():
    # snnTorch's convention: beta = 1 - dt / tau = 0.5, r = tau / dt
    tau = SNNTORCH_DT / 0.5
    lif = nir.LIF(tau=np.full(2, tau), r=np.full(2, tau / SNNTORCH_DT), v_leak=np.zeros(2),
                  v_threshold=np.full(2, 1.0))
    net, report = from_nir(_graph(_affine(np.eye(2)), lif))
    assert net.layers[0].leak_shift == 1
    assert (net.layers[0].reset, net.layers[0].compare) == (Reset.ZERO, Compare.GT)
    assert "snnTorch" in report.layers[0].semantics
    # sinabs' convention: tau in steps, exp(-1/tau) = 0.25
    sinabs_lif = nir.LIF(tau=np.full(2, 1 / math.log(4)), r=np.ones(2), v_leak=np.zeros(2),
                         v_threshold=np.ones(2))
    net, _ = from_nir(_graph(_affine(np.eye(2)), sinabs_lif))
    assert net.layers[0].leak_shift == 2 and net.layers[0].reset is Reset.SUBTRACT


def test_a_leak_that_is_no_shift_is_refused_with_the_node_and_reason():
    tau = SNNTORCH_DT / (1 - 0.9)
    lif = nir.LIF(tau=np.full(2, tau), r=np.full(2, tau / SNNTORCH_DT), v_leak=np.zeros(2),
                  v_threshold=np.ones(2))
    with pytest.raises(NirError, match=r"^node 'n1': its time constant gives a decay of 0\.9 "
                                       r"per step .*nearest, 2\*\*-0 = 1, is 0\.1 away"):
        from_nir(_graph(_affine(np.eye(2)), lif))
    net, report = from_nir(_graph(_affine(np.eye(2)), nir.LIF(
        tau=np.full(2, SNNTORCH_DT / 0.49), r=np.full(2, 1 / 0.49), v_leak=np.zeros(2),
        v_threshold=np.ones(2))), leak_tolerance=0.02)
    assert net.layers[0].leak_shift == 1 and "within" in report.layers[0].notes[0]


def test_threshold_node_is_stateless_where_exact_and_refused_otherwise():
    graph = _graph(_affine([[1, 2]]), nir.Threshold(threshold=np.array([1.5])))
    net, _ = from_nir(graph)
    layer = net.layers[0]
    assert layer.leak_shift == layer.v_bits and layer.reset is Reset.ZERO
    frames = torch.tensor([[[0, 1], [1, 0], [1, 0], [0, 0]]])
    assert net.trace_frames(frames).layers[0].spikes[0, :, 0].tolist() == [1, 0, 0, 0]
    with pytest.raises(NirError, match=r"^node 'n1' is a Threshold node .*negative weights"):
        from_nir(_graph(_affine([[1, -2]]), nir.Threshold(threshold=np.array([1.5]))))


def test_trailing_synapses_and_li_are_a_membrane_readout():
    net, report = from_nir(_graph(_affine([[1, 1]]), _if(1, 1), _affine([[2], [3]])))
    assert not net.layers[-1].fires and "membrane readout" in report.layers[-1].line()
    li = nir.LI(tau=np.full(2, NO_LEAK_TAU), r=np.ones(2), v_leak=np.zeros(2))
    net, _ = from_nir(_graph(_affine(np.eye(2)), li))
    assert not net.layers[0].fires and net.layers[0].leak_shift == 0


def test_reset_and_compare_can_be_given():
    graph = _graph(_affine(np.eye(2)), _if(2, 2))
    net, report = from_nir(graph, reset="zero", compare=">")
    assert (net.layers[0].reset, net.layers[0].compare) == (Reset.ZERO, Compare.GT)
    assert report.layers[0].semantics.startswith("given")


@pytest.mark.parametrize("make, message", [
    (lambda: _graph(_affine(np.eye(2)), nir.CubaLIF(
        tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2),
        v_threshold=np.ones(2))), "^node 'n1' is a CubaLIF node, which spikeforge does not "
                                  "import"),
    (lambda: _graph(_affine(np.eye(2)), nir.Delay(delay=np.ones(2))),
     "^node 'n1' is a Delay node"),
    (lambda: _graph(_if(2, 1)), r"^node 'n0' \(IF\) has no Affine, Linear or Conv2d"),
    (lambda: _graph(_affine(np.eye(2)), _affine(np.eye(2))),
     "^node 'n1' follows the synapses 'n0' without a neuron"),
    (lambda: _graph(_affine(np.eye(2)), nir.IF(r=np.ones(2), v_threshold=np.array([1.0, 2]))),
     "^node 'n1' has 2 different values of v_threshold"),
    (lambda: _graph(_affine(np.eye(2)), nir.LIF(tau=np.ones(2), r=np.full(2, 5.0),
                                                v_leak=np.zeros(2), v_threshold=np.ones(2))),
     "^node 'n1': r = 5 and tau = 1 match neither snnTorch's convention"),
    (lambda: _graph(_affine(np.eye(2)), nir.LIF(tau=np.full(2, NO_LEAK_TAU), r=np.ones(2),
                                                v_leak=np.ones(2), v_threshold=np.ones(2))),
     "^node 'n1' has a non-zero v_leak"),
    (lambda: _graph(_affine(np.eye(2)), _if(2, 0.5)), None),  # subtract 0.5: quantized, fine
])
def test_bad_graphs_are_refused_naming_the_node(make, message):
    if message is None:
        _, report = from_nir(make())
        assert not report.exact
        return
    with pytest.raises(NirError, match=message):
        from_nir(make())


def test_branches_cycles_and_nesting_are_refused():
    a, b = _affine(np.eye(2)), _if(2)
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "a": a, "b": b,
             "c": _if(2), "output": nir.Output(output_type={"output": np.array([2])})}
    edges = [("input", "a"), ("a", "b"), ("a", "c"), ("b", "output")]
    with pytest.raises(NirError, match=r"^node 'a' has 2 outgoing edges \(b, c\)"):
        from_nir(nir.NIRGraph(nodes=nodes, edges=edges))
    inner = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                                "output": nir.Output(output_type={"output": np.array([2])})},
                         edges=[("input", "output")])
    with pytest.raises(NirError, match=r"^node 'n1' is a nested NIRGraph"):
        from_nir(_graph(_affine(np.eye(2)), inner))
    with pytest.raises(NirError, match=r"not a readable NIR graph|no such file"):
        read_graph(__file__)


# --- the real clients --------------------------------------------------------------------------

T = 16


@pytest.fixture(scope="module")
def digits():
    from spikeforge.sw.data import load_dataset

    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    return train, test


@pytest.fixture(scope="module")
def ann(digits):
    (pixels, labels), _ = digits
    return trained_ann(pixels, labels)


def trained_ann(pixels, labels):
    """A float 64-32-10 ReLU network trained on digits (a second), normalized for rate coding:
    ``(w1, b1, w2, b2)`` for IF neurons of threshold 1 fed spikes at rate ``pixel / 15``."""
    torch.manual_seed(0)
    x = pixels.float() / 15
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels).backward()
        optimizer.step()
    with torch.no_grad():
        hidden = model[1](model[0](x))
        l1 = torch.quantile(hidden.flatten(), 0.999).item()
        l2 = torch.quantile(model(x).clamp(min=0).flatten(), 0.999).item()
        w1, b1 = model[0].weight / l1, model[0].bias / l1
        w2, b2 = model[2].weight * l1 / l2, model[2].bias / l2
    return w1.clone(), b1.clone(), w2.clone(), b2.clone()


def _integer(ann, bits=6):
    """The network with integer weights: per layer ``round(w * q)``, threshold ``round(q)``."""
    out = []
    for w, b in ((ann[0], ann[1]), (ann[2], ann[3])):
        q = ((1 << (bits - 1)) - 1) / w.abs().max().item()
        out.append((torch.round(w * q), torch.round(b * q), float(round(q))))
    return out


def _frames(digits, timesteps=T):
    _, (pixels, labels) = digits
    return Encoder("rate", 4).encode(pixels, timesteps), pixels, labels


def _accuracy(counts: torch.Tensor, labels: torch.Tensor) -> float:
    return (argmax_lowest(counts.to(torch.int64)) == labels).float().mean().item()


def _agreement(library: list[torch.Tensor], net: Network, pixels) -> list[int]:
    """Per neuron layer, the images on which every spike of the library's layer equals
    spikeforge's (``library``: one ``[batch, T, ...]`` tensor per neuron layer)."""
    trace = net.trace(pixels)
    ours = [lt.spikes for lt, layer in zip(trace.layers, net.layers, strict=True)
            if not isinstance(layer, SumPoolLayer)]
    return [int((a.to(torch.int64).reshape(b.shape) == b).flatten(1).all(1).sum())
            for a, b in zip(library, ours, strict=True)]


@contextlib.contextmanager
def _quiet():
    """The libraries print progress and warn (numpy divides by zero for beta = 1)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# snnTorch ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snn():
    return pytest.importorskip("snntorch")


def _snntorch_export(snn, model, sample, **options):
    """``snntorch.export_to_nir``. snnTorch 1.0 passes ``v_reset`` to ``nir.LIF``, which nir
    1.0.5 added; under nir 1.0.4 its module-level ``nir`` is swapped for one whose ``LIF``
    drops a zero ``v_reset`` (the graph is the same: NIR 1.0.4 has no reset potential)."""
    from snntorch import export_nir

    real = export_nir.nir
    if "v_reset" not in nir.LIF.__dataclass_fields__:
        def lif(*, v_reset=None, **fields):
            assert v_reset is None or not np.any(v_reset)
            return nir.LIF(**fields)
        export_nir.nir = types.SimpleNamespace(**{**vars(nir), "LIF": lif})
    try:
        with _quiet():
            return export_nir.export_to_nir(model, sample, **options)
    finally:
        export_nir.nir = real


def _run_snntorch(snn, model, frames):
    """Spikes of every Leaky module, ``[batch, T, ...]`` each, and the last one's counts."""
    for module in model.modules():
        if isinstance(module, snn.Leaky):
            module.reset_mem()
    leaky = [m for m in model.modules() if isinstance(m, snn.Leaky)]
    out = {id(m): [] for m in leaky}
    hooks = [m.register_forward_hook(lambda mod, _, o: out[id(mod)].append(
        (o[0] if isinstance(o, tuple) else o).detach().flatten(1))) for m in leaky]
    try:
        with torch.no_grad(), _quiet():
            for t in range(frames.shape[1]):
                model(frames[:, t].float())
    finally:
        for hook in hooks:
            hook.remove()
    spikes = [torch.stack(out[id(m)], 1) for m in leaky]
    return spikes, spikes[-1].sum(1)


def _snntorch_dense(snn, layers, reset, reset_delay=True):
    modules = []
    for w, b, threshold in layers:
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        linear.weight.data, linear.bias.data = w.clone().float(), b.clone().float()
        modules += [linear, snn.Leaky(beta=1.0, threshold=threshold, init_hidden=True,
                                      reset_mechanism=reset, reset_delay=reset_delay)]
    return torch.nn.Sequential(*modules)


@pytest.mark.parametrize("reset, reset_delay", [("zero", False), ("zero", True),
                                                ("subtract", True)])
def test_snntorch_integer_network_imports_with_its_own_spikes(snn, ann, digits, reset,
                                                              reset_delay):
    model = _snntorch_dense(snn, _integer(ann), reset, reset_delay)
    graph = _snntorch_export(snn, model, torch.zeros(1, 64))
    # snnTorch drops reset_mechanism on export; its importer (and spikeforge's default) reads a
    # LIF as reset-to-zero, V > thr: a subtract-reset model says so
    net, report = from_nir(graph, timesteps=T, reset=None if reset == "zero" else reset)
    assert report.exact
    assert all(layer.compare is Compare.GT and layer.reset == reset for layer in net.layers)
    frames, pixels, labels = _frames(digits)
    theirs, counts = _run_snntorch(snn, model, frames)
    trace = net.trace(pixels)
    agree = _agreement(theirs, net, pixels)
    print(f"\nsnnTorch Leaky(beta=1, {reset}, reset_delay={reset_delay}) -> NIR -> spikeforge: "
          f"spikes equal on {agree} of {len(pixels)} images per layer, accuracy "
          f"{_accuracy(counts, labels):.1%} (snnTorch) / {_accuracy(trace.output, labels):.1%}")
    assert agree == [len(pixels)] * 2
    assert torch.equal(counts.to(torch.int64), trace.output)


def test_snntorch_conv_with_average_pooling(snn, digits):
    g = torch.Generator().manual_seed(4)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    conv.weight.data = torch.randint(-2, 4, (4, 1, 3, 3), generator=g).float()
    conv.bias.data = torch.zeros(4)
    linear = torch.nn.Linear(64, 10)
    linear.weight.data = torch.randint(-3, 4, (10, 64), generator=g).float()
    linear.bias.data = torch.zeros(10)
    # per-neuron beta and threshold: with scalars snnTorch exports shapeless LIF nodes, on which
    # NIR's type inference (which its export runs) fails at the pooling node
    model = torch.nn.Sequential(
        conv, snn.Leaky(beta=torch.ones(4, 8, 8), threshold=torch.full((4, 8, 8), 4.0),
                        init_hidden=True, reset_mechanism="zero"),
        torch.nn.AvgPool2d(2), torch.nn.Flatten(), linear,
        snn.Leaky(beta=1.0, threshold=2.0, init_hidden=True, reset_mechanism="zero"))
    graph = _snntorch_export(snn, model, torch.zeros(1, 1, 8, 8), ignore_dims=[0])
    net, report = from_nir(graph, timesteps=8)
    assert report.exact and net.kinds == ("conv", "sumpool", "dense")
    frames, pixels, _ = _frames(digits, 8)
    theirs, _ = _run_snntorch(snn, model, frames.reshape(len(pixels), 8, 1, 8, 8))
    agree = _agreement(theirs, net, pixels)
    print(f"\nsnnTorch conv + AvgPool2d -> NIR -> spikeforge: spikes equal on {agree} of "
          f"{len(pixels)} images per layer")
    assert agree == [len(pixels)] * 2


def test_snntorch_float_network_accuracy_before_and_after_quantization(snn, ann, digits):
    w1, b1, w2, b2 = ann
    model = _snntorch_dense(snn, [(w1, b1, 1.0), (w2, b2, 1.0)], "subtract")
    graph = _snntorch_export(snn, model, torch.zeros(1, 64))
    frames, pixels, labels = _frames(digits)
    _, counts = _run_snntorch(snn, model, frames)
    before = _accuracy(counts, labels)
    for bits in (8, 4):
        net, report = from_nir(graph, timesteps=T, reset="subtract", w_bits=bits)
        assert not report.exact
        after = _accuracy(net.run(pixels).output, labels)
        print(f"\nsnnTorch float -> spikeforge w_bits={bits}: accuracy {before:.1%} -> "
              f"{after:.1%}\n" + str(report))
        assert after > 0.5


def test_spikeforge_to_snntorch_reproduces_the_spikes(snn, ann, digits):
    from snntorch.import_nir import import_from_nir

    layers = _integer(ann)
    frames, pixels, _ = _frames(digits)
    for compare in (">", ">="):
        net = Network([DenseLayer(weight=w, bias=b, theta=[int(th)] * T, name=f"fc{k}",
                                  reset="zero", compare=compare)
                       for k, (w, b, th) in enumerate(layers)], T)
        with _quiet():
            model = import_from_nir(to_nir(net))
        theirs, _ = _run_snntorch(snn, model, frames)
        agree = _agreement(theirs, net, pixels)
        print(f"\nspikeforge (zero reset, '{compare}') -> NIR -> snnTorch: spikes equal on "
              f"{agree} of {len(pixels)} images per layer")
        assert agree == [len(pixels)] * 2


# sinabs ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sinabs():
    pytest.importorskip("sinabs")
    import sinabs.layers
    import sinabs.nir

    return sinabs


def _iaf(sinabs, threshold):
    from sinabs.activation import MembraneSubtract, SingleSpike

    return sinabs.layers.IAFSqueeze(num_timesteps=T, spike_threshold=torch.tensor(threshold),
                                    spike_fn=SingleSpike, reset_fn=MembraneSubtract(),
                                    min_v_mem=None)


def _run_sequential(model, frames, shape=None):
    """Every spiking layer's output ``[batch, T, ...]`` of a sinabs Sequential on ``frames``."""
    batch = frames.shape[0]
    x = frames.reshape(batch * frames.shape[1], *(shape or frames.shape[2:])).float()
    spikes = []
    with torch.no_grad():
        for module in model:
            if hasattr(module, "reset_states"):
                module.reset_states()
            x = module(x)
            if type(module).__name__.startswith("IAF"):
                spikes.append(x.reshape(batch, frames.shape[1], -1))
    return spikes


def test_sinabs_integer_network_imports_with_its_own_spikes(sinabs, ann, digits):
    modules = []
    for w, b, threshold in _integer(ann):
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        linear.weight.data, linear.bias.data = w.clone(), b.clone()
        modules += [linear, _iaf(sinabs, threshold)]
    model = torch.nn.Sequential(*modules)
    with _quiet():
        graph = sinabs.nir.to_nir(model, torch.zeros(T, 64))
    net, report = from_nir(graph, timesteps=T)
    assert report.exact
    assert all(layer.compare is Compare.GE and layer.reset is Reset.SUBTRACT
               for layer in net.layers)
    frames, pixels, labels = _frames(digits)
    theirs = _run_sequential(model, frames)
    trace = net.trace(pixels)
    agree = _agreement(theirs, net, pixels)
    print(f"\nsinabs IAF -> NIR -> spikeforge: spikes equal on {agree} of {len(pixels)} "
          f"images per layer, accuracy {_accuracy(trace.output, labels):.1%}")
    assert agree == [len(pixels)] * 2


def test_sinabs_conv_with_sum_pooling(sinabs, digits):
    g = torch.Generator().manual_seed(5)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    conv.weight.data = torch.randint(-2, 4, (4, 1, 3, 3), generator=g).float()
    conv.bias.data = torch.tensor([0.0, 1, -1, 0])
    linear = torch.nn.Linear(64, 10)
    linear.weight.data = torch.randint(-3, 4, (10, 64), generator=g).float()
    linear.bias.data = torch.zeros(10)
    model = torch.nn.Sequential(conv, _iaf(sinabs, 4.0), sinabs.layers.SumPool2d(2),
                                torch.nn.Flatten(), linear, _iaf(sinabs, 3.0))
    with _quiet():
        graph = sinabs.nir.to_nir(model, torch.zeros(T, 1, 8, 8))
    net, report = from_nir(graph, timesteps=T)
    assert report.exact and net.kinds == ("conv", "sumpool", "dense")
    frames, pixels, _ = _frames(digits)
    theirs = _run_sequential(model, frames, (1, 8, 8))
    agree = _agreement(theirs, net, pixels)
    print(f"\nsinabs conv + SumPool2d -> NIR -> spikeforge: spikes equal on {agree} of "
          f"{len(pixels)} images per layer")
    assert agree == [len(pixels)] * 2


def test_sinabs_float_network_accuracy_before_and_after_quantization(sinabs, ann, digits):
    w1, b1, w2, b2 = ann
    modules = []
    for w, b in ((w1, b1), (w2, b2)):
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        linear.weight.data, linear.bias.data = w.clone(), b.clone()
        modules += [linear, _iaf(sinabs, 1.0)]
    model = torch.nn.Sequential(*modules)
    with _quiet():
        graph = sinabs.nir.to_nir(model, torch.zeros(T, 64))
    frames, pixels, labels = _frames(digits)
    before = _accuracy(_run_sequential(model, frames)[-1].sum(1), labels)
    net, report = from_nir(graph, timesteps=T)
    after = _accuracy(net.run(pixels).output, labels)
    print(f"\nsinabs float -> spikeforge w_bits=8: accuracy {before:.1%} -> {after:.1%}\n"
          + str(report))
    assert not report.exact and after > 0.5


def test_spikeforge_to_sinabs_reproduces_the_spikes(sinabs, ann, digits):
    """sinabs reads a LIF as subtract, ``>=``, but with several spikes per step where the
    membrane reaches twice the threshold (its default MultiSpike): the spikes are equal on
    every image where no membrane does."""
    layers = _integer(ann)
    net = Network([DenseLayer(weight=w, bias=b, theta=[int(th)] * T, name=f"fc{k}")
                   for k, (w, b, th) in enumerate(layers)], T)
    frames, pixels, _ = _frames(digits)
    with _quiet():
        model = sinabs.nir.from_nir(to_nir(net), batch_size=len(pixels))
        _, state = model(frames.reshape(-1, 64).float())
    theirs = [state.cache[f"fc{k}_lif"].reshape(len(pixels), T, -1) for k in range(2)]
    _check_sinabs(net, pixels, theirs, "spikeforge (subtract, '>=') -> NIR -> sinabs")


def _check_sinabs(net, pixels, theirs, what):
    """sinabs' spikes equal ours on every image on which no membrane reaches twice the
    threshold (after a reset it stays below theta); print how many images agree."""
    trace = net.trace(pixels)
    agree = _agreement(theirs, net, pixels)
    single = torch.ones(len(pixels), dtype=torch.bool)
    ours = []
    for lt, layer in zip(trace.layers, net.layers, strict=True):
        if not isinstance(layer, SumPoolLayer):
            single &= (lt.membranes < layer.theta[0]).flatten(1).all(1)
            ours.append(lt.spikes)
    matched = [int(((a.to(torch.int64).reshape(b.shape) == b).flatten(1).all(1) | ~single).sum())
               for a, b in zip(theirs, ours, strict=True)]
    print(f"\n{what}: spikes equal on {agree} of {len(pixels)} images per layer "
          f"({int(single.sum())} images never reach 2 theta, where sinabs' MultiSpike fires "
          "twice)")
    assert matched == [len(pixels)] * len(ours)
    assert int(single.sum()) > 0


def test_sinabs_conv_pool_network_from_spikeforge(sinabs, digits):
    g = torch.Generator().manual_seed(6)
    conv = ConvLayer(weight=torch.randint(-2, 3, (4, 1, 3, 3), generator=g), bias=[0] * 4,
                     theta=[12] * 8, input_shape=(1, 8, 8), padding=1, name="conv")
    pool = SumPoolLayer(kernel=2, input_shape=(4, 8, 8), name="pool")  # sinabs drops padding
    dense = DenseLayer(weight=torch.randint(-2, 3, (10, pool.fan_out), generator=g),
                       bias=[0] * 10, theta=[20] * 8, name="fc")
    net = Network([conv, pool, dense], 8)
    frames, pixels, _ = _frames(digits, net.timesteps)
    with _quiet():
        model = sinabs.nir.from_nir(to_nir(net), batch_size=len(pixels))
        _, state = model(frames.reshape(-1, 1, 8, 8).float())
    theirs = [state.cache[key].reshape(len(pixels), net.timesteps, -1)
              for key in ("conv_lif", "fc_lif")]
    _check_sinabs(net, pixels, theirs, "spikeforge conv + sum pooling -> NIR -> sinabs")


# --- the command line --------------------------------------------------------------------------

def test_cli_from_nir_exports_the_snntorch_modes(tmp_path):
    """snnTorch's zero reset and `>` compare go into the manifest (schema_version 2)."""
    from spikeforge.sw.export import load_manifest

    graph = _graph(_affine([[1, 2], [2, 1]]), nir.LIF(
        tau=np.full(2, np.inf), r=np.full(2, np.inf), v_leak=np.zeros(2), v_threshold=np.ones(2)))
    write_graph(graph, tmp_path / "snn.nir")
    assert main(["from-nir", str(tmp_path / "snn.nir"), "--out", str(tmp_path / "out")]) == 0
    manifest = load_manifest(tmp_path / "out")
    assert manifest.schema_version == 2
    assert (manifest.layers[0].reset, manifest.layers[0].compare) == ("zero", ">")


def test_cli_from_nir_and_to_nir_round_trip(tmp_path, capsys):
    from spikeforge.sw.export import load_manifest

    net = _pool_net()
    write_graph(to_nir(net), tmp_path / "net.nir")
    assert main(["from-nir", str(tmp_path / "net.nir"), "--out", str(tmp_path / "export"),
                 "--lanes", "4"]) == 0
    out = capsys.readouterr().out
    assert "T=6, encoder=rate (pixel_bits=4), exact" in out and "lanes=4" in out
    manifest = load_manifest(tmp_path / "export")
    assert_same_network(manifest.network, net)
    assert manifest.metadata["source"] == "nir"
    assert main(["to-nir", str(tmp_path / "export"), "--out", str(tmp_path / "back.nir")]) == 0
    back, _ = from_nir(tmp_path / "back.nir")
    assert_same_network(back, net)


def test_cli_from_nir_prints_the_defaults(tmp_path, capsys):
    write_graph(_graph(_affine([[1.0, 2.0]]), _if(1, 2)), tmp_path / "g.nir")
    assert main(["from-nir", str(tmp_path / "g.nir"), "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "default: T = 4" in out and "default: encoder = rate" in out


@pytest.mark.parametrize("argv, message", [
    (["from-nir", "missing.nir", "--out", "x"], "spikeforge from-nir: error: missing.nir: no "
                                               "such file\n"),
    (["to-nir", "missing", "--out", "x.nir"], "spikeforge to-nir: error: "),
])
def test_cli_bad_input_is_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_cli_unsupported_node_is_one_line(tmp_path, capsys):
    write_graph(_graph(_affine(np.eye(2)), nir.Delay(delay=np.ones(2))), tmp_path / "d.nir")
    assert main(["from-nir", str(tmp_path / "d.nir"), "--out", str(tmp_path / "e")]) == 1
    assert capsys.readouterr().err == (
        "spikeforge from-nir: error: node 'n1' is a Delay node, which spikeforge does not "
        "import (it imports Input, Output, Affine, Linear, Scale, Conv2d, SumPool2d, AvgPool2d, "
        "Flatten, IF, LIF, Threshold, LI, I)\n")

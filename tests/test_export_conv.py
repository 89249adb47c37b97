"""Schema version 2: convolution and sum-pooling layers in the export folder.

Round trips (export -> load -> the same network -> the same bytes), the conv kernel ROM against a
naive packer written here from docs/rom-layout.md, version 1 still read and refusing conv
fields, and the strict validation of the new fields.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import torch

from spikeforge.hw.rom import (
    RomLayoutError,
    conv_rom_shape,
    pack_conv_weights,
    unpack_conv_weights,
)
from spikeforge.sw.export import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    ExportError,
    export_network,
    format_coe,
    format_mif,
    load_manifest,
    load_network,
    schema_version_for,
)
from spikeforge.sw.golden import (
    ConvLayer,
    DenseLayer,
    Encoder,
    EncoderKind,
    Network,
    SumPoolLayer,
    signed_range,
)
from tests.test_export import edit_manifest, folder_bytes, set_field

# --- references ------------------------------------------------------------------------------


def naive_conv_words(weight: list, lanes: int, w_bits: int) -> list[int]:
    """docs/rom-layout.md, literally: word ((c*kh + ky)*kw + kx)*G + g holds output channels
    g*P .. g*P+P-1 of tap (c, ky, kx), lane P-1 ... lane 0 as a bit string."""
    c_out, c_in, kh, kw = len(weight), len(weight[0]), len(weight[0][0]), len(weight[0][0][0])
    groups = (c_out + lanes - 1) // lanes
    words = []
    for c in range(c_in):
        for ky in range(kh):
            for kx in range(kw):
                for g in range(groups):
                    fields = []
                    for lane in range(lanes):
                        o = g * lanes + lane
                        value = weight[o][c][ky][kx] if o < c_out else 0
                        fields.append(format(value % (2 ** w_bits), f"0{w_bits}b"))
                    words.append(int("".join(reversed(fields)), 2))
    return words


def assert_same_network(a: Network, b: Network) -> None:
    assert (a.timesteps, a.encoder) == (b.timesteps, b.encoder)
    assert a.kinds == b.kinds
    for x, y in zip(a.layers, b.layers, strict=True):
        for name in x.__dataclass_fields__:
            u, v = getattr(x, name), getattr(y, name)
            assert torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v, name


# --- networks --------------------------------------------------------------------------------


def conv(rng: random.Random, shape, out_channels, kernel, timesteps, *, stride=1, padding=0,
         fires=True, name="conv"):
    w_bits, v_bits = rng.randint(2, 8), rng.randint(8, 16)
    w_low, w_high = signed_range(w_bits)
    weight = [[[[rng.choice([w_low, w_high, 0, -1, rng.randint(w_low, w_high)])
                 for _ in range(kernel[1])] for _ in range(kernel[0])]
               for _ in range(shape[0])] for _ in range(out_channels)]
    return ConvLayer(weight=weight, bias=[rng.randint(-8, 8) for _ in range(out_channels)],
                     theta=[rng.randint(1, 30) for _ in range(timesteps)],
                     leak_shift=rng.randint(0, 2), fire_mode=rng.choice(["threshold", "radix"]),
                     v_init=rng.randint(-4, 4), fires=fires, w_bits=w_bits, v_bits=v_bits,
                     input_shape=shape, stride=stride, padding=padding, name=name)


def dense(rng: random.Random, fan_in, fan_out, timesteps, *, fires=False, name="fc"):
    w_bits = rng.randint(2, 8)
    w_low, w_high = signed_range(w_bits)
    return DenseLayer(weight=[[rng.randint(w_low, w_high) for _ in range(fan_in)]
                              for _ in range(fan_out)],
                      bias=[rng.randint(-8, 8) for _ in range(fan_out)],
                      theta=[rng.randint(1, 30) for _ in range(timesteps)], fires=fires,
                      w_bits=w_bits, v_bits=16, name=name)


def conv_network(seed=0, timesteps=3, encoder=None) -> Network:
    """conv (1x6x6 -> 3x6x6, 3x3, pad 1) -> sumpool 2 -> conv (3x3x3 -> 5x2x2, 2x2, stride 1)
    -> dense 20 -> 4 (non-firing): 5 output channels on 2 or 4 lanes leave padding lanes."""
    rng = random.Random(seed)
    c1 = conv(rng, (1, 6, 6), 3, (3, 3), timesteps, padding=1, name="conv1")
    pool = SumPoolLayer(kernel=2, input_shape=(3, 6, 6), name="pool1")
    c2 = conv(rng, (3, 3, 3), 5, (2, 2), timesteps, name="l\u00e9 \"c2\"\n")
    return Network([c1, pool, c2, dense(rng, 20, 4, timesteps)], timesteps,
                   encoder or Encoder("rate", 4))


def random_conv_network(rng: random.Random) -> Network:
    timesteps = rng.randint(1, 4)
    c_in, h, w = rng.randint(1, 3), rng.randint(3, 8), rng.randint(3, 8)
    layers, shape = [], (c_in, h, w)
    for k in range(rng.randint(1, 3)):
        if k and rng.random() < 0.4 and min(shape[1:]) >= 2:
            kernel = (rng.randint(1, min(3, shape[1])), rng.randint(1, min(3, shape[2])))
            stride = (rng.randint(1, 2), rng.randint(1, 2))
            padding = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2))
            layer = SumPoolLayer(kernel=kernel, stride=stride, padding=padding,
                                 input_shape=shape, name=f"pool{k}")
        else:
            padding = (rng.randint(0, 1), rng.randint(0, 1))
            kernel = (rng.randint(1, min(3, shape[1] + 2 * padding[0])),
                      rng.randint(1, min(3, shape[2] + 2 * padding[1])))
            layer = conv(rng, shape, rng.randint(1, 6), kernel, timesteps, padding=padding,
                         stride=(rng.randint(1, 2), rng.randint(1, 2)), name=f"conv{k}")
        layers.append(layer)
        shape = layer.output_shape
    fan_in = shape[0] * shape[1] * shape[2]
    layers.append(dense(rng, fan_in, rng.randint(1, 5), timesteps, fires=rng.random() < 0.5))
    encoder = Encoder(rng.choice(list(EncoderKind)), rng.randint(1, 8))
    return Network(layers, timesteps, encoder)


# --- packing ---------------------------------------------------------------------------------


def test_documented_conv_example_words():
    """docs/rom-layout.md by hand: C_out = 3, C_in = 1, 1x2 kernel, P = 2, W = 3."""
    weight = torch.tensor([[[[1, -4]]], [[[-1, 3]]], [[[2, 0]]]])
    # tap (0,0,0): g=0 -> channels (1, -1) = 0b111_001; g=1 -> (2, pad) = 0b000_010
    # tap (0,0,1): g=0 -> channels (-4, 3) = 0b011_100; g=1 -> (0, pad) = 0
    assert pack_conv_weights(weight, 2, 3) == [0b111001, 0b000010, 0b011100, 0]
    assert conv_rom_shape(1, 3, (1, 2), 2, 3) == (6, 4)
    assert unpack_conv_weights([0b111001, 0b000010, 0b011100, 0], 1, 3, (1, 2), 2, 3).tolist() \
        == weight.tolist()


@pytest.mark.parametrize("seed", range(20))
def test_conv_packing_matches_the_naive_reference(seed):
    rng = random.Random(seed)
    c_out, c_in, kh, kw = rng.randint(1, 9), rng.randint(1, 4), rng.randint(1, 5), \
        rng.randint(1, 5)
    w_bits, lanes = rng.randint(2, 8), rng.choice([1, 2, 3, 4, 8, 16])
    low, high = signed_range(w_bits)
    weight = torch.randint(low, high + 1, (c_out, c_in, kh, kw),
                           generator=torch.Generator().manual_seed(seed))
    words = pack_conv_weights(weight, lanes, w_bits)
    assert words == naive_conv_words(weight.tolist(), lanes, w_bits)
    assert len(words) == conv_rom_shape(c_in, c_out, (kh, kw), lanes, w_bits)[1]
    assert torch.equal(unpack_conv_weights(words, c_in, c_out, (kh, kw), lanes, w_bits), weight)


def test_conv_packing_refuses_bad_words():
    with pytest.raises(RomLayoutError, match=r"weight\[1, 0, 0, 1\] = 4 does not fit w_bits = 3"):
        pack_conv_weights(torch.tensor([[[[0, 0]]], [[[0, 4]]]]), 2, 3)
    with pytest.raises(RomLayoutError, match=r"\[out_channels, in_channels, kh, kw\]"):
        pack_conv_weights(torch.zeros(2, 3, dtype=torch.int64), 2, 3)
    with pytest.raises(RomLayoutError, match=r"word 1 lane 1 holds 0x1 but that lane has no "
                                             r"output channel \(channel 3 >= out_channels 3\)"):
        unpack_conv_weights([0, 0b001000, 0, 0], 1, 3, (1, 2), 2, 3)
    with pytest.raises(RomLayoutError, match=r"holds 3 words, the layout needs in_channels \* "
                                             r"kh \* kw \* ceil\(out_channels / lanes\) = 4"):
        unpack_conv_weights([0, 0, 0], 1, 3, (1, 2), 2, 3)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(25))
def test_random_conv_networks_round_trip_byte_for_byte(tmp_path, seed):
    rng = random.Random(seed)
    network = random_conv_network(rng)
    lanes = rng.choice([1, 2, 3, 5, 8])
    scales = [rng.choice([None, 0.5, 1e-3]) for _ in network.layers]
    metadata = {"seed": seed, "kinds": list(network.kinds)}
    first = export_network(network, tmp_path / "a", lanes=lanes, metadata=metadata,
                           scales=scales)
    manifest = load_manifest(first)
    assert_same_network(manifest.network, network)
    assert manifest.schema_version == schema_version_for(network) == SCHEMA_VERSION == 2
    assert manifest.scales == scales and manifest.metadata == metadata
    second = export_network(manifest.network, tmp_path / "b", lanes=lanes,
                            metadata=manifest.metadata, scales=manifest.scales)
    assert folder_bytes(first) == folder_bytes(second)
    for k, layer in enumerate(network.layers):
        entry = manifest.layers[k]
        assert entry.kind == layer.kind
        if isinstance(layer, SumPoolLayer):
            assert entry.words == () and entry.rom_files == {}
            assert not (first / f"layer{k}.hex").exists()
        elif isinstance(layer, ConvLayer):
            assert entry.words == tuple(naive_conv_words(layer.weight.tolist(), lanes,
                                                         layer.w_bits))
    x = torch.randint(0, network.encoder.pixel_max + 1, (6, network.n_inputs),
                      generator=torch.Generator().manual_seed(seed))
    assert torch.equal(manifest.network.run(x).output, network.run(x).output)


def test_conv_manifest_fields(tmp_path):
    network = conv_network()
    folder = export_network(network, tmp_path / "e", lanes=4)
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    assert raw["schema_version"] == 2
    c1, pool, c2, fc = raw["layers"]
    assert c1["kind"] == "conv" and c2["kind"] == "conv" and fc["kind"] == "dense"
    assert {k: c1[k] for k in ("input_shape", "output_shape", "in_channels", "out_channels",
                               "kernel", "stride", "padding", "fan_in", "fan_out")} == {
        "input_shape": [1, 6, 6], "output_shape": [3, 6, 6], "in_channels": 1,
        "out_channels": 3, "kernel": [3, 3], "stride": [1, 1], "padding": [1, 1],
        "fan_in": 36, "fan_out": 108}
    assert len(c1["bias"]) == 3
    assert c1["rom"]["width"] == 4 * c1["w_bits"] and c1["rom"]["depth"] == 1 * 3 * 3 * 1
    assert c2["rom"]["depth"] == 3 * 2 * 2 * 2  # 5 channels on 4 lanes: 2 groups
    assert pool == {"kind": "sumpool", "name": "pool1", "fan_in": 108, "fan_out": 27,
                    "input_shape": [3, 6, 6], "output_shape": [3, 3, 3], "kernel": [2, 2],
                    "stride": [2, 2], "padding": [0, 0], "scale": None}
    assert sorted(raw["files"]) == sorted(f"layer{k}.{x}" for k in (0, 2, 3)
                                          for x in ("hex", "coe", "mif"))
    assert sorted(fc) == sorted(["kind", "name", "fan_in", "fan_out", "w_bits", "v_bits",
                                 "bias", "theta", "leak_shift", "fire_mode", "v_init", "fires",
                                 "scale", "rom", "compare", "reset"])
    assert (fc["compare"], fc["reset"]) == (">=", "subtract")


@pytest.mark.parametrize(("compare", "reset"), [(">", "subtract"), (">=", "zero"), (">", "zero")])
def test_compare_and_reset_modes_round_trip_in_version_2(tmp_path, compare, reset):
    rng = random.Random(7)
    layers = [dense(rng, 5, 4, 2, fires=True), dense(rng, 4, 3, 2)]
    network = Network([layers[0].with_(compare=compare, reset=reset), layers[1]], 2)
    assert schema_version_for(network) == 2  # a v1 reader would silently run >= and subtract
    folder = export_network(network, tmp_path / "e", lanes=2)
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    assert (raw["layers"][0]["compare"], raw["layers"][0]["reset"]) == (compare, reset)
    manifest = load_manifest(folder)
    assert (manifest.layers[0].compare, manifest.layers[0].reset) == (compare, reset)
    assert manifest.network.layers[0].compare.value == compare
    assert manifest.network.layers[0].reset.value == reset
    x = torch.randint(0, 16, (20, 5))
    assert torch.equal(manifest.network.trace(x).layers[0].spikes,
                       network.trace(x).layers[0].spikes)
    raw["layers"][0]["reset"] = "hard"
    (folder / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(ExportError, match=r"reset must be 'subtract' or 'zero', not 'hard'"):
        load_manifest(folder)


def test_dense_only_networks_stay_version_1_and_v2_dense_is_read(tmp_path):
    rng = random.Random(3)
    network = Network([dense(rng, 5, 4, 2, fires=True), dense(rng, 4, 3, 2)], 2)
    assert schema_version_for(network) == 1
    folder = export_network(network, tmp_path / "e", lanes=2)
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    assert raw["schema_version"] == 1 and all("kind" not in layer for layer in raw["layers"])
    raw["schema_version"] = 2
    for layer in raw["layers"]:
        layer["kind"] = "dense"
    (folder / MANIFEST_NAME).write_text(json.dumps(raw))
    manifest = load_manifest(folder)
    assert manifest.schema_version == 2
    assert_same_network(manifest.network, network)


# --- refusals --------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path) -> Path:
    return export_network(conv_network(), tmp_path / "e", lanes=4)


def refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(ExportError) as info:
        load_network(folder)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    return message


def reshape_pool(raw):
    """Pooling 1x18x6 -> 1x9x3: consistent in itself and the same sizes (108 -> 27) as the
    3x6x6 -> 3x3x3 it replaces, but its shape does not chain with conv1's output."""
    raw["layers"][1].update(input_shape=[1, 18, 6], output_shape=[1, 9, 3])


@pytest.mark.parametrize("change, fragments", [
    (set_field("schema_version", 1),
     ["layers[0].in_channels is a schema_version 2 field", "dense layers only"]),
    (lambda raw: raw["layers"][0].pop("kind"), ["layers[0].kind is missing"]),
    (set_field("layers", 0, "kind", "lstm"),
     ["layers[0].kind must be 'dense', 'conv' or 'sumpool', not 'lstm'"]),
    (set_field("layers", 0, "kind", 3), ["layers[0].kind must be 'dense'"]),
    (set_field("layers", 1, "rom", {}),
     ["layers[1].rom is not a field of a schema_version 2 sumpool layer"]),
    (set_field("layers", 3, "kernel", [1, 1]),
     ["layers[3].kernel is not a field of a schema_version 2 dense layer"]),
    (set_field("layers", 0, "surprise", 1),
     ["layers[0].surprise is not a field of a schema_version 2 conv layer"]),
    (set_field("layers", 0, "kernel", 3), ["layers[0].kernel must be a list of 2 integers"]),
    (set_field("layers", 0, "kernel", [3]), ["layers[0].kernel must be a list of 2 integers"]),
    (set_field("layers", 0, "kernel", [3, 3.0]), ["layers[0].kernel[1] must be an integer"]),
    (set_field("layers", 0, "stride", [0, 1]), ["layers[0].stride[0] must be >= 1, got 0"]),
    (set_field("layers", 0, "padding", [-1, 1]), ["layers[0].padding[0] must be >= 0"]),
    (set_field("layers", 0, "input_shape", [1, 6]),
     ["layers[0].input_shape must be a list of 3 integers"]),
    (set_field("layers", 0, "input_shape", [1, True, 6]),
     ["layers[0].input_shape[1] must be an integer, not True"]),
    (lambda raw: raw["layers"][1].pop("padding"), ["layers[1].padding is missing"]),
    (set_field("layers", 0, "in_channels", 2),
     ["layers[0].in_channels = 2 but input_shape [1, 6, 6] has 1 channels"]),
    (set_field("layers", 0, "out_channels", 4),
     ["layers[0].out_channels = 4 but output_shape [3, 6, 6] has 3 channels"]),
    (set_field("layers", 0, "bias", [0, 0]),
     ["layers[0].bias has 2 entries but out_channels = 3"]),
    (set_field("layers", 0, "rom", "depth", 10),
     ["layers[0].rom.depth = 10 but in_channels * kh * kw * ceil(out_channels / lanes) = 9"]),
    (set_field("layers", 0, "kernel", [2, 2]),
     ["layers[0].rom.depth = 9 but in_channels * kh * kw * ceil(out_channels / lanes) = 4"]),
    (set_field("layers", 0, "output_shape", [3, 5, 5]),
     ["layers[0].output_shape = [3, 5, 5] but input_shape, kernel, stride and padding give "
      "[3, 6, 6]"]),
    (set_field("layers", 0, "fan_in", 35),
     ["layers[0].fan_in = 35 but input_shape [1, 6, 6] holds 36 values"]),
    (set_field("layers", 1, "fan_out", 26),
     ["layers[1].fan_out = 26 but output_shape [3, 3, 3] holds 27 values"]),
    (set_field("layers", 1, "padding", [2, 0]),
     ["layers[1].padding (2, 0) must be at most half the kernel 2x2"]),
    (set_field("layers", 1, "input_shape", [3, 4, 9]),  # inconsistent in itself
     ["layers[1].output_shape = [3, 3, 3] but input_shape, kernel, stride and padding give "
      "[3, 2, 4]"]),
    (reshape_pool, ["layers[1].input_shape (1, 18, 6) has 1 channels but layers[0] outputs 3 "
                    "channels (shape (3, 6, 6))"]),
    (set_field("layers", 0, "padding", [0, 0]),
     ["layers[0].output_shape = [3, 6, 6] but input_shape, kernel, stride and padding give "
      "[3, 4, 4]"]),
    (set_field("layers", 0, "theta", [1]), ["layers[0].theta has 1 entries but timesteps = 3"]),
    (set_field("layers", 0, "fires", False), ["layers[0].fires is False but only the last"]),
    (set_field("layers", 2, "v_init", 1 << 20), ["layers[2].v_init", "does not fit v_bits"]),
])
def test_inconsistent_conv_manifest(good, change, fragments):
    edit_manifest(good, change)
    message = refused(good, *fragments)
    assert MANIFEST_NAME in message


def test_v1_manifest_with_kind_is_refused_naming_the_field(tmp_path):
    rng = random.Random(1)
    folder = export_network(Network([dense(rng, 3, 2, 1)], 1), tmp_path / "e", lanes=2)
    edit_manifest(folder, set_field("layers", 0, "kind", "conv"))
    refused(folder, "layers[0].kind is a schema_version 2 field",
            "a schema_version 1 manifest holds dense layers only")
    edit_manifest(folder, lambda raw: raw["layers"][0].pop("kind"))
    edit_manifest(folder, set_field("layers", 0, "kernel", [3, 3]))
    refused(folder, "layers[0].kernel is a schema_version 2 field")


def replace_rom(folder: Path, k: int, words: list[int], width: int) -> None:
    """Rewrite layer k's three ROM files with ``words`` and re-hash them."""
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    layer = raw["layers"][k]
    title = (f"layer{k} ({json.dumps(layer['name'])}), lanes={raw['lanes']}, "
             f"w_bits={layer['w_bits']}")
    digits = (width + 3) // 4
    texts = {"hex": "".join(f"{w:0{digits}x}\n" for w in words),
             "coe": format_coe(words, width, title), "mif": format_mif(words, width, title)}
    for kind, text in texts.items():
        (folder / f"layer{k}.{kind}").write_text(text)
        raw["files"][f"layer{k}.{kind}"] = hashlib.sha256(text.encode()).hexdigest()
    (folder / MANIFEST_NAME).write_text(json.dumps(raw))


def test_conv_rom_padding_lane_is_refused(good):
    manifest = load_manifest(good)
    entry = manifest.layers[2]  # 5 output channels on 4 lanes: group 1 has lanes 1..3 padding
    words = list(entry.words)
    words[1] |= 1 << (3 * entry.w_bits)
    replace_rom(good, 2, words, entry.rom_width)
    refused(good, "layer2.hex", "word 1 lane 3", "no output channel (channel 7 >= "
            "out_channels 5)")


def test_conv_rom_changed_without_rehash_is_refused(good):
    path = good / "layer0.hex"
    lines = path.read_text().splitlines()
    lines[0] = "0" * len(lines[0]) if set(lines[0]) != {"0"} else "1".rjust(len(lines[0]), "0")
    path.write_text("\n".join(lines) + "\n")
    refused(good, "layer0.hex", "SHA-256", "the file was changed")


def test_conv_rom_words_re_derived(good):
    """A consistent, re-hashed ROM with other words loads as other weights: words are read."""
    manifest = load_manifest(good)
    entry = manifest.layers[0]
    words = [0] * len(entry.words)
    replace_rom(good, 0, words, entry.rom_width)
    assert int(load_network(good).layers[0].weight.abs().sum()) == 0

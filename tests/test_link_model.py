"""The Python link model (sim/link_model.py) against the gateware bridge, and ``spikeforge run``
end to end over a pseudo-terminal with pyserial."""

import os
import random
import struct

import numpy as np
import pytest

from spikeforge.sim.link_model import LinkModel, MockBackend, PtyDevice
from spikeforge.sim.mock_accelerator import MockRegisters, mock_classify
from spikeforge.sw.interface import SPEC, encode_stream_image, pack_w_info
from spikeforge.sw.link import (
    MAX_WORDS,
    Command,
    LinkClient,
    LinkError,
    SerialTransport,
    encode_block,
    encode_request,
    register_address,
)
from tests.link_harness import BridgeBench


def random_image(rng, n_inputs, pixel_bits):
    """Mostly zeros, as real images are, or any pixels."""
    top = (1 << pixel_bits) - 1
    if rng.random() < 0.5:
        return [rng.randrange(top + 1) for _ in range(n_inputs)]
    return [rng.choice([0, 0, 0, rng.randrange(top + 1)]) for _ in range(n_inputs)]


def random_stream(rng, n_inputs, pixel_bits):
    """A STREAM frame: an image, a flush, or tokens that decode to the wrong pixel count."""
    kind = rng.choice(["image", "image", "image", "flush", "wrong"])
    if kind == "flush":
        return encode_request(Command.STREAM)
    tokens = bytearray(encode_stream_image(random_image(rng, n_inputs, pixel_bits), pixel_bits))
    if kind == "wrong":
        tokens.pop(rng.randrange(len(tokens))) if len(tokens) > 1 else tokens.append(0x80)
    return encode_request(Command.STREAM, bytes(tokens))


def random_steps(rng, n_inputs, count, pixel_bits=8):
    a = register_address
    theta, leak, v_init = a("THETA", 0, 0), a("LEAK_SHIFT", 0), a("V_INIT", 0)
    goods = [
        lambda: encode_request(Command.INFO),
        # CYCLES is left out: the mock's count includes the bridge's back-pressure.
        lambda: encode_request(Command.READ, struct.pack(">HB", *rng.choice(
            [(a("ID"), 1), (a("STATUS"), 1), (a("N_LAYERS"), 1), (theta, 4),
             (a("THETA", 0, 1), 1), (leak, 2), (0x7777, 1)]))),
        lambda: encode_request(Command.WRITE, struct.pack(
            ">HI", rng.choice([theta, leak, v_init, a("STATUS"), 0x9999]),
            rng.randrange(1 << 32))),
        lambda: encode_request(Command.RUN, bytes(rng.randrange(256) for _ in range(n_inputs))),
        lambda: encode_request(Command.RUN, bytes(random_image(rng, n_inputs, pixel_bits))),
        lambda: random_stream(rng, n_inputs, min(pixel_bits, 7)),
        lambda: random_stream(rng, n_inputs, min(pixel_bits, 7)),
        lambda: encode_request(Command.WRITE_BLOCK, encode_block(
            rng.choice([theta, v_init, 0x9999]),
            [rng.randrange(1 << 32) for _ in range(rng.choice([1, 2, 7, MAX_WORDS]))])),
    ]
    steps = []
    for _ in range(count):
        frame = bytearray(rng.choice(goods)())
        fault = rng.choice(["none", "none", "flip", "truncate", "garbage", "extra"])
        if fault == "flip":
            bit = rng.randrange(len(frame) * 8)
            frame[bit // 8] ^= 1 << (bit % 8)
        elif fault == "truncate":
            frame = frame[: rng.randrange(1, len(frame))]
        elif fault == "garbage":
            frame = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
        elif fault == "extra":
            frame += bytes([rng.randrange(256)])
        steps.append(bytes(frame))
    return steps


@pytest.mark.parametrize("seed, pixel_bits", [(1, 8), (2, 8), (3, 4), (4, 4), (5, 7)])
def test_model_matches_gateware(seed, pixel_bits):
    """Random good and corrupted frames of every command (STREAM answered only with pixels of
    up to 7 bits) give the same replies and bus writes on the gateware and the model."""
    rng = random.Random(seed)
    bench = BridgeBench(n_inputs=8, n_outputs=3, pixel_bits=pixel_bits)
    steps = random_steps(rng, 8, 40, pixel_bits)
    hardware = bench.run(steps)
    model = LinkModel(MockBackend(n_inputs=8, n_outputs=3, pixel_bits=pixel_bits))
    for step in steps:
        model.feed(step)
        model.quiet()
    assert hardware == b"".join(model.replies)
    assert bench.writes == model.backend.writes


def test_client_over_pty_serial():
    backend = MockBackend(n_inputs=16, n_outputs=4)
    with PtyDevice(LinkModel(backend)) as device:
        transport = SerialTransport.open(device.port)
        try:
            # a generous timeout: it fires only where the test needs it to (the garbage below),
            # so a loaded machine cannot make a correct exchange time out
            client = LinkClient(transport, timeout=5.0)
            client.identify()
            image = list(range(16))
            assert client.classify(image) == mock_classify(image, 4, MockRegisters())
            client.write_threshold(0, 0, 99)
            assert client.read_threshold(0, 0) == 99
            block = list(range(1, 100))
            client.write_block(register_address("THETA", 1, 0), block)
            assert backend.writes[-99:] == [(register_address("THETA", 1, 0), w) for w in block]
            transport.write(b"\x01\x02\x03")  # garbage: the client's next call recovers
            assert client.read_leak_shift(1) == 0
        finally:
            transport.close()


def test_classify_stream_matches_the_model():
    """classify_stream yields every image's results in order (the device answers each
    exchange with the image before), flushes a STREAM image left by an earlier host first, and
    refuses a device whose pixels are too wide for STREAM tokens."""
    rng = random.Random(int(os.environ.get("SPIKEFORGE_SEED", "0")))
    images = [random_image(rng, 16, 4) for _ in range(7)]
    backend = MockBackend(n_inputs=16, n_outputs=4, pixel_bits=4)
    model = LinkModel(backend)
    model.feed(encode_request(Command.STREAM, encode_stream_image([15] * 16, 4)))  # left over
    client = LinkClient(ModelTransport(model), timeout=0.01)
    assert list(client.classify_stream(images)) == [mock_classify(image, 4, MockRegisters())
                                                    for image in images]
    assert backend.pending is None  # flushed: the device takes writes again
    client.write_threshold(0, 0, 3)
    stream = client.classify_stream(images)
    next(stream)  # a caller that stops early: closing the generator flushes the device
    assert backend.pending is not None
    stream.close()
    assert backend.pending is None
    bad = iter([images[0], images[1], [99] * 16])  # the third is refused before it is sent
    results = client.classify_stream(bad)
    assert [next(results), next(results)] == [mock_classify(image, 4, MockRegisters())
                                              for image in images[:2]]
    with pytest.raises(ValueError, match=r"Pixel 99 is outside 0\.\.15"):
        next(results)
    assert backend.pending is None
    wide = LinkClient(ModelTransport(LinkModel(MockBackend(n_inputs=16, pixel_bits=8))))
    with pytest.raises(ValueError, match="STREAM needs pixels of at most 7 bits"):
        list(wide.classify_stream(images))


@pytest.mark.parametrize("lost", [2, 4])
def test_classify_stream_never_resends_after_a_lost_reply(lost):
    """A lost STREAM reply may have taken the image and its results are gone: the client
    stops with the count of images done instead of resending (which would misalign results)."""
    images = [[k % 16] * 16 for k in range(5)]
    model = LinkModel(MockBackend(n_inputs=16, n_outputs=4, pixel_bits=4))
    client = LinkClient(ModelTransport(model, drop={lost}), timeout=0.01)
    client.info()  # reply 0; the first flush is reply 1, image k's exchange reply k + 2
    done = []
    with pytest.raises(LinkError) as caught:
        for result in client.classify_stream(images):
            done.append(result)
    assert caught.value.images_done == len(done) == max(lost - 3, 0)
    assert done == [mock_classify(image, 4, MockRegisters()) for image in images[:len(done)]]


@pytest.mark.parametrize("pixel_bits", [8, 4])  # one RUN per image; streamed (STREAM)
def test_run_command_over_pty(tmp_path, capsys, monkeypatch, pixel_bits):
    import argparse

    from spikeforge.cli import run as run_command

    if pixel_bits <= 7:  # STREAM's pixels fit a token: `spikeforge run` must not use RUN
        def no_run(*args):
            raise AssertionError("classify (RUN) called for pixels STREAM takes")
        monkeypatch.setattr(LinkClient, "classify", no_run)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 1 << pixel_bits, size=(5, 16))
    labels = np.array([mock_classify(list(x), 4, MockRegisters())[1] for x in images])
    labels[0] = (labels[0] + 1) % 4  # one wrong label: accuracy 4/5
    np.savez(tmp_path / "set.npz", images=images, labels=labels)
    backend = MockBackend(n_inputs=16, n_outputs=4, pixel_bits=pixel_bits)
    with PtyDevice(LinkModel(backend)) as device:
        parser = argparse.ArgumentParser()
        run_command.add_arguments(parser)
        args = parser.parse_args([str(tmp_path / "set.npz"), "--port", device.port,
                                  "--counters", "--timeout", "5"])
        assert run_command.run(args) == 0
    out, err = capsys.readouterr()
    assert "accuracy 4/5 = 80.00%" in err
    assert out.count("class ") == 5 and "cycles" in out


def test_run_command_reports_bad_port(tmp_path, capsys):
    import argparse

    from spikeforge.cli import run as run_command

    np.save(tmp_path / "one.npy", np.zeros(16, dtype=int))
    parser = argparse.ArgumentParser()
    run_command.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "one.npy"), "--port", str(tmp_path / "nothing")])
    assert run_command.run(args) == 1
    assert "spikeforge run: error: cannot open" in capsys.readouterr().err


class SpramBackend(MockBackend):
    """The mock backend plus layer 0's weights in SPRAM, with the W_ADDR/W_DATA/W_INFO rules of
    docs/microarchitecture.md ("Weights in SPRAM"), written out independently of the gateware."""

    def __init__(self, words: int, chunks_per_word: int, **kwargs):
        super().__init__(**kwargs)
        self.words, self.chunks_per_word = words, chunks_per_word
        self.memory: dict[int, int] = {}
        self.w_addr, self.held, self.overflow = 0, [], False

    def read(self, address: int) -> int:
        if address == register_address("W_INFO", 0):
            return pack_w_info(in_ram=True, chunks_per_word=self.chunks_per_word,
                               words=self.words)
        if address == register_address("LAYER_STATUS", 0):
            return SPEC.layer_reg("STATUS").pack(load_overflow=int(self.overflow))
        return super().read(address)

    def write(self, address: int, value: int) -> None:
        if address == register_address("W_ADDR", 0):
            self.writes.append((address, value))
            self.w_addr, self.held = min(value, self.words), []
        elif address == register_address("W_DATA", 0):
            self.writes.append((address, value))
            self.held.append(value)
            if len(self.held) == self.chunks_per_word:
                word = sum(chunk << (32 * i) for i, chunk in enumerate(self.held))
                if self.w_addr < self.words:
                    self.memory[self.w_addr] = word
                    self.w_addr += 1
                else:
                    self.overflow = True
                self.held = []
        else:
            super().write(address, value)


class ModelTransport:
    """A transport straight into a LinkModel; ``drop`` names replies (by index) that get lost."""

    def __init__(self, model: LinkModel, drop=()):
        self.model, self.drop, self.pending, self.sent = model, set(drop), b"", 0

    def write(self, data: bytes) -> None:
        before = len(self.model.replies)
        self.model.feed(data)
        self.model.quiet()
        for reply in self.model.replies[before:]:
            if self.sent not in self.drop:
                self.pending += reply
            self.sent += 1

    def read(self, n: int, timeout: float) -> bytes:
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def reset_input(self) -> None:
        self.pending = b""


@pytest.mark.parametrize("drop", [(), (3,), (1, 6)], ids=["clean", "lost-block-reply",
                                                          "lost-replies"])
def test_load_network_weights_fills_spram_exactly_once(drop):
    """load_network_weights over the link model: the SPRAM layer ends with exactly the packed
    ROM words, also when replies are lost (each frame restarts at its own W_ADDR)."""
    import torch

    from spikeforge.hw.rom import pack_weights
    from spikeforge.sw.golden import DenseLayer, Encoder, Network

    g = torch.Generator().manual_seed(int(os.environ.get("SPIKEFORGE_SEED", "0")))
    lanes, w_bits = 5, 8                       # 40-bit words: two chunks each
    layer = DenseLayer(weight=torch.randint(-128, 128, (7, 40), generator=g),
                       bias=torch.zeros(7, dtype=torch.int64), theta=[3] * 4, w_bits=w_bits,
                       v_bits=16)
    out = DenseLayer(weight=torch.zeros(4, 7, dtype=torch.int64),
                     bias=torch.zeros(4, dtype=torch.int64), theta=[3] * 4, w_bits=4,
                     v_bits=16, fires=False)
    network = Network([layer, out], 4, Encoder("rate", 4))
    expected = pack_weights(layer.weight, lanes, w_bits)          # 40 inputs x 2 groups
    backend = SpramBackend(len(expected), 2, n_inputs=40, n_outputs=4)
    client = LinkClient(ModelTransport(LinkModel(backend), drop), timeout=0.01, retries=2)
    assert client.load_network_weights(network, lanes) == [0]
    assert [backend.memory[i] for i in range(len(expected))] == expected
    assert not backend.overflow
    with pytest.raises(ValueError, match="takes 80 weight words of 2 chunks"):
        client.load_weights(0, [0] * 10)


class DescriptorBackend(MockBackend):
    """The mock backend answering N_LAYERS, LANES and the descriptor registers of ``network``
    built at ``lanes`` lanes: a board of that network, as far as LinkClient.check_network reads."""

    def __init__(self, network, lanes: int, **kwargs):
        from spikeforge.hw.core_layout import core_layout

        super().__init__(**kwargs)
        self.words = {register_address("LANES"): lanes,
                      register_address("N_LAYERS"): len(core_layout(network, lanes).maps)}
        for k, descriptor in enumerate(core_layout(network, lanes).descriptors()):
            for name, word in descriptor.items():
                self.words[register_address(name, k)] = word

    def read(self, address: int) -> int:
        return self.words[address] if address in self.words else super().read(address)


def test_check_network_names_the_layer_and_register_that_differ():
    """The host refuses an export whose network is not the bitstream's, in one line naming the
    layer, the register and both sides' fields; the board's own network passes."""
    import torch

    from spikeforge.sw.golden import ConvLayer, DenseLayer, Encoder, Network

    def network(channels: int, padding: int = 1) -> Network:
        conv = ConvLayer(weight=torch.ones(channels, 1, 3, 3, dtype=torch.int64),
                         bias=[0] * channels, theta=[2, 2], w_bits=4, v_bits=10,
                         input_shape=(1, 6, 6), padding=padding)
        fc = DenseLayer(weight=torch.ones(3, conv.fan_out, dtype=torch.int64), bias=[0] * 3,
                        theta=[2, 2], fires=False, w_bits=4, v_bits=10)
        return Network([conv, fc], 2, Encoder("rate", 4))

    def client_of(board: Network) -> LinkClient:
        backend = DescriptorBackend(board, 2, n_inputs=36, n_outputs=3)
        return LinkClient(ModelTransport(LinkModel(backend)), timeout=0.01)

    client_of(network(4)).check_network(network(4))
    with pytest.raises(LinkError) as error:
        client_of(network(4)).check_network(network(5))
    assert str(error.value).startswith("layer 0 SHAPE_OUT differs: the board has channels=4 "
                                       "height=6 width=6, the network needs channels=5 ")
    assert "\n" not in str(error.value)
    with pytest.raises(LinkError, match=r"layer 0 SHAPE_OUT differs: .* height=4 width=4"):
        client_of(network(4)).check_network(network(4, padding=0))
    with pytest.raises(LinkError, match="the board runs 2 neuron layers, the network has 1"):
        client_of(network(4)).check_network(Network([DenseLayer(
            weight=torch.ones(3, 36, dtype=torch.int64), bias=[0] * 3, theta=[2, 2],
            fires=False, w_bits=4, v_bits=10)], 2, Encoder("rate", 4)))

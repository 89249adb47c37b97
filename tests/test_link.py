"""Host-side protocol: CRC, framing, register addresses, and the client's retry rules."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikeforge.sw.interface import (
    SPEC,
    decode_stream_image,
    encode_stream_image,
    info_words,
    payload_rule,
)
from spikeforge.sw.link import (
    ID_MAGIC,
    MAX_WORDS,
    SYNC_REQUEST,
    Command,
    DeviceError,
    ErrorCode,
    LinkClient,
    LinkError,
    LinkTimeout,
    crc16,
    decode_reply,
    encode_block,
    encode_reply,
    encode_request,
    register_address,
)


def test_crc_check_value():
    # CRC-16/CCITT-FALSE check value from the CRC catalogue (reveng): "123456789" -> 0x29B1.
    assert crc16(b"123456789") == 0x29B1
    assert crc16(b"") == 0xFFFF


def test_crc_residue_is_zero():
    # Appending the CRC big-endian makes the CRC of the whole zero: what the gateware checks.
    body = bytes(range(37))
    assert crc16(body + struct.pack(">H", crc16(body))) == 0


def test_encode_request_layout():
    frame = encode_request(Command.READ, b"\x00\x02\x01")
    assert frame[:4] == bytes([SYNC_REQUEST, Command.READ, 0x00, 0x03])
    assert frame[4:7] == b"\x00\x02\x01"
    assert struct.unpack(">H", frame[7:])[0] == crc16(frame[1:7])


def test_encode_request_refuses_long_payload():
    with pytest.raises(ValueError, match="exceeds the 16-bit length field"):
        encode_request(Command.RUN, bytes(0x10000))


def test_encode_block_layout():
    frame = encode_request(Command.WRITE_BLOCK, encode_block(0x0110, [0x01020304, 0xA0B0C0D0]))
    assert frame[:4] == bytes([SYNC_REQUEST, Command.WRITE_BLOCK, 0x00, 0x0A])  # 2 + 4 * 2
    assert frame[4:14] == bytes.fromhex("0110" "01020304" "a0b0c0d0")
    assert crc16(frame[1:]) == 0 and len(frame) == 16


@given(address=st.integers(0, 0xFFFF),
       words=st.lists(st.integers(0, 0xFFFF_FFFF), min_size=1, max_size=MAX_WORDS))
def test_block_frame_roundtrip(address, words):
    # Parsed back by hand, not by the encoder: sync, cmd, len = 2 + 4 * count, addr, words, CRC.
    frame = encode_request(Command.WRITE_BLOCK, encode_block(address, words))
    sync, cmd, length = struct.unpack(">BBH", frame[:4])
    assert (sync, cmd, length) == (SYNC_REQUEST, Command.WRITE_BLOCK, 2 + 4 * len(words))
    assert len(frame) == 4 + length + 2 and crc16(frame[1:]) == 0
    assert int.from_bytes(frame[4:6], "big") == address
    assert [int.from_bytes(frame[6 + 4 * i:10 + 4 * i], "big")
            for i in range(len(words))] == words


def test_stream_tokens_by_hand():
    # 0x80 | (n - 1) is a run of n zeros; a run is cut at 128; a lone zero is one token.
    assert encode_stream_image([0, 0, 5, 0, 7, 7], 4) == bytes([0x81, 5, 0x80, 7, 7])
    assert encode_stream_image([0] * 300, 4) == bytes([0xFF, 0xFF, 0x80 | 43])
    assert encode_stream_image([127], 7) == bytes([127])
    assert decode_stream_image(bytes([0x82, 1, 0xFF])) == [0, 0, 0, 1] + [0] * 128


@given(pixel_bits=st.integers(1, 7), data=st.data())
def test_stream_image_roundtrip(pixel_bits, data):
    pixels = data.draw(st.lists(st.integers(0, (1 << pixel_bits) - 1) | st.just(0),
                                min_size=1, max_size=600))
    tokens = encode_stream_image(pixels, pixel_bits)
    assert decode_stream_image(tokens) == pixels
    # never longer than the image, so the device's length rule (0..n_inputs) takes it
    assert payload_rule(Command.STREAM, n_inputs=len(pixels)).accepts(len(tokens))


@pytest.mark.parametrize("pixels, pixel_bits, message", [
    ([1, 16], 4, "Pixel 1 is 16, outside 0..15"),
    ([-1], 4, "Pixel 0 is -1"),
    ([1], 8, "STREAM takes pixels of at most 7 bits, not 8"),
])
def test_encode_stream_image_refuses(pixels, pixel_bits, message):
    with pytest.raises(ValueError, match=message):
        encode_stream_image(pixels, pixel_bits)


def test_encode_block_refuses_bad_arguments():
    with pytest.raises(ValueError, match="Register address must be 16-bit, not 65536"):
        encode_block(0x10000, [1])
    with pytest.raises(ValueError, match=r"A block holds 1\.\.64 words, not 0"):
        encode_block(0, [])
    with pytest.raises(ValueError, match=r"A block holds 1\.\.64 words, not 65"):
        encode_block(0, [0] * 65)
    with pytest.raises(ValueError, match="Word 1 of the block, 4294967296, does not fit 32 bits"):
        encode_block(0, [0, 1 << 32])
    with pytest.raises(ValueError, match="Word 0 of the block, -1, does not fit 32 bits"):
        encode_block(0, [-1])
    with pytest.raises(TypeError):
        encode_block(0, [1.5])


def test_decode_reply_roundtrip_and_errors():
    frame = encode_reply(Command.READ, ErrorCode.OK, struct.pack(">I", ID_MAGIC))
    reply = decode_reply(frame)
    assert (reply.command, reply.code, reply.words()) == (Command.READ, 0, [ID_MAGIC])
    with pytest.raises(LinkError, match="does not match"):
        decode_reply(frame[:-1] + bytes([frame[-1] ^ 1]))
    with pytest.raises(LinkError, match="not SYNC"):
        decode_reply(b"\x00" + frame[1:])
    with pytest.raises(LinkError, match="LEN says 4"):
        decode_reply(frame[:-3] + frame[-2:])


def test_register_addresses():
    # the client's addresses are the spec's: block base + stride * layer + offset (+ t)
    assert register_address("ID") == SPEC.global_reg("ID").offset
    assert register_address("CYCLES") == SPEC.global_reg("CYCLES").offset
    layer1 = SPEC.layer_base + SPEC.layer_stride
    assert register_address("LEAK_SHIFT", 1) == layer1 + SPEC.layer_offset("LEAK_SHIFT")
    assert register_address("SPIKES", 0) == SPEC.layer_base + SPEC.layer_offset("SPIKES")
    assert register_address("THETA", 2, 5) == layer1 + SPEC.layer_stride + \
        SPEC.layer_reg("THETA").offset + 5
    with pytest.raises(ValueError, match="Unknown register 'FOO'"):
        register_address("FOO")


class ScriptedTransport:
    """Replays canned replies, one per write; records what was written."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.written = []
        self.pending = b""

    def write(self, data):
        self.written.append(bytes(data))
        self.pending = self.replies.pop(0) if self.replies else b""

    def read(self, n, timeout):
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def reset_input(self):
        self.pending = b""


def test_client_retries_link_errors_then_succeeds():
    good = encode_reply(Command.READ, 0, struct.pack(">I", 7))
    corrupt = good[:-1] + bytes([good[-1] ^ 0x80])
    crc_error = encode_reply(Command.READ, ErrorCode.CRC)
    transport = ScriptedTransport([corrupt, crc_error, b"\x00\x11" + good])
    client = LinkClient(transport, retries=2)
    assert client.read_register(0x0002) == 7
    assert len(transport.written) == 3 and len(set(transport.written)) == 1


def test_client_gives_up_after_retries():
    client = LinkClient(ScriptedTransport([b"", b"", b""]), retries=2)
    with pytest.raises(LinkTimeout, match="no reply"):
        client.read_register(0)


def test_client_raises_device_errors_at_once():
    transport = ScriptedTransport([encode_reply(Command.WRITE, ErrorCode.BUSY)])
    client = LinkClient(transport, retries=3)
    with pytest.raises(DeviceError, match="error BUSY"):
        client.write_register(register_address("THETA", 0, 0), 5)
    assert len(transport.written) == 1


def test_classify_checks_pixels_before_sending():
    words = struct.pack(">II", *info_words(pixel_bits=8, n_inputs=4, n_outputs=3))
    info = encode_reply(Command.INFO, 0, words)
    transport = ScriptedTransport([info])
    client = LinkClient(transport)
    with pytest.raises(ValueError, match="Image has 3 pixels, the network takes 4"):
        client.classify([1, 2, 3])
    with pytest.raises(ValueError, match=r"Pixel 256 is outside 0\.\.255"):
        client.classify([1, 2, 3, 256])


def block_frames(written):
    """(address, words) of each WRITE_BLOCK frame the client wrote, parsed by hand."""
    out = []
    for frame in written:
        assert frame[:2] == bytes([SYNC_REQUEST, Command.WRITE_BLOCK]) and crc16(frame[1:]) == 0
        (length,) = struct.unpack(">H", frame[2:4])
        address, *words = struct.unpack(f">H{(length - 2) // 4}I", frame[4:4 + length])
        out.append((address, words))
    return out


OK_BLOCK = encode_reply(Command.WRITE_BLOCK, ErrorCode.OK)


def test_write_block_splits_into_frames_of_max_words():
    words = list(range(1000, 1000 + 2 * MAX_WORDS + 2))
    transport = ScriptedTransport([OK_BLOCK] * 3)
    LinkClient(transport).write_block(0x0123, words)
    frames = block_frames(transport.written)
    assert [len(w) for _, w in frames] == [MAX_WORDS, MAX_WORDS, 2]
    assert {a for a, _ in frames} == {0x0123}
    assert [x for _, w in frames for x in w] == words


def test_write_block_of_no_words_sends_nothing():
    transport = ScriptedTransport([])
    LinkClient(transport).write_block(0x0123, [])
    assert transport.written == []


@pytest.mark.parametrize("address, words, message", [
    (0x10000, [1], "Register address must be 16-bit, not 65536"),
    (-1, [], "Register address must be 16-bit, not -1"),
    (5, [0] * 100 + [1 << 32], "Word 100 of the block, 4294967296, does not fit 32 bits"),
    (5, [7, -3], "Word 1 of the block, -3, does not fit 32 bits"),
])
def test_write_block_checks_everything_before_sending(address, words, message):
    transport = ScriptedTransport([OK_BLOCK] * 3)
    with pytest.raises(ValueError, match=message):
        LinkClient(transport).write_block(address, words)
    assert transport.written == []


def test_write_block_resends_a_frame_the_device_did_not_take():
    crc_error = encode_reply(Command.WRITE_BLOCK, ErrorCode.CRC)
    timeout = encode_reply(Command.WRITE_BLOCK, ErrorCode.TIMEOUT)
    transport = ScriptedTransport([crc_error, timeout, OK_BLOCK])
    LinkClient(transport, retries=2).write_block(7, [1, 2, 3])
    assert len(transport.written) == 3 and len(set(transport.written)) == 1


@pytest.mark.parametrize("lost", ["no reply", "corrupt reply", "reply to another command"])
def test_write_block_never_resends_after_a_lost_reply(lost):
    # The device may have written the words: resending could store them twice.
    bad = {"no reply": b"", "corrupt reply": OK_BLOCK[:-1] + bytes([OK_BLOCK[-1] ^ 1]),
           "reply to another command": encode_reply(Command.WRITE, ErrorCode.OK)}[lost]
    transport = ScriptedTransport([OK_BLOCK, bad, OK_BLOCK])
    with pytest.raises(LinkError) as error:
        LinkClient(transport, retries=2).write_block(7, list(range(MAX_WORDS + 5)))
    assert len(transport.written) == 2
    assert error.value.words_written == MAX_WORDS


def test_write_block_busy_raises_at_once():
    transport = ScriptedTransport([encode_reply(Command.WRITE_BLOCK, ErrorCode.BUSY)])
    with pytest.raises(DeviceError, match="error BUSY") as error:
        LinkClient(transport, retries=3).write_block(7, [1])
    assert len(transport.written) == 1 and error.value.words_written == 0

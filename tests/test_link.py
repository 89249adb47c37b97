"""Host-side protocol: CRC, framing, register addresses, and the client's retry rules."""

import struct

import pytest

from sw.link import (
    Command,
    DeviceError,
    ErrorCode,
    LinkClient,
    LinkError,
    LinkTimeout,
    crc16,
    decode_reply,
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
    assert frame[:4] == bytes([0xA5, 0x02, 0x00, 0x03])
    assert frame[4:7] == b"\x00\x02\x01"
    assert struct.unpack(">H", frame[7:])[0] == crc16(frame[1:7])


def test_encode_request_refuses_long_payload():
    with pytest.raises(ValueError, match="exceeds the 16-bit length field"):
        encode_request(Command.RUN, bytes(0x10000))


def test_decode_reply_roundtrip_and_errors():
    frame = encode_reply(Command.READ, ErrorCode.OK, struct.pack(">I", 0x5F0B6E01))
    reply = decode_reply(frame)
    assert (reply.command, reply.code, reply.words()) == (Command.READ, 0, [0x5F0B6E01])
    with pytest.raises(LinkError, match="does not match"):
        decode_reply(frame[:-1] + bytes([frame[-1] ^ 1]))
    with pytest.raises(LinkError, match="not SYNC"):
        decode_reply(b"\x00" + frame[1:])
    with pytest.raises(LinkError, match="LEN says 4"):
        decode_reply(frame[:-3] + frame[-2:])


def test_register_addresses():
    assert register_address("ID") == 0
    assert register_address("CYCLES") == 2
    assert register_address("LEAK_SHIFT", 1) == 0x200
    assert register_address("SPIKES", 0) == 0x103
    assert register_address("THETA", 2, 5) == 0x315
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
        client.write_register(0x110, 5)
    assert len(transport.written) == 1


def test_classify_checks_pixels_before_sending():
    words = struct.pack(">II", (1 << 24) | (8 << 16) | 4, (3 << 16) | 64)
    info = encode_reply(Command.INFO, 0, words)
    transport = ScriptedTransport([info])
    client = LinkClient(transport)
    with pytest.raises(ValueError, match="Image has 3 pixels, the network takes 4"):
        client.classify([1, 2, 3])
    with pytest.raises(ValueError, match=r"Pixel 256 is outside 0\.\.255"):
        client.classify([1, 2, 3, 256])

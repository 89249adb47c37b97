"""Gateware side of the host link: frame decoder, command executor and reply encoder.

The protocol is specified in docs/link-protocol.md; its constants, commands, error codes and
payload length rules live in the spec, :mod:`spikeforge.sw.interface`, which the host client
reads too, so that host and gateware can never disagree. :class:`LinkBridge` sits between a
byte stream (the UART) and the accelerator's host interface (docs/host-interface.md): its ``bus``,
``pixels``, ``results`` and ``busy`` members connect one to one to ``NetworkAccelerator``'s.

A request is only acted on once its CRC has been checked: the image of a RUN or STREAM frame
and the words of a WRITE_BLOCK frame are held in the bridge's own buffer until then, so a bad
frame never reaches the accelerator.

A STREAM exchange overlaps the host's line with the accelerator: its reply carries the results
of the image the previous STREAM left computing (if the accelerator is busy with one), and its
own image, decoded from zero-run tokens, goes in just before the reply's CRC, so the accelerator
computes while the host reads the reply and sends the next image.
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from spikeforge.sw.interface import (
    ADDRESS_BITS,
    COMMANDS,
    CRC_INIT,
    CRC_POLY,
    MAX_WORDS,
    STREAM_MAX_RUN,
    STREAM_RUN_BIT,
    SYNC_REPLY,
    SYNC_REQUEST,
    WORD_BITS,
    Command,
    ErrorCode,
    PayloadRule,
    info_words,
    payload_rule,
    pixel_bytes,
    stream_supported,
)

__all__ = ["ResultLayout", "RegisterBusSignature", "LinkBridge", "crc16_update",
           "buffer_slots"]

#: One entry of the accelerator's ``results`` stream (docs/host-interface.md).
ResultLayout = data.StructLayout({"value": signed(32), "last": unsigned(1)})


class RegisterBusSignature(wiring.Signature):
    """The register bus as the host (the bridge) sees it; the accelerator has its flip."""

    def __init__(self):
        super().__init__({
            "addr": Out(ADDRESS_BITS),
            "w_data": Out(WORD_BITS),
            "w_en": Out(1),
            "r_en": Out(1),
            "r_data": In(WORD_BITS),
        })


def _payload_rules(n_inputs: int, pixel_bits: int) -> dict[Command, PayloadRule]:
    return {command: payload_rule(command, n_inputs=n_inputs, pixel_bits=pixel_bits)
            for command in Command}


def buffer_slots(n_inputs: int, pixel_bits: int) -> int:
    """Slots of the bridge's payload buffer (one pixel each): the longest payload of any
    command (a RUN image or a full WRITE_BLOCK) fits."""
    longest = max(rule.max_length for rule in _payload_rules(n_inputs, pixel_bits).values())
    return longest // pixel_bytes(pixel_bits)


def _length_matches(rule: PayloadRule, length):
    """Gateware for :meth:`PayloadRule.accepts`: ``length`` is a 16-bit signal."""
    if rule.fixed:
        return length == rule.min_length
    shift = rule.unit.bit_length() - 1
    if rule.unit != 1 << shift or rule.head >= rule.unit:
        raise ValueError(f"No gateware for payload rule {rule}: the unit must be a power of "
                         f"two larger than the head")
    count = length[shift:]
    return (length[:shift] == rule.head) & (count >= rule.min_count) & (count <= rule.max_count)


def crc16_update(m, crc, byte):
    """CRC-16/CCITT-FALSE of one more byte (MSB first): combinational logic added to ``m``,
    returned as a 16-bit signal. Each bit step is its own signal, so the expression stays
    linear in size."""
    for i in range(8):
        step = Signal(16, name=f"crc_step{i}")
        feedback = crc[15] ^ byte[7 - i]
        m.d.comb += step.eq(Cat(C(0, 1), crc[:15]) ^ Mux(feedback, C(CRC_POLY, 16), C(0, 16)))
        crc = step
    return crc


class LinkBridge(wiring.Component):
    """Frame decoder/encoder between a byte stream and the accelerator's host interface.

    Parameters
    ----------
    n_inputs, n_outputs, pixel_bits : int
        The accelerator's image size, result count (scores, without the prediction) and pixel
        width. A RUN payload carries ``n_inputs`` pixels of one byte (``pixel_bits <= 8``) or
        two bytes (big-endian); STREAM is answered only with ``pixel_bits <= 7``
        (:func:`spikeforge.sw.interface.stream_supported`), otherwise it is an unknown command.
    timeout_cycles : int
        Inter-byte timeout: a frame whose next byte does not arrive within this many cycles is
        abandoned and answered with ``TIMEOUT``; after any other error the bridge waits for
        the line to stay quiet this long before it sends the error reply.

    Members
    -------
    rx : In(stream.Signature(8)), tx : Out(stream.Signature(8))
        Bytes from and to the host.
    bus : Out(RegisterBusSignature())
        A WRITE_BLOCK's words are written after its CRC has been checked, in order, all to its
        one address, at most one per cycle.
    pixels : Out(stream.Signature(16))
    results : In(stream.Signature(ResultLayout))
    busy : In(1)
    error : Out(1)
        Pulses once per error reply (for an LED or a counter).
    """

    def __init__(self, *, n_inputs: int, n_outputs: int, pixel_bits: int, timeout_cycles: int):
        for name, value, low, high in (
            ("n_inputs", n_inputs, 1, 0xFFFF),
            ("n_outputs", n_outputs, 1, 0xFFFF),
            ("pixel_bits", pixel_bits, 1, 16),
            ("timeout_cycles", timeout_cycles, 2, 1 << 32),
        ):
            if not isinstance(value, int) or not low <= value <= high:
                self._MustUse__silence = True  # refused: not an unused elaboratable
                raise ValueError(f"{name} must be an integer in {low}..{high}, not {value!r}")
        image_bytes = n_inputs * pixel_bytes(pixel_bits)
        if image_bytes > 0xFFFF or (n_outputs + 1) * 4 > 0xFFFF:
            self._MustUse__silence = True
        if image_bytes > 0xFFFF:
            raise ValueError(f"An image of {n_inputs} pixels does not fit a 16-bit frame length")
        if (n_outputs + 1) * 4 > 0xFFFF:
            raise ValueError(f"{n_outputs} results do not fit a 16-bit frame length")
        self._n_inputs = n_inputs
        self._n_outputs = n_outputs
        self._pixel_bits = pixel_bits
        self._pixel_bytes = pixel_bytes(pixel_bits)
        self._timeout_cycles = timeout_cycles
        self._stream = stream_supported(pixel_bits)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(RegisterBusSignature()),
            "pixels": Out(stream.Signature(16)),
            "results": In(stream.Signature(ResultLayout)),
            "busy": In(1),
            "error": Out(1),
        })

    n_inputs = property(lambda self: self._n_inputs)
    n_outputs = property(lambda self: self._n_outputs)
    pixel_bits = property(lambda self: self._pixel_bits)
    pixel_bytes = property(lambda self: self._pixel_bytes)
    timeout_cycles = property(lambda self: self._timeout_cycles)
    stream = property(lambda self: self._stream)

    def elaborate(self, platform):
        m = Module()

        n_in, n_out = self._n_inputs, self._n_outputs
        rules = _payload_rules(n_in, self._pixel_bits)
        commands = [c for c in Command if c is not Command.STREAM or self._stream]
        pixel_max = (1 << self._pixel_bits) - 1
        # A WRITE_BLOCK's address and first word are read back into ``args`` as a WRITE's are.
        block, write = COMMANDS[Command.WRITE_BLOCK], COMMANDS[Command.WRITE]
        if [n for _, n in block.fields] + [block.unit[1]] != [n for _, n in write.fields]:
            raise ValueError("The bridge needs WRITE_BLOCK's address and word laid out as "
                             "WRITE's address and data")

        # Payloads wait here for their CRC, a byte a slot (two with two-byte pixels: a slot is
        # a pixel). RUN and WRITE_BLOCK read theirs back, so both must fit.
        unit_bits = 8 * self._pixel_bytes
        depth = buffer_slots(n_in, self._pixel_bits)
        m.submodules.buffer = buffer = Memory(shape=unit_bits, depth=depth, init=[])
        wp = buffer.write_port()
        rp = buffer.read_port(transparent_for=())

        got = Signal()  # a byte is taken from rx this cycle
        byte = self.rx.payload
        m.d.comb += got.eq(self.rx.valid & self.rx.ready)

        idle = Signal(range(self._timeout_cycles + 1))
        timed_out = Signal()
        m.d.comb += timed_out.eq(idle == self._timeout_cycles)
        with m.If(got):
            m.d.sync += idle.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += idle.eq(idle + 1)

        crc = Signal(16)
        rx_crc = crc16_update(m, crc, byte)
        cmd = Signal(8)
        # The command decoded once, as it arrives: keeps the compares off the FSM's paths.
        is_cmd = {command: Signal(name=f"is_{command.name.lower()}") for command in commands}
        is_stream = is_cmd.get(Command.STREAM, C(0, 1))
        count_ok = Signal()
        length = Signal(16)
        remaining = Signal(16)  # payload bytes still to come after this one
        odd = Signal()  # the next payload byte is the low byte of a two-byte pixel
        code = Signal(8)
        # the last bytes of the payload: the fixed fields of READ and WRITE
        args = Signal(8 * max(spec.head_bytes for spec in COMMANDS.values()))
        high = Signal(8)  # first byte of a two-byte pixel
        slot = Signal(range(depth + 1))  # of the buffer: written on receive, read to execute
        pixel = Signal(self._pixel_bits)
        bad_pixel = Signal()
        sent = Signal(range(n_in))  # pixels sent to the accelerator
        # A STREAM payload's tokens, decoded as they arrive: the pixels they stand for (counting
        # stops once past ``n_in``: ``over``) and whether a literal is above ``pixel_max``.
        decoded = Signal(range(n_in + STREAM_MAX_RUN + 1))
        over = Signal()
        bad_token = Signal()
        zeros = Signal(range(STREAM_MAX_RUN))  # zero pixels still to send for this token
        feed = Signal()  # the STREAM being answered has an image to feed
        # decided in CRC_HI, once the payload is in, so that CHECK's chain of refusals starts
        # from flip-flops (on the UP5K it was the board top's critical path)
        stream_image = Signal()     # a STREAM with a payload (not a flush)
        miscounted = Signal()       # its tokens do not decode to exactly ``n_in`` pixels

        rsp_len = Signal(16)
        words = Signal(16)  # words of the reply payload still to send
        word = Signal(32)
        nbyte = Signal(2)
        waddr = Signal(16)

        tx_byte = Signal(8)
        tx_valid = Signal()
        m.d.comb += [self.tx.payload.eq(tx_byte), self.tx.valid.eq(tx_valid)]
        with m.If(self.tx.ready):
            m.d.sync += tx_valid.eq(0)
        tx_free = Signal()
        m.d.comb += tx_free.eq(~tx_valid | self.tx.ready)

        tx_next = Signal(8)  # the byte the present state sends (driven after the FSM)
        tx_crc = crc16_update(m, crc, tx_next)
        tx_sources = []  # (state, byte): what ``tx_next`` is in each state that sends

        def send(state, value, *, in_crc=True):
            tx_sources.append((state, value))
            m.d.sync += [tx_byte.eq(tx_next), tx_valid.eq(1)]
            if in_crc:
                m.d.sync += crc.eq(tx_crc)

        read, write = COMMANDS[Command.READ], COMMANDS[Command.WRITE]
        read_addr, read_count = args[read.field_bits("addr")], args[read.field_bits("count")]
        write_addr, write_data = args[write.field_bits("addr")], args[write.field_bits("data")]
        info = info_words(pixel_bits=self._pixel_bits, n_inputs=n_in, n_outputs=n_out)

        def fail(error_code, next_state):
            m.d.sync += code.eq(error_code)
            m.next = next_state

        def length_ok(command, length):
            return _length_matches(rules[command], length)

        m.d.sync += self.error.eq(0)
        # The register bus is driven from flip-flops: no path from this FSM reaches into the
        # accelerator's address decoder in the same cycle.
        bus_addr = Signal(16)
        bus_w_data = Signal(32)
        bus_w_en = Signal()
        bus_r_en = Signal()
        m.d.comb += [self.bus.addr.eq(bus_addr), self.bus.w_data.eq(bus_w_data),
                     self.bus.w_en.eq(bus_w_en), self.bus.r_en.eq(bus_r_en)]
        m.d.sync += [bus_w_en.eq(0), bus_r_en.eq(0)]
        # Bytes are always taken: outside the receive states they are dropped (the protocol is
        # request/response, so a host never sends while a reply is pending).
        m.d.comb += self.rx.ready.eq(1)

        if self._pixel_bytes == 1:  # a payload byte, and whether it completes a buffer slot
            slot_value, slot_complete = byte, C(1, 1)
        else:
            slot_value, slot_complete = Cat(byte, high), odd

        with m.FSM() as fsm:
            # ---- receive -----------------------------------------------------------------
            with m.State("IDLE"):
                with m.If(got):
                    m.d.sync += [crc.eq(CRC_INIT), cmd.eq(0), bad_pixel.eq(0), slot.eq(0),
                                 odd.eq(0), decoded.eq(0), over.eq(0), bad_token.eq(0),
                                 feed.eq(0)]
                    with m.If(byte == SYNC_REQUEST):
                        m.next = "CMD"
                    with m.Else():
                        fail(ErrorCode.SYNC, "DISCARD")

            def receive(next_state, action=None):
                with m.If(got):
                    m.d.sync += crc.eq(rx_crc)
                    if action is not None:
                        action()
                    if next_state is not None:
                        m.next = next_state
                with m.Elif(timed_out):
                    fail(ErrorCode.TIMEOUT, "REPLY_ERROR")

            with m.State("CMD"):
                def take_cmd():
                    m.d.sync += cmd.eq(byte)
                    m.d.sync += [flag.eq(byte == command) for command, flag in is_cmd.items()]
                receive("LEN_HI", take_cmd)
            with m.State("LEN_HI"):
                def take_len_hi():
                    m.d.sync += length[8:].eq(byte)
                receive("LEN_LO", take_len_hi)
            with m.State("LEN_LO"):
                def check_header():
                    full = Cat(byte, length[8:])
                    m.d.sync += [length[:8].eq(byte), remaining.eq(full - 1)]
                    with m.If(~Cat(*is_cmd.values()).any()):
                        fail(ErrorCode.COMMAND, "DISCARD")
                    for command, flag in is_cmd.items():
                        with m.Elif(flag & ~length_ok(command, full)):
                            fail(ErrorCode.LENGTH, "DISCARD")
                    with m.Elif(full == 0):
                        m.next = "CRC_HI"
                    with m.Else():
                        m.next = "PAYLOAD"
                receive(None, check_header)
            with m.State("PAYLOAD"):
                def take_payload():
                    m.d.sync += [args.eq(Cat(byte, args[:40])), remaining.eq(remaining - 1),
                                 odd.eq(~odd)]
                    # Every payload goes to the buffer (the longest is RUN's or WRITE_BLOCK's).
                    if self._pixel_bytes != 1:
                        m.d.sync += high.eq(byte)
                    with m.If(slot_complete):  # the write port is driven after the FSM
                        m.d.sync += slot.eq(slot + 1)
                        with m.If(slot_value > pixel_max):  # only counts for a RUN
                            m.d.sync += bad_pixel.eq(1)
                    if self._stream:  # only counts for a STREAM
                        is_zero_run = byte[STREAM_RUN_BIT]
                        total = decoded + Mux(is_zero_run, byte[:STREAM_RUN_BIT] + 1, 1)
                        with m.If(~over):
                            m.d.sync += [decoded.eq(total), over.eq(total > n_in)]
                        with m.If(~is_zero_run & (byte > pixel_max)):
                            m.d.sync += bad_token.eq(1)
                    with m.If(remaining == 0):
                        m.next = "CRC_HI"
                receive(None, take_payload)
            with m.State("CRC_HI"):
                m.d.sync += [count_ok.eq((read_count != 0) & (read_count <= MAX_WORDS)),
                             stream_image.eq(is_stream & (length != 0)),
                             miscounted.eq(over | (decoded != n_in))]
                receive("CRC_LO")
            with m.State("CRC_LO"):
                receive("CHECK")
            with m.State("CHECK"):  # the CRC register now covers the whole frame
                with m.If(crc != 0):
                    fail(ErrorCode.CRC, "DISCARD")
                with m.Elif((is_cmd[Command.RUN] & bad_pixel) | (is_stream & bad_token)):
                    fail(ErrorCode.PIXEL, "REPLY_ERROR")
                with m.Elif(stream_image & miscounted):
                    fail(ErrorCode.ARGUMENT, "REPLY_ERROR")
                with m.Elif((is_cmd[Command.WRITE] | is_cmd[Command.WRITE_BLOCK]
                             | is_cmd[Command.RUN]) & self.busy):
                    fail(ErrorCode.BUSY, "REPLY_ERROR")
                with m.Elif(is_cmd[Command.READ] & ~count_ok):
                    fail(ErrorCode.ARGUMENT, "REPLY_ERROR")
                with m.Else():
                    m.d.sync += [code.eq(ErrorCode.OK), slot.eq(0), sent.eq(0),
                                 waddr.eq(read_addr), feed.eq(stream_image)]
                    with m.If(is_cmd[Command.INFO]):
                        m.d.sync += [rsp_len.eq(4 * len(info)), words.eq(len(info))]
                        m.next = "REPLY"
                    with m.Elif(is_cmd[Command.READ]):
                        m.d.sync += [rsp_len.eq(read_count << 2), words.eq(read_count)]
                        m.next = "REPLY"
                    with m.Elif(is_cmd[Command.WRITE]):
                        m.d.sync += [rsp_len.eq(0), words.eq(0), bus_addr.eq(write_addr),
                                     bus_w_data.eq(write_data), bus_w_en.eq(1)]
                        m.next = "REPLY"
                    with m.Elif(is_cmd[Command.RUN]):
                        m.d.sync += [rsp_len.eq((n_out + 1) * 4), words.eq(n_out + 1)]
                        m.next = "PIXEL_ADDR"
                    with m.Elif(is_cmd[Command.WRITE_BLOCK]):  # words: writes still to do
                        m.d.sync += [rsp_len.eq(0), words.eq(length[2:])]
                        m.next = "BLOCK_ADDR"
                    with m.Elif(is_stream):  # a busy accelerator holds the previous image
                        with m.If(self.busy):
                            m.d.sync += [rsp_len.eq((n_out + 1) * 4), words.eq(n_out + 1)]
                        with m.Else():
                            m.d.sync += [rsp_len.eq(0), words.eq(0)]
                        m.next = "REPLY"
            with m.State("DISCARD"):
                # Swallow the rest of a bad frame (and any garbage) until the line is quiet.
                with m.If(timed_out & ~got):
                    m.next = "REPLY_ERROR"

            # ---- execute -----------------------------------------------------------------
            # The pixel stream is driven from flip-flops, not straight from the buffer's read port.
            with m.State("PIXEL_ADDR"):  # the read port reads ``slot`` (driven after the FSM)
                m.next = "PIXEL_LATCH"
            # A STREAM slot is a token: a pixel, or a run of zeros sent one a cycle.
            with m.State("PIXEL_LATCH"):
                with m.If(is_stream & rp.data[STREAM_RUN_BIT]):
                    m.d.sync += [pixel.eq(0), zeros.eq(rp.data[:STREAM_RUN_BIT])]
                with m.Else():
                    m.d.sync += [pixel.eq(rp.data), zeros.eq(0)]
                m.next = "PIXEL_SEND"
            with m.State("PIXEL_SEND"):  # pixels.valid (driven after the FSM) is high
                with m.If(self.pixels.ready):
                    m.d.sync += sent.eq(sent + 1)
                    with m.If(zeros != 0):
                        m.d.sync += zeros.eq(zeros - 1)
                    with m.Elif(sent == n_in - 1):
                        with m.If(is_stream):  # the reply's payload is out: its CRC follows
                            m.next = "T_CRC_HI"
                        with m.Else():
                            m.next = "REPLY"
                    with m.Else():
                        m.d.sync += slot.eq(slot + 1)
                        m.next = "PIXEL_ADDR"

            # A WRITE_BLOCK payload is shifted back into ``args`` a slot at a time, as it
            # arrived: with the address and the first word in, ``args`` holds them as it holds
            # a WRITE's; each later word replaces the low 32 bits.
            addr_slots, word_slots = 2 // self._pixel_bytes, 4 // self._pixel_bytes
            with m.State("BLOCK_ADDR"):
                m.next = "BLOCK_LATCH"
            with m.State("BLOCK_LATCH"):
                m.d.sync += [args.eq(Cat(rp.data, args)[:48]), slot.eq(slot + 1)]
                with m.If((slot >= addr_slots) & (slot % word_slots == addr_slots - 1)):
                    m.next = "BLOCK_WRITE"  # that was the last slot of a word
                with m.Else():
                    m.next = "BLOCK_ADDR"
            with m.State("BLOCK_WRITE"):
                with m.If(slot == addr_slots + word_slots):  # the first word: the address too
                    m.d.sync += bus_addr.eq(write_addr)
                m.d.sync += [bus_w_data.eq(write_data), bus_w_en.eq(1), words.eq(words - 1)]
                with m.If(words == 1):
                    m.next = "REPLY"
                with m.Else():
                    m.next = "BLOCK_ADDR"

            # ---- reply -------------------------------------------------------------------
            with m.State("REPLY_ERROR"):
                m.d.sync += [rsp_len.eq(0), words.eq(0), self.error.eq(1)]
                m.next = "REPLY"
            with m.State("REPLY"):
                with m.If(tx_free):
                    send("REPLY", SYNC_REPLY, in_crc=False)
                    m.d.sync += crc.eq(CRC_INIT)
                    m.next = "H_CMD"
            for state, value, following in (
                ("H_CMD", cmd, "H_CODE"),
                ("H_CODE", code, "H_LEN_HI"),
                ("H_LEN_HI", rsp_len[8:], "H_LEN_LO"),
            ):
                with m.State(state):
                    with m.If(tx_free):
                        send(state, value)
                        m.next = following
            with m.State("H_LEN_LO"):
                with m.If(tx_free):
                    send("H_LEN_LO", rsp_len[:8])
                    with m.If(words != 0):
                        m.next = "FETCH"
                    with m.Elif(feed):
                        m.next = "PIXEL_ADDR"
                    with m.Else():
                        m.next = "T_CRC_HI"
            with m.State("FETCH"):
                with m.If(is_cmd[Command.INFO]):
                    info_word = C(info[-1], 32)  # ``words`` counts the words still to send
                    for i, value in enumerate(info[:-1]):
                        info_word = Mux(words == len(info) - i, value, info_word)
                    m.d.sync += word.eq(info_word)
                    m.next = "WORD"
                with m.Elif(is_cmd[Command.READ]):
                    m.d.sync += [bus_addr.eq(waddr), bus_r_en.eq(1), waddr.eq(waddr + 1)]
                    m.next = "READ_WAIT"
                with m.Elif(is_cmd[Command.RUN] | is_stream):  # results.ready (after the FSM)
                    with m.If(self.results.valid):
                        m.d.sync += word.eq(self.results.payload.value)
                        m.next = "WORD"
            with m.State("READ_WAIT"):  # r_en is at the accelerator
                m.next = "READ_DATA"
            with m.State("READ_DATA"):  # r_data is valid the cycle after r_en
                m.d.sync += word.eq(self.bus.r_data)
                m.next = "WORD"
            with m.State("WORD"):
                with m.If(tx_free):
                    send("WORD", word[24:])
                    m.d.sync += [word.eq(word << 8), nbyte.eq(nbyte + 1)]
                    with m.If(nbyte == 3):
                        m.d.sync += words.eq(words - 1)
                        with m.If(words != 1):
                            m.next = "FETCH"
                        with m.Elif(feed):  # the results are out: the accelerator takes an image
                            m.next = "PIXEL_ADDR"
                        with m.Else():
                            m.next = "T_CRC_HI"
            with m.State("T_CRC_HI"):
                with m.If(tx_free):
                    send("T_CRC_HI", crc[8:], in_crc=False)
                    m.next = "T_CRC_LO"
            with m.State("T_CRC_LO"):
                with m.If(tx_free):
                    send("T_CRC_LO", crc[:8], in_crc=False)
                    m.next = "IDLE"

        # Every combinational output is one continuous assignment, decoded from the state, not a
        # comb assignment inside the states: those become a Verilog `always @*` block that
        # Icarus does not run until one of its inputs changes, so right after reset, with the
        # state register still at its initial value, they would stay X (issue 14).
        m.d.comb += [
            wp.addr.eq(slot), wp.data.eq(slot_value),
            wp.en.eq(fsm.ongoing("PAYLOAD") & got & slot_complete),
            # The read port reads ``slot`` every cycle: its data register holds a buffer word
            # from the first clock edge on, and PIXEL_ADDR/BLOCK_ADDR set ``slot`` a cycle ahead.
            rp.addr.eq(slot), rp.en.eq(1),
            self.pixels.valid.eq(fsm.ongoing("PIXEL_SEND")), self.pixels.payload.eq(pixel),
            self.results.ready.eq(fsm.ongoing("FETCH") & (is_cmd[Command.RUN] | is_stream)),
        ]
        next_byte = C(0, 8)
        for state, value in tx_sources:
            next_byte = Mux(fsm.ongoing(state), value, next_byte)
        m.d.comb += tx_next.eq(next_byte)
        return m

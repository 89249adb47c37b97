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

The bridge is four parts, connected in :meth:`LinkBridge.elaborate`: its own frame receiver
(header, CRC, payload length rules and the refusals), :class:`PayloadReceiver` (payload bytes
into the buffer, checked as they arrive), :class:`LinkExecutor` (a checked request on the
register bus and the pixel stream; the reply's payload words) and :class:`ReplyEncoder` (the
reply frame on the byte stream).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, ReadPort, WritePort
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

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
           "buffer_slots", "CommandLayout", "RequestLayout", "ReplyPlanLayout", "PayloadReceiver",
           "LinkExecutor", "ReplyEncoder"]

#: One entry of the accelerator's ``results`` stream (docs/host-interface.md).
ResultLayout = data.StructLayout({"value": signed(32), "last": unsigned(1)})

#: One bit per command: the request's is set (decoded once, as its CMD byte arrives).
CommandLayout = data.StructLayout({command.name.lower(): 1 for command in Command})

#: A checked request, as the frame receiver hands it to :class:`LinkExecutor`.
RequestLayout = data.StructLayout({
    "command": CommandLayout,
    "length": 16,  # of the payload, in bytes
    # the last bytes of the payload: the fixed fields of READ and WRITE
    "args": 8 * max(spec.head_bytes for spec in COMMANDS.values()),
    "image": 1,  # a STREAM with a payload (not a flush)
})

#: How a reply goes, decided as it starts (:class:`ReplyEncoder`'s ``plan``).
ReplyPlanLayout = data.StructLayout({
    "words": 16,  # of payload
    "execute": 1,  # the executor goes first: a RUN's image, a WRITE_BLOCK's writes
    "image": 1,  # the executor feeds a STREAM's image between the payload and the CRC
})


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

        # Payloads wait here for their CRC, a byte a slot (two with two-byte pixels: a slot is
        # a pixel). RUN and WRITE_BLOCK read theirs back, so both must fit.
        sizes = {"n_inputs": self._n_inputs, "pixel_bits": self._pixel_bits}
        m.submodules.buffer = buffer = Memory(shape=8 * self._pixel_bytes,
                                              depth=buffer_slots(**sizes), init=[])
        m.submodules.payload = payload = PayloadReceiver(**sizes)
        m.submodules.executor = executor = LinkExecutor(**sizes, n_outputs=self._n_outputs)
        m.submodules.reply = reply = ReplyEncoder()

        wiring.connect(m, payload.buffer, buffer.write_port())
        wiring.connect(m, executor.buffer, buffer.read_port(transparent_for=()))
        wiring.connect(m, executor.bus, wiring.flipped(self.bus))
        wiring.connect(m, executor.pixels, wiring.flipped(self.pixels))
        wiring.connect(m, wiring.flipped(self.results), executor.results)
        wiring.connect(m, executor.words, reply.words)
        wiring.connect(m, reply.tx, wiring.flipped(self.tx))
        # The executor works while the reply waits for it: before the header (a RUN's image, a
        # WRITE_BLOCK's writes) or between the payload and the CRC (a STREAM's image).
        m.d.comb += [executor.busy.eq(self.busy), executor.go.eq(reply.waiting),
                     reply.resume.eq(executor.done)]

        request = self._receive_frames(m, payload, answered=reply.done)
        m.d.comb += [
            executor.request.eq(request.fields),
            executor.start.eq(request.accepted),
            reply.start.eq(request.accepted | request.refused),
            reply.plan.eq(Mux(request.accepted, executor.plan.as_value(), 0)),  # error: empty
            reply.cmd.eq(request.cmd), reply.code.eq(request.code),
        ]
        return m

    def _receive_frames(self, m, payload, *, answered):
        """The frame receiver: header, CRC, payload length rules and the refusals, with the
        payload itself handed to ``payload``. Built into the bridge's own module, not a
        component of its own: testbenches watch its state and timer as the bridge's
        (``bridge.fsm_state`` in sim/tb_link.py, ``timed_out`` in tests/formal/link.py).

        Returns the request it hands on, held until ``answered``: ``fields``
        (:data:`RequestLayout`), ``cmd``, ``code``, and the strobes ``accepted`` (a checked
        request) and ``refused`` (an error reply, ``code`` says why).
        """
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
        commands = [c for c in Command if c is not Command.STREAM or self._stream]
        is_cmd = {command: Signal(name=f"is_{command.name.lower()}") for command in commands}
        is_stream = is_cmd.get(Command.STREAM, C(0, 1))
        length = Signal(16)
        remaining = Signal(16)  # payload bytes still to come after this one
        code = Signal(8)
        count_ok = Signal()
        # decided in CRC_HI, once the payload is in, so that CHECK's chain of refusals starts
        # from flip-flops (on the UP5K it was the board top's critical path)
        stream_image = Signal()     # a STREAM with a payload (not a flush)
        miscounted = Signal()       # its tokens do not decode to exactly ``n_inputs`` pixels
        verdict = Signal(8)  # CHECK's: the first refusal that applies, else OK
        m.d.comb += verdict.eq(_first_refusal([
            (crc != 0, ErrorCode.CRC),
            ((is_cmd[Command.RUN] & payload.bad_pixel) | (is_stream & payload.bad_token),
             ErrorCode.PIXEL),
            (stream_image & miscounted, ErrorCode.ARGUMENT),
            ((is_cmd[Command.WRITE] | is_cmd[Command.WRITE_BLOCK] | is_cmd[Command.RUN])
             & self.busy, ErrorCode.BUSY),
            (is_cmd[Command.READ] & ~count_ok, ErrorCode.ARGUMENT),
        ]))
        read_count = payload.args[COMMANDS[Command.READ].field_bits("count")]
        rules = _payload_rules(self._n_inputs, self._pixel_bits)

        def fail(error_code, next_state):
            m.d.sync += code.eq(error_code)
            m.next = next_state

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(got):  # ``payload`` starts over too (after the FSM)
                    m.d.sync += [crc.eq(CRC_INIT), cmd.eq(0)]
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
                        with m.Elif(flag & ~_length_matches(rules[command], full)):
                            fail(ErrorCode.LENGTH, "DISCARD")
                    with m.Elif(full == 0):
                        m.next = "CRC_HI"
                    with m.Else():
                        m.next = "PAYLOAD"
                receive(None, check_header)
            with m.State("PAYLOAD"):  # each byte goes to ``payload`` too (after the FSM)
                def count_down():
                    m.d.sync += remaining.eq(remaining - 1)
                    with m.If(remaining == 0):
                        m.next = "CRC_HI"
                receive(None, count_down)
            with m.State("CRC_HI"):
                m.d.sync += [count_ok.eq((read_count != 0) & (read_count <= MAX_WORDS)),
                             stream_image.eq(is_stream & (length != 0)),
                             miscounted.eq(payload.bad_count)]
                receive("CRC_LO")
            with m.State("CRC_LO"):
                receive("CHECK")
            with m.State("CHECK"):  # the CRC register now covers the whole frame
                m.d.sync += code.eq(verdict)
                with m.If(verdict == ErrorCode.CRC):
                    m.next = "DISCARD"
                with m.Elif(verdict != ErrorCode.OK):
                    m.next = "REPLY_ERROR"
                with m.Else():  # ``accepted`` (after the FSM)
                    m.next = "ANSWER"
            with m.State("DISCARD"):
                # Swallow the rest of a bad frame (and any garbage) until the line is quiet.
                with m.If(timed_out & ~got):
                    m.next = "REPLY_ERROR"
            with m.State("REPLY_ERROR"):  # ``refused`` (after the FSM)
                m.next = "ANSWER"
            with m.State("ANSWER"):  # until the reply is out; bytes that arrive are dropped
                with m.If(answered):
                    m.next = "IDLE"

        # Every combinational output is one continuous assignment, decoded from the state, not a
        # comb assignment inside the states: those become a Verilog `always @*` block that
        # Icarus does not run until one of its inputs changes, so right after reset, with the
        # state register still at its initial value, they would stay X (issue 14).
        request = SimpleNamespace(fields=Signal(RequestLayout, name="request"),
                                  accepted=Signal(name="accepted"), refused=Signal(name="refused"),
                                  cmd=cmd, code=code)
        m.d.sync += self.error.eq(fsm.ongoing("REPLY_ERROR"))
        m.d.comb += [
            # Bytes are always taken: outside the receive states they are dropped (the protocol
            # is request/response, so a host never sends while a reply is pending).
            self.rx.ready.eq(1),
            payload.clear.eq(fsm.ongoing("IDLE") & got),
            payload.data.valid.eq(fsm.ongoing("PAYLOAD") & got), payload.data.payload.eq(byte),
            request.accepted.eq(fsm.ongoing("CHECK") & (verdict == ErrorCode.OK)),
            request.refused.eq(fsm.ongoing("REPLY_ERROR")),
            request.fields.command.eq(Cat(is_cmd.get(command, C(0, 1)) for command in Command)),
            request.fields.length.eq(length), request.fields.args.eq(payload.args),
            request.fields.image.eq(stream_image),
        ]
        return request


def _first_refusal(refusals):
    """The error code of the first ``(condition, code)`` whose condition holds, else OK."""
    verdict = C(ErrorCode.OK, 8)
    for refused, error_code in reversed(refusals):
        verdict = Mux(refused, error_code, verdict)
    return verdict


class PayloadReceiver(wiring.Component):
    """A request's payload, into the payload buffer and checked as it arrives.

    Parameters
    ----------
    n_inputs, pixel_bits : int
        As :class:`LinkBridge`'s: the image a RUN or STREAM payload carries.

    Members
    -------
    clear : In(1)
        A frame starts: the next byte of ``data`` goes to the buffer's first slot, and the
        checks below start over.
    data : In(stream.Signature(8, always_ready=True))
        The payload's bytes.
    buffer : In(WritePort.Signature(...))
        The buffer (:func:`buffer_slots` slots), written a slot at a time as its last byte
        arrives: a slot is a pixel, one byte or two (big-endian). Every payload goes to the
        buffer, whatever its command; the longest is RUN's or WRITE_BLOCK's.
    args : Out(48)
        The last payload bytes, the last one lowest: the fixed fields of READ and WRITE.
    bad_pixel : Out(1)
        A slot is above the largest pixel (counts for a RUN).
    bad_token : Out(1)
        A literal token is above the largest pixel (counts for a STREAM).
    bad_count : Out(1)
        The tokens do not decode to exactly ``n_inputs`` pixels (counts for a STREAM).
    """

    def __init__(self, *, n_inputs: int, pixel_bits: int):
        self._n_inputs = n_inputs
        self._pixel_bits = pixel_bits
        self._pixel_bytes = pixel_bytes(pixel_bits)
        self._stream = stream_supported(pixel_bits)
        self._depth = buffer_slots(n_inputs, pixel_bits)
        super().__init__({
            "clear": In(1),
            "data": In(stream.Signature(8, always_ready=True)),
            "buffer": In(WritePort.Signature(addr_width=ceil_log2(self._depth),
                                             shape=8 * self._pixel_bytes)),
            "args": Out(RequestLayout["args"].shape),
            "bad_pixel": Out(1),
            "bad_token": Out(1),
            "bad_count": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        n_in, pixel_max = self._n_inputs, (1 << self._pixel_bits) - 1
        byte = self.data.payload
        slot = Signal(range(self._depth + 1))  # of the buffer, written next
        odd = Signal()  # the next payload byte is the low byte of a two-byte pixel
        high = Signal(8)  # first byte of a two-byte pixel
        # A STREAM payload's tokens, decoded as they arrive: the pixels they stand for (counting
        # stops once past ``n_in``: ``over``) and whether a literal is above ``pixel_max``.
        decoded = Signal(range(n_in + STREAM_MAX_RUN + 1))
        over = Signal()

        if self._pixel_bytes == 1:  # a payload byte, and whether it completes a buffer slot
            slot_value, slot_complete = byte, C(1, 1)
        else:
            slot_value, slot_complete = Cat(byte, high), odd

        with m.If(self.clear):
            m.d.sync += [slot.eq(0), odd.eq(0), self.bad_pixel.eq(0), decoded.eq(0), over.eq(0),
                         self.bad_token.eq(0)]
        with m.Elif(self.data.valid):
            m.d.sync += [self.args.eq(Cat(byte, self.args[:-8])), odd.eq(~odd)]
            if self._pixel_bytes != 1:
                m.d.sync += high.eq(byte)
            with m.If(slot_complete):  # the write port is driven below
                m.d.sync += slot.eq(slot + 1)
                with m.If(slot_value > pixel_max):  # only counts for a RUN
                    m.d.sync += self.bad_pixel.eq(1)
            if self._stream:  # only counts for a STREAM
                is_zero_run = byte[STREAM_RUN_BIT]
                total = decoded + Mux(is_zero_run, byte[:STREAM_RUN_BIT] + 1, 1)
                with m.If(~over):
                    m.d.sync += [decoded.eq(total), over.eq(total > n_in)]
                with m.If(~is_zero_run & (byte > pixel_max)):
                    m.d.sync += self.bad_token.eq(1)

        m.d.comb += [
            self.buffer.addr.eq(slot), self.buffer.data.eq(slot_value),
            self.buffer.en.eq(self.data.valid & slot_complete),
            self.bad_count.eq(over | (decoded != n_in)),
        ]
        return m


class LinkExecutor(wiring.Component):
    """Carries out checked requests: the accelerator's side of the bridge.

    Parameters
    ----------
    n_inputs, n_outputs, pixel_bits : int
        As :class:`LinkBridge`'s.

    Members
    -------
    request : In(RequestLayout)
        The checked request, held from ``start`` until its reply is out.
    start : In(1)
        Strobe: ``request`` has been accepted. A WRITE's word is on ``bus`` the next cycle; a
        RUN's image, a WRITE_BLOCK's words and a STREAM's image are read back from the buffer
        from then on.
    plan : Out(ReplyPlanLayout)
        How the reply to ``request`` goes, decoded from ``request`` and ``busy``: a STREAM
        that finds the accelerator busy (with the previous image) is answered with its results.
    go : In(1)
        The reply waits for the executor. An image waits for it too (its first slot read, in
        PIXEL_ADDR), so that a STREAM's image follows its reply's payload: the results of
        the previous image.
    done : Out(1)
        Strobe: the last pixel of an image, or the last word of a WRITE_BLOCK, is taken.
    words : Out(stream.Signature(32))
        The reply's payload: the INFO words, the registers a READ reads (each read from the bus
        once ``ready`` asks for it) or the accelerator's results.
    buffer : In(ReadPort.Signature(...))
        Reads the payload buffer back; data comes the cycle after the address.
    bus : Out(RegisterBusSignature())
        Driven from flip-flops. A WRITE_BLOCK's words are written in order, all to its one
        address, at most one per cycle.
    pixels : Out(stream.Signature(16))
        Driven from flip-flops.
    results : In(stream.Signature(ResultLayout))
    busy : In(1)
    """

    def __init__(self, *, n_inputs: int, n_outputs: int, pixel_bits: int):
        self._n_inputs = n_inputs
        self._n_outputs = n_outputs
        self._pixel_bits = pixel_bits
        self._pixel_bytes = pixel_bytes(pixel_bits)
        self._depth = buffer_slots(n_inputs, pixel_bits)
        super().__init__({
            "request": In(RequestLayout),
            "start": In(1),
            "plan": Out(ReplyPlanLayout),
            "go": In(1),
            "done": Out(1),
            "words": Out(stream.Signature(32)),
            "buffer": In(ReadPort.Signature(addr_width=ceil_log2(self._depth),
                                            shape=8 * self._pixel_bytes)),
            "bus": Out(RegisterBusSignature()),
            "pixels": Out(stream.Signature(16)),
            "results": In(stream.Signature(ResultLayout)),
            "busy": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        n_in, slot_bytes = self._n_inputs, self._pixel_bytes
        request, command = self.request, self.request.command
        slot_data = self.buffer.data
        # A WRITE_BLOCK's address and first word are read back into ``block_args`` as a
        # WRITE's are laid out in ``args``.
        block, write = COMMANDS[Command.WRITE_BLOCK], COMMANDS[Command.WRITE]
        if [n for _, n in block.fields] + [block.unit[1]] != [n for _, n in write.fields]:
            raise ValueError("The bridge needs WRITE_BLOCK's address and word laid out as "
                             "WRITE's address and data")
        read = COMMANDS[Command.READ]
        read_addr = request.args[read.field_bits("addr")]
        read_count = request.args[read.field_bits("count")]
        write_addr, write_data = write.field_bits("addr"), write.field_bits("data")
        info = info_words(pixel_bits=self._pixel_bits, n_inputs=n_in,
                          n_outputs=self._n_outputs)
        results = self._n_outputs + 1  # the scores and the prediction
        m.d.comb += [
            self.plan.words.eq(Mux(command.info, len(info), Mux(command.read, read_count, Mux(
                command.run | (command.stream & self.busy), results, 0)))),
            self.plan.execute.eq(command.run | command.write_block),
            self.plan.image.eq(request.image),
        ]

        # The register bus is driven from flip-flops: no path from this FSM reaches into the
        # accelerator's address decoder in the same cycle.
        bus_addr = Signal(16)
        bus_w_data = Signal(32)
        bus_w_en = Signal()
        bus_r_en = Signal()
        m.d.sync += [bus_w_en.eq(0), bus_r_en.eq(0)]
        waddr = Signal(16)  # the register a READ reads next
        info_index = Signal(range(len(info)))  # the INFO word sent next
        slot = Signal(range(self._depth + 1))  # of the buffer, read back from 0
        pixel = Signal(self._pixel_bits)
        sent = Signal(range(n_in))  # pixels sent to the accelerator
        zeros = Signal(range(STREAM_MAX_RUN))  # in a run: zero pixels to send after this one
        block_args = Signal(len(request.args))
        last_pixel = Signal()
        last_word = Signal()  # of a WRITE_BLOCK: every slot of its payload has been read
        run = Signal()  # the token being sent is a run of ``zeros`` + 1 zero pixels
        m.d.comb += [last_pixel.eq((~run | (zeros == 0)) & (sent == n_in - 1)),
                     last_word.eq(slot == request.length >> ceil_log2(slot_bytes))]
        # PIXEL_LATCH, from a flip-flop of its own: the buffer's block RAM output (5.8 ns on
        # the ECP5) goes into ``pixel`` and ``zeros`` as it is and into ``run`` through one
        # LUT, no state decode; a run's zero pixel is made at the output (``zeros`` counts only
        # in a run)
        latch = Signal()
        m.d.sync += latch.eq(0)

        with m.FSM(name="execute") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [slot.eq(0), sent.eq(0), waddr.eq(read_addr), info_index.eq(0)]
                    with m.If(command.write):
                        m.d.sync += [bus_addr.eq(request.args[write_addr]),
                                     bus_w_data.eq(request.args[write_data]), bus_w_en.eq(1)]
                    with m.If(command.run | request.image):
                        m.next = "PIXEL_ADDR"
                    with m.Elif(command.write_block):
                        m.next = "BLOCK_ADDR"
                with m.Elif(command.read & self.words.ready):  # the reply asks for a register
                    m.d.sync += [bus_addr.eq(waddr), bus_r_en.eq(1), waddr.eq(waddr + 1)]
                    m.next = "READ_WAIT"
                with m.Elif(command.info & self.words.ready):  # an INFO word is taken
                    m.d.sync += info_index.eq(info_index + 1)
            with m.State("READ_WAIT"):  # r_en is at the accelerator
                m.next = "READ_DATA"
            with m.State("READ_DATA"):  # r_data is valid the cycle after r_en: a word to send
                with m.If(self.words.ready):
                    m.next = "IDLE"

            # The pixel stream is driven from flip-flops (masked in a run), not straight from the
            # buffer's read port.
            with m.State("PIXEL_ADDR"):  # the read port reads ``slot`` (driven after the FSM)
                with m.If(self.go):
                    m.d.sync += latch.eq(1)
                    m.next = "PIXEL_LATCH"
            with m.State("PIXEL_LATCH"):    # ``latch`` is high: the token is taken (below)
                m.next = "PIXEL_SEND"
            with m.State("PIXEL_SEND"):  # pixels.valid (driven after the FSM) is high
                with m.If(self.pixels.ready):
                    m.d.sync += sent.eq(sent + 1)
                    with m.If(run & (zeros != 0)):
                        m.d.sync += zeros.eq(zeros - 1)
                    with m.Elif(last_pixel):  # ``done``
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += slot.eq(slot + 1)
                        m.next = "PIXEL_ADDR"

            # A WRITE_BLOCK payload is shifted back into ``block_args`` a slot at a time, as it
            # arrived: with the address and the first word in, it holds them as ``args`` holds
            # a WRITE's; each later word replaces the low 32 bits.
            addr_slots, word_slots = 2 // slot_bytes, 4 // slot_bytes
            with m.State("BLOCK_ADDR"):
                m.next = "BLOCK_LATCH"
            with m.State("BLOCK_LATCH"):
                m.d.sync += [block_args.eq(Cat(slot_data, block_args)[:len(block_args)]),
                             slot.eq(slot + 1)]
                with m.If((slot >= addr_slots) & (slot % word_slots == addr_slots - 1)):
                    m.next = "BLOCK_WRITE"  # that was the last slot of a word
                with m.Else():
                    m.next = "BLOCK_ADDR"
            with m.State("BLOCK_WRITE"):
                with m.If(slot == addr_slots + word_slots):  # the first word: the address too
                    m.d.sync += bus_addr.eq(block_args[write_addr])
                m.d.sync += [bus_w_data.eq(block_args[write_data]), bus_w_en.eq(1)]
                with m.If(last_word):  # ``done``
                    m.next = "IDLE"
                with m.Else():
                    m.next = "BLOCK_ADDR"

        # A STREAM slot is a token: a pixel, or a run of zeros sent one a cycle.
        with m.If(latch):
            m.d.sync += [run.eq(command.stream & slot_data[STREAM_RUN_BIT]),
                         zeros.eq(slot_data[:STREAM_RUN_BIT]), pixel.eq(slot_data)]

        # Continuous assignments, decoded from the state (see the Icarus note in LinkBridge).
        info_word = C(info[-1], 32)
        for i, value in enumerate(info[:-1]):
            info_word = Mux(info_index == i, value, info_word)
        from_results = command.run | command.stream
        m.d.comb += [
            self.bus.addr.eq(bus_addr), self.bus.w_data.eq(bus_w_data),
            self.bus.w_en.eq(bus_w_en), self.bus.r_en.eq(bus_r_en),
            # The read port reads ``slot`` every cycle: its data register holds a buffer word
            # from the first clock edge on, and PIXEL_ADDR/BLOCK_ADDR set ``slot`` a cycle ahead.
            self.buffer.addr.eq(slot), self.buffer.en.eq(1),
            self.pixels.valid.eq(fsm.ongoing("PIXEL_SEND")),
            self.pixels.payload.eq(Mux(run, 0, pixel)),
            self.done.eq((fsm.ongoing("PIXEL_SEND") & self.pixels.ready & last_pixel)
                         | (fsm.ongoing("BLOCK_WRITE") & last_word)),
            self.words.valid.eq(command.info | (command.read & fsm.ongoing("READ_DATA"))
                                | (from_results & self.results.valid)),
            self.words.payload.eq(Mux(command.info, info_word, Mux(
                command.read, self.bus.r_data, self.results.payload.value.as_unsigned()))),
            self.results.ready.eq(from_results & self.words.ready),
        ]
        return m


class ReplyEncoder(wiring.Component):
    """The reply frame, a byte at a time: SYNC, header, payload words, CRC.

    Members
    -------
    start : In(1)
        Strobe: a reply begins; ``plan`` is sampled with it.
    plan : In(ReplyPlanLayout)
    cmd, code : In(8)
        The header's command and code bytes, held from ``start`` until ``done``.
    words : In(stream.Signature(32))
        The payload, ``plan.words`` words, each sent most significant byte first.
    waiting : Out(1)
        High while the reply waits for ``resume``: before its header with ``plan.execute``,
        between its payload and its CRC with ``plan.image``.
    resume : In(1)
        Strobe: what the reply waits for is done.
    tx : Out(stream.Signature(8))
        The reply's bytes, from a flip-flop.
    done : Out(1)
        Strobe: the reply's last byte goes to ``tx``'s flip-flop.
    """

    def __init__(self):
        super().__init__({
            "start": In(1),
            "plan": In(ReplyPlanLayout),
            "cmd": In(8),
            "code": In(8),
            "words": In(stream.Signature(32)),
            "waiting": Out(1),
            "resume": In(1),
            "tx": Out(stream.Signature(8)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        rsp_len = Signal(16)
        words = Signal(16)  # words of the reply payload still to send
        word = Signal(32)
        nbyte = Signal(2)
        image = Signal()  # an image goes between the payload and the CRC
        crc = Signal(16)

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

        def payload_sent():
            with m.If(image):  # the results are out: the accelerator takes an image
                m.next = "IMAGE"
            with m.Else():
                m.next = "T_CRC_HI"

        with m.FSM(name="reply") as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [rsp_len.eq(plan.words << 2), words.eq(plan.words),
                                 image.eq(plan.image)]
                    with m.If(plan.execute):
                        m.next = "EXECUTE"
                    with m.Else():
                        m.next = "REPLY"
            with m.State("EXECUTE"):  # waiting (driven after the FSM)
                with m.If(self.resume):
                    m.next = "REPLY"
            with m.State("REPLY"):
                with m.If(tx_free):
                    send("REPLY", SYNC_REPLY, in_crc=False)
                    m.d.sync += crc.eq(CRC_INIT)
                    m.next = "H_CMD"
            for state, value, following in (
                ("H_CMD", self.cmd, "H_CODE"),
                ("H_CODE", self.code, "H_LEN_HI"),
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
                    with m.Else():
                        payload_sent()
            with m.State("FETCH"):  # words.ready (driven after the FSM)
                with m.If(self.words.valid):
                    m.d.sync += word.eq(self.words.payload)
                    m.next = "WORD"
            with m.State("WORD"):
                with m.If(tx_free):
                    send("WORD", word[24:])
                    m.d.sync += [word.eq(word << 8), nbyte.eq(nbyte + 1)]
                    with m.If(nbyte == 3):
                        m.d.sync += words.eq(words - 1)
                        with m.If(words != 1):
                            m.next = "FETCH"
                        with m.Else():
                            payload_sent()
            with m.State("IMAGE"):  # waiting (driven after the FSM)
                with m.If(self.resume):
                    m.next = "T_CRC_HI"
            with m.State("T_CRC_HI"):
                with m.If(tx_free):
                    send("T_CRC_HI", crc[8:], in_crc=False)
                    m.next = "T_CRC_LO"
            with m.State("T_CRC_LO"):
                with m.If(tx_free):
                    send("T_CRC_LO", crc[:8], in_crc=False)
                    m.next = "IDLE"

        # Continuous assignments decoded from the state (see the Icarus note in LinkBridge).
        next_byte = C(0, 8)
        for state, value in tx_sources:
            next_byte = Mux(fsm.ongoing(state), value, next_byte)
        m.d.comb += [
            tx_next.eq(next_byte),
            self.waiting.eq(fsm.ongoing("EXECUTE") | fsm.ongoing("IMAGE")),
            self.words.ready.eq(fsm.ongoing("FETCH")),
            self.done.eq(fsm.ongoing("T_CRC_LO") & tx_free),
        ]
        return m

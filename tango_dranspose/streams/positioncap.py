"""PandABox position capture over TCP (typ ``PCAP_RAW``): the PandA's own ASCII data port.

Upstream is a byte stream, not messages. The client connects, sends ``"\\n"`` and the PandA
answers ``"OK\\n"`` (:data:`HANDSHAKE_REQUEST`, :data:`HANDSHAKE_REPLY`). Each arm then sends

* a header block: ``arm_time: ...``, more ``key: value`` lines (``start_time``, ``missed``,
  ``process``, ``format``), ``fields:``, one line per captured field
  (`` NAME type CAPTURE [scale: s offset: o units: u]``), ended by a blank line;
* one line of space-separated values per captured row;
* ``END <n> <reason>`` (``END 11 Disarmed``).

The framer is fed raw chunks (``feed([chunk])``, split anywhere, even one byte at a time) and
emits one frame per event:

* ``START``: the whole header block, from ``arm_time:`` up to and including the blank line;
* ``DATA``: one value line including its ``\\n``;
* ``END``: the ``END`` line including its ``\\n``.

The ``OK`` handshake line is skipped silently. Only ``format: ASCII`` is supported.

Several arms on one connection (a mesh scan, one arm per line): by default a framer serves one
arm per scan, so a header after ``END`` is dropped ("after the end message") together with its
rows until the runtime calls :meth:`PositionCapFramer.reset` for the next scan; bytes already
buffered survive the reset, as the connection does. With ``PositionCapFramer(multi_arm=True)``
a header after ``END`` instead starts the next block of the same scan (start, rows, end again),
which is how dranspose forwards a mesh scan.

Value lines only make sense with the field list of their header, so parsing is stateful:
payloads keep a :class:`PositioncapParser` for the scan and call ``parser.parse(stream_data)``
on every event, header first. The module-level :func:`parse` parses headers and ``END`` lines
only and raises a :class:`ParseError` for value lines.

The message models live in :mod:`~tango_dranspose.streams.positioncap_models` and the
builders for simulators and tests in :mod:`~tango_dranspose.streams.positioncap_build`; both
are re-exported here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from tango_dranspose.core.events import StreamData, frame_buffer
from tango_dranspose.streams.base import (
    Framed,
    Framer,
    Kind,
    ParseError,
    Protocol,
    expect_frames,
    expect_typ,
    validate,
)
from tango_dranspose.streams.positioncap_build import (
    TOMO_FIELDS,
    build_arm,
    build_end,
    build_header,
    build_values,
    field,
    rotation_rows,
)
from tango_dranspose.streams.positioncap_models import (
    PositionCapEnd,
    PositionCapField,
    PositionCapPacket,
    PositionCapPacketType,
    PositionCapStart,
    PositionCapValues,
    converter,
)

TYP = "PCAP_RAW"
HANDSHAKE_REQUEST = b"\n"
HANDSHAKE_REPLY = b"OK\n"

# A real header is a few kB; anything far larger is not a PandA talking to us.
MAX_LINE = 1 << 16
MAX_HEADER_LINES = 1024


# --- text-level parsing ------------------------------------------------------------------------

_END = re.compile(r"END\s+(\d+)\s*(.*)")
_ATTRIBUTE = re.compile(r"(\w+):[ \t]*(\S*)")


def parse_header(text: str) -> PositionCapStart:
    """The header block (``arm_time: ...`` to the blank line) as a :class:`PositionCapStart`."""
    if not text.startswith("arm_time:"):
        raise ParseError(f"a position capture header starts with 'arm_time:', got {text[:40]!r}")
    keys: dict[str, Any] = {}
    fields: list[PositionCapField] | None = None
    for line in text.split("\n"):
        if not line.strip():
            if fields is not None:
                break
            continue
        if fields is not None:
            fields.append(_parse_field_line(line))
        elif line.strip() == "fields:":
            fields = []
        elif ":" in line:
            key, _, value = line.partition(":")
            keys[key.strip()] = value.strip()
        else:
            raise ParseError(f"unexpected line in position capture header: {line!r}")
    if not fields:
        raise ParseError("position capture header has no 'fields:' section")
    return validate(PositionCapStart, {**keys, "fields": fields}, "position capture header")


def _parse_field_line(line: str) -> PositionCapField:
    parts = line.split(None, 3)
    if len(parts) < 3:
        raise ParseError(f"a field line needs 'NAME type CAPTURE', got {line!r}")
    name, kind, capture = parts[:3]
    converter(kind)
    extras = dict(_ATTRIBUTE.findall(parts[3])) if len(parts) > 3 else {}
    described = {
        **extras,  # first, so that an attribute called name or type cannot replace those
        "name": f"{name}.{capture}",
        "type": kind,
        "scale": extras.get("scale") or None,
        "offset": extras.get("offset") or None,
        "units": extras.get("units"),
    }
    return validate(PositionCapField, described, f"field line {line!r}")


def parse_end(text: str) -> PositionCapEnd:
    match = _END.fullmatch(text.strip())
    if match is None:
        raise ParseError(f"an end line reads 'END <samples> <reason>', got {text[:60]!r}")
    try:
        samples = int(match[1])
    except ValueError:  # more digits than Python converts
        raise ParseError(f"END line with an impossible sample count: {text[:60]!r}") from None
    return PositionCapEnd(samples=samples, reason=match[2] or None)


def parse_values(line: str, fields: Sequence[PositionCapField]) -> PositionCapValues:
    """One value line, converted with the types of the header's ``fields``."""
    tokens = line.split()
    if len(tokens) != len(fields):
        raise ParseError(
            f"value line has {len(tokens)} values but the header declares {len(fields)} fields: "
            f"{line[:80]!r}"
        )
    try:
        return PositionCapValues(
            fields={f.name: f.parse(t) for f, t in zip(fields, tokens, strict=True)}
        )
    except ValueError as exc:
        raise ParseError(f"value line {line[:80]!r}: {exc}") from None


def _text(data: StreamData) -> str:
    expect_typ(data, TYP)
    expect_frames(data, 1, "a position capture message")
    try:
        return bytes(frame_buffer(data.frames[0])).decode("ascii")
    except (UnicodeDecodeError, TypeError) as exc:
        raise ParseError(f"position capture data must be ASCII text: {exc}") from None


# --- payload-facing parsers --------------------------------------------------------------------


class PositioncapParser:
    """Stateful parser: learns the fields from a header, then parses the value lines after it."""

    def __init__(self) -> None:
        self.start: PositionCapStart | None = None

    @property
    def arm_time(self) -> datetime | None:
        return self.start.arm_time if self.start is not None else None

    @property
    def fields(self) -> list[PositionCapField]:
        return self.start.fields if self.start is not None else []

    def parse(self, data: StreamData) -> PositionCapPacketType:
        return self.parse_text(_text(data))

    def parse_text(self, text: str) -> PositionCapPacketType:
        if text.startswith("arm_time:"):
            # Each arm brings its own header; it replaces the previous arm's fields.
            self.start = parse_header(text)
            return self.start
        if text.startswith("END"):
            return parse_end(text)
        if self.start is None:
            raise ParseError("a value line before any header: the fields are not known yet")
        return parse_values(text, self.start.fields)


def parse(data: StreamData) -> PositionCapStart | PositionCapEnd:
    """Headers and ``END`` lines; value lines need a :class:`PositioncapParser`."""
    text = _text(data)
    if text.startswith("arm_time:"):
        return parse_header(text)
    if text.startswith("END"):
        return parse_end(text)
    raise ParseError(
        "a position capture value line can only be parsed with the fields of its header: "
        "keep a PositioncapParser() for the scan and call its parse() on every event"
    )


# --- framer ------------------------------------------------------------------------------------


class PositionCapFramer(Framer):
    """Cuts the position capture byte stream into header, value-line and END events."""

    typ = TYP

    def __init__(self, *, multi_arm: bool = False) -> None:
        super().__init__()
        self.multi_arm = multi_arm
        self._pending = bytearray()  # bytes after the last newline
        self._skipping = False  # inside an over-long line, until its newline
        self._header: list[bytes] | None = None  # lines of a header block being collected
        self._in_fields = False
        self._converters: list[Callable[[str], int | float]] | None = None

    def reset(self) -> None:
        # The buffered bytes and a header being collected belong to the connection, which
        # outlives the scan; only the scan window and the learned fields are forgotten.
        super().reset()
        self._converters = None

    def feed(self, message: Sequence[Any]) -> list[Framed]:
        out: list[Framed] = []
        for chunk in message:
            out.extend(self._feed_chunk(frame_buffer(chunk)))
        return out

    def _feed_chunk(self, chunk: memoryview) -> list[Framed]:
        out: list[Framed] = []
        buf = self._pending
        searched = len(buf)  # only the new bytes can hold a newline not seen yet
        buf += chunk
        begin = 0
        while (newline := buf.find(b"\n", max(begin, searched))) >= 0:
            line = bytes(buf[begin : newline + 1])
            begin = newline + 1
            if self._skipping:
                self._skipping = False
                continue
            out.extend(self._line(line))
        del buf[:begin]
        if len(buf) > MAX_LINE:
            self.drop("line too long", bytes(buf[:200]))
            buf.clear()
            self._skipping = True
        return out

    def _line(self, line: bytes) -> list[Framed]:
        if self._header is not None:
            return self._header_line(line)
        if line.startswith(b"arm_time:"):
            self._header, self._in_fields = [line], False
            return []
        stripped = line.strip()
        if stripped == b"OK":
            return []  # the PandA's reply to our "\n" handshake
        if not stripped:
            return self.drop("empty line", line)
        if line.startswith(b"END"):
            return self._end_line(line)
        return self._value_line(line)

    def _header_line(self, line: bytes) -> list[Framed]:
        assert self._header is not None
        self._header.append(line)
        stripped = line.strip()
        if stripped == b"fields:":
            self._in_fields = True
        elif not stripped and self._in_fields:
            block, self._header = b"".join(self._header), None
            return self._header_block(block)
        elif len(self._header) > MAX_HEADER_LINES:
            self._header = None
            return self.drop("header block too long", line)
        return []

    def _header_block(self, block: bytes) -> list[Framed]:
        try:
            start = parse_header(block.decode("ascii"))
        except (ParseError, UnicodeDecodeError) as exc:
            return self.drop("malformed header", f"{exc}")
        if start.format not in (None, "ASCII"):
            return self.drop("unsupported data format (only ASCII)", block)
        if self.ended and not self.multi_arm:
            return self.drop("after the end message", block)
        if not self.gate(Kind.START, block):
            return []
        self._converters = [converter(field.type) for field in start.fields]
        return [Framed(Kind.START, StreamData(TYP, [block]))]

    def _end_line(self, line: bytes) -> list[Framed]:
        try:
            parse_end(line.decode("ascii"))
        except (ParseError, UnicodeDecodeError) as exc:
            return self.drop("malformed END line", f"{exc}")
        if not self.gate(Kind.END, line):
            return []
        return [Framed(Kind.END, StreamData(TYP, [line]))]

    def _value_line(self, line: bytes) -> list[Framed]:
        if not self.gate(Kind.DATA, line):
            return []
        if self._converters is None:  # not reachable: a scan only starts with a header
            return self.drop("value line without header fields", line)
        try:
            tokens = line.decode("ascii").split()
            if len(tokens) != len(self._converters):
                raise ValueError(f"{len(tokens)} values for {len(self._converters)} fields")
            for convert, token in zip(self._converters, tokens, strict=True):
                convert(token)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            return self.drop("malformed value line", f"{exc}: {line[:120]!r}")
        return [Framed(Kind.DATA, StreamData(TYP, [line]))]

    def flush(self) -> list[Framed]:
        if self._header is not None:
            self.drop("incomplete header block at the end of the stream", b"".join(self._header))
            self._header = None
        if self._pending and not self._skipping:
            self.drop("incomplete line at the end of the stream", bytes(self._pending))
        self._pending.clear()
        self._skipping = False
        return []

    @classmethod
    def detect(cls, message: Sequence[Any]) -> bool:
        try:
            head = bytes(frame_buffer(message[0])[:16])
        except (IndexError, TypeError):
            return False
        return head.startswith((b"arm_time:", HANDSHAKE_REPLY + b"arm_time:"))


PROTOCOL = Protocol(
    typ=TYP,
    framer=PositionCapFramer,
    parse=parse,
    description="PandABox position capture over TCP: ASCII header, one line per row, END",
)

__all__ = [
    "HANDSHAKE_REPLY",
    "HANDSHAKE_REQUEST",
    "MAX_HEADER_LINES",
    "MAX_LINE",
    "PROTOCOL",
    "TOMO_FIELDS",
    "TYP",
    "PositionCapEnd",
    "PositionCapField",
    "PositionCapFramer",
    "PositionCapPacket",
    "PositionCapPacketType",
    "PositionCapStart",
    "PositionCapValues",
    "PositioncapParser",
    "build_arm",
    "build_end",
    "build_header",
    "build_values",
    "field",
    "parse",
    "parse_end",
    "parse_header",
    "parse_values",
    "rotation_rows",
]

"""Incremental Server-Sent Events splitting on bytes, shared by every stream translator."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseEvent", "SseEventTooLarge", "SseSplitter", "parse_span"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: bytes | None
    data: bytes  # data lines joined with b"\n"; b"" when the block had none


class SseEventTooLarge(ValueError):
    """The bytes of one event (everything since the last blank line) outgrew the limit."""


class SseSplitter:
    """Feed raw bytes, get whole events; tolerates \\r\\n and chunks split anywhere.

    Linear in the bytes fed however they are split. What follows the last separator is kept as
    bytes and joined to the next read, as the common case wants (an event split across two
    reads). A read that completes no event moves what waits into a ``bytearray``, appended to
    in amortised O(1) per byte, and later reads are searched for a separator only in their own
    bytes and the two before them; the waiting bytes are copied out once, when the event ends.
    (Joining and searching the whole buffer on every read was quadratic: an event arriving in
    many small reads was copied and scanned once per read.) ``limit`` bounds the bytes of one
    event, and so what is held: past it ``SseEventTooLarge`` is raised; 0 means no limit (for
    input Sluice produced itself).
    """

    __slots__ = ("limit", "_rest", "_growing")

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self._rest = b""  # what followed the last separator of the last read
        self._growing = bytearray()  # an event longer than a read, as it accumulates

    def feed(self, data: bytes) -> list[SseEvent]:
        return parse_span(self.take_complete(data))

    def take_complete(self, data: bytes) -> bytes:
        """The complete blocks buffered so far as one span: blocks separated by a blank line,
        the last block's terminating blank line left off (b"" when no block is complete yet).
        What follows the last blank line stays buffered."""
        growing = self._growing
        if growing:
            # Only the new bytes, and the two before them, can hold a new separator.
            start = len(growing) - 2 if len(growing) > 2 else 0
            growing += data
            if growing.find(b"\n\n", start) < 0 and growing.find(b"\n\r\n", start) < 0:
                if self.limit and len(growing) > self.limit:
                    raise SseEventTooLarge(f"an upstream event exceeded {self.limit} bytes")
                return b""
            buffer = bytes(growing)
            growing.clear()
        else:
            buffer = self._rest + data
        if b"\r" in buffer:
            # On the joined buffer: a CRLF (Gemini ends lines so) may be split between reads.
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._rest = b""
            growing += buffer
            if self.limit and len(growing) > self.limit:
                raise SseEventTooLarge(f"an upstream event exceeded {self.limit} bytes")
            return b""
        self._rest = buffer[end + 2 :]
        if self.limit and len(buffer) > self.limit:
            self._check(buffer, end)  # rare: the bytes joined here exceed the limit
        return buffer[:end]

    def _check(self, buffer: bytes, end: int) -> None:
        """Every block of ``buffer[:end]``, and what is left pending, within the limit."""
        start, limit = 0, self.limit
        while start < end:
            at = buffer.find(b"\n\n", start, end)
            stop = end if at < 0 else at
            if stop - start > limit:
                break
            start = end if at < 0 else at + 2
        else:
            if len(self._rest) <= limit:
                return
        raise SseEventTooLarge(f"an upstream event exceeded {limit} bytes")

    def flush(self) -> list[SseEvent]:
        """At end of stream: an unterminated final block still counts if it is complete JSON-ish."""
        rest = (self._rest or bytes(self._growing)).strip()
        self._rest = b""
        self._growing.clear()
        if not rest:
            return []
        event = _parse_block(rest)
        return [] if event is None else [event]


def parse_span(span: bytes) -> list[SseEvent]:
    """The events of a span from ``take_complete``."""
    if not span:
        return []
    events: list[SseEvent] = []
    for block in span.split(b"\n\n"):
        event = _parse_block(block)
        if event is not None:
            events.append(event)
    return events


def _parse_block(block: bytes) -> SseEvent | None:
    event: bytes | None = None
    data_lines: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip()
        # comments (":") and other fields (id, retry) are ignored
    if event is None and not data_lines:
        return None
    return SseEvent(event=event, data=b"\n".join(data_lines))

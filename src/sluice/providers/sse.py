"""Incremental Server-Sent Events splitting on bytes, shared by every stream translator."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SseEvent", "SseSplitter", "parse_span"]


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: bytes | None
    data: bytes  # data lines joined with b"\n"; b"" when the block had none


@dataclass(slots=True)
class SseSplitter:
    """Feed raw bytes, get whole events; tolerates \\r\\n and chunks split anywhere."""

    _buffer: bytes = b""
    _pending: list[bytes] = field(default_factory=list)

    def feed(self, data: bytes) -> list[SseEvent]:
        return parse_span(self.take_complete(data))

    def take_complete(self, data: bytes) -> bytes:
        """The complete blocks buffered so far as one span: blocks separated by a blank line,
        the last block's terminating blank line left off (b"" when no block is complete yet).
        What follows the last blank line stays buffered."""
        buffer = self._buffer + data
        if b"\r" in buffer:
            # On the joined buffer: a CRLF (Gemini ends lines so) may be split between reads.
            buffer = buffer.replace(b"\r\n", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return b""
        self._buffer = buffer[end + 2 :]
        return buffer[:end]

    def flush(self) -> list[SseEvent]:
        """At end of stream: an unterminated final block still counts if it is complete JSON-ish."""
        rest, self._buffer = self._buffer.strip(), b""
        if not rest:
            return []
        event = _parse_block(rest)
        return [] if event is None else [event]

    @property
    def has_partial(self) -> bool:
        return bool(self._buffer.strip())


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

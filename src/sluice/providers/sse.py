"""Incremental Server-Sent Events splitting on bytes, shared by every stream translator."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SseEvent", "SseSplitter"]


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
        buffer = self._buffer + data
        if b"\r" in buffer:
            # On the joined buffer: a CRLF (Gemini ends lines so) may be split between reads.
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[SseEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            event = _parse_block(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        self._buffer = buffer[start:]
        return events

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

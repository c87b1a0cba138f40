"""The small text fields of a multipart body, read without copying its file parts.

A video request with an ``input_reference`` upload is forwarded as the bytes it arrived in;
Sluice needs only its ``model``, ``size``, ``seconds`` and ``prompt`` to route and price it, so
the parser (python-multipart, streaming) keeps the data of parts without a filename and skips
the rest.
"""

from __future__ import annotations

from python_multipart.multipart import MultipartParser, parse_options_header

from sluice.errors import InvalidRequest

__all__ = ["boundary_of", "text_fields"]

_MAX_FIELD_BYTES = 64 * 1024


def boundary_of(content_type: str) -> bytes:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidRequest("A multipart body needs a boundary in its Content-Type.")
    return boundary


def text_fields(body: bytes, boundary: bytes) -> dict[str, str]:
    """Name -> value of every part that is not a file (a part with a ``filename``)."""
    fields: dict[str, str] = {}
    current: dict[str, object] = {}
    header_name = bytearray()
    header_value = bytearray()
    data = bytearray()

    def on_part_begin() -> None:
        current.clear()
        data.clear()

    def on_header_field(buf: bytes, start: int, end: int) -> None:
        header_name.extend(buf[start:end])

    def on_header_value(buf: bytes, start: int, end: int) -> None:
        header_value.extend(buf[start:end])

    def on_header_end() -> None:
        if bytes(header_name).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(header_value))
            current["name"] = options.get(b"name", b"").decode("utf-8", "replace")
            current["file"] = b"filename" in options
        header_name.clear()
        header_value.clear()

    def on_part_data(buf: bytes, start: int, end: int) -> None:
        if current.get("file"):
            return
        if len(data) + end - start > _MAX_FIELD_BYTES:
            raise InvalidRequest(f"The form field '{current.get('name')}' is too long.")
        data.extend(buf[start:end])

    def on_part_end() -> None:
        name = current.get("name")
        if isinstance(name, str) and name and not current.get("file"):
            fields[name] = data.decode("utf-8", "replace")

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except InvalidRequest:
        raise
    except Exception:  # noqa: BLE001 - python-multipart's errors: a malformed body
        raise InvalidRequest("The multipart body could not be parsed.") from None
    return fields

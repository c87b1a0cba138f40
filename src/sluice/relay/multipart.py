"""Multipart request bodies: parsed as they arrive, file parts spooled, re-sent as a stream.

A form is read once, with python-multipart through Starlette's parser: text fields are kept
(each at most ``_MAX_FIELD_BYTES``), file parts go to spooled temporary files (in memory up to
1 MiB each, on disk beyond), so a 25 MB upload is never held in memory, let alone twice. The
whole body is capped by ``limits.max_multipart_bytes`` while it arrives. Each upstream attempt
re-encodes the form from the spool (``SpooledForm.encoded``) with an exact Content-Length, the
model field replaced by the channel's upstream name, and reads the files in chunks: a failover
re-sends the same bytes without the client sending them again.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from python_multipart.exceptions import FormParserError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from sluice.errors import (
    ClientClosedRequest,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from sluice.server_protocol import body_timed_out

__all__ = ["SpooledForm", "read_multipart"]

_MAX_FIELD_BYTES = 1024 * 1024  # a text field (a prompt, a transcription hint)
_MAX_PARTS = 64
_CHUNK = 256 * 1024


def _quoted(value: str) -> str:
    # The escaping browsers apply to names in a Content-Disposition header (WHATWG).
    return value.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")


@dataclass(frozen=True, slots=True)
class _Encoded:
    """One encoding of a form: header bytes and file parts in order, read when sent."""

    content_type: str
    length: int
    pieces: tuple[bytes | UploadFile, ...]

    async def chunks(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            if isinstance(piece, bytes):
                yield piece
                continue
            await piece.seek(0)
            while chunk := await piece.read(_CHUNK):
                yield chunk


class SpooledForm:
    """A client's form: its text fields and spooled files (``core.UploadedForm``)."""

    def __init__(self, items: list[tuple[str, str | UploadFile]]) -> None:
        self._items = items

    def fields(self) -> dict[str, Any]:
        """The form as a body to validate: text fields by name, a file part as a small
        description (filename, content type, size); a repeated name becomes a list."""
        body: dict[str, Any] = {}
        for name, value in self._items:
            shown: Any = value
            if isinstance(value, UploadFile):
                shown = {
                    "filename": value.filename or "",
                    "content_type": value.content_type or "application/octet-stream",
                    "size": value.size or 0,
                }
            if name in body:
                earlier = body[name]
                body[name] = [*earlier, shown] if isinstance(earlier, list) else [earlier, shown]
            else:
                body[name] = [shown] if name.endswith("[]") else shown
        return body

    def file(self, name: str) -> UploadFile | None:
        """The first file part called ``name``."""
        for item_name, value in self._items:
            if item_name == name and isinstance(value, UploadFile):
                return value
        return None

    def spooled_file(self, name: str) -> BinaryIO | None:
        upload = self.file(name)
        return None if upload is None else upload.file

    def encoded(self, replace: Mapping[str, str]) -> _Encoded:
        boundary = "sluice-" + secrets.token_hex(16)
        pieces: list[bytes | UploadFile] = []
        length = 0
        for name, value in self._items:
            disposition = f'Content-Disposition: form-data; name="{_quoted(name)}"'
            if isinstance(value, UploadFile):
                media = value.content_type or "application/octet-stream"
                head = (
                    f'--{boundary}\r\n{disposition}; filename="{_quoted(value.filename or "file")}"'
                    f"\r\nContent-Type: {media}\r\n\r\n"
                ).encode()
                pieces += [head, value, b"\r\n"]
                length += len(head) + (value.size or 0) + 2
            else:
                text = replace.get(name, value)
                part = f"--{boundary}\r\n{disposition}\r\n\r\n{text}\r\n".encode()
                pieces.append(part)
                length += len(part)
        for name in sorted(replace.keys() - {item_name for item_name, _ in self._items}):
            # A field the client left out and Sluice filled in (the default model).
            disposition = f'Content-Disposition: form-data; name="{_quoted(name)}"'
            part = f"--{boundary}\r\n{disposition}\r\n\r\n{replace[name]}\r\n".encode()
            pieces.append(part)
            length += len(part)
        closing = f"--{boundary}--\r\n".encode()
        pieces.append(closing)
        length += len(closing)
        return _Encoded(f"multipart/form-data; boundary={boundary}", length, tuple(pieces))

    async def close(self) -> None:
        for _, value in self._items:
            if isinstance(value, UploadFile):
                await value.close()


class _ClosingParser(MultiPartParser):
    """Starlette's parser closes the spooled files of a half-read form only on its own
    exception; a body over the cap, a client gone or a malformed part left them to the garbage
    collector. Here every way out of ``parse`` but success closes them (the list is Starlette's
    own, checked by tests/test_compat.py)."""

    async def parse(self) -> FormData:
        try:
            return await super().parse()
        except BaseException:
            for file in self._files_to_close_on_error:
                file.close()
            raise


async def _capped(request: Request, max_bytes: int) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The request body exceeds the limit of {max_bytes} bytes.")
        yield chunk


async def read_multipart(request: Request, max_bytes: int) -> SpooledForm:
    """The request's form; OpenAI-shaped errors for a wrong type, size, or a broken body."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Unsupported Content-Type '{media[:100]}': this endpoint takes a "
            "multipart/form-data upload."
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body exceeds the limit of {max_bytes} bytes.")
    parser = _ClosingParser(
        request.headers,
        _capped(request, max_bytes),
        max_files=_MAX_PARTS,
        max_fields=_MAX_PARTS,
        max_part_size=_MAX_FIELD_BYTES,
    )
    try:
        form = await parser.parse()
    except (MultiPartException, FormParserError) as exc:
        reason = exc.message if isinstance(exc, MultiPartException) else "malformed part"
        raise InvalidRequest(
            f"The multipart body could not be parsed: {reason}.", code="invalid_multipart"
        ) from None
    except ClientDisconnect:
        if body_timed_out(request.scope):  # the server cut it off and already answered 408
            raise InvalidRequest(
                "The request body was not received in time.", status=408, code="request_timeout"
            ) from None
        raise ClientClosedRequest("The client closed the connection mid-request.") from None
    return SpooledForm(list(form.multi_items()))

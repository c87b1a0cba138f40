"""``/v1/files``: upload (multipart, purpose ``batch``), retrieve, content, delete, list.

A file is visible only to the key that uploaded it (or whose batch wrote it); any other key
gets the same 404 as for a file that does not exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from sluice.batches.services import BatchServices, services_of
from sluice.errors import (
    ClientClosedRequest,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from sluice.files.jsonl import validate_batch_file
from sluice.files.store import FileRecord, FileStore
from sluice.keys import KeyRecord
from sluice.relay.admission import authenticate
from sluice.relay.http import json_response
from sluice.relay.model_access import check_model
from sluice.state import AppState

__all__ = ["file_routes", "file_not_found", "list_params"]

_PURPOSES = ("batch",)
_OUTPUT_PURPOSES = ("batch_output",)
# Multipart framing around the file: boundaries, part headers, the purpose field.
_FRAMING_BYTES = 64 * 1024


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.sluice
    return state


def file_not_found(file_id: str) -> NotFound:
    return NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")


class _TooLarge(MultiPartException):
    """Raised through the multipart parser, which closes its spooled files only for its own
    exception type: so a refused upload leaves no temporary file open."""


class _ClientLeft(MultiPartException):
    pass


async def capped_chunks(chunks: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks, refused as soon as they pass ``limit`` bytes."""
    seen = 0
    try:
        async for chunk in chunks:
            seen += len(chunk)
            if seen > limit:
                raise _TooLarge(f"The upload exceeds the limit of {limit} bytes.")
            yield chunk
    except ClientDisconnect:
        raise _ClientLeft("The client closed the connection mid-upload.") from None


async def _read_form(request: Request, limit: int, max_bytes: int) -> FormData:
    # Past 1 MiB the parser spools the file to a temporary file on disk, never all in memory.
    parser = MultiPartParser(
        request.headers, capped_chunks(request.stream(), limit), max_files=1, max_fields=8
    )
    try:
        return await parser.parse()
    except _TooLarge:
        raise PayloadTooLarge(f"The file exceeds the limit of {max_bytes} bytes.") from None
    except _ClientLeft:
        raise ClientClosedRequest("The client closed the connection mid-upload.") from None
    except MultiPartException as exc:
        raise InvalidRequest(f"Could not read the multipart body: {exc.message}"[:300]) from None


def _check_upload_headers(request: Request, limit: int) -> None:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise UnsupportedMediaType(
            "Upload a file as multipart/form-data with the fields 'file' and 'purpose'."
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The file exceeds the limit of {limit - _FRAMING_BYTES} bytes.")


async def _validate(
    state: AppState, services: BatchServices, key: KeyRecord, upload: UploadFile
) -> FileRecord:
    def check(model: str) -> None:
        check_model(state.router, key, model)

    def run() -> FileRecord:
        upload.file.seek(0)
        summary = validate_batch_file(
            upload.file,
            urls=services.urls,
            check_model=check,
            max_lines=state.settings.batches.max_lines,
            max_line_bytes=state.settings.limits.max_body_bytes,
        )
        size = upload.file.tell()
        upload.file.seek(0)
        return FileStore.new(
            key.id,
            "batch",
            (upload.filename or "input.jsonl")[:255],
            size,
            line_count=summary.line_count,
            urls=summary.urls,
        )

    # Parsing every line of a large file takes seconds of CPU: off the event loop.
    return await asyncio.to_thread(run)


async def create_file(request: Request) -> Response:
    state = _state(request)
    services = services_of(request)
    key = await authenticate(state, request)
    limit = state.settings.files.max_bytes + _FRAMING_BYTES
    _check_upload_headers(request, limit)
    form = await _read_form(request, limit, state.settings.files.max_bytes)
    try:
        purpose = form.get("purpose")
        if purpose not in _PURPOSES:
            raise InvalidRequest(
                f"Invalid purpose {str(purpose)[:40]!r}: Sluice accepts files for 'batch'.",
                param="purpose",
                code="invalid_purpose",
            )
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("A file is required in the 'file' field.", param="file")
        if (upload.size or 0) > state.settings.files.max_bytes:
            raise PayloadTooLarge(
                f"The file exceeds the limit of {state.settings.files.max_bytes} bytes."
            )
        record = await _validate(state, services, key, upload)
        await services.storage.put(record.storage_name, upload.file)
    finally:
        await form.close()
    try:
        await services.files.add(record)
    except BaseException:
        await services.storage.delete(record.storage_name)
        raise
    return json_response(record.public())


async def _owned(request: Request) -> tuple[BatchServices, FileRecord]:
    state = _state(request)
    services = services_of(request)
    key = await authenticate(state, request)
    file_id = request.path_params["file_id"]
    record = await services.files.get(file_id, key.id)
    if record is None:
        raise file_not_found(file_id)
    return services, record


async def retrieve_file(request: Request) -> Response:
    _, record = await _owned(request)
    return json_response(record.public())


async def file_content(request: Request) -> Response:
    services, record = await _owned(request)
    chunks = services.storage.read(record.storage_name)
    try:
        first = await anext(chunks, b"")  # a missing object is a 404, not a broken stream
    except FileNotFoundError:
        raise file_not_found(record.id) from None

    async def body() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk

    headers = {"content-length": str(record.bytes)}
    return StreamingResponse(body(), media_type="application/octet-stream", headers=headers)


async def delete_file(request: Request) -> Response:
    state = _state(request)
    services = services_of(request)
    key = await authenticate(state, request)
    file_id = request.path_params["file_id"]
    record = await services.files.delete(file_id, key.id)
    if record is None:
        raise file_not_found(file_id)
    await services.storage.delete(record.storage_name)
    return json_response({"id": record.id, "object": "file", "deleted": True})


def list_params(request: Request, max_limit: int) -> tuple[str | None, int]:
    after = request.query_params.get("after") or None
    raw = request.query_params.get("limit") or "20"
    if not raw.isdigit() or not 1 <= int(raw) <= max_limit:
        raise InvalidRequest(
            f"Invalid 'limit': expected an integer from 1 to {max_limit}.", param="limit"
        )
    return after, int(raw)


async def list_files(request: Request) -> Response:
    state = _state(request)
    services = services_of(request)
    key = await authenticate(state, request)
    after, limit = list_params(request, 10_000)
    order = request.query_params.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    purpose = request.query_params.get("purpose") or None
    if purpose is not None and purpose not in _PURPOSES + _OUTPUT_PURPOSES:
        return json_response(
            {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
        )
    records, more = await services.files.page(
        key.id, purpose=purpose, after=after, limit=limit, newest_first=order == "desc"
    )
    data = [r.public() for r in records]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }
    )


def file_routes() -> list[Route]:
    return [
        Route("/v1/files", create_file, methods=["POST"]),
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    ]

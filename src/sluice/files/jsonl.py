"""Line-by-line validation of a batch input file (pure: no I/O beyond reading the file given).

Each line must be a JSON object ``{"custom_id", "method": "POST", "url", "body"}`` with a
``custom_id`` unique in the file, a ``url`` Sluice serves in batches and a ``body`` object
naming a ``model`` the key may use. The first bad line is reported by its 1-based number, in
an OpenAI-shaped 400 whose ``param`` is ``file``, so a client can fix it without guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from sluice.errors import InvalidRequest, SluiceError

__all__ = ["BatchInput", "validate_batch_file", "line_error"]

ModelCheck = Callable[[str], None]  # raises a SluiceError when the key may not use the model


@dataclass(frozen=True, slots=True)
class BatchInput:
    line_count: int
    urls: tuple[str, ...]  # distinct, in order of first use


def line_error(line: int, message: str, code: str) -> InvalidRequest:
    return InvalidRequest(f"Line {line}: {message}", param="file", code=code)


def _check_line(
    number: int, raw: bytes, urls: Collection[str], seen: set[str], check_model: ModelCheck
) -> str:
    try:
        item: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise line_error(
            number, f"not valid JSON ({str(exc)[:120]}).", "invalid_json_line"
        ) from None
    if not isinstance(item, dict):
        raise line_error(number, "each line must be a JSON object.", "invalid_json_line")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise line_error(number, "'custom_id' must be a non-empty string.", "missing_custom_id")
    if len(custom_id) > 512:
        raise line_error(number, "'custom_id' is longer than 512 characters.", "invalid_custom_id")
    if custom_id in seen:
        raise line_error(
            number,
            f"the custom_id '{custom_id}' is used by an earlier line.",
            "duplicate_custom_id",
        )
    seen.add(custom_id)
    if item.get("method") != "POST":
        raise line_error(number, "'method' must be \"POST\".", "invalid_method")
    url = item.get("url")
    if url not in urls:
        allowed = ", ".join(sorted(urls))
        raise line_error(number, f"'url' must be one of: {allowed}.", "invalid_url")
    body = item.get("body")
    if not isinstance(body, dict):
        raise line_error(number, "'body' must be a JSON object.", "invalid_body")
    if body.get("stream") is True:
        raise line_error(number, "batch lines cannot stream ('body.stream').", "invalid_body")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise line_error(number, "'body.model' must be a non-empty string.", "missing_model")
    try:
        check_model(model)
    except SluiceError as exc:
        raise line_error(number, exc.message, exc.code or "invalid_model") from None
    extra = set(item) - {"custom_id", "method", "url", "body"}
    if extra:
        raise line_error(number, f"unknown field '{sorted(extra)[0]}'.", "unknown_parameter")
    return str(url)


def validate_batch_file(
    source: BinaryIO,
    *,
    urls: Collection[str],
    check_model: ModelCheck,
    max_lines: int,
    max_line_bytes: int,
) -> BatchInput:
    """Read ``source`` from its current position to the end; raise on the first bad line."""
    seen: set[str] = set()
    used: dict[str, None] = {}
    number = 0
    while True:
        # Capped: one giant line must not be read into memory whole.
        raw = source.readline(max_line_bytes + 2)
        if not raw:
            break
        number += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            raise line_error(number, f"longer than {max_line_bytes} bytes.", "line_too_large")
        if not raw.strip():
            raise line_error(number, "empty line.", "invalid_json_line")
        if number > max_lines:
            raise InvalidRequest(
                f"The file has more than {max_lines} lines.", param="file", code="too_many_lines"
            )
        used[_check_line(number, raw, urls, seen, check_model)] = None
    if number == 0:
        raise InvalidRequest("The file is empty.", param="file", code="empty_file")
    return BatchInput(line_count=number, urls=tuple(used))

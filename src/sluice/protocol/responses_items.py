"""``GET /v1/responses/{id}/input_items``: query parameters and one page of a list (pure).

OpenAI's cursor list: ``limit`` (1-100, default 20), ``order`` (``desc`` by default: newest
first), ``after`` (an item id: the page starts after it, in the chosen order); the answer is a
``list`` object with ``first_id``, ``last_id`` and ``has_more``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sluice.errors import InvalidRequest

__all__ = ["PageQuery", "page_query", "item_page"]

_DEFAULT_LIMIT = 20
_MAX_LIMIT = 100


@dataclass(frozen=True, slots=True)
class PageQuery:
    after: str | None = None
    limit: int = _DEFAULT_LIMIT
    order: str = "desc"


def page_query(query: Mapping[str, str]) -> PageQuery:
    limit_text = query.get("limit")
    limit = _DEFAULT_LIMIT
    if limit_text is not None:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= _MAX_LIMIT:
            raise InvalidRequest(
                f"Invalid 'limit': expected an integer between 1 and {_MAX_LIMIT}.",
                param="limit",
                code="invalid_value",
            )
        limit = int(limit_text)
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(
            "Invalid 'order': expected 'asc' or 'desc'.", param="order", code="invalid_value"
        )
    after = query.get("after") or None
    return PageQuery(after=after, limit=limit, order=order)


def item_page(items: Sequence[dict[str, Any]], query: PageQuery) -> dict[str, Any]:
    ordered = list(items) if query.order == "asc" else list(reversed(items))
    start = 0
    if query.after is not None:
        ids = [item.get("id") for item in ordered]
        # An unknown cursor lists nothing rather than starting over.
        start = ids.index(query.after) + 1 if query.after in ids else len(ordered)
    data = ordered[start : start + query.limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else "",
        "last_id": data[-1]["id"] if data else "",
        "has_more": start + query.limit < len(ordered),
    }

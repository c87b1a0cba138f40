"""input_items paging: query parameters (OpenAI's bounds and defaults) and cursor pages."""

from __future__ import annotations

from typing import Any

import pytest

from sluice.errors import InvalidRequest
from sluice.protocol.responses_items import PageQuery, item_page, page_query

ITEMS = [{"id": f"msg_{n}", "type": "message"} for n in range(5)]


def ids(page: dict[str, Any]) -> list[str]:
    return [item["id"] for item in page["data"]]


@pytest.mark.parametrize(
    ("query", "expected", "has_more"),
    [
        (PageQuery(), ["msg_4", "msg_3", "msg_2", "msg_1", "msg_0"], False),  # newest first
        (PageQuery(order="asc"), ["msg_0", "msg_1", "msg_2", "msg_3", "msg_4"], False),
        (PageQuery(order="asc", limit=2), ["msg_0", "msg_1"], True),
        (PageQuery(order="asc", limit=2, after="msg_1"), ["msg_2", "msg_3"], True),
        (PageQuery(order="asc", limit=2, after="msg_3"), ["msg_4"], False),
        (PageQuery(limit=2, after="msg_3"), ["msg_2", "msg_1"], True),
        (PageQuery(after="msg_0"), [], False),
        (PageQuery(after="unknown"), [], False),
        (PageQuery(limit=5), ["msg_4", "msg_3", "msg_2", "msg_1", "msg_0"], False),
    ],
)
def test_pages(query: PageQuery, expected: list[str], has_more: bool) -> None:
    page = item_page(ITEMS, query)
    assert page["object"] == "list" and ids(page) == expected and page["has_more"] is has_more
    assert page["first_id"] == (expected[0] if expected else "")
    assert page["last_id"] == (expected[-1] if expected else "")


def test_query_defaults_and_values() -> None:
    assert page_query({}) == PageQuery(after=None, limit=20, order="desc")
    assert page_query({"limit": "100", "order": "asc", "after": "msg_1"}) == PageQuery(
        after="msg_1", limit=100, order="asc"
    )


@pytest.mark.parametrize(
    ("query", "param"),
    [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "x"}, "limit"),
     ({"limit": "-1"}, "limit"), ({"order": "newest"}, "order")],
)  # fmt: skip
def test_bad_queries(query: dict[str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        page_query(query)
    assert caught.value.param == param and caught.value.http_status == 400

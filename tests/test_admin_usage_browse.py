"""Admin API usage browsing: daily series by dimension, filtered pages, CSV export."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator

import httpx
import pytest

from sluice.storage.usage_sink import UsageRow
from tests.support import ADMIN_KEY, Gateway

DAY = 86_400.0


@pytest.fixture
def admin(gateway: Gateway) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as client:
        yield client


def _row(key_id: str, model: str, channel: str, status: int, cost: int, at: float) -> UsageRow:
    return UsageRow(
        request_id=f"req-{model}-{at}", key_id=key_id, endpoint="chat", model=model,
        upstream_model=model, channel=channel, prompt_tokens=10, cached_tokens=0,
        completion_tokens=5, cost_micro=cost, status=status,
        error_code=None if status < 400 else "upstream_error", latency_ms=100.0 + cost / 1000,
        ttft_ms=None, stream=False, created_at=at,
    )  # fmt: skip


def _seed(gateway: Gateway) -> tuple[str, str, float]:
    alice = gateway.key_record(gateway.create_key("alice")).id
    bob = gateway.key_record(gateway.create_key("bob")).id
    today = (time.time() // DAY) * DAY + 60
    rows = [
        _row(alice, "m-a", "ch1", 200, 1000, today - DAY),
        _row(alice, "m-a", "ch1", 200, 2000, today),
        _row(alice, "m-b", "ch2", 502, 0, today),
        _row(bob, "m-b", "ch2", 200, 4000, today),
        _row(bob, "m-b", "ch2", 429, 0, today + 1),
    ]
    for row in rows:
        gateway.state.usage_sink.record(row)
    gateway.flush()
    return alice, bob, today


def test_series_by_day_and_dimension(gateway: Gateway, admin: httpx.Client) -> None:
    alice, bob, today = _seed(gateway)
    by_day = admin.get("/admin/usage/series").json()
    assert by_day["by"] is None
    assert [(d["requests"], d["errors"], d["cost_micro"]) for d in by_day["data"]] == [
        (1, 0, 1000),
        (4, 2, 6000),
    ]
    by_model = admin.get("/admin/usage/series", params={"by": "model"}).json()["data"]
    today_label = by_day["data"][1]["day"]
    found = sorted((d["day"] == today_label, d["model"], d["requests"]) for d in by_model)
    assert found == [(False, "m-a", 1), (True, "m-a", 1), (True, "m-b", 3)]
    by_key = admin.get("/admin/usage/series", params={"by": "key", "key": "bob"}).json()["data"]
    assert [(d["key"], d["requests"], d["cost_usd"]) for d in by_key] == [(bob, 2, 0.004)]
    by_channel = admin.get(
        "/admin/usage/series", params={"by": "channel", "since": today - 10}
    ).json()["data"]
    assert {d["channel"]: d["requests"] for d in by_channel} == {"ch1": 1, "ch2": 3}
    bad = admin.get("/admin/usage/series", params={"by": "colour"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "by"
    assert alice != bob


def test_rows_paged_and_filtered(gateway: Gateway, admin: httpx.Client) -> None:
    alice, _, today = _seed(gateway)
    page = admin.get("/admin/usage/rows", params={"limit": 2}).json()
    assert page["total"] == 5 and page["has_more"] is True and len(page["data"]) == 2
    assert page["data"][0]["status"] == 429  # newest first
    rest = admin.get("/admin/usage/rows", params={"limit": 2, "offset": 4}).json()
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    errors = admin.get("/admin/usage/rows", params={"status": "error"}).json()
    assert sorted(r["status"] for r in errors["data"]) == [429, 502]
    exact = admin.get("/admin/usage/rows", params={"status": "502", "key": alice}).json()
    assert [r["model"] for r in exact["data"]] == ["m-b"]
    ranged = admin.get(
        "/admin/usage/rows", params={"until": today - 1, "model": "m-a", "channel": "ch1"}
    ).json()
    assert [r["cost_micro"] for r in ranged["data"]] == [1000]
    assert admin.get("/admin/usage/rows", params={"status": "maybe"}).status_code == 400
    assert admin.get("/admin/usage/rows", params={"limit": 0}).status_code == 400
    assert admin.get("/admin/usage/rows", params={"key": "nobody"}).status_code == 404
    assert httpx.get(f"{gateway.url}/admin/usage/rows").status_code == 401


def test_csv_export_of_filtered_rows(gateway: Gateway, admin: httpx.Client) -> None:
    _seed(gateway)
    response = admin.get("/admin/usage/export.csv", params={"model": "m-b"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert len(table) == 3 and {r["model"] for r in table} == {"m-b"}
    assert sorted(int(r["cost_micro"]) for r in table) == [0, 0, 4000]
    assert {"prompt_tokens", "latency_ms", "ttft_ms", "images"} <= set(table[0])

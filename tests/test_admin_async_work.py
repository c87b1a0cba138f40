"""Admin API for asynchronous work: ``GET /admin/tasks`` and ``GET /admin/batches``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.async_work_rows import UPSTREAM_SECRETS, seed_async_work
from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.scale import conftest as _scale
from tests.support import ADMIN_KEY, Gateway

pg_url = _scale.pg_url


# Both databases: the batch cost query matches request ids by prefix, which PostgreSQL's
# collations and SQLite's byte order would each be free to get wrong in their own way.
@pytest.fixture(params=["sqlite", "postgresql"])
def gateway(
    request: pytest.FixtureRequest, gateway_factory: GatewayFactory, fake_openai: FakeOpenAI
) -> Gateway:
    extra: dict[str, Any] = {}
    if request.param == "postgresql":
        extra["database_url"] = request.getfixturevalue("pg_url")
    return gateway_factory([openai_channel(fake_openai)], **extra)


@pytest.fixture
def admin(gateway: Gateway) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as client:
        yield client


def test_tasks_newest_first_with_state_and_money(gateway: Gateway, admin: httpx.Client) -> None:
    seeded = seed_async_work(gateway)
    reply = admin.get("/admin/tasks")
    assert reply.status_code == 200
    body = reply.json()
    assert body["total"] == 3 and body["has_more"] is False
    assert [t["id"] for t in body["data"]] == [seeded.video, seeded.song, seeded.image]
    video, song, image = body["data"]
    assert (video["key_id"], video["key_name"], video["kind"], video["action"]) == (
        seeded.bob, "bob", "video", "create",
    )  # fmt: skip
    assert video["state"] == "failure" and video["fail_reason"] == "upstream refused the prompt"
    assert video["reserved_usd"] == 0.2 and video["cost_usd"] == 0.0
    assert song["state"] == "in_progress" and song["progress"] == 40
    assert song["cost_usd"] is None and song["reserved_micro"] == 100_000  # not ended yet
    assert image["cost_micro"] == 40_000 and image["mode"] == "fast"
    assert image["finished_at"] == pytest.approx(seeded.now - 200)
    assert image["channel"] == "async-ch" and image["deleted"] is False
    for secret in UPSTREAM_SECRETS:
        assert secret not in reply.text
    assert "upstream_id" not in image and "callback_secret" not in image


def test_task_filters_and_pages(gateway: Gateway, admin: httpx.Client) -> None:
    seeded = seed_async_work(gateway)

    def ids(**params: str | float) -> list[str]:
        reply = admin.get("/admin/tasks", params=params)
        assert reply.status_code == 200, reply.text
        return [t["id"] for t in reply.json()["data"]]

    assert ids(key="alice") == [seeded.song, seeded.image]
    assert ids(key=seeded.bob) == [seeded.video]
    assert ids(kind="suno") == [seeded.song]
    assert ids(state="success") == [seeded.image]
    assert ids(since=seeded.now - 150) == [seeded.video, seeded.song]
    assert ids(until=seeded.now - 150) == [seeded.image]
    page = admin.get("/admin/tasks", params={"limit": 1, "offset": 1}).json()
    assert [t["id"] for t in page["data"]] == [seeded.song]
    assert page["total"] == 3 and page["has_more"] is True


def test_batches_with_counts_and_cost_so_far(gateway: Gateway, admin: httpx.Client) -> None:
    seeded = seed_async_work(gateway)
    reply = admin.get("/admin/batches")
    assert reply.status_code == 200
    body = reply.json()
    assert [b["id"] for b in body["data"]] == [seeded.running, seeded.done]
    running, done = body["data"]
    assert (running["key_name"], running["status"]) == ("bob", "in_progress")
    # a running batch's counts are its lines ended so far, not the row's (written at the end)
    assert running["request_counts"] == {"total": 4, "completed": 2, "failed": 1}
    assert running["cost_micro"] == 7 and running["ended_at"] is None
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    # only its own lines' usage rows: not batch_aaaa1's, nor a request id without a line
    assert done["cost_micro"] == 300 and done["cost_usd"] == 0.0003
    assert done["completed_at"] == pytest.approx(seeded.now - 3000)
    assert done["ended_at"] == done["completed_at"]
    assert done["endpoint"] == "/v1/chat/completions"

    def ids(**params: str | float) -> list[str]:
        reply = admin.get("/admin/batches", params=params)
        assert reply.status_code == 200, reply.text
        return [b["id"] for b in reply.json()["data"]]

    assert ids(key="alice") == [seeded.done]
    assert ids(status="in_progress") == [seeded.running]
    assert ids(status="cancelled") == []
    assert ids(limit=1, offset=1) == [seeded.done]


def test_bad_filters_are_openai_errors(gateway: Gateway, admin: httpx.Client) -> None:
    seed_async_work(gateway)
    cases = [
        ("/admin/tasks", {"kind": "opera"}, 400, "kind"),
        ("/admin/tasks", {"state": "done"}, 400, "state"),
        ("/admin/tasks", {"since": "yesterday"}, 400, "since"),
        ("/admin/tasks", {"limit": "0"}, 400, "limit"),
        ("/admin/batches", {"status": "running"}, 400, "status"),
        ("/admin/batches", {"offset": "-1"}, 400, "offset"),
    ]
    for path, params, status, param in cases:
        reply = admin.get(path, params=params)
        assert reply.status_code == status, (path, params)
        assert reply.json()["error"]["param"] == param
    for path in ("/admin/tasks", "/admin/batches"):
        missing = admin.get(path, params={"key": "nobody"})
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "key_not_found"


def test_admin_key_required(gateway: Gateway) -> None:
    secret = gateway.create_key("holder")
    for path in ("/admin/tasks", "/admin/batches"):
        assert httpx.get(gateway.url + path).status_code == 401
        bearer = {"Authorization": f"Bearer {secret}"}
        refused = httpx.get(gateway.url + path, headers=bearer)
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_admin_key"

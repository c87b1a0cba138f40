"""The console's tasks and batches pages: what an operator sees, filters and pages, refusals,
Chinese, and the key holder's own tasks and batches on their page."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import httpx
from sqlalchemy import insert, update

from sluice.storage.schema import batches, tasks
from tests.async_work_rows import UPSTREAM_SECRETS, seed_async_work
from tests.support import ADMIN_KEY, Gateway


@contextlib.contextmanager
def _signed_in(gateway: Gateway, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        form = client.get("/console/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        reply = client.post("/console/sign-in", data={"csrf": token[1], "key": key})
        assert reply.status_code == 303, reply.text
        yield client


def _row(page: str, attribute: str, ident: str) -> str:
    found = re.search(rf'<tr[^>]*{attribute}="{re.escape(ident)}"[^>]*>(.*?)</tr>', page, re.S)
    assert found is not None, ident
    return found[1]


def _shown(page: str, attribute: str) -> list[str]:
    return re.findall(rf'{attribute}="([^"]+)"', page)


def test_operator_sees_tasks_with_state_and_cost(gateway: Gateway) -> None:
    seeded = seed_async_work(gateway)
    with _signed_in(gateway, ADMIN_KEY) as admin:
        page = admin.get("/console/tasks")
        assert page.status_code == 200
        assert 'href="/console/tasks" class="on"' in page.text  # linked from the nav
        assert _shown(page.text, "data-task") == [seeded.video, seeded.song, seeded.image]
        image = _row(page.text, "data-task", seeded.image)
        assert "success" in image and "$0.04" in image and "$0.05" in image and "alice" in image
        video = _row(page.text, "data-task", seeded.video)
        assert "failure" in video and "upstream refused the prompt" in video and "bob" in video
        song = _row(page.text, "data-task", seeded.song)
        assert "in_progress" in song and "40%" in song
        assert re.search(r'class="cost">—<', song)  # no cost until it ends
        for secret in UPSTREAM_SECRETS:
            assert secret not in page.text

        def shown(**params: str) -> list[str]:
            reply = admin.get("/console/tasks", params=params)
            assert reply.status_code == 200
            return _shown(reply.text, "data-task")

        assert shown(key="alice") == [seeded.song, seeded.image]
        assert shown(kind="video") == [seeded.video]
        assert shown(state="success", key="alice") == [seeded.image]
        refused = admin.get("/console/tasks", params={"kind": "opera"})
        assert refused.status_code == 200 and "Refused:" in refused.text  # shown, not a 500
        assert admin.get("/console/tasks", params={"page": "x"}).status_code == 200


def test_operator_sees_batches_with_counts_and_cost(gateway: Gateway) -> None:
    seeded = seed_async_work(gateway)
    with _signed_in(gateway, ADMIN_KEY) as admin:
        page = admin.get("/console/batches")
        assert page.status_code == 200 and 'href="/console/batches" class="on"' in page.text
        assert _shown(page.text, "data-batch") == [seeded.running, seeded.done]
        done = _row(page.text, "data-batch", seeded.done)
        assert "completed" in done and "2 / 1 / 3" in done and "$0.000300" in done
        running = _row(page.text, "data-batch", seeded.running)
        assert "in_progress" in running and "2 / 1 / 4" in running and "bob" in running
        filtered = admin.get("/console/batches", params={"status": "completed"})
        assert _shown(filtered.text, "data-batch") == [seeded.done]
        by_key = admin.get("/console/batches", params={"key": "bob"})
        assert _shown(by_key.text, "data-batch") == [seeded.running]


def test_pages_have_no_inline_script_and_speak_chinese(gateway: Gateway) -> None:
    seed_async_work(gateway)
    with _signed_in(gateway, ADMIN_KEY) as admin:
        for path in ("/console/tasks", "/console/batches"):
            page = admin.get(path)
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
            assert scripts and all('src="' in a and not body.strip() for a, body in scripts)
            assert " style=" not in page.text and re.search(r"\son[a-z]+=", page.text) is None
        admin.get("/console/lang", params={"to": "zh", "next": "/console/tasks"})
        tasks = admin.get("/console/tasks").text
        assert "失败原因" in tasks and "进行中" in tasks and 'lang="zh-CN"' in tasks
        listed = admin.get("/console/batches").text
        assert "当前费用" in listed and "已完成" in listed and "进行中" in listed


def test_many_tasks_are_paged(gateway: Gateway) -> None:
    key = gateway.key_record(gateway.create_key("many")).id
    rows = [
        {"id": f"t{n:03d}", "key_id": key, "kind": "suno", "action": "music", "model": "m",
         "channel": "c", "upstream_id": "u", "state": "submitted", "created_at": 1000.0 + n,
         "updated_at": 1000.0 + n}
        for n in range(60)
    ]  # fmt: skip

    async def write() -> None:
        async with gateway.state.engine.begin() as conn:
            await conn.execute(insert(tasks), rows)

    gateway.call(write())
    with _signed_in(gateway, ADMIN_KEY) as admin:
        first = admin.get("/console/tasks")
        assert _shown(first.text, "data-task")[:2] == ["t059", "t058"]
        assert len(_shown(first.text, "data-task")) == 50 and 'rel="next"' in first.text
        second = admin.get("/console/tasks", params={"page": 2})
        assert _shown(second.text, "data-task") == [f"t{n:03d}" for n in range(9, -1, -1)]


def test_key_holders_are_refused_and_see_their_own_work(gateway: Gateway) -> None:
    seeded = seed_async_work(gateway)
    alice = gateway.create_key("alice-2")
    with _signed_in(gateway, alice) as holder:
        for path in ("/console/tasks", "/console/batches"):
            assert holder.get(path).status_code == 403, path
        me = holder.get("/console/me")
        assert me.status_code == 200 and 'data-task="' not in me.text  # a key without tasks
    secret = gateway.create_key("owner")
    owner = gateway.key_record(secret).id

    # hand bob's work to this key, whose secret the test knows
    async def move() -> None:
        async with gateway.state.engine.begin() as conn:
            await conn.execute(update(tasks).where(tasks.c.key_id == seeded.bob)
                               .values(key_id=owner))  # fmt: skip
            await conn.execute(update(batches).where(batches.c.key_id == seeded.bob)
                               .values(key_id=owner))  # fmt: skip

    gateway.call(move())
    with _signed_in(gateway, secret) as holder:
        own = holder.get("/console/me").text
        assert _shown(own, "data-task") == [seeded.video]
        assert _shown(own, "data-batch") == [seeded.running]
        assert "async-ch" not in own  # the channel is the operator's business
        assert seeded.image not in own and seeded.done not in own

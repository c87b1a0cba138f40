"""Midjourney through Sluice (midjourney-proxy protocol): the whole flow, money, isolation."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import orjson

from tests.conftest import GatewayFactory
from tests.fakes.midjourney_upstream import IMAGE_BYTES, FakeMidjourney
from tests.support import Gateway, free_port
from tests.tasks.conftest import FAST_TASKS, client, mj_channel, wait_for

IMAGINE_PRICE = 50_000  # mj-fast in prices.yaml: $0.05
UPSCALE_PRICE = 20_000
DESCRIBE_PRICE = 10_000


def _submit(http: httpx.Client, route: str, body: dict[str, Any], prefix: str = "") -> Any:
    response = http.post(f"{prefix}/mj/submit/{route}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _finished(http: httpx.Client, task_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        task: dict[str, Any] = http.get(f"/mj/task/{task_id}/fetch").json()
        return task if task["status"] in ("SUCCESS", "FAILURE") else None

    found: dict[str, Any] = wait_for(check)
    return found


def test_imagine_fetch_action_describe(mj_gateway: Gateway, fake_mj: FakeMidjourney) -> None:
    key = mj_gateway.create_key("mj", budget_micro=1_000_000)
    with client(mj_gateway, key, header="mj-api-secret") as http:
        submitted = _submit(http, "imagine", {"prompt": "a cat in a hat", "state": "mine"})
        assert submitted["code"] == 1 and submitted["description"] == "Submit success"
        task_id = submitted["result"]
        assert task_id.isdigit() and task_id not in fake_mj.tasks
        first = http.get(f"/mj/task/{task_id}/fetch").json()
        assert first["id"] == task_id and first["status"] in ("SUBMITTED", "IN_PROGRESS")
        assert first["state"] == "mine" and first["action"] == "IMAGINE"
        done = _finished(http, task_id)
        assert done["status"] == "SUCCESS" and done["progress"] == "100%"
        assert done["imageUrl"].endswith(".png") and done["finishTime"] >= done["submitTime"]
        text = orjson.dumps(done).decode()
        assert "up-1" not in text and "upstream-message" not in text  # no upstream ids
        button = done["buttons"][0]["customId"]

        upscale = _submit(http, "action", {"taskId": task_id, "customId": button})
        assert upscale["code"] == 1
        upscaled = _finished(http, upscale["result"])
        assert upscaled["status"] == "SUCCESS" and upscaled["action"] == "UPSCALE"
        # The upstream got its own id for the parent, never Sluice's.
        assert fake_mj.submits[1][1]["taskId"] == "up-1"

        described = _submit(http, "describe", {"base64": "data:image/png;base64,AAAA"})
        assert _finished(http, described["result"])["status"] == "SUCCESS"
        seed = http.get(f"/mj/task/{task_id}/image-seed").json()
        assert seed == {"code": 1, "description": "success", "result": "4242", "properties": {}}

    rows = mj_gateway.usage_rows(key)
    assert [(r["endpoint"], r["model"], r["cost_micro"], r["calls"]) for r in rows] == [
        ("mj.imagine", "mj-fast-imagine", IMAGINE_PRICE, 1),
        ("mj.upscale", "mj-fast-upscale", UPSCALE_PRICE, 1),
        ("mj.describe", "mj-fast-describe", DESCRIBE_PRICE, 1),
    ]
    total = IMAGINE_PRICE + UPSCALE_PRICE + DESCRIBE_PRICE
    assert mj_gateway.key_record(key).spent_micro == total
    metrics = httpx.get(f"{mj_gateway.url}/metrics").text
    assert 'endpoint="mj.upscale"' in metrics and 'status="200"' in metrics
    record = mj_gateway.key_record(key)
    assert mj_gateway.call(mj_gateway.state.ledger.spent(record.id, 0)) == total


def test_failed_task_is_refunded_to_the_micro_dollar(
    mj_gateway: Gateway, fake_mj: FakeMidjourney
) -> None:
    key = mj_gateway.create_key("mj", budget_micro=70_000)
    record = mj_gateway.key_record(key)
    with client(mj_gateway, key) as http:
        task_id = _submit(http, "imagine", {"prompt": "this will fail"})["result"]
        # While it runs, its price is spent: a second imagine does not fit the budget.
        assert mj_gateway.key_record(key).spent_micro == IMAGINE_PRICE
        refused = http.post("/mj/submit/imagine", json={"prompt": "another"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "insufficient_quota"
        done = _finished(http, task_id)
        assert done["status"] == "FAILURE" and done["failReason"] == "the upstream job failed"
    assert mj_gateway.key_record(key).spent_micro == 0
    assert mj_gateway.call(mj_gateway.state.ledger.spent(record.id, 0)) == 0
    (row,) = mj_gateway.usage_rows(key)
    assert (row["cost_micro"], row["status"], row["error_code"]) == (0, 502, "task_failed")
    with client(mj_gateway, key) as http:  # the whole budget is there again
        assert _submit(http, "imagine", {"prompt": "fits again"})["code"] == 1


def test_another_keys_task_is_not_found(mj_gateway: Gateway) -> None:
    owner, other = mj_gateway.create_key("owner"), mj_gateway.create_key("other")
    with client(mj_gateway, owner) as http:
        task_id = _submit(http, "imagine", {"prompt": "mine"})["result"]
        assert http.get(f"/mj/task/{task_id}/fetch").status_code == 200
    with client(mj_gateway, other) as http:
        stolen = http.get(f"/mj/task/{task_id}/fetch")
        missing = http.get("/mj/task/123456789/fetch")
        assert stolen.status_code == missing.status_code == 404
        assert stolen.json() == missing.json() == {
            "code": 4, "description": "task_no_found", "result": None, "properties": {}
        }  # fmt: skip
        assert http.post("/mj/task/list-by-condition", json={"ids": [task_id]}).json() == []
        action = http.post("/mj/submit/action", json={"taskId": task_id, "customId": "MJ::x"})
        assert action.json()["code"] == 4
        assert http.get(f"/mj/task/{task_id}/image-seed").status_code == 404
    with client(mj_gateway, owner) as http:
        listed = http.post("/mj/task/list-by-condition", json={"ids": [task_id, "nope"]}).json()
        assert [t["id"] for t in listed] == [task_id]


def test_refusals_cost_nothing_and_queue_full_fails_over(
    gateway_factory: GatewayFactory, fake_mj: FakeMidjourney, loop_thread: Any
) -> None:
    busy = loop_thread.run(FakeMidjourney().start())
    try:
        busy.busy = True
        channels = [mj_channel(busy, "busy", priority=10), mj_channel(fake_mj, "spare")]
        gateway = gateway_factory(channels, tasks=FAST_TASKS)
        key = gateway.create_key("mj")
        with client(gateway, key) as http:
            banned = _submit(http, "imagine", {"prompt": "something banned"})
            assert banned == {
                "code": 24, "description": "banned prompt", "result": None, "properties": {}
            }  # fmt: skip
            assert len(busy.submits) == 1 and len(fake_mj.submits) == 1  # refusals: not retried
            invalid = http.post("/mj/submit/imagine", json={"prompt": ""})
            assert invalid.status_code == 400 and invalid.json()["code"] == 4
            moved = _submit(http, "imagine", {"prompt": "queue elsewhere"})
            assert moved["code"] == 1 and len(busy.submits) == 2 and len(fake_mj.submits) == 2
        assert gateway.key_record(key).spent_micro == IMAGINE_PRICE
    finally:
        loop_thread.run(busy.stop())


def test_mode_prefix_prices_and_routes_the_mode(
    mj_gateway: Gateway, fake_mj: FakeMidjourney
) -> None:
    key = mj_gateway.create_key("mj")
    with client(mj_gateway, key) as http:
        task_id = _submit(http, "imagine", {"prompt": "slowly"}, prefix="/mj-relax")["result"]
        assert fake_mj.submits[-1][0] == "/mj-relax/mj/submit/imagine"
        assert http.get(f"/mj-relax/mj/task/{task_id}/fetch").json()["mode"] == "RELAX"
        _finished(http, task_id)
        unknown = http.post("/mj-warp/mj/submit/imagine", json={"prompt": "x"})
        assert unknown.status_code == 400
    (row,) = mj_gateway.usage_rows(key)
    assert (row["model"], row["cost_micro"]) == ("mj-relax-imagine", 25_000)


def test_stuck_task_fails_and_is_released(
    gateway_factory: GatewayFactory, fake_mj: FakeMidjourney
) -> None:
    tasks = {**FAST_TASKS, "stuck_after_s": {"midjourney": 1.0}}
    gateway = gateway_factory([mj_channel(fake_mj)], tasks=tasks)
    key = gateway.create_key("mj", budget_micro=100_000)
    with client(gateway, key) as http:
        task_id = _submit(http, "imagine", {"prompt": "hang forever"})["result"]
        done = _finished(http, task_id)
    assert done["status"] == "FAILURE" and "did not finish" in done["failReason"]
    (row,) = gateway.usage_rows(key)
    assert (row["cost_micro"], row["status"], row["error_code"]) == (0, 504, "task_stuck")
    assert gateway.key_record(key).spent_micro == 0


def test_upstream_callbacks_advance_tasks_without_polling(
    gateway_factory: GatewayFactory, fake_mj: FakeMidjourney
) -> None:
    channel = mj_channel(fake_mj, poll_interval_s=600, upstream_callbacks=True)
    gateway = gateway_factory([channel], tasks=FAST_TASKS)
    # The public address is the gateway's own, known only once it listens: set it now.
    state = gateway.state
    tasks = msgspec.structs.replace(state.settings.tasks, public_url=gateway.url)
    state.settings = msgspec.structs.replace(state.settings, tasks=tasks)
    key = gateway.create_key("mj")
    with client(gateway, key) as http:
        task_id = _submit(http, "imagine", {"prompt": "call me back"})["result"]
        hook = fake_mj.submits[-1][1]["notifyHook"]
        assert hook.startswith(f"{gateway.url}/tasks/callback/{task_id}/")
        done = _finished(http, task_id)
        assert done["status"] == "SUCCESS"
        forged = httpx.post(f"{gateway.url}/tasks/callback/{task_id}/wrong", json={})
        assert forged.status_code == 404
    assert fake_mj.fetches == 0  # every change came by callback
    assert [r["cost_micro"] for r in gateway.usage_rows(key)] == [IMAGINE_PRICE]


def test_proxied_results_are_streamed_through_sluice(
    gateway_factory: GatewayFactory, fake_mj: FakeMidjourney
) -> None:
    gateway = gateway_factory([mj_channel(fake_mj, proxy_results=True)], tasks=FAST_TASKS)
    key = gateway.create_key("mj")
    with client(gateway, key) as http:
        done = _finished(http, _submit(http, "imagine", {"prompt": "proxied"})["result"])
    url = done["imageUrl"]
    assert url.startswith(f"{gateway.url}/tasks/") and str(fake_mj.port) not in url
    image = httpx.get(url)
    assert image.status_code == 200 and image.content == IMAGE_BYTES
    assert image.headers["content-type"] == "image/png"
    assert httpx.get(url.replace("sig=", "sig=0")).status_code == 404


def test_blend_shorten_and_modal_routes(mj_gateway: Gateway, fake_mj: FakeMidjourney) -> None:
    key = mj_gateway.create_key("mj")
    with client(mj_gateway, key) as http:
        blend = _submit(
            http, "blend", {"base64Array": ["data:a", "data:b"], "dimensions": "SQUARE"}
        )
        shorten = _submit(http, "shorten", {"prompt": "a very long prompt"})
        assert blend["code"] == shorten["code"] == 1
        assert http.post("/mj/submit/blend", json={"base64Array": ["one"]}).status_code == 400
        assert http.post("/mj/submit/modal", json={"taskId": "123"}).json()["code"] == 4
        modal = _submit(http, "modal", {"taskId": blend["result"], "prompt": "more"})
        assert modal["code"] == 1
        assert [path for path, _ in fake_mj.submits] == [
            "/mj/submit/blend", "/mj/submit/shorten", "/mj/submit/modal"
        ]  # fmt: skip
        assert fake_mj.submits[2][1]["taskId"] == "up-1"  # the parent's upstream id
        for task_id in (blend["result"], shorten["result"], modal["result"]):
            assert _finished(http, task_id)["status"] == "SUCCESS"
    models = sorted(r["model"] for r in mj_gateway.usage_rows(key))
    assert models == ["mj-fast-blend", "mj-fast-modal", "mj-fast-shorten"]


def test_an_unreachable_channel_fails_over_and_the_task_stays_pinned(
    gateway_factory: GatewayFactory, fake_mj: FakeMidjourney
) -> None:
    dead = {
        **mj_channel(fake_mj, "dead", priority=10),
        "base_url": f"http://127.0.0.1:{free_port()}",
    }
    gateway = gateway_factory([dead, mj_channel(fake_mj, "alive")], tasks=FAST_TASKS)
    key = gateway.create_key("mj")
    with client(gateway, key) as http:
        task_id = _submit(http, "imagine", {"prompt": "elsewhere"})["result"]
        done = _finished(http, task_id)
        action = _submit(
            http, "action", {"taskId": task_id, "customId": done["buttons"][4]["customId"]}
        )
        assert _finished(http, action["result"])["action"] == "VARIATION"
    rows = gateway.usage_rows(key)
    assert [r["channel"] for r in rows] == ["alive", "alive"]

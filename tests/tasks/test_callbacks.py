"""Client callbacks (notifyHook): every status change, signed with the key's secret, guarded."""

from __future__ import annotations

import hashlib
import hmac

import orjson

from tests.conftest import GatewayFactory
from tests.fakes.midjourney_upstream import FakeMidjourney
from tests.support import Gateway
from tests.tasks.conftest import FAST_TASKS, Receiver, client, mj_channel, wait_for


def test_callbacks_carry_every_change_and_verify(
    mj_gateway: Gateway, fake_mj: FakeMidjourney, receiver: Receiver
) -> None:
    key = mj_gateway.create_key("hooked")
    other = mj_gateway.create_key("other")
    with client(mj_gateway, key) as http:
        secret = http.get("/tasks/callback-secret").json()
        submitted = http.post(
            "/mj/submit/imagine", json={"prompt": "ring me", "notifyHook": receiver.url}
        ).json()
        task_id = submitted["result"]
    with client(mj_gateway, other) as http:
        others_secret = http.get("/tasks/callback-secret").json()["secret"]
    assert secret["header"] == "X-Sluice-Signature" and others_secret != secret["secret"]

    def statuses() -> list[str]:
        return [orjson.loads(body)["status"] for _, body in receiver.received]

    wait_for(lambda: "SUCCESS" in statuses())
    assert statuses()[-1] == "SUCCESS" and "IN_PROGRESS" in statuses()
    assert len(statuses()) == len(set(statuses()))  # once per change
    for headers, body in receiver.received:
        expected = hmac.new(secret["secret"].encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Sluice-Signature"] == f"sha256={expected}"
        forged = hmac.new(others_secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Sluice-Signature"] != f"sha256={forged}"
        task = orjson.loads(body)
        assert task["id"] == task_id and "up-" not in body.decode()
    # The upstream never learns the client's callback URL.
    assert all("notifyHook" not in b or b["notifyHook"] != receiver.url for _, b in fake_mj.submits)


def test_private_callback_urls_are_refused_by_default(
    gateway_factory: GatewayFactory, fake_mj: FakeMidjourney, receiver: Receiver
) -> None:
    tasks = {**FAST_TASKS, "allow_private_callback_urls": False}
    gateway = gateway_factory([mj_channel(fake_mj)], tasks=tasks)
    key = gateway.create_key("hooked")
    with client(gateway, key) as http:
        for url in (receiver.url, "http://169.254.169.254/latest", "ftp://example.com/x"):
            refused = http.post("/mj/submit/imagine", json={"prompt": "x", "notifyHook": url})
            assert refused.status_code == 400 and refused.json()["code"] == 4, url
    assert fake_mj.submits == [] and gateway.key_record(key).spent_micro == 0

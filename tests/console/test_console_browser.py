"""The console in a real headless Chromium: the proof list of issue 20, end to end.

One operator's afternoon, in order: sign in, create a key and read its secret from the page,
call Sluice with it through the openai SDK, find the request in the usage log and in the
overview's total, lower the key's budget (429 once spent), disable it (401), add a channel
pointing at a fake upstream and serve a request through it; then the key holder signs in and
sees the balance, switches to Chinese, and cannot reach an operator's page; a POST without the
CSRF token is refused. Screenshots of each page (English and Chinese) land in docs/img/ when
SLUICE_UPDATE_SCREENSHOTS=1, else in the test's temporary directory.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import pytest

from tests.async_work_rows import seed_async_work
from tests.conftest import GatewayFactory, openai_channel
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support import ADMIN_KEY, Gateway, LoopThread

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

REPO = Path(__file__).resolve().parents[2]
CHAT: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def second_upstream(loop_thread: LoopThread) -> Iterator[FakeOpenAI]:
    fake = loop_thread.run(FakeOpenAI().start())
    yield fake
    loop_thread.run(fake.stop())


@pytest.fixture
def console_gateway(gateway_factory: GatewayFactory, fake_openai: FakeOpenAI) -> Gateway:
    return gateway_factory([openai_channel(fake_openai, models=["test-model"])])


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[Page, str], None]:
    keep = os.environ.get("SLUICE_UPDATE_SCREENSHOTS") == "1"
    folder = REPO / "docs" / "img" if keep else tmp_path / "img"
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> None:
        page.screenshot(path=str(folder / f"console-{name}.png"), full_page=True)
        assert (folder / f"console-{name}.png").stat().st_size > 1000

    return take


def _context(browser: Browser, width: int = 1280) -> BrowserContext:
    context = browser.new_context(viewport={"width": width, "height": 900}, locale="en-US")
    context.set_default_timeout(15_000)
    return context


def _sign_in(page: Page, gateway: Gateway, key: str) -> None:
    page.goto(gateway.url + "/")
    assert page.url.endswith("/console/sign-in")
    page.fill("#key", key)
    page.click("#sign-in")


def _requests_total(page: Page, gateway: Gateway) -> int:
    page.goto(gateway.url + "/console/overview")
    return int(page.inner_text("#chart-requests-total").replace(",", ""))


def _client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)


def test_operator_and_key_holder_in_a_browser(
    browser: Browser,
    console_gateway: Gateway,
    second_upstream: FakeOpenAI,
    shots: Callable[[Page, str], None],
) -> None:
    gateway = console_gateway
    admin_context = _context(browser)
    page = admin_context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations

    # Sign in: "/" lands on the sign-in page; a wrong key is refused, the admin key is not.
    _sign_in(page, gateway, "sk-admin-wrong-wrong-wrong-wrong-wrong")
    assert page.url.endswith("/console/sign-in")
    assert "not accepted" in page.inner_text("main")
    _sign_in(page, gateway, ADMIN_KEY)
    assert page.url.endswith("/console/overview")
    cookie = next(c for c in admin_context.cookies() if c["name"] == "sluice_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    before = _requests_total(page, gateway)

    # Create a key; its secret is on the page once, with a copy button.
    page.goto(gateway.url + "/console/keys")
    page.fill("#f-name", "browser-key")
    page.click("#create-key-submit")
    secret = page.inner_text("#new-secret").strip()
    assert re.fullmatch(r"sk-[A-Za-z0-9_\-]{20,}", secret)
    assert page.is_visible("#copy-secret")
    page.goto(gateway.url + "/console/keys")
    assert secret not in page.content()  # shown once only

    # Call Sluice with it through the openai SDK.
    with _client(gateway, secret) as client:
        reply = client.chat.completions.create(model="test-model", messages=CHAT)
    assert reply.choices[0].message.content
    gateway.flush()

    # The request is in the usage log, and the overview's total moved by one.
    page.goto(gateway.url + "/console/usage?key=browser-key")
    assert page.inner_text("#usage-total").startswith("1 ")
    assert "test-model" in page.inner_text("table.rows")
    assert _requests_total(page, gateway) == before + 1
    shots(page, "overview-en")
    csv = page.request.get(gateway.url + "/console/usage.csv?model=test-model")
    assert csv.status == 200 and "test-model" in csv.text()

    # Lower the budget below what was spent: the next call is refused with 429.
    record = gateway.key_record(secret)
    page.goto(f"{gateway.url}/console/keys/{record.id}")
    page.click("summary")
    page.fill("#f-budget", "0.000001")
    page.click("#edit-key-submit")
    assert "Saved." in page.inner_text("main")
    with _client(gateway, secret) as client, pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="test-model", messages=CHAT)
    page.goto(gateway.url + "/console/keys")
    shots(page, "keys-en")

    # Disable it (confirmed): 401.
    page.goto(f"{gateway.url}/console/keys/{record.id}")
    page.click("#key-disable")
    assert page.inner_text("#key-state") == "disabled"
    with _client(gateway, secret) as client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="test-model", messages=CHAT)

    # Add a channel pointing at another fake upstream, and serve a request through it.
    page.goto(gateway.url + "/console/channels")
    page.click("details.panel summary")
    page.fill("#c-name", "browser-channel")
    page.fill("#c-base-url", second_upstream.base_url)
    page.fill("#c-api-key", "sk-browser-upstream-secret-000111")
    page.fill("#c-models", "test-runtime")
    page.click("#create-channel-submit")
    assert "Channel created." in page.inner_text("main")
    assert page.is_visible("#channel-browser-channel")
    assert "sk-browser-upstream-secret-000111" not in page.content()
    shots(page, "channels-en")
    holder_secret = gateway.create_key("holder", budget_micro=5_000_000)
    with _client(gateway, holder_secret) as client:
        client.chat.completions.create(model="test-runtime", messages=CHAT)
    assert second_upstream.received[-1].headers["Authorization"] == (
        "Bearer sk-browser-upstream-secret-000111"
    )
    gateway.flush()

    # A POST without the CSRF token is refused (the session cookie alone is not enough).
    refused = page.request.post(gateway.url + "/console/keys", form={"name": "csrf-less"})
    assert refused.status == 403
    assert all(r.name != "csrf-less" for r in gateway.call(gateway.state.keys.list()))

    # Chinese, then the other pages in Chinese.
    page.goto(gateway.url + "/console/overview")
    page.click("#lang-zh")
    assert "概览" in page.inner_text("header") and "密钥" in page.inner_text("header")
    shots(page, "overview-zh")
    page.goto(gateway.url + "/console/keys")
    shots(page, "keys-zh")
    page.goto(gateway.url + "/console/channels")
    shots(page, "channels-zh")
    admin_context.close()

    # The key holder signs in with the sk- key and sees the balance; no operator page.
    holder_context = _context(browser)
    holder = holder_context.new_page()
    _sign_in(holder, gateway, holder_secret)
    assert holder.url.endswith("/console/me")
    balance = holder.inner_text("#balance")
    assert balance.startswith("$4.99") or balance.startswith("$5.00"), balance
    assert "test-runtime" in holder.inner_text("main")
    shots(holder, "me-en")
    for path in ("/console/overview", "/console/keys", "/console/channels", "/console/usage"):
        response = holder.goto(gateway.url + path)
        assert response is not None and response.status == 403, path
    assert holder.request.get(gateway.url + "/admin/keys").status == 401
    holder.goto(gateway.url + "/console/me")
    holder.click("#lang-zh")
    assert "余额" in holder.inner_text("main")
    shots(holder, "me-zh")
    holder.click("#sign-out")
    assert holder.url.endswith("/console/sign-in")
    assert holder.goto(gateway.url + "/console/me") is not None
    assert holder.url.endswith("/console/sign-in?next=%2Fconsole%2Fme")
    holder_context.close()


def test_phone_width_and_page_weight(browser: Browser, console_gateway: Gateway) -> None:
    """The first page load is small, no script runs inline, and pages fit a phone's width."""
    context = _context(browser, width=390)
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    page.goto(console_gateway.url + "/")
    page.wait_for_load_state("load")
    # Bodies as sent (before decompression) of the page and everything it loaded, with room
    # for the headers of each.
    transferred = page.evaluate(
        "[...performance.getEntriesByType('navigation'), "
        "...performance.getEntriesByType('resource')]"
        ".reduce((sum, entry) => sum + entry.encodedBodySize + 1024, 0)"
    )
    assert 2048 < transferred < 300_000, transferred
    page.fill("#key", ADMIN_KEY)
    page.click("#sign-in")
    for path in ("/console/overview", "/console/keys", "/console/channels", "/console/usage"):
        page.goto(console_gateway.url + path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{path} is wider than a phone by {overflow}px"
    assert not [v for v in violations if "Content Security Policy" in v], violations
    context.close()


def test_tasks_and_batches_in_a_browser(
    browser: Browser, console_gateway: Gateway, shots: Callable[[Page, str], None]
) -> None:
    """The tasks and batches pages render with their rows, in both languages, and fit a phone."""
    seeded = seed_async_work(console_gateway)
    context = _context(browser)
    page = context.new_page()
    _sign_in(page, console_gateway, ADMIN_KEY)
    page.click("header nav >> text=Tasks")
    assert page.url.endswith("/console/tasks")
    assert "upstream refused the prompt" in page.inner_text(f'tr[data-task="{seeded.video}"]')
    shots(page, "tasks-en")
    page.click("header nav >> text=Batches")
    assert "2 / 1 / 3" in page.inner_text(f'tr[data-batch="{seeded.done}"]')
    shots(page, "batches-en")
    page.click("#lang-zh")
    assert "当前费用" in page.inner_text("main")
    shots(page, "batches-zh")
    page.goto(console_gateway.url + "/console/tasks")
    assert "失败原因" in page.inner_text("main")
    shots(page, "tasks-zh")
    context.close()
    phone = _context(browser, width=390)
    small = phone.new_page()
    _sign_in(small, console_gateway, ADMIN_KEY)
    for path in ("/console/tasks", "/console/batches"):
        small.goto(console_gateway.url + path)
        overflow = small.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{path} is wider than a phone by {overflow}px"
    phone.close()

"""The console's pages (GET): each reads what it shows and renders one template."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import Response

from sluice.admin.api import channel_view
from sluice.admin.async_work_api import batch_filter, task_filter
from sluice.admin.usage_api import parse_dimension, row_filter
from sluice.console.i18n import translator
from sluice.console.overview import key_labels, plain_label, usage_window
from sluice.console.web import Console, Page, with_query
from sluice.errors import SluiceError
from sluice.health_probe import probe_channel, probe_model
from sluice.keys import KeyRecord
from sluice.metering.pricing import ModelRate
from sluice.providers.configs import CHANNEL_CONFIGS, type_name
from sluice.storage.batch_browse import BATCH_STATUSES, BatchBrowser, BatchFilter
from sluice.storage.key_store import NewKey
from sluice.storage.task_browse import TASK_KINDS, TASK_STATES, TaskBrowser, TaskFilter
from sluice.storage.usage_browse import RowFilter, UsageBrowser
from sluice.storage.usage_queries import UsageFilter

__all__ = [
    "overview", "keys", "keys_page", "key_detail", "channels", "channels_page", "channel_edit",
    "usage", "tasks", "batches", "prices", "me",
]  # fmt: skip

Form = dict[str, str]
_KEYS_PER_PAGE = 25
_ROWS_PER_PAGE = 50
_OWN_WORK_SHOWN = 10  # tasks and batches on a key holder's page


def _page_number(page: Page) -> int:
    try:
        return max(1, int(page.request.query_params.get("page") or 1))
    except ValueError:
        return 1


async def _key_names(page: Page) -> dict[str, str]:
    return {r.id: r.name for r in await page.state.keys.list()}


async def overview(console: Console, page: Page, form: Form) -> Response:
    state = page.state
    tr = translator(page.lang)
    try:
        by = parse_dimension(page.request.query_params.get("by")) or "model"
    except SluiceError:
        by = "model"
    await state.usage_sink.flush()
    browser = UsageBrowser(state.engine)
    names = await _key_names(page)
    label = key_labels(names) if by == "key" else plain_label
    data = await usage_window(browser, UsageFilter(), by, label, tr)
    top = data.top_keys
    for item in top:
        item["name"] = names.get(item["key"], item["key"])
    return console.render(
        page, "overview.html", data=data, by=by, top=top, flash=console.flash(page)
    )


async def keys(console: Console, page: Page, form: Form) -> Response:
    return await keys_page(console, page)


async def _spent(page: Page, record: KeyRecord) -> int:
    return await page.state.ledger.spent(record.id, record.spent_micro)


async def keys_page(console: Console, page: Page, created: NewKey | None = None) -> Response:
    params = page.request.query_params
    search = (params.get("q") or "").strip().lower()
    records = await page.state.keys.list()
    if search:
        records = [r for r in records if search in r.name.lower() or search in r.prefix.lower()
                   or search == r.id]  # fmt: skip
    records.sort(key=lambda r: -r.created_at)
    try:
        number = max(1, int(params.get("page") or 1))
    except ValueError:
        number = 1
    pages_count = max(1, -(-len(records) // _KEYS_PER_PAGE))
    number = min(number, pages_count)
    shown = records[(number - 1) * _KEYS_PER_PAGE : number * _KEYS_PER_PAGE]
    rows = [(r, await _spent(page, r)) for r in shown]
    return console.render(
        page, "keys.html", rows=rows, search=search, number=number, pages_count=pages_count,
        total=len(records), created=created, flash=console.flash(page), now=time.time(),
        link=lambda n: with_query("/console/keys", {"q": search, "page": n}),
    )  # fmt: skip


async def key_detail(console: Console, page: Page, form: Form) -> Response:
    state = page.state
    record = await state.keys.find(page.request.path_params["key_id"])
    if record is None:
        return console.redirect(console.flash_error("/console/keys", "Unknown key."))
    await state.usage_sink.flush()
    browser = UsageBrowser(state.engine)
    tr = translator(page.lang)
    data = await usage_window(browser, UsageFilter(key_id=record.id), "model", plain_label, tr)
    recent, _ = await browser.page(RowFilter(UsageFilter(key_id=record.id)), 20, 0)
    return console.render(
        page, "key.html", key=record, spent=await _spent(page, record), data=data,
        recent=recent, flash=console.flash(page), now=time.time(),
    )  # fmt: skip


async def channels(console: Console, page: Page, form: Form) -> Response:
    return await channels_page(console, page)


async def _channel_stats(page: Page) -> dict[str, dict[str, Any]]:
    """Per channel over the last 24 hours: requests, errors, mean latency, recent errors."""
    browser = UsageBrowser(page.state.engine)
    since = time.time() - 86_400
    where = RowFilter(UsageFilter(since=since))
    stats = {item["channel"]: item for item in await browser.top(where, "channel", 1000)}
    errors, _ = await browser.page(RowFilter(UsageFilter(since=since), "error"), 100, 0)
    for row in errors:
        item = stats.setdefault(row["channel"], {"requests": 0, "errors": 0, "latency_ms": None})
        recent = item.setdefault("recent_errors", [])
        if len(recent) < 3:
            recent.append(row)
    return stats


async def channels_page(console: Console, page: Page, tested: str | None = None) -> Response:
    state = page.state
    test_result = None
    if tested is not None:
        channel = next((c for c in state.router.channels if c.name == tested), None)
        model = None if channel is None else probe_model(channel)
        if channel is None or model is None:
            test_result = {"ok": False, "error": "The channel is not active or lists no model."}
        else:
            test_result = await probe_channel(state, channel, model)
        test_result = {"channel": tested, **test_result}
    await state.usage_sink.flush()
    views = [channel_view(state, c.name) for c in state.all_channels()]
    types = sorted(type_name(c) for c in CHANNEL_CONFIGS if type_name(c) != "local")
    return console.render(
        page, "channels.html", channels=views, stats=await _channel_stats(page),
        types=types, flash=console.flash(page), test_result=test_result,
    )  # fmt: skip


async def channel_edit(console: Console, page: Page, form: Form) -> Response:
    state = page.state
    name = page.request.path_params["name"]
    config = next((c for c in state.runtime_channels if c.name == name), None)
    if config is None:
        return console.redirect(console.flash_error("/console/channels", "Read-only channel."))
    return console.render(page, "channel_edit.html", channel=channel_view(state, name),
                          config=config)  # fmt: skip


async def usage(console: Console, page: Page, form: Form) -> Response:
    state = page.state
    params = page.request.query_params
    error = None
    try:
        where = await row_filter(state, params)
    except SluiceError as exc:
        where, error = RowFilter(), exc.message
    number = _page_number(page)
    await state.usage_sink.flush()
    rows, total = await UsageBrowser(state.engine).page(
        where, _ROWS_PER_PAGE, (number - 1) * _ROWS_PER_PAGE
    )
    filters = {
        n: params.get(n, "") for n in ("key", "model", "channel", "status", "since", "until")
    }
    names = await _key_names(page)
    return console.render(
        page, "usage.html", rows=rows, total=total, number=number,
        pages_count=max(1, -(-total // _ROWS_PER_PAGE)), filters=filters, names=names,
        flash={"done": None, "error": error},
        link=lambda n: with_query("/console/usage", {**filters, "page": n}),
        csv=with_query("/console/usage.csv", filters),
    )  # fmt: skip


async def tasks(console: Console, page: Page, form: Form) -> Response:
    params = page.request.query_params
    error = None
    try:
        where = await task_filter(page.state, params)
    except SluiceError as exc:
        where, error = TaskFilter(), exc.message
    number = _page_number(page)
    rows, total = await TaskBrowser(page.state.engine).page(
        where, _ROWS_PER_PAGE, (number - 1) * _ROWS_PER_PAGE
    )
    filters = {n: params.get(n, "") for n in ("key", "kind", "state", "since", "until")}
    return console.render(
        page, "tasks.html", rows=rows, total=total, number=number,
        pages_count=max(1, -(-total // _ROWS_PER_PAGE)), filters=filters, kinds=TASK_KINDS,
        states=TASK_STATES, flash={"done": None, "error": error},
        link=lambda n: with_query("/console/tasks", {**filters, "page": n}),
    )  # fmt: skip


async def batches(console: Console, page: Page, form: Form) -> Response:
    params = page.request.query_params
    error = None
    try:
        where = await batch_filter(page.state, params)
    except SluiceError as exc:
        where, error = BatchFilter(), exc.message
    number = _page_number(page)
    await page.state.usage_sink.flush()
    rows, total = await BatchBrowser(page.state.engine).page(
        where, _ROWS_PER_PAGE, (number - 1) * _ROWS_PER_PAGE
    )
    filters = {n: params.get(n, "") for n in ("key", "status")}
    return console.render(
        page, "batches.html", rows=rows, total=total, number=number,
        pages_count=max(1, -(-total // _ROWS_PER_PAGE)), filters=filters,
        statuses=BATCH_STATUSES, flash={"done": None, "error": error},
        link=lambda n: with_query("/console/batches", {**filters, "page": n}),
    )  # fmt: skip


def _rate_view(rate: ModelRate | None) -> dict[str, float] | None:
    if rate is None:
        return None
    return {"input": rate.input / 1e6, "output": rate.output / 1e6,
            "cached_input": rate.cached_input / 1e6}  # fmt: skip


def _price_rows(page: Page, allowed: KeyRecord | None = None) -> list[dict[str, Any]]:
    """Each served model (concrete names) with its channel, upstream model and price."""
    state = page.state
    out = []
    for model in sorted(state.router.listed_models()):
        if allowed is not None and not allowed.allows_model(model):
            continue
        for channel in state.router.candidates(model):
            upstream = channel.config.upstream_model(model)
            rate = state.prices.served_rate(model, upstream)
            out.append({"model": model, "channel": channel.name, "upstream": upstream,
                        "price": _rate_view(rate)})  # fmt: skip
    return out


def _patterns(page: Page) -> list[tuple[str, str]]:
    """(pattern, channel) for the glob patterns channels serve: priced per model named."""
    return [
        (pattern, channel.name)
        for channel in page.state.router.channels
        for pattern in channel.config.models
        if any(ch in pattern for ch in "*?[")
    ]


async def prices(console: Console, page: Page, form: Form) -> Response:
    state = page.state
    overrides = state.settings.pricing.overrides
    return console.render(
        page, "prices.html", rows=_price_rows(page), overrides=overrides,
        policy=state.settings.pricing.unpriced_policy, patterns=_patterns(page),
    )  # fmt: skip


async def me(console: Console, page: Page, form: Form) -> Response:
    state = page.state
    assert page.session is not None
    record = await state.keys.get(page.session.key_id or "")
    if record is None:
        response = console.redirect("/console/sign-in")
        response.delete_cookie("sluice_console", path="/console")
        return response
    await state.usage_sink.flush()
    browser = UsageBrowser(state.engine)
    tr = translator(page.lang)
    where = UsageFilter(key_id=record.id)
    data = await usage_window(browser, where, "model", plain_label, tr)
    recent, _ = await browser.page(RowFilter(where), 20, 0)
    spent = await _spent(page, record)
    balance = None if record.budget_micro is None else record.budget_micro - spent
    own_tasks, _ = await TaskBrowser(state.engine).page(
        TaskFilter(key_id=record.id), _OWN_WORK_SHOWN, 0
    )
    own_batches, _ = await BatchBrowser(state.engine).page(
        BatchFilter(key_id=record.id), _OWN_WORK_SHOWN, 0
    )
    return console.render(
        page, "me.html", key=record, spent=spent, balance=balance, data=data, recent=recent,
        models=_price_rows(page, record), now=time.time(), tasks=own_tasks, batches=own_batches,
    )  # fmt: skip

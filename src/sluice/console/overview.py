"""The numbers of the overview and key pages: totals, daily charts and top spenders over the
last 30 days, from one grouped read of the usage rows."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from sluice.console.charts import bar_chart, stack_series
from sluice.console.web import fmt_int, fmt_usd
from sluice.storage.usage_browse import Dimension, RowFilter, UsageBrowser
from sluice.storage.usage_queries import UsageFilter

__all__ = ["Totals", "Window", "window", "usage_window"]

DAY_S = 86_400
DAYS = 30


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    errors: int
    cost_micro: int
    latency_ms: float | None
    prompt_tokens: int
    completion_tokens: int

    @property
    def error_rate(self) -> float | None:
        return None if not self.requests else self.errors / self.requests


def _totals(items: list[dict[str, Any]]) -> Totals:
    requests = sum(i["requests"] for i in items)
    weighted = sum((i["latency_ms"] or 0.0) * i["requests"] for i in items)
    return Totals(
        requests=requests,
        errors=sum(i["errors"] for i in items),
        cost_micro=sum(i["cost_micro"] for i in items),
        latency_ms=None if not requests else round(weighted / requests, 1),
        prompt_tokens=sum(i["prompt_tokens"] for i in items),
        completion_tokens=sum(i["completion_tokens"] for i in items),
    )


@dataclass(frozen=True, slots=True)
class Window:
    days: list[str]
    since: float
    today: str


def window(now: float | None = None) -> Window:
    start_today = int((time.time() if now is None else now) // DAY_S) * DAY_S
    since = start_today - (DAYS - 1) * DAY_S
    days = [time.strftime("%Y-%m-%d", time.gmtime(since + i * DAY_S)) for i in range(DAYS)]
    return Window(days, float(since), days[-1])


@dataclass(frozen=True, slots=True)
class UsageWindow:
    today: Totals
    month: Totals
    spend_chart: Markup
    requests_chart: Markup
    legend: list[tuple[str, str]]  # (label, colour)
    top_keys: list[dict[str, Any]]  # key, requests, errors, cost_micro; dearest first


def _top_keys(items: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    by_key: dict[str, dict[str, Any]] = {}
    for item in items:
        total = by_key.setdefault(item["key"], {"key": item["key"], "requests": 0, "errors": 0,
                                                "cost_micro": 0})  # fmt: skip
        for measure in ("requests", "errors", "cost_micro"):
            total[measure] += item[measure]
    ranked = sorted(by_key.values(), key=lambda t: (-t["cost_micro"], -t["requests"]))
    return ranked[:limit]


async def usage_window(
    browser: UsageBrowser,
    where: UsageFilter,
    by: Dimension,
    label: Callable[[Any], str],
    tr: Callable[[str], str],
) -> UsageWindow:
    span = window()
    scoped = UsageFilter(key_id=where.key_id, model=where.model, channel=where.channel,
                         since=span.since)  # fmt: skip
    # One read for the charts and the top keys: grouped by day, dimension and key.
    dimensions: tuple[Dimension, ...] = (by,) if by == "key" else (by, "key")
    items = await browser.series(RowFilter(scoped), dimensions)
    spend: dict[str, dict[str, float]] = {}
    requests: dict[str, dict[str, float]] = {}
    for item in items:
        name = label(item[by])
        days_spend = spend.setdefault(name, {})
        days_spend[item["day"]] = days_spend.get(item["day"], 0) + item["cost_micro"]
        days_requests = requests.setdefault(name, {})
        days_requests[item["day"]] = days_requests.get(item["day"], 0) + item["requests"]
    other = tr("Other")
    spend_series = stack_series(span.days, spend, 6, other)
    request_series = stack_series(span.days, requests, 6, other)
    return UsageWindow(
        today=_totals([i for i in items if i["day"] == span.today]),
        month=_totals(items),
        spend_chart=bar_chart(span.days, spend_series, fmt_usd, tr("Spend by day")),
        requests_chart=bar_chart(
            span.days, request_series, fmt_int, tr("Requests by day"), least_top=2
        ),
        legend=[(s.label, s.colour) for s in request_series],
        top_keys=_top_keys(items, 10),
    )


def key_labels(names: Mapping[str, str]) -> Callable[[Any], str]:
    return lambda key_id: names.get(key_id, key_id) if key_id else "—"


def plain_label(value: Any) -> str:
    return "—" if value in (None, "") else str(value)

"""Read side of usage: billing totals and grouped reports (admin API and CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, literal_column, select

from sluice.storage.aio import AsyncEngine
from sluice.storage.prune import MEASURES, daily_clauses, day_expression
from sluice.storage.schema import UNIT_COLUMNS, usage, usage_daily

__all__ = ["UsageFilter", "UsageQueries", "GroupBy"]

GroupBy = Literal["day", "model", "key", "channel"]


@dataclass(frozen=True, slots=True)
class UsageFilter:
    key_id: str | None = None
    model: str | None = None
    channel: str | None = None
    since: float | None = None
    until: float | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.key_id is not None:
            out.append(usage.c.key_id == self.key_id)
        if self.model is not None:
            out.append(usage.c.model == self.model)
        if self.channel is not None:
            out.append(usage.c.channel == self.channel)
        if self.since is not None:
            out.append(usage.c.created_at >= self.since)
        if self.until is not None:
            out.append(usage.c.created_at < self.until)
        return out


class UsageQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    def _day(self) -> ColumnElement[str]:
        return day_expression(self._engine.dialect.name)

    async def cost_micro(self, where: UsageFilter) -> int:
        """Rows still present plus the daily totals of pruned days (see storage/prune.py)."""
        query = select(func.coalesce(func.sum(usage.c.cost_micro), 0)).where(*where.clauses())
        daily = select(func.coalesce(func.sum(usage_daily.c.cost_micro), 0)).where(
            *_daily_where(where)
        )
        async with self._engine.connect() as conn:
            rows = int((await conn.execute(query)).scalar_one())
            return rows + int((await conn.execute(daily)).scalar_one())

    async def summary(self, where: UsageFilter, group_by: GroupBy | None) -> list[dict[str, Any]]:
        group_columns: dict[str, ColumnElement[Any]] = {
            "day": self._day(),
            "model": usage.c.model,
            "key": usage.c.key_id,
            "channel": usage.c.channel,
        }
        measures = [
            func.count().label("requests"),
            func.coalesce(func.sum(usage.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(usage.c.cached_tokens), 0).label("cached_tokens"),
            func.coalesce(func.sum(usage.c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(usage.c.cost_micro), 0).label("cost_micro"),
            *(func.coalesce(func.sum(usage.c[u]), 0).label(u) for u in UNIT_COLUMNS),
        ]
        if group_by is None:
            query = select(*measures).where(*where.clauses())
        else:
            column = group_columns[group_by].label(group_by)
            query = (
                select(column, *measures)
                .where(*where.clauses())
                .group_by(literal_column(group_by) if self._sqlite else group_columns[group_by])
                .order_by(literal_column(group_by))
            )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            daily = (await conn.execute(_daily_query(where, group_by))).mappings().all()
        return _merge([*rows, *daily], group_by)


def _daily_where(where: UsageFilter) -> list[ColumnElement[bool]]:
    channel = where.channel
    return daily_clauses(where.key_id, where.model, channel, where.since, where.until)


def _daily_query(where: UsageFilter, group_by: GroupBy | None) -> Any:
    """Totals of pruned days (usage_daily), grouped like the live rows."""
    columns = {"day": usage_daily.c.day, "model": usage_daily.c.model,
               "key": usage_daily.c.key_id, "channel": usage_daily.c.channel}  # fmt: skip
    measures = [func.coalesce(func.sum(getattr(usage_daily.c, m)), 0).label(m) for m in MEASURES]
    query = select(*measures).where(*_daily_where(where))
    if group_by is not None:
        column = columns[group_by]
        query = select(column.label(group_by), *measures).where(*_daily_where(where))
        query = query.group_by(column)
    return query


def _merge(rows: list[Any], group_by: GroupBy | None) -> list[dict[str, Any]]:
    merged: dict[Any, dict[str, Any]] = {}
    for row in rows:
        group = row[group_by] if group_by is not None else None
        if group_by == "channel" and group == "":
            group = None  # usage_daily stores a missing channel as '' (primary key column)
        item = merged.get(group)
        if item is None:
            item = merged[group] = {group_by: group} if group_by is not None else {}
            item.update(dict.fromkeys(MEASURES, 0))
        for measure in MEASURES:
            item[measure] += int(row[measure] or 0)
    if group_by is None and len(merged) == 1:
        return [{**merged[None], "cost_usd": merged[None]["cost_micro"] / 1_000_000}]
    out = []
    for group in sorted(merged, key=lambda g: (g is None, str(g))):
        item = merged[group]
        item["cost_usd"] = item["cost_micro"] / 1_000_000
        out.append(item)
    return out

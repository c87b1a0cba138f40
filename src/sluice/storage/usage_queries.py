"""Read side of usage: billing totals and grouped reports (admin API and CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine

from sluice.storage.schema import usage

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
        if self._sqlite:
            return func.date(usage.c.created_at, "unixepoch")
        return func.to_char(
            func.timezone("UTC", func.to_timestamp(usage.c.created_at)), "YYYY-MM-DD"
        )

    async def cost_micro(self, where: UsageFilter) -> int:
        query = select(func.coalesce(func.sum(usage.c.cost_micro), 0)).where(*where.clauses())
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

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
        out = []
        for row in rows:
            item = {k: (int(v) if k != group_by and v is not None else v) for k, v in row.items()}
            item["cost_usd"] = item["cost_micro"] / 1_000_000
            out.append(item)
        return out

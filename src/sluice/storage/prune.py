"""``sluice usage prune``: fold old usage rows into ``usage_daily`` and delete them.

One transaction: aggregate the rows older than the cutoff per (UTC day, key, model, channel),
upsert those totals into ``usage_daily`` (adding to what an earlier prune left there), delete the
rows. On PostgreSQL the usage table is locked against writers (readers continue) for the
duration, so a row inserted concurrently cannot be deleted without having been counted; the
usage sink simply waits and keeps its rows buffered. On SQLite ``BEGIN IMMEDIATE`` already
serialises writers.

Reports and billing totals add ``usage_daily`` for the days it covers (``daily_*`` helpers
below, used by ``UsageQueries``): a daily row counts when its whole day lies inside the queried
``[since, until)`` range, since pruned rows have no finer time.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select, text

from sluice.storage.aio import AsyncConnection, AsyncEngine
from sluice.storage.schema import UNIT_COLUMNS, usage, usage_daily

__all__ = [
    "PruneResult",
    "prune_usage",
    "day_expression",
    "daily_clauses",
    "daily_day_range",
    "MEASURES",
]

MEASURES = (
    "requests", "prompt_tokens", "cached_tokens", "completion_tokens", "cost_micro", *UNIT_COLUMNS
)  # fmt: skip
_CHUNK = 500
_DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class PruneResult:
    rows_deleted: int
    daily_rows: int  # (day, key, model, channel) groups upserted


def day_expression(dialect: str, column: Any = usage.c.created_at) -> ColumnElement[str]:
    """'YYYY-MM-DD' (UTC) of an epoch-seconds column, per dialect."""
    if dialect == "sqlite":
        return func.date(column, "unixepoch")
    return func.to_char(func.timezone("UTC", func.to_timestamp(column)), "YYYY-MM-DD")


def _day_string(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d")


def daily_day_range(since: float | None, until: float | None) -> tuple[str | None, str | None]:
    """Inclusive (first, last) day strings whose whole day lies inside ``[since, until)``."""
    first = None if since is None else _day_string(math.ceil(since / _DAY_S) * _DAY_S)
    last = None
    if until is not None:
        last_start = math.ceil(until / _DAY_S) * _DAY_S - _DAY_S  # last midnight before until
        if last_start + _DAY_S > until:  # that day is cut by until
            last_start -= _DAY_S
        last = _day_string(last_start)
    return first, last


def daily_clauses(
    key_id: str | None,
    model: str | None,
    channel: str | None,
    since: float | None,
    until: float | None,
) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if key_id is not None:
        out.append(usage_daily.c.key_id == key_id)
    if model is not None:
        out.append(usage_daily.c.model == model)
    if channel is not None:
        out.append(usage_daily.c.channel == channel)
    first, last = daily_day_range(since, until)
    if first is not None:
        out.append(usage_daily.c.day >= first)
    if last is not None:
        out.append(usage_daily.c.day <= last)
    return out


def _upsert(dialect: str, rows: list[dict[str, Any]]) -> Any:
    # Imported here: this module is loaded by every server worker (usage queries), and the
    # other database's dialect would cost each of them memory for a CLI-only operation.
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(usage_daily).values(rows)
    return stmt.on_conflict_do_update(
        index_elements=["day", "key_id", "model", "channel"],
        set_={m: getattr(usage_daily.c, m) + getattr(stmt.excluded, m) for m in MEASURES},
    )


async def _aggregate(conn: AsyncConnection, dialect: str, before: float) -> list[dict[str, Any]]:
    day = day_expression(dialect).label("day")
    channel = func.coalesce(usage.c.channel, "").label("channel")
    query = (
        select(
            day,
            usage.c.key_id,
            usage.c.model,
            channel,
            func.count().label("requests"),
            func.sum(usage.c.prompt_tokens).label("prompt_tokens"),
            func.sum(usage.c.cached_tokens).label("cached_tokens"),
            func.sum(usage.c.completion_tokens).label("completion_tokens"),
            func.sum(usage.c.cost_micro).label("cost_micro"),
            *(func.sum(usage.c[unit]).label(unit) for unit in UNIT_COLUMNS),
        )
        .where(usage.c.created_at < before)
        .group_by(day, usage.c.key_id, usage.c.model, channel)
    )
    rows = (await conn.execute(query)).mappings().all()
    return [{k: (int(v) if k in MEASURES else v) for k, v in row.items()} for row in rows]


async def prune_usage(engine: AsyncEngine, before: float) -> PruneResult:
    """Fold usage rows with ``created_at < before`` into ``usage_daily``; one transaction."""
    dialect = engine.dialect.name
    async with engine.begin() as conn:
        if dialect == "postgresql":
            # Blocks inserts (the sink waits), not reads: nothing slips between sum and delete.
            await conn.execute(text("LOCK TABLE usage IN EXCLUSIVE MODE"))
        groups = await _aggregate(conn, dialect, before)
        for start in range(0, len(groups), _CHUNK):
            await conn.execute(_upsert(dialect, groups[start : start + _CHUNK]))
        result = await conn.execute(usage.delete().where(usage.c.created_at < before))
    return PruneResult(rows_deleted=int(result.rowcount or 0), daily_rows=len(groups))

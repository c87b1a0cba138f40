"""Batches as operators read them: filtered pages, newest first, with the key's name, live
line counts while a batch runs, and its cost so far.

A batch line's usage row carries the request id ``{batch id}:{line}``
(``sluice.batches.runner.line_request_id``), the batch's key and the time its line started,
which lies between the batch's creation and its end. The cost so far is read through the
(key, time) index over that span and matched on the exact prefix: a range of request ids would
be shorter to write, but under PostgreSQL's locale collations ``:`` does not sort as a byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select

from sluice.storage.aio import AsyncEngine
from sluice.storage.schema import api_keys, batch_lines, batches, usage

__all__ = ["BATCH_STATUSES", "BatchFilter", "BatchBrowser"]

BATCH_STATUSES = (
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
    "cancelled",
)  # fmt: skip
_RUNNING = ("validating", "in_progress", "finalizing", "cancelling")

_NO_END_YET = 1e12  # the year 33658

_COLUMNS = (
    "id", "key_id", "endpoint", "status", "total", "completed", "failed", "created_at",
    "in_progress_at", "completed_at", "failed_at", "expired_at", "cancelled_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BatchFilter:
    key_id: str | None = None
    status: str | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.key_id is not None:
            out.append(batches.c.key_id == self.key_id)
        if self.status is not None:
            out.append(batches.c.status == self.status)
        return out


def _cost_so_far() -> Any:
    prefix = batches.c.id + ":"
    # a running batch has no end yet: any time ahead of every line's start will do
    ended = func.coalesce(
        batches.c.completed_at, batches.c.failed_at, batches.c.expired_at,
        batches.c.cancelled_at, _NO_END_YET,
    )  # fmt: skip
    return (
        select(func.coalesce(func.sum(usage.c.cost_micro), 0))
        .where(
            usage.c.key_id == batches.c.key_id,
            usage.c.created_at >= batches.c.created_at,
            usage.c.created_at <= ended,
            func.substr(usage.c.request_id, 1, func.length(prefix)) == prefix,
        )
        .scalar_subquery()
        .label("cost_micro")
    )


class BatchBrowser:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def page(
        self, where: BatchFilter, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first: ``limit`` batches from ``offset``, and how many match in all."""
        query = (
            select(
                *(batches.c[name] for name in _COLUMNS),
                api_keys.c.name.label("key_name"),
                _cost_so_far(),
            )
            .select_from(batches.outerjoin(api_keys, api_keys.c.id == batches.c.key_id))
            .where(*where.clauses())
            .order_by(batches.c.created_at.desc(), batches.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(batches).where(*where.clauses())
        async with self._engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(query)).mappings().all()]
            total = int((await conn.execute(count)).scalar_one())
            running = [r["id"] for r in rows if r["status"] in _RUNNING]
            live = await _line_counts(conn, running) if running else {}
        return [_view({str(k): v for k, v in r.items()}, live) for r in rows], total


async def _line_counts(conn: Any, batch_ids: list[str]) -> dict[str, dict[str, int]]:
    """Lines ended so far of running batches (the batch row's counts are written at the end)."""
    query = (
        select(batch_lines.c.batch_id, batch_lines.c.state, func.count())
        .where(batch_lines.c.batch_id.in_(batch_ids))
        .group_by(batch_lines.c.batch_id, batch_lines.c.state)
    )
    out: dict[str, dict[str, int]] = {}
    for batch_id, state, n in (await conn.execute(query)).all():
        out.setdefault(batch_id, {})[state] = int(n)
    return out


def _view(row: dict[str, Any], live: dict[str, dict[str, int]]) -> dict[str, Any]:
    counts = {"total": int(row.pop("total")), "completed": int(row.pop("completed")),
              "failed": int(row.pop("failed"))}  # fmt: skip
    if row["id"] in live:
        counts["completed"] = live[row["id"]].get("succeeded", 0)
        counts["failed"] = live[row["id"]].get("failed", 0)
    row["request_counts"] = counts
    row["cost_micro"] = int(row["cost_micro"] or 0)
    row["cost_usd"] = row["cost_micro"] / 1_000_000
    # completed_at stays as named; ended_at is whichever end the batch came to
    ended = [row.pop(n) for n in ("failed_at", "expired_at", "cancelled_at")]
    row["ended_at"] = next((t for t in (row["completed_at"], *ended) if t is not None), None)
    return row

"""Asynchronous tasks as operators read them: filtered pages, newest first, with the key's
name. Never the upstream's id, the callback secret or URL, or the stored request and result:
the admin API and the console show state and money, not the work itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select

from sluice.storage.aio import AsyncEngine
from sluice.storage.schema import api_keys, tasks

__all__ = ["TASK_KINDS", "TASK_STATES", "TaskFilter", "TaskBrowser"]

TASK_KINDS = ("midjourney", "suno", "video")
TASK_STATES = ("submitted", "in_progress", "success", "failure", "cancelled")

_COLUMNS = (
    "id", "key_id", "kind", "action", "mode", "model", "channel", "state", "progress",
    "reserved_micro", "cost_micro", "fail_reason", "created_at", "finished_at", "deleted_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TaskFilter:
    key_id: str | None = None
    kind: str | None = None
    state: str | None = None
    since: float | None = None  # created at or after
    until: float | None = None  # created before

    def clauses(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.key_id is not None:
            out.append(tasks.c.key_id == self.key_id)
        if self.kind is not None:
            out.append(tasks.c.kind == self.kind)
        if self.state is not None:
            out.append(tasks.c.state == self.state)
        if self.since is not None:
            out.append(tasks.c.created_at >= self.since)
        if self.until is not None:
            out.append(tasks.c.created_at < self.until)
        return out


class TaskBrowser:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def page(
        self, where: TaskFilter, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first: ``limit`` tasks from ``offset``, and how many match in all."""
        query = (
            select(*(tasks.c[name] for name in _COLUMNS), api_keys.c.name.label("key_name"))
            .select_from(tasks.outerjoin(api_keys, api_keys.c.id == tasks.c.key_id))
            .where(*where.clauses())
            .order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(tasks).where(*where.clauses())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            total = int((await conn.execute(count)).scalar_one())
        return [_view({str(k): v for k, v in r.items()}) for r in rows], total


def _view(row: dict[str, Any]) -> dict[str, Any]:
    reserved = int(row["reserved_micro"])
    cost = row["cost_micro"]
    deleted_at = row.pop("deleted_at")
    row["reserved_usd"] = reserved / 1_000_000
    # Until it ends a task has no cost yet: its reservation is what its key has been charged.
    row["cost_usd"] = None if cost is None else int(cost) / 1_000_000
    row["deleted"] = deleted_at is not None
    return row

"""The task table: submission with its charge, leases for polling, and the one settlement.

Every change that moves money happens in the same transaction as the task change that causes
it, so the key's ``spent_micro`` in the database is exact whatever replica dies when:

- ``insert_charged``: the task row and ``spent_micro += reserved`` (the price is charged as
  spend at submit, so every budget check everywhere, and every replica after a restart, counts
  it without knowing tasks exist);
- ``finish``: the row becomes final only if it was not (``WHERE finished_at IS NULL``: exactly
  once, whichever replica or callback gets there first), ``spent_micro += cost - reserved``
  (the refund of what was not used) and the task's one usage row.

Leases: ``claim_due`` takes due, unleased tasks with a conditional UPDATE (``lease_until <
now``), which on SQLite and PostgreSQL alike succeeds for one claimer only; a replica that dies
holding leases loses them when they expire.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import and_, case, func, insert, or_, select, tuple_, update
from sqlalchemy.engine import RowMapping

from sluice.storage.aio import AsyncEngine
from sluice.storage.schema import api_keys, tasks, usage
from sluice.tasks.model import Snapshot, TaskRow, metered_units

__all__ = ["Ending", "TaskStore", "usage_endpoint"]

_JSON_FIELDS = ("request", "result")


@dataclass(frozen=True, slots=True)
class Ending:
    """How a task ends: its final state, what it costs and how its usage row reads."""

    state: str  # success | failure | cancelled
    cost_micro: int
    status: int  # of the usage row: 200 success, 502 upstream failure, 504 stuck, 499 cancelled
    error_code: str | None
    snapshot: Snapshot


def _row(mapping: RowMapping) -> TaskRow:
    values: dict[str, Any] = {k: mapping[k] for k in TaskRow.__dataclass_fields__ if k in mapping}
    for name in _JSON_FIELDS:
        values[name] = orjson.loads(values[name] or "{}")
    return TaskRow(**values)


_COLUMNS = [tasks.c[name] for name in TaskRow.__dataclass_fields__]


class TaskStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def insert_charged(self, row: TaskRow, next_poll_at: float) -> None:
        values: dict[str, Any] = {k: getattr(row, k) for k in TaskRow.__dataclass_fields__}
        for name in _JSON_FIELDS:
            values[name] = orjson.dumps(values[name]).decode()
        async with self._engine.begin() as conn:
            await conn.execute(insert(tasks).values(**values, next_poll_at=next_poll_at))
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == row.key_id)
                .values(spent_micro=api_keys.c.spent_micro + row.reserved_micro)
            )

    async def get(self, task_id: str) -> TaskRow | None:
        async with self._engine.connect() as conn:
            found = (
                (await conn.execute(select(*_COLUMNS).where(tasks.c.id == task_id)))
                .mappings()
                .first()
            )
        return None if found is None else _row(found)

    async def get_for_key(self, task_id: str, key_id: str, kind: str) -> TaskRow | None:
        """The task if ``key_id`` submitted it (and it is of ``kind``); None otherwise, so a
        key cannot tell another key's task from one that does not exist."""
        async with self._engine.connect() as conn:
            found = (
                (
                    await conn.execute(
                        select(*_COLUMNS).where(tasks.c.id == task_id, tasks.c.deleted_at.is_(None))
                    )
                )
                .mappings()
                .first()
            )
        if found is None or found["key_id"] != key_id or found["kind"] != kind:
            return None
        return _row(found)

    async def list_for_key(
        self,
        key_id: str,
        kind: str,
        *,
        ids: list[str] | None = None,
        limit: int = 100,
        after: TaskRow | None = None,
        ascending: bool = False,
    ) -> list[TaskRow]:
        """The key's tasks of ``kind``, newest first (or oldest), from after ``after``."""
        query = select(*_COLUMNS).where(
            tasks.c.key_id == key_id, tasks.c.kind == kind, tasks.c.deleted_at.is_(None)
        )
        if ids is not None:
            query = query.where(tasks.c.id.in_(ids))
        order = (tasks.c.created_at, tasks.c.id)
        if after is not None:
            position = (after.created_at, after.id)
            query = query.where(
                tuple_(*order) > position if ascending else tuple_(*order) < position
            )
        if ascending:
            query = query.order_by(*(c.asc() for c in order)).limit(limit)
        else:
            query = query.order_by(*(c.desc() for c in order)).limit(limit)
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).mappings().all()
        return [_row(m) for m in found]

    async def claim_due(
        self, owner: str, lease_s: float, limit: int, now: float | None = None
    ) -> list[TaskRow]:
        """Unfinished tasks due for a poll whose lease is free or expired, now leased to
        ``owner``. Each is claimed by a conditional UPDATE: of replicas racing for a task,
        exactly one sees its UPDATE change a row."""
        now = time.time() if now is None else now
        free = or_(tasks.c.lease_until.is_(None), tasks.c.lease_until < now)
        due = and_(tasks.c.finished_at.is_(None), tasks.c.next_poll_at <= now, free)
        async with self._engine.connect() as conn:
            candidates = (
                await conn.execute(
                    select(tasks.c.id).where(due).order_by(tasks.c.next_poll_at).limit(limit)
                )
            ).all()
        claimed: list[str] = []
        for (task_id,) in candidates:
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id, due)
                    .values(lease_owner=owner, lease_until=now + lease_s)
                )
            if result.rowcount == 1:
                claimed.append(task_id)
        rows = [await self.get(task_id) for task_id in claimed]
        return [r for r in rows if r is not None]

    async def progress(
        self,
        task_id: str,
        snapshot: Snapshot,
        *,
        next_poll_at: float | None = None,
        owner: str | None = None,
    ) -> bool:
        """Record an unfinished task's progress; with ``owner``, also give its lease back and
        set its next poll. False if the task is already final (nothing changed)."""
        now = time.time()
        values: dict[str, Any] = {
            "state": snapshot.state,
            "progress": snapshot.progress,
            "result": orjson.dumps(snapshot.result).decode(),
            "updated_at": now,
        }
        if snapshot.state == "in_progress":
            values["started_at"] = func.coalesce(tasks.c.started_at, now)
        if next_poll_at is not None:
            values["next_poll_at"] = next_poll_at
        query = update(tasks).where(tasks.c.id == task_id, tasks.c.finished_at.is_(None))
        if owner is not None:
            query = query.where(tasks.c.lease_owner == owner)
            values["lease_owner"] = None
            values["lease_until"] = None
        async with self._engine.begin() as conn:
            result = await conn.execute(query.values(**values))
        return result.rowcount == 1

    async def reschedule(self, task_id: str, owner: str, next_poll_at: float) -> None:
        """A poll that learnt nothing (the upstream was unreachable): try again later."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.lease_owner == owner)
                .values(next_poll_at=next_poll_at, lease_owner=None, lease_until=None)
            )

    async def finish(self, row: TaskRow, ending: Ending) -> TaskRow | None:
        """End the task exactly once: final state, the refund of what it did not cost, and its
        usage row, in one transaction. None if it had already ended (nothing changed)."""
        now = time.time()
        snapshot = ending.snapshot
        cost = ending.cost_micro
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(tasks)
                .where(tasks.c.id == row.id, tasks.c.finished_at.is_(None))
                .values(
                    state=ending.state,
                    progress=snapshot.progress,
                    result=orjson.dumps(snapshot.result).decode(),
                    fail_reason=snapshot.fail_reason,
                    cost_micro=cost,
                    finished_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            )
            if result.rowcount != 1:
                return None
            if cost != row.reserved_micro:
                # Never below zero: an admin may have reset the key's spend since the charge.
                corrected = api_keys.c.spent_micro + (cost - row.reserved_micro)
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == row.key_id)
                    .values(spent_micro=case((corrected < 0, 0), else_=corrected))
                )
            await conn.execute(insert(usage).values(**_usage_values(row, ending, now)))
        return await self.get(row.id)

    async def mark_deleted(self, task_id: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(tasks).where(tasks.c.id == task_id).values(deleted_at=time.time())
            )

    async def mark_notified(self, task_id: str, status: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(update(tasks).where(tasks.c.id == task_id).values(notified=status))


def usage_endpoint(row: TaskRow) -> str:
    """``<kind>.<action>`` in lower case: ``mj.imagine``, ``suno.music``, ``video.create``."""
    prefix = "mj" if row.kind == "midjourney" else row.kind
    return f"{prefix}.{row.action.lower()}"[:32]


def _usage_values(row: TaskRow, ending: Ending, now: float) -> dict[str, Any]:
    """The task's one usage row: endpoint ``<kind>.<action>`` (``mj.imagine``), the priced
    model (which names the mode: ``mj-relax-imagine``), and its units."""
    success = ending.state == "success"
    return {
        "request_id": row.id,
        "key_id": row.key_id,
        "endpoint": usage_endpoint(row),
        "model": row.model,
        "upstream_model": None,
        "channel": row.channel,
        "prompt_tokens": 0,
        "cached_tokens": 0,
        "completion_tokens": 0,
        "cost_micro": ending.cost_micro,
        "status": ending.status,
        "error_code": ending.error_code,
        "latency_ms": (now - row.created_at) * 1000,
        "ttft_ms": None,
        "stream": False,
        "created_at": now,
        # What it was priced by: one call, or its seconds of video (only when it succeeded).
        **_unit_columns(row, success),
    }


def _unit_columns(row: TaskRow, success: bool) -> dict[str, int]:
    units = metered_units(row.kind, row.units if success else 0)
    return {"calls": units.calls, "video_seconds": units.video_seconds}

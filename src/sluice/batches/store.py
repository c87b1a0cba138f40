"""Batches and their lines in the database: creation, the lease a worker runs a batch under,
and one row per started line (its primary key makes each line start once across replicas)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from sluice.storage.aio import AsyncEngine
from sluice.storage.schema import batch_lines, batches

__all__ = [
    "ACTIVE",
    "TERMINAL",
    "BatchRecord",
    "BatchStore",
    "LineResult",
    "new_batch_id",
]

TERMINAL = ("completed", "failed", "cancelled", "expired")
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
_TIMES = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(16)}"


@dataclass(slots=True)
class BatchRecord:
    id: str
    key_id: str
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    price_ppm: int
    created_at: float
    expires_at: float
    metadata: dict[str, str] | None = None
    errors: list[dict[str, Any]] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, float] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The OpenAI batch object (absent times and files are left out, as the spec types
        them as non-null)."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "created_at": int(self.created_at),
            "expires_at": int(self.expires_at),
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }
        if self.errors:
            body["errors"] = {"object": "list", "data": self.errors}
        for name in ("output_file_id", "error_file_id"):
            if getattr(self, name) is not None:
                body[name] = getattr(self, name)
        for name, value in self.times.items():
            body[name] = int(value)
        return body


@dataclass(frozen=True, slots=True)
class LineResult:
    line_no: int
    custom_id: str
    state: str  # running | succeeded | failed
    owner: str
    result: bytes | None


def _record(row: Any) -> BatchRecord:
    times = {name: float(getattr(row, name)) for name in _TIMES if getattr(row, name) is not None}
    return BatchRecord(
        id=row.id,
        key_id=row.key_id,
        endpoint=row.endpoint,
        input_file_id=row.input_file_id,
        completion_window=row.completion_window,
        status=row.status,
        price_ppm=int(row.price_ppm),
        created_at=float(row.created_at),
        expires_at=float(row.expires_at),
        metadata=orjson.loads(row.metadata) if row.metadata else None,
        errors=orjson.loads(row.errors) if row.errors else None,
        total=int(row.total),
        completed=int(row.completed),
        failed=int(row.failed),
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        times=times,
    )


class BatchStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # --- the API's side -------------------------------------------------------------------

    async def add(self, record: BatchRecord) -> None:
        values = {
            "id": record.id,
            "key_id": record.key_id,
            "endpoint": record.endpoint,
            "input_file_id": record.input_file_id,
            "completion_window": record.completion_window,
            "status": record.status,
            "metadata": orjson.dumps(record.metadata).decode() if record.metadata else None,
            "price_ppm": record.price_ppm,
            "total": record.total,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
        }
        async with self._engine.begin() as conn:
            await conn.execute(insert(batches).values(**values))

    async def get(self, batch_id: str, key_id: str | None = None) -> BatchRecord | None:
        """The batch, if ``key_id`` (when given) owns it; counts are live while it runs."""
        query = select(batches).where(batches.c.id == batch_id)
        if key_id is not None:
            query = query.where(batches.c.key_id == key_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
            if row is None:
                return None
            record = _record(row)
            if record.status not in TERMINAL:
                record.completed, record.failed = await self._counts(conn, batch_id)
        return record

    async def page(
        self, key_id: str, after: str | None, limit: int
    ) -> tuple[list[BatchRecord], bool]:
        query = select(batches).where(batches.c.key_id == key_id)
        async with self._engine.connect() as conn:
            if after:
                cursor = (
                    await conn.execute(
                        select(batches.c.created_at, batches.c.id).where(
                            batches.c.id == after, batches.c.key_id == key_id
                        )
                    )
                ).first()
                if cursor is not None:
                    at, ident = cursor
                    query = query.where(
                        (batches.c.created_at < at)
                        | ((batches.c.created_at == at) & (batches.c.id < ident))
                    )
            order = (batches.c.created_at.desc(), batches.c.id.desc())
            rows = (await conn.execute(query.order_by(*order).limit(limit + 1))).all()
            records = [_record(r) for r in rows[:limit]]
            for record in records:
                if record.status not in TERMINAL:
                    record.completed, record.failed = await self._counts(conn, record.id)
        return records, len(rows) > limit

    async def request_cancel(self, batch_id: str, key_id: str, now: float) -> BatchRecord | None:
        """Move a batch that has not ended to ``cancelling``; the worker running it stops."""
        statement = (
            update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.key_id == key_id,
                batches.c.status.in_(("validating", "in_progress")),
            )
            .values(status="cancelling", cancelling_at=now)
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)
        return await self.get(batch_id, key_id)

    # --- the runner's side ----------------------------------------------------------------

    async def runnable(self, now: float, limit: int) -> list[str]:
        """Batches with work left whose lease is free or has run out, oldest first."""
        query = (
            select(batches.c.id)
            .where(
                batches.c.status.in_(ACTIVE),
                or_(batches.c.lease_until.is_(None), batches.c.lease_until < now),
            )
            .order_by(batches.c.created_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [row.id for row in (await conn.execute(query)).all()]

    async def acquire(self, batch_id: str, owner: str, now: float, lease_s: float) -> bool:
        """Take the batch's lease if it is free or has run out: one conditional UPDATE, so of
        several workers trying at once exactly one succeeds (SQLite and PostgreSQL alike)."""
        statement = (
            update(batches)
            .where(
                batches.c.id == batch_id,
                batches.c.status.in_(ACTIVE),
                or_(batches.c.lease_until.is_(None), batches.c.lease_until < now),
            )
            .values(lease_owner=owner, lease_until=now + lease_s)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def renew(self, batch_id: str, owner: str, until: float) -> str | None:
        """Extend the lease; the batch's status, or None if the lease was lost."""
        statement = (
            update(batches)
            .where(batches.c.id == batch_id, batches.c.lease_owner == owner)
            .values(lease_until=until)
        )
        async with self._engine.begin() as conn:
            if (await conn.execute(statement)).rowcount != 1:
                return None
            query = select(batches.c.status).where(batches.c.id == batch_id)
            status: str = (await conn.execute(query)).scalar_one()
            return status

    async def release(self, batch_id: str, owner: str) -> None:
        statement = (
            update(batches)
            .where(batches.c.id == batch_id, batches.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)

    async def set_status(
        self, batch_id: str, owner: str, status: str, *, when: str | None, now: float, **values: Any
    ) -> bool:
        """Change the status of a batch this worker holds (an ``*_at`` time with it)."""
        changes: dict[str, Any] = {"status": status, **values}
        if when is not None:
            changes[when] = now
        statement = (
            update(batches)
            .where(batches.c.id == batch_id, batches.c.lease_owner == owner)
            .values(**changes)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def lines(self, batch_id: str) -> dict[int, LineResult]:
        """The batch's started lines (without results: those are read when finalizing)."""
        c = batch_lines.c
        columns = (c.line_no, c.custom_id, c.state, c.owner)
        query = select(*columns).where(c.batch_id == batch_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {r.line_no: LineResult(r.line_no, r.custom_id, r.state, r.owner, None) for r in rows}

    async def claim(
        self, batch_id: str, line_no: int, custom_id: str, owner: str, now: float
    ) -> bool:
        """Start a line: False if it was started already (by anyone, ever)."""
        values = {
            "batch_id": batch_id,
            "line_no": line_no,
            "custom_id": custom_id,
            "state": "running",
            "owner": owner,
            "started_at": now,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(batch_lines).values(**values))
        except IntegrityError:
            return False
        return True

    async def finish(
        self, batch_id: str, line_no: int, owner: str, state: str, result: bytes, now: float
    ) -> bool:
        """Record a line's end; False if it was no longer this worker's (taken over)."""
        statement = (
            update(batch_lines)
            .where(
                batch_lines.c.batch_id == batch_id,
                batch_lines.c.line_no == line_no,
                batch_lines.c.owner == owner,
                batch_lines.c.state == "running",
            )
            .values(state=state, result=result.decode(), finished_at=now)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(statement)).rowcount == 1

    async def results(self, batch_id: str, page: int = 500) -> AsyncIterator[LineResult]:
        """Ended lines in line order, read a page at a time."""
        after = -1
        while True:
            query = (
                select(batch_lines)
                .where(
                    batch_lines.c.batch_id == batch_id,
                    batch_lines.c.line_no > after,
                    batch_lines.c.state != "running",
                )
                .order_by(batch_lines.c.line_no)
                .limit(page)
            )
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                result = row.result.encode() if row.result is not None else None
                yield LineResult(row.line_no, row.custom_id, row.state, row.owner, result)
            if len(rows) < page:
                return
            after = rows[-1].line_no

    async def _counts(self, conn: Any, batch_id: str) -> tuple[int, int]:
        query = (
            select(batch_lines.c.state, func.count())
            .where(batch_lines.c.batch_id == batch_id)
            .group_by(batch_lines.c.state)
        )
        counts = {state: int(n) for state, n in (await conn.execute(query)).all()}
        return counts.get("succeeded", 0), counts.get("failed", 0)

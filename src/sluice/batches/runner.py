"""Each worker runs batches through its own relay, one batch per worker at a time by lease.

A worker looks for batches with work left every ``batches.poll_s`` and takes a free (or run
out) lease with a conditional UPDATE, so one worker of all replicas runs a batch at a time; it
renews the lease every second (which is also how it learns that the batch was cancelled) and
stops at once if the lease was lost. A line is started by inserting its row in
``batch_lines``: the primary key lets it start only once, whoever tries. Its result is written
to that row when it ends. A worker that takes over a batch finds the lines its dead owner had
started and not finished: what the upstream did with them cannot be known, so they are failed
(``line_interrupted``) rather than sent a second time — no line ever reaches an upstream twice.

Lines run through the app itself (``inprocess.py``) at ``batches.lines_per_second`` with at most
``batches.concurrency`` in flight per worker; retryable answers (429 other than a spent budget,
5xx) are tried again with exponential backoff, up to ``batches.max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import orjson
from starlette.types import ASGIApp

from sluice.batches.inprocess import InProcessAnswer, call_in_process
from sluice.batches.pacing import Pacer
from sluice.batches.services import BatchServices
from sluice.batches.store import BatchRecord
from sluice.files.storage import CHUNK_BYTES
from sluice.files.store import FileRecord, FileStore
from sluice.idle_backoff import IdleBackoff
from sluice.keys import KeyRecord
from sluice.state import AppState

__all__ = ["BatchRunner", "line_request_id"]

log = logging.getLogger("sluice.batches")

_KEY_REFRESH_S = 5.0
_TICK_S = 1.0  # lease renewal, and how soon a cancellation is seen
_CANCEL_GRACE_S = 2.0  # lines in flight when a batch is cancelled get this long to finish


def line_request_id(batch_id: str, line_no: int) -> str:
    """The request id of a line (1-based, as in validation errors): its usage rows carry it."""
    return f"{batch_id}:{line_no + 1}"


def _retryable(answer: InProcessAnswer) -> bool:
    if answer.status >= 500:
        return True
    if answer.status != 429:
        return False
    try:
        error = orjson.loads(answer.body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return True
    # A spent budget stays spent: the line fails with the 429 at once.
    return bool(error.get("type") != "insufficient_quota")


def _output_line(
    batch_id: str, line_no: int, custom_id: str, answer: InProcessAnswer | None, error: Any
) -> bytes:
    response = None
    if answer is not None:
        try:
            body: Any = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            body = answer.body.decode(errors="replace")
        response = {"status_code": answer.status, "request_id": answer.request_id, "body": body}
    return orjson.dumps(
        {
            "id": f"batch_req_{batch_id.removeprefix('batch_')}_{line_no + 1}",
            "custom_id": custom_id,
            "response": response,
            "error": error,
        }
    )


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line
    if pending.strip():
        yield pending


class _Run:
    """One batch this worker holds: its cancellation and lease state, its lines in flight."""

    def __init__(self, record: BatchRecord) -> None:
        self.record = record
        self.cancelled = asyncio.Event()  # the client cancelled the batch
        self.lost = asyncio.Event()  # the lease went to another worker: stop everything
        self.in_flight: set[asyncio.Task[None]] = set()


class BatchRunner:
    def __init__(self, app: ASGIApp, state: AppState, services: BatchServices) -> None:
        self._app = app
        self._state = state
        self._services = services
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(4)}"
        config = state.settings.batches
        self._pacer = Pacer(config.lines_per_second)
        self._slots = asyncio.Semaphore(config.concurrency)
        self._runs: dict[str, _Run] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._keys: dict[str, tuple[KeyRecord | None, float]] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop_task: asyncio.Task[None] | None = None

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(
            self._look_for_work(), name="batch-runner"
        )

    def wake(self) -> None:
        """A batch was created or cancelled here: look now rather than at the next poll."""
        self._wake.set()

    def cancel_local(self, batch_id: str) -> None:
        run = self._runs.get(batch_id)
        if run is not None:
            run.cancelled.set()
        self.wake()

    async def close(self) -> None:
        """Stop starting lines, give those in flight the shutdown grace, give leases back."""
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        tasks = list(self._tasks.values())
        if tasks:
            grace = min(self._state.settings.shutdown_grace_s, 20.0)
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    async def _look_for_work(self) -> None:
        config = self._state.settings.batches
        store = self._services.batches
        backoff = IdleBackoff(config.poll_s)
        while not self._stopping:
            found = bool(self._tasks)  # running batches: keep looking at the configured pace
            try:
                room = config.max_active_per_worker - len(self._tasks)
                if room > 0:
                    for batch_id in await store.runnable(time.time(), room * 2):
                        found = True
                        if len(self._tasks) >= config.max_active_per_worker:
                            break
                        if batch_id in self._tasks:
                            continue
                        if await store.acquire(batch_id, self.owner, time.time(), config.lease_s):
                            self._tasks[batch_id] = asyncio.get_running_loop().create_task(
                                self._hold(batch_id), name=f"batch-{batch_id}"
                            )
            except Exception:  # noqa: BLE001 - a database hiccup: try again next poll
                log.exception("looking for batches to run failed")
                found = True
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.after(found)):
                    await self._wake.wait()
            if self._wake.is_set():  # a batch created or finished here: look at once
                backoff.reset()

    # --- one batch ------------------------------------------------------------------------

    async def _hold(self, batch_id: str) -> None:
        store = self._services.batches
        record = await store.get(batch_id)
        try:
            if record is not None:
                run = self._runs[batch_id] = _Run(record)
                if record.status == "cancelling":
                    run.cancelled.set()
                keeper = asyncio.get_running_loop().create_task(self._keep_lease(run))
                try:
                    await self._advance(run)
                finally:
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keeper
        except Exception:  # noqa: BLE001 - logged; the lease runs out and another tries
            log.exception("batch %s: run failed", batch_id)
        finally:
            self._runs.pop(batch_id, None)
            self._tasks.pop(batch_id, None)
            with contextlib.suppress(Exception):
                await store.release(batch_id, self.owner)
            self.wake()

    async def _keep_lease(self, run: _Run) -> None:
        store = self._services.batches
        lease_s = self._state.settings.batches.lease_s
        while True:
            await asyncio.sleep(min(_TICK_S, lease_s / 3))
            try:
                status = await store.renew(run.record.id, self.owner, time.time() + lease_s)
            except Exception:  # noqa: BLE001 - a failed renewal is retried next tick
                log.warning("batch %s: lease renewal failed", run.record.id)
                continue
            if status is None:
                log.warning("batch %s: lease lost; stopping", run.record.id)
                run.lost.set()
                return
            if status == "cancelling":
                run.cancelled.set()

    async def _advance(self, run: _Run) -> None:
        store = self._services.batches
        record = run.record
        now = time.time()
        if record.status == "validating" and not run.cancelled.is_set():
            source = await self._services.files.get(record.input_file_id, record.key_id)
            if source is None or source.line_count is None:
                error = {
                    "code": "file_not_found",
                    "message": f"The input file {record.input_file_id} no longer exists.",
                    "param": "input_file_id",
                    "line": None,
                }
                await store.set_status(
                    record.id, self.owner, "failed", when="failed_at", now=now,
                    errors=orjson.dumps([error]).decode(),
                )  # fmt: skip
                return
            total = source.line_count
            await store.set_status(
                record.id, self.owner, "in_progress", when="in_progress_at", now=now, total=total
            )
            record.status, record.total = "in_progress", total
        else:
            await self._fail_interrupted(run)  # a batch taken over, in any state
        if record.status == "in_progress" and not run.cancelled.is_set():
            await self._run_lines(run)
        if run.lost.is_set() or (self._stopping and not run.cancelled.is_set()):
            return  # another worker (or this replica's successor) carries on
        if run.cancelled.is_set():
            await self._finish(run, "cancelled", "cancelled_at")
        elif time.time() >= record.expires_at and record.status != "finalizing":
            await self._finish(run, "expired", "expired_at")
        else:
            if record.status != "finalizing":
                await store.set_status(
                    record.id, self.owner, "finalizing", when="finalizing_at", now=time.time()
                )
            await self._finish(run, "completed", "completed_at")

    async def _fail_interrupted(self, run: _Run) -> None:
        """Lines a worker that lost the batch (killed mid-line) had started and not ended:
        whether the upstream got them cannot be known, so they are failed, never sent twice."""
        record = run.record
        store = self._services.batches
        error = {
            "code": "line_interrupted",
            "message": "The replica running this line stopped before it ended; it was not "
            "retried, so that no request reaches an upstream twice. Submit it again.",
        }
        for line in (await store.lines(record.id)).values():
            if line.state == "running" and line.owner != self.owner:
                result = _output_line(record.id, line.line_no, line.custom_id, None, error)
                await store.finish(
                    record.id, line.line_no, line.owner, "failed", result, time.time()
                )

    async def _run_lines(self, run: _Run) -> None:
        record = run.record
        store = self._services.batches
        started = await store.lines(record.id)
        source = await self._services.files.get(record.input_file_id, record.key_id)
        if source is None:
            return
        try:
            async for line_no, raw in _numbered(self._services.storage.read(source.storage_name)):
                if line_no in started:
                    continue
                if self._should_stop(run):
                    break
                await self._pacer.wait()
                await self._slots.acquire()
                if self._should_stop(run):
                    self._slots.release()
                    break
                custom_id = _custom_id(raw)
                if not await store.claim(record.id, line_no, custom_id, self.owner, time.time()):
                    self._slots.release()
                    continue
                task = asyncio.get_running_loop().create_task(self._line(run, line_no, raw))
                run.in_flight.add(task)
                task.add_done_callback(run.in_flight.discard)
        finally:
            try:
                await self._wait_for_lines(run)
            except asyncio.CancelledError:  # shutdown ran out of grace: lines stop here
                for task in run.in_flight:
                    task.cancel()
                if run.in_flight:
                    await asyncio.wait(set(run.in_flight), timeout=5)
                raise

    def _should_stop(self, run: _Run) -> bool:
        return (
            self._stopping
            or run.cancelled.is_set()
            or run.lost.is_set()
            or time.time() >= run.record.expires_at
        )

    async def _wait_for_lines(self, run: _Run) -> None:
        while run.in_flight:
            pending = set(run.in_flight)
            if run.cancelled.is_set() or run.lost.is_set():
                _, still = await asyncio.wait(pending, timeout=_CANCEL_GRACE_S)
                for task in still:
                    task.cancel()
                if still:
                    await asyncio.wait(still)
                return
            stop = asyncio.ensure_future(_first_set(run.cancelled, run.lost))
            try:
                await asyncio.wait({*pending, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()

    async def _key(self, key_id: str) -> KeyRecord | None:
        """The batch's key, re-read every few seconds: disabling it stops its batches too."""
        cached = self._keys.get(key_id)
        now = time.monotonic()
        if cached is None or now - cached[1] > _KEY_REFRESH_S:
            cached = (await self._state.keys.get(key_id), now)
            self._keys[key_id] = cached
        return cached[0]

    async def _line(self, run: _Run, line_no: int, raw: bytes) -> None:
        record = run.record
        store = self._services.batches
        state_name, result = "failed", b""
        try:
            state_name, result = await self._attempts(run, line_no, raw)
        except asyncio.CancelledError:
            if run.cancelled.is_set():
                error = {"code": "batch_cancelled", "message": "The batch was cancelled mid-line."}
            else:
                error = {"code": "line_interrupted", "message": "The replica stopped mid-line."}
            result = _output_line(record.id, line_no, _custom_id(raw), None, error)
            raise
        except Exception:  # noqa: BLE001 - one line's bug must not stop the batch
            log.exception("batch %s line %d: internal error", record.id, line_no + 1)
            error = {"code": "internal_error", "message": "The gateway hit an internal error."}
            result = _output_line(record.id, line_no, _custom_id(raw), None, error)
        finally:
            self._slots.release()
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    store.finish(record.id, line_no, self.owner, state_name, result, time.time())
                )

    async def _attempts(self, run: _Run, line_no: int, raw: bytes) -> tuple[str, bytes]:
        record = run.record
        config = self._state.settings.batches
        item = orjson.loads(raw)
        custom_id = str(item["custom_id"])
        body = orjson.dumps(item["body"])
        request_id = line_request_id(record.id, line_no)
        answer: InProcessAnswer | None = None
        for attempt in range(config.max_attempts):
            if attempt:
                await asyncio.sleep(config.retry_backoff_s * 2 ** (attempt - 1))
            key = await self._key(record.key_id)
            if key is None:
                error = {"code": "invalid_api_key", "message": "The batch's key was deleted."}
                return "failed", _output_line(record.id, line_no, custom_id, None, error)
            answer = await call_in_process(
                self._app, item["url"], body,
                key=key, request_id=request_id, price_ppm=record.price_ppm,
            )  # fmt: skip
            if not _retryable(answer) or self._should_stop(run):
                break
        assert answer is not None
        state_name = "succeeded" if 200 <= answer.status < 300 else "failed"
        return state_name, _output_line(record.id, line_no, custom_id, answer, None)

    # --- the end --------------------------------------------------------------------------

    async def _finish(self, run: _Run, status: str, when: str) -> None:
        record = run.record
        store = self._services.batches
        # On disk, not in memory: an output file can be as large as its batch's answers.
        output, errors = _Spool(), _Spool()
        try:
            async for line in store.results(record.id):
                if line.result is not None:
                    await (output if line.state == "succeeded" else errors).add(line.result)
            if status == "expired":
                await self._expire_unstarted(record, errors)
            ids: dict[str, Any] = {}
            for name, spool in (("output_file_id", output), ("error_file_id", errors)):
                if spool.lines:
                    await spool.flush()
                    ids[name] = (await self._store_output(record, name, spool.file)).id
            await store.set_status(
                record.id, self.owner, status, when=when, now=time.time(),
                completed=output.lines, failed=errors.lines, **ids,
            )  # fmt: skip
        finally:
            output.file.close()
            errors.file.close()

    async def _expire_unstarted(self, record: BatchRecord, errors: _Spool) -> None:
        """Lines the window closed on before they started: failed as ``batch_expired``."""
        source = await self._services.files.get(record.input_file_id, record.key_id)
        if source is None:
            return
        started = await self._services.batches.lines(record.id)
        error = {"code": "batch_expired", "message": "The batch expired before this line ran."}
        async for line_no, raw in _numbered(self._services.storage.read(source.storage_name)):
            if line_no not in started:
                await errors.add(_output_line(record.id, line_no, _custom_id(raw), None, error))

    async def _store_output(self, record: BatchRecord, name: str, handle: BinaryIO) -> FileRecord:
        size = handle.tell()
        handle.seek(0)
        kind = "output" if name == "output_file_id" else "error"
        file = FileStore.new(record.key_id, "batch_output", f"{record.id}_{kind}.jsonl", size)
        await self._services.storage.put(file.storage_name, handle)
        await self._services.files.add(file)
        return file


class _Spool:
    """Output lines gathered in a temporary file, written a buffer at a time off the loop."""

    def __init__(self) -> None:
        self.file: BinaryIO = tempfile.TemporaryFile()
        self.lines = 0
        self._buffer: list[bytes] = []
        self._size = 0

    async def add(self, line: bytes) -> None:
        self._buffer.append(line + b"\n")
        self._size += len(line) + 1
        self.lines += 1
        if self._size >= CHUNK_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data, self._buffer, self._size = b"".join(self._buffer), [], 0
            await asyncio.to_thread(self.file.write, data)


async def _numbered(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    number = 0
    async for line in _lines(chunks):
        yield number, line
        number += 1


def _custom_id(raw: bytes) -> str:
    try:
        return str(orjson.loads(raw).get("custom_id", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return ""


async def _first_set(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

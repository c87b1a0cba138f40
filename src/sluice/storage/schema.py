"""Table definitions shared by SQLite and PostgreSQL (SQLAlchemy Core).

Times are stored as UNIX epoch seconds (float): the same comparisons work on both databases and
no time-zone conversion can go wrong. Money is integer micro-dollars.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "metadata",
    "api_keys",
    "key_changes",
    "runtime_channels",
    "runtime_channel_version",
    "tasks",
    "usage",
    "usage_daily",
    "files",
    "batches",
    "batch_lines",
    "stored_responses",
    "UNIT_COLUMNS",
]

# Counts of the metered units besides tokens, on usage rows and daily totals (migration 0004).
UNIT_COLUMNS = ("images", "audio_seconds", "characters", "search_units", "calls", "video_seconds")

metadata = MetaData()

_BigId = BigInteger().with_variant(Integer, "sqlite")

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("budget_micro", BigInteger, nullable=True),
    Column("spent_micro", BigInteger, nullable=False, server_default="0"),
    Column("expires_at", Float, nullable=True),
    Column("allowed_models", Text, nullable=False, server_default="[]"),
    Column("allowed_ips", Text, nullable=False, server_default="[]"),
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    Column("max_concurrent", Integer, nullable=True),  # migration 0002
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=True),
)

# Migration 0005: one row per key change (create, update, delete), numbered in commit order, so
# every server learns of changes made elsewhere (the CLI, another worker) by polling the newest
# version. Only the last rows are kept (storage/key_changes.py).
key_changes = Table(
    "key_changes",
    metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("key_id", String(32), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("spend_reset", Boolean, nullable=False, server_default="0"),
    Column("changed_at", Float, nullable=False),
)

usage = Table(
    "usage",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("endpoint", String(32), nullable=False),
    Column("model", String(200), nullable=False),
    Column("upstream_model", String(200), nullable=True),
    Column("channel", String(100), nullable=True),
    Column("prompt_tokens", Integer, nullable=False, server_default="0"),
    Column("cached_tokens", Integer, nullable=False, server_default="0"),
    Column("completion_tokens", Integer, nullable=False, server_default="0"),
    Column("cost_micro", BigInteger, nullable=False, server_default="0"),
    Column("status", Integer, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("latency_ms", Float, nullable=False),
    Column("ttft_ms", Float, nullable=True),
    Column("stream", Boolean, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    # Units other than tokens (migration 0004; metering/pricing.py MeteredUnits)
    Column("images", Integer, nullable=False, server_default="0"),
    Column("audio_seconds", Integer, nullable=False, server_default="0"),
    Column("characters", Integer, nullable=False, server_default="0"),
    Column("search_units", Integer, nullable=False, server_default="0"),
    Column("calls", Integer, nullable=False, server_default="0"),
    Column("video_seconds", Integer, nullable=False, server_default="0"),  # migration 0010
    Index("ix_usage_key_created", "key_id", "created_at"),
    Index("ix_usage_created", "created_at"),
    Index("ix_usage_request_id", "request_id"),
    Index("ix_usage_model_created", "model", "created_at"),  # migration 0006
    Index("ix_usage_channel_created", "channel", "created_at"),
)

# Migration 0006: channels created at runtime. ``config`` is the channel's JSON without its
# upstream key, which is ``api_key_enc`` (sluice.secret_box: never stored in clear).
runtime_channels = Table(
    "runtime_channels",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("config", Text, nullable=False),
    Column("api_key_enc", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# One row (id 1), bumped with every runtime channel change: what each server polls.
runtime_channel_version = Table(
    "runtime_channel_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

# Daily totals kept when old usage rows are pruned.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("key_id", String(32), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("channel", String(100), primary_key=True),
    Column("requests", BigInteger, nullable=False, server_default="0"),
    Column("prompt_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cached_tokens", BigInteger, nullable=False, server_default="0"),
    Column("completion_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cost_micro", BigInteger, nullable=False, server_default="0"),
    Column("images", BigInteger, nullable=False, server_default="0"),  # migration 0004
    Column("audio_seconds", BigInteger, nullable=False, server_default="0"),
    Column("characters", BigInteger, nullable=False, server_default="0"),
    Column("search_units", BigInteger, nullable=False, server_default="0"),
    Column("calls", BigInteger, nullable=False, server_default="0"),
    Column("video_seconds", BigInteger, nullable=False, server_default="0"),
)


# Migration 0009: the Batch API. Files are owned by the key that uploaded them (or whose batch
# wrote them); their bytes live in the files storage backend under ``storage_name``.
files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("storage_name", String(200), nullable=False),
    Column("line_count", Integer, nullable=True),  # batch input: validated lines
    Column("urls", Text, nullable=True),  # batch input: the distinct line urls (JSON list)
    Column("created_at", Float, nullable=False),
    Index("ix_files_key_created", "key_id", "created_at"),
)

# One batch; ``lease_owner``/``lease_until`` say which worker runs it (a conditional UPDATE takes
# it), ``price_ppm`` the share of the price its lines are billed at (fixed at creation).
batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(40), nullable=False),
    Column("completion_window", String(8), nullable=False),
    Column("status", String(16), nullable=False),
    Column("metadata", Text, nullable=True),
    Column("errors", Text, nullable=True),
    Column("price_ppm", Integer, nullable=False),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("completed", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("output_file_id", String(40), nullable=True),
    Column("error_file_id", String(40), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("in_progress_at", Float, nullable=True),
    Column("finalizing_at", Float, nullable=True),
    Column("completed_at", Float, nullable=True),
    Column("failed_at", Float, nullable=True),
    Column("expired_at", Float, nullable=True),
    Column("cancelling_at", Float, nullable=True),
    Column("cancelled_at", Float, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Index("ix_batches_key_created", "key_id", "created_at"),
    Index("ix_batches_status", "status"),
)

# One row per line that was started: the primary key makes a line start once, whichever worker
# gets there first; ``result`` is its line of the output or error file once it has ended.
batch_lines = Table(
    "batch_lines",
    metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("line_no", Integer, primary_key=True, autoincrement=False),
    Column("custom_id", Text, nullable=False),
    Column("state", String(12), nullable=False),  # running | succeeded | failed
    Column("owner", String(64), nullable=False),
    Column("result", Text, nullable=True),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
)

# Migration 0008: asynchronous tasks (Midjourney, Suno, video; sluice.tasks). Sluice's own id;
# the upstream's is never shown. ``reserved_micro`` was charged to the key's spend at submit and
# is corrected to ``cost_micro`` when the task ends (docs/tasks.md). One replica at a time
# polls an unfinished task: the one whose ``lease_until`` lies ahead.
tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("mode", String(16), nullable=True),
    Column("model", String(200), nullable=False),
    Column("channel", String(100), nullable=False),
    Column("upstream_id", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("progress", Integer, nullable=False, server_default="0"),
    Column("request", Text, nullable=False, server_default="{}"),
    Column("result", Text, nullable=False, server_default="{}"),
    Column("fail_reason", Text, nullable=True),
    Column("reserved_micro", BigInteger, nullable=False, server_default="0"),
    Column("cost_micro", BigInteger, nullable=True),
    Column("units", Integer, nullable=False, server_default="1"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("next_poll_at", Float, nullable=True),
    Column("callback_url", Text, nullable=True),
    Column("callback_secret", String(64), nullable=False, server_default=""),
    Column("notified", String(16), nullable=False, server_default=""),
    Column("deleted_at", Float, nullable=True),  # DELETE /v1/videos/{id}: hidden, row kept
    Index("ix_tasks_key_created", "key_id", "created_at"),
    Index("ix_tasks_due", "finished_at", "next_poll_at"),
)

# Migration 0007: Responses API responses stored for translated channels (``store``), so that
# ``previous_response_id``, retrieval and ``input_items`` work where the upstream keeps nothing.
# Each row is visible only to the key that created it, until ``expires_at``
# (``responses.retention_days``). JSON documents as text: read back whole, never queried into.
stored_responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("response", Text, nullable=False),  # the Response object as last sent
    Column("input_items", Text, nullable=False),  # the full context, as input items
    # Passed through to an upstream that keeps it too (OpenAI): a continuation may be
    # forwarded there; False: only Sluice holds it (a translated channel answered).
    Column("upstream_held", Boolean, nullable=False, server_default="0"),
    Index("ix_responses_expires_at", "expires_at"),
)

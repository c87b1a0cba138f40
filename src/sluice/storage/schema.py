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

__all__ = ["metadata", "api_keys", "key_changes", "usage", "usage_daily", "UNIT_COLUMNS"]

# Counts of the metered units besides tokens, on usage rows and daily totals (migration 0004).
UNIT_COLUMNS = ("images", "audio_seconds", "characters", "search_units", "calls")

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
    Index("ix_usage_key_created", "key_id", "created_at"),
    Index("ix_usage_created", "created_at"),
    Index("ix_usage_request_id", "request_id"),
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
)

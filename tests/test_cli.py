"""``sluice usage``: the table shows the metered units some row counts; --json shows them all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
import yaml

from sluice.cli import main as cli_main
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.migrate import upgrade_database
from sluice.storage.schema import UNIT_COLUMNS
from sluice.storage.usage_sink import UsageRow, UsageSink

# The header as it was before metered units existed.
CHAT_HEADER = f"{'MODEL':34}  {'REQUESTS':>9}  {'PROMPT':>10}  {'COMPLETION':>10}  {'COST USD':>12}"


def _row(key_id: str, model: str, cost: int, **units: int) -> UsageRow:
    row = UsageRow(
        request_id=f"{model}-{cost}", key_id=key_id, endpoint="x", model=model,
        upstream_model=model, channel="c", prompt_tokens=5, cached_tokens=0,
        completion_tokens=7, cost_micro=cost, status=200, error_code=None, latency_ms=1.0,
        ttft_ms=None, stream=False, created_at=1_772_323_200.0,
    )  # fmt: skip
    for unit, count in units.items():  # UsageRow's unit counts (UNIT_COLUMNS)
        setattr(row, unit, count)
    return row


async def _seed(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_database(engine)
        key_id = (await KeyStore(engine).create("k")).record.id
        sink = UsageSink(engine)
        sink.record(_row(key_id, "dall-e-3", 240_000, images=3))
        sink.record(_row(key_id, "tts-1", 61_440, characters=4096))
        sink.record(_row(key_id, "gpt-4o", 23))
        await sink.close()
    finally:
        await engine.dispose()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    database_url = f"sqlite:///{tmp_path / 'usage.db'}"
    asyncio.run(_seed(database_url))
    path = tmp_path / "sluice.yaml"
    path.write_text(yaml.safe_dump({"database_url": database_url}))
    return path


def _usage(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert cli_main(["usage", "--config", str(config), *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_usage_table_shows_only_units_counted(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header, *rows = _usage(config, capsys, "--by", "model")
    assert header.split() == [
        "MODEL", "REQUESTS", "PROMPT", "COMPLETION", "IMAGES", "CHARACTERS", "COST", "USD"
    ]  # fmt: skip
    assert [row.split() for row in rows] == [
        ["dall-e-3", "1", "5", "7", "3", "0", "0.240000"],
        ["gpt-4o", "1", "5", "7", "0", "0", "0.000023"],
        ["tts-1", "1", "5", "7", "0", "4096", "0.061440"],
    ]
    # Columns stay aligned under their heads.
    assert header.index("CHARACTERS") + len("CHARACTERS") == rows[2].index("4096") + 4


def test_usage_table_of_chat_only_rows_is_unchanged(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header, row = _usage(config, capsys, "--by", "model", "--model", "gpt-4o")
    assert header == CHAT_HEADER
    assert row.split() == ["gpt-4o", "1", "5", "7", "0.000023"]


def test_usage_json_carries_every_unit(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (total,) = orjson.loads("\n".join(_usage(config, capsys, "--json")))
    assert {u: total[u] for u in UNIT_COLUMNS} == {
        "images": 3, "audio_seconds": 0, "characters": 4096, "search_units": 0, "calls": 0,
        "video_seconds": 0,
    }  # fmt: skip
    assert total["requests"] == 3 and total["cost_micro"] == 301_463

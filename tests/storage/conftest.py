"""Storage tests run on both databases: SQLite in a temporary file, PostgreSQL fresh per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scale import conftest as _scale

pg_url = _scale.pg_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sluice.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url

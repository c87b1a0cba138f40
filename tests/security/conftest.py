"""The scale suite's PostgreSQL fixture (a fresh database per test), for the migration tests."""

from tests.scale import conftest as _scale

pg_url = _scale.pg_url

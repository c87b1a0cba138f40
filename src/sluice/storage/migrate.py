"""``sluice migrate``: bring the database schema up to date with Alembic.

On PostgreSQL the upgrade runs under a transaction-scoped advisory lock, so replicas that start
together serialise instead of racing to create the same tables.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from sluice.storage.aio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic (with Mako and Pygments) is imported only when a migration runs: this module is
# imported by the CLI, and so by every server worker, where it would cost memory in each.

__all__ = ["upgrade_database", "current_revision"]

_MIGRATION_LOCK_ID = 0x51_1C_E0_01


def _alembic_config(connection: Any) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("sluice.storage").joinpath("migrations"))
    )
    config.attributes["connection"] = connection
    return config


async def upgrade_database(engine: AsyncEngine, revision: str = "head") -> None:
    from alembic import command

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
            )
        await conn.run_sync(lambda sync_conn: command.upgrade(_alembic_config(sync_conn), revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )

"""Where Sluice keeps its local files (admin key, secrets key): next to the SQLite database,
else ``./.sluice``."""

from __future__ import annotations

from pathlib import Path

from sluice.settings import Settings
from sluice.storage.db import is_sqlite

__all__ = ["state_dir"]


def state_dir(settings: Settings) -> Path:
    if is_sqlite(settings.database_url):
        path = settings.database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            return Path(path).expanduser().resolve().parent
    return Path(".sluice").resolve()

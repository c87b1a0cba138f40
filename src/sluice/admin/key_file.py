"""The admin key ``sluice serve`` uses: from the config, else generated once into a 0600 file.

A generated key is written to ``admin_key`` in the state directory (next to the SQLite database,
else ``./.sluice``), created with mode 0600 so only the server's user can read it, and only its
path is printed: a key printed to stdout ends up in terminal scroll-back, CI logs and process
supervisors' journals. Later starts read the same file; nothing is regenerated or printed.

Installations from before this file existed kept only ``admin_key.sha256`` (the key was printed
once); that hash is still honoured until the operator deletes it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sluice.settings import ADMIN_KEY_MIN_LENGTH, ConfigError, Settings

__all__ = ["AdminKey", "resolve_admin_key", "KEY_FILE_NAME", "LEGACY_HASH_FILE_NAME"]

KEY_FILE_NAME = "admin_key"
LEGACY_HASH_FILE_NAME = "admin_key.sha256"


@dataclass(frozen=True, slots=True)
class AdminKey:
    key_hash: str  # sha256 hex, what the workers compare against
    note: str | None  # one line for the start-up banner; never the key itself


def _sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _read_key_file(path: Path) -> str:
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < ADMIN_KEY_MIN_LENGTH:
        raise ConfigError(
            f"admin key file {path}: the key must be at least {ADMIN_KEY_MIN_LENGTH} characters "
            "(delete the file to have a new one generated)"
        )
    return key


def _write_key_file(path: Path) -> None:
    key = "sk-admin-" + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a key another process wrote meanwhile. The mode is given at
    # creation, so the key is never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), 0o600)  # the umask cannot widen it, but may have narrowed it
        handle.write(key + "\n")


def resolve_admin_key(settings: Settings, state_dir: Path) -> AdminKey:
    """The admin key's hash, generating the key file on first start when the config has none."""
    if settings.admin_key is not None:
        return AdminKey(_sha256(settings.admin_key.get_secret_value()), None)
    key_file = state_dir / KEY_FILE_NAME
    legacy = state_dir / LEGACY_HASH_FILE_NAME
    if not key_file.exists() and legacy.is_file():
        return AdminKey(
            legacy.read_text(encoding="utf-8").strip(),
            f"Admin key: the one printed on first start (its hash is in {legacy}; delete that "
            f"file to have a new key written to {key_file})",
        )
    created = False
    if not key_file.exists():
        try:
            _write_key_file(key_file)
            created = True
        except FileExistsError:
            pass  # another process created it first: use theirs
    key = _read_key_file(key_file)
    note = f"Admin key: {'generated into' if created else 'in'} {key_file} (only its path is shown)"
    if key_file.stat().st_mode & 0o077:
        note += f"\nWARNING: {key_file} is readable by other users; run: chmod 600 {key_file}"
    return AdminKey(_sha256(key), note)

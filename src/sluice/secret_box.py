"""Secrets Sluice must store and read back (runtime channels' upstream keys), encrypted at rest.

Fernet (AES-128-CBC + HMAC-SHA256, from the ``cryptography`` package): the database holds only
the token, so a copy of the database (a backup, a replica, a leaked dump) does not give away
upstream keys. The encryption key comes, first found, from ``secrets_key`` in the config, the
``SLUICE_SECRETS_KEY`` environment variable, or a file ``secrets_key`` in the data directory,
generated (mode 0600) on first use like the admin key file. Every replica must see the same
key: with a shared database (PostgreSQL) set it in the config or the environment.

Any string of 32 characters or more is accepted as the key; the Fernet key is its SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

__all__ = ["SecretBox", "SecretBoxError", "ENV_SECRETS_KEY", "SECRETS_FILE_NAME", "load_box"]

ENV_SECRETS_KEY = "SLUICE_SECRETS_KEY"
SECRETS_FILE_NAME = "secrets_key"
_MIN_LENGTH = 32


class SecretBoxError(Exception):
    """The encryption key is missing or unusable, or a stored secret cannot be decrypted."""


class SecretBox:
    def __init__(self, key_material: str) -> None:
        if len(key_material) < _MIN_LENGTH:
            raise SecretBoxError(f"the secrets key must be at least {_MIN_LENGTH} characters")
        # Imported when a box is first made (a runtime channel is stored or read): OpenSSL's
        # bindings cost each worker about 5 MiB, which a gateway without them need not pay.
        from cryptography.fernet import Fernet

        digest = hashlib.sha256(key_material.encode()).digest()
        self._fernet: Fernet = Fernet(base64.urlsafe_b64encode(digest))

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except (InvalidToken, ValueError):
            raise SecretBoxError(
                "a stored secret cannot be decrypted: was the secrets key changed?"
            ) from None


def _key_file(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: another worker may be writing it right now; then theirs is used.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
    for _ in range(50):  # a file another process has created but not yet written
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
        time.sleep(0.01)
    raise SecretBoxError(f"secrets key file {path} is empty")


def load_box(configured: str | None, data_dir: Path) -> SecretBox:
    """The box for this server: configured key, else the environment's, else the file's."""
    material = configured or os.environ.get(ENV_SECRETS_KEY) or None
    if material is None:
        material = _key_file(data_dir / SECRETS_FILE_NAME)
    return SecretBox(material)

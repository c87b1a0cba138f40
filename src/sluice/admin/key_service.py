"""Every key change, from the admin API or the CLI: validated once, stored, announced.

Both front ends hand the service what the user sent: the admin API its JSON body, the CLI its
options mapped onto the same fields (``--rpm 0`` -> ``"rpm": null`` and the like; that mapping
is CLI syntax, the rules are here). So the same bad input gets the same error from both, as a
``sluice.errors`` exception: the API renders it as OpenAI-shaped JSON (400 with ``param``, 404
``key_not_found``), the CLI prints its message and exits with status 2.

Every update and delete is written to the key change log with the row (``KeyStore``), which is
how servers without Redis learn of it (``sluice.key_watch``). ``announce`` is the rest of a
change's effects, which differ by who made it: a server drops the key from its own cache,
forgets budget counters and publishes on Redis; the CLI publishes on Redis when configured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sluice.admin.schemas import BodyError, KeyCreate, KeyUpdate, parse_body
from sluice.errors import InvalidRequest, NotFound
from sluice.keys import KeyRecord
from sluice.storage.key_store import KeyStore, NewKey

__all__ = ["Announce", "KeyService", "validated"]

# (the key as it was, whether its spend counters must go: spend reset or key deleted)
Announce = Callable[[KeyRecord, bool], Awaitable[None]]
_Body = TypeVar("_Body", KeyCreate, KeyUpdate)


def validated(raw: object, schema: type[_Body]) -> _Body:
    """``raw`` (decoded JSON, or CLI options as the same fields) checked against ``schema``."""
    try:
        return parse_body(raw, schema)
    except BodyError as exc:
        if exc.param is None:
            raise InvalidRequest(f"Invalid request body: {exc}") from None
        raise InvalidRequest(f"Invalid '{exc.param}': {exc}", param=exc.param) from None


class KeyService:
    def __init__(self, store: KeyStore, announce: Announce) -> None:
        self._store = store
        self._announce = announce

    async def find(self, ident: str) -> KeyRecord:
        """By id, visible prefix or name; 404 ``key_not_found`` if none (or several) match."""
        record = await self._store.find(ident)
        if record is None:
            raise NotFound(
                f"There is no key with id, prefix or name '{ident}'.", code="key_not_found"
            )
        return record

    async def list(self) -> list[KeyRecord]:
        return await self._store.list()

    async def create(self, raw: object) -> NewKey:
        body = validated(raw, KeyCreate)
        return await self._store.create(
            body.name,
            budget_micro=None if body.budget_usd is None else round(body.budget_usd * 1_000_000),
            expires_at=float(body.expires_at) if body.expires_at is not None else None,
            allowed_models=body.models,
            allowed_ips=body.allowed_ips,
            rpm=body.rpm,
            tpm=body.tpm,
            max_concurrent=body.max_concurrent,
        )

    async def update(self, ident: str, raw: object) -> KeyRecord:
        """Absent fields stay; null clears; ``reset_spent: true`` zeroes the spend."""
        record = await self.find(ident)
        return await self._apply(record, validated(raw, KeyUpdate))

    async def set_disabled(self, ident: str, disabled: bool) -> KeyRecord:
        return await self._apply(await self.find(ident), KeyUpdate(disabled=disabled))

    async def delete(self, ident: str) -> KeyRecord:
        """Returns the key as it was."""
        record = await self.find(ident)
        await self._store.delete(record.id)
        await self._announce(record, True)
        return record

    async def _apply(self, record: KeyRecord, body: KeyUpdate) -> KeyRecord:
        changes = body.changes()
        updated = await self._store.update(record.id, changes)
        if updated is None:
            raise NotFound("The key was deleted meanwhile.", code="key_not_found")
        await self._announce(record, changes.reset_spent)
        return updated

"""``sluice`` command line: serve, keys, usage, migrate, config check.

Every command takes ``--config PATH`` and otherwise reads ``SLUICE_CONFIG``, so the CLI works
against the same database as the running server.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy.exc import SQLAlchemyError

from sluice.admin.key_service import KeyService
from sluice.admin.schemas import parse_time
from sluice.errors import SluiceError
from sluice.keys import KeyRecord
from sluice.settings import ConfigError, Settings, load_settings, resolve_config_path
from sluice.storage.db import create_engine
from sluice.storage.key_store import KeyStore
from sluice.storage.migrate import upgrade_database
from sluice.storage.schema import UNIT_COLUMNS
from sluice.storage.usage_queries import UsageFilter, UsageQueries

__all__ = ["main"]

T = TypeVar("T")


class CliError(Exception):
    """A user mistake: printed as one line, exit status 2."""


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(resolve_config_path(args.config))


def _run_db(args: argparse.Namespace, work: Callable[[Any], Awaitable[T]]) -> T:
    settings = _settings(args)

    async def runner() -> T:
        engine = create_engine(settings.database_url)
        try:
            await upgrade_database(engine)
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(runner())


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _time_arg(value: str | None) -> float | None:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise CliError(str(exc)) from None


# --- keys -------------------------------------------------------------------------------------


def _key_service(args: argparse.Namespace, engine: Any) -> KeyService:
    redis_url = _settings(args).redis_url

    async def announce(record: KeyRecord, spend_dropped: bool) -> None:
        # Servers see the change through the database's change log within
        # limits.key_change_poll_s; with Redis, at once, and shared counters go too.
        if redis_url is None:
            return
        from sluice.redis_backend.wiring import notify_key_change

        if not await notify_key_change(
            redis_url, record.key_hash, record.id, drop_budget=spend_dropped
        ):
            print(
                "sluice: warning: redis unreachable; servers see the change through the database"
                + (", but the shared budget counter was not reset" if spend_dropped else ""),
                file=sys.stderr,
            )

    return KeyService(KeyStore(engine), announce)


def _limit_fields(args: argparse.Namespace, fields: dict[str, Any]) -> dict[str, Any]:
    """The options ``create`` and ``update`` share, as the admin API's fields (validated
    there); on update 0 (and a negative budget) means no limit, '' no expiry."""
    updating = args.action == "update"
    if args.budget_usd is not None:
        fields["budget_usd"] = None if updating and args.budget_usd < 0 else args.budget_usd
    if args.models is not None:
        fields["models"] = _csv(args.models)
    for name in ("rpm", "tpm", "max_concurrent"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = (value or None) if updating else value
    if args.expires is not None:
        fields["expires_at"] = args.expires or None
    if args.allow_ip is not None:
        fields["allowed_ips"] = [ip for ip in args.allow_ip if ip]
    return fields


def cmd_keys_create(args: argparse.Namespace) -> int:
    fields = _limit_fields(args, {"name": args.name})
    new = _run_db(args, lambda engine: _key_service(args, engine).create(fields))
    if args.json:
        _print_json({"key": new.secret, **new.record.public_view()})
    else:
        print(f"Created key '{new.record.name}' (id {new.record.id}).")
        print(f"Secret (shown once, store it now): {new.secret}")
    return 0


def _key_table(records: list[Any]) -> None:
    print(f"{'ID':32}  {'PREFIX':8}  {'NAME':20}  {'BUDGET':>10}  {'SPENT':>10}  STATE")
    for r in records:
        budget = "-" if r.budget_micro is None else f"{r.budget_micro / 1e6:.2f}"
        state = "disabled" if r.disabled else ("expired" if r.is_expired() else "active")
        print(
            f"{r.id:32}  {r.prefix:8}  {r.name[:20]:20}  {budget:>10}  "
            f"{r.spent_micro / 1e6:>10.4f}  {state}"
        )


def cmd_keys_list(args: argparse.Namespace) -> int:
    records = _run_db(args, lambda engine: KeyStore(engine).list())
    if args.json:
        _print_json([r.public_view() for r in records])
    else:
        _key_table(records)
    return 0


async def _find(engine: Any, ident: str) -> Any:
    return await KeyService(KeyStore(engine), _no_announce).find(ident)


async def _no_announce(record: KeyRecord, spend_dropped: bool) -> None:
    """Reads announce nothing."""


def cmd_keys_show(args: argparse.Namespace) -> int:
    record = _run_db(args, lambda engine: _find(engine, args.key))
    _print_json(record.public_view())
    return 0


def cmd_keys_update(args: argparse.Namespace) -> int:
    fields = _limit_fields(args, {} if args.name is None else {"name": args.name})
    if args.reset_spent:
        fields["reset_spent"] = True
    record = _run_db(args, lambda engine: _key_service(args, engine).update(args.key, fields))
    _print_json(record.public_view())
    return 0


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    record = _run_db(
        args, lambda engine: _key_service(args, engine).set_disabled(args.key, disabled)
    )
    _print_json(record.public_view())
    return 0


def cmd_keys_disable(args: argparse.Namespace) -> int:
    return _set_disabled(args, True)


def cmd_keys_enable(args: argparse.Namespace) -> int:
    return _set_disabled(args, False)


def cmd_keys_delete(args: argparse.Namespace) -> int:
    record = _run_db(args, lambda engine: _key_service(args, engine).delete(args.key))
    print(f"Deleted key {record.id}.")
    return 0


# --- usage, migrate, config -------------------------------------------------------------------


def cmd_usage_prune(args: argparse.Namespace) -> int:
    from sluice.storage.prune import prune_usage

    if not args.before:
        raise CliError("usage prune needs --before DATE (rows before that UTC day are folded)")
    try:
        day = dt.date.fromisoformat(args.before)
    except ValueError:
        raise CliError(f"--before: expected a date as YYYY-MM-DD, got '{args.before}'") from None
    cutoff = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
    result = _run_db(args, lambda engine: prune_usage(engine, cutoff))
    print(
        f"Pruned {result.rows_deleted} usage rows before {day.isoformat()} into "
        f"{result.daily_rows} daily totals."
    )
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    if args.action == "prune":
        return cmd_usage_prune(args)

    async def work(engine: Any) -> list[dict[str, Any]]:
        key_id = (await _find(engine, args.key)).id if args.key else None
        where = UsageFilter(
            key_id=key_id,
            model=args.model,
            since=_time_arg(args.since),
            until=_time_arg(args.until),
        )
        return await UsageQueries(engine).summary(where, args.by)

    rows = _run_db(args, work)
    if args.json:
        _print_json(rows)
        return 0
    label = args.by or "total"
    # Unit columns (images, audio seconds, ...) only when some row counts them: a chat-only
    # report reads as it always did; --json carries every column.
    units = [u for u in UNIT_COLUMNS if any(row.get(u) for row in rows)]
    unit_heads = "".join(f"  {u.upper().replace('_', ' '):>13}" for u in units)
    print(
        f"{label.upper():34}  {'REQUESTS':>9}  {'PROMPT':>10}  {'COMPLETION':>10}"
        f"{unit_heads}  {'COST USD':>12}"
    )
    for row in rows:
        name = str(row.get(args.by, "all")) if args.by else "all"
        unit_cells = "".join(f"  {row[u]:>13}" for u in units)
        print(
            f"{name[:34]:34}  {row['requests']:>9}  {row['prompt_tokens']:>10}  "
            f"{row['completion_tokens']:>10}{unit_cells}  {row['cost_usd']:>12.6f}"
        )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _run_db(args, lambda engine: asyncio.sleep(0))
    print("Database schema is up to date.")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    path = Path(args.path)
    settings = load_settings(path)
    from sluice.providers.registry import supported_types
    from sluice.providers.url_path import model_map_problems

    problems = [
        f"channel {c.name}: type '{c.type}' is not supported by this build"
        for c in settings.channels
        if c.type not in supported_types()
    ]
    problems += [
        f"channel {c.name}: base_url is required for type '{c.type}'"
        for c in settings.channels
        if c.capabilities.needs_base_url and not c.base_url
    ]
    problems += model_map_problems(settings.channels)
    if problems:
        print(f"{path}: {len(problems)} problem(s)")
        for problem in problems:
            print(f"  {problem}")
        return 1
    from sluice.metering.pricing import PriceBook, cheaper_alias_warnings

    for warning in cheaper_alias_warnings(PriceBook(settings.pricing), settings.channels):
        print(f"  warning: {warning}")
    print(f"{path}: OK ({len(settings.channels)} channels)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sluice.serve import serve

    return serve(
        config=resolve_config_path(args.config),
        host=args.host,
        port=args.port,
        workers=args.workers,
    )


# --- parser -----------------------------------------------------------------------------------


def _key_limits(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget-usd", type=float, help="budget in USD (update: -1 = unlimited)")
    parser.add_argument(
        "--models",
        help="allowed models, comma-separated globs; '*' = all (create's default), '' = none",
    )
    parser.add_argument("--rpm", type=int, help="requests per minute (update: 0 = no limit)")
    parser.add_argument("--tpm", type=int, help="tokens per minute (update: 0 = no limit)")
    parser.add_argument(
        "--max-concurrent", type=int, help="requests in flight at once (update: 0 = no limit)"
    )
    parser.add_argument("--expires", help="expiry, ISO 8601 (update: '' = never)")
    parser.add_argument("--allow-ip", action="append", help="allowed client CIDR; repeatable")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $SLUICE_CONFIG, else embedded)")
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice LLM API gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", parents=[common])
    create.add_argument("--name", required=True)
    _key_limits(create)
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=cmd_keys_create)
    listing = keys.add_parser("list", parents=[common])
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_keys_list)
    for action, func in (
        ("show", cmd_keys_show),
        ("disable", cmd_keys_disable),
        ("enable", cmd_keys_enable),
        ("delete", cmd_keys_delete),
    ):
        one = keys.add_parser(action, parents=[common])
        one.add_argument("key", help="key id, visible prefix or name")
        one.set_defaults(func=func)
    upd = keys.add_parser("update", parents=[common])
    upd.add_argument("key", help="key id, visible prefix or name")
    upd.add_argument("--name")
    _key_limits(upd)
    upd.add_argument("--reset-spent", action="store_true")
    upd.set_defaults(func=cmd_keys_update)

    usage = sub.add_parser("usage", parents=[common], help="usage report, or prune old rows")
    usage.add_argument("action", nargs="?", choices=["report", "prune"], default="report")
    usage.add_argument("--before", help="prune: fold rows before this UTC date (YYYY-MM-DD)")
    usage.add_argument("--key")
    usage.add_argument("--model")
    usage.add_argument("--since", help="ISO 8601 time or date")
    usage.add_argument("--until", help="ISO 8601 time or date")
    usage.add_argument("--by", choices=["day", "model", "key", "channel"])
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(func=cmd_usage)

    migrate = sub.add_parser("migrate", parents=[common], help="upgrade the database schema")
    migrate.set_defaults(func=cmd_migrate)

    config = sub.add_parser("config", help="configuration tools").add_subparsers(
        dest="action", required=True
    )
    check = config.add_parser("check", help="validate a config file")
    check.add_argument("path")
    check.set_defaults(func=cmd_config_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except (CliError, ConfigError) as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return 2
    except SluiceError as exc:  # key changes: the admin API's message, without its status
        print(f"sluice: {exc.message}", file=sys.stderr)
        return 2
    except (SQLAlchemyError, OSError) as exc:
        print(
            f"sluice: database error: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

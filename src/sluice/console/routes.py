"""The console's routes: sign-in and sign-out, the operator's pages, the key holder's page.

Every page checks its session's role; every POST checks the session's CSRF token before it
changes anything. Changes go through the admin API's own services (keys, runtime channels),
so the rules and errors are the API's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sluice.admin.api import key_service
from sluice.admin.channels_api import channel_service
from sluice.admin.usage_api import csv_response, row_filter
from sluice.console import pages
from sluice.console.forms import channel_body, key_body
from sluice.console.i18n import LANGUAGES
from sluice.console.session import COOKIE, PRE_COOKIE
from sluice.console.web import (
    LANG_COOKIE,
    SECURITY_HEADERS,
    STATIC_FILES,
    Console,
    Page,
    with_query,
)
from sluice.errors import RateLimited, SluiceError
from sluice.keys import hash_key, looks_like_key
from sluice.relay.http import client_ip

__all__ = ["console_routes", "set_cookie"]

Role = Literal["admin", "key", "any"]
Form = dict[str, str]
Handler = Callable[[Console, Page, Form], Awaitable[Response]]


def _refused(console: Console, page: Page, message: str) -> Response:
    return console.render(page, "refused.html", 403, message=message)


def _bind(console: Console, handler: Handler, role: Role, post: bool) -> Callable[..., Any]:
    async def endpoint(request: Request) -> Response:
        page = console.page(request)
        session = page.session
        if session is None:
            if post:
                return _refused(console, page, "Sign in first.")
            return console.redirect(with_query("/console/sign-in", {"next": request.url.path}))
        if role != "any" and session.role != role:
            return _refused(console, page, "This page is not available to this sign-in.")
        form: Form = {}
        if post:
            form = await console.form(request)
            if not console.csrf_ok(page, form):
                return _refused(console, page, "The form was missing its security token.")
        return await handler(console, page, form)

    return endpoint


# --- signing in and out -------------------------------------------------------------------


def set_cookie(
    response: Response,
    request: Request,
    name: str,
    value: str,
    max_age: int,
    secure_always: bool = False,
) -> None:
    secure = secure_always or request.url.scheme == "https"
    response.set_cookie(
        name, value, max_age=max_age, path="/console", httponly=True, secure=secure,
        samesite="strict",
    )  # fmt: skip


def _safe_next(target: str | None, default: str) -> str:
    # Only paths of the console itself: never another site (an open redirect).
    if target and target.startswith("/console") and "//" not in target and "\\" not in target:
        return target
    return default


async def sign_in_form(request: Request) -> Response:
    console: Console = request.app.state.console
    page = console.page(request)
    if page.session is not None:
        home = "/console/overview" if page.session.role == "admin" else "/console/me"
        return console.redirect(home)
    return _sign_in_page(console, page, None, 200)


def _sign_in_page(console: Console, page: Page, error: str | None, status: int) -> Response:
    nonce = secrets.token_urlsafe(16)
    response = console.render(
        page, "sign_in.html", status, error=error,
        token=console.signer.csrf_token("pre:" + nonce),
        next=_safe_next(page.request.query_params.get("next"), ""),
    )  # fmt: skip
    set_cookie(response, page.request, PRE_COOKIE, nonce, 600, console.secure_always)
    return response


async def sign_in(request: Request) -> Response:
    console: Console = request.app.state.console
    page = console.page(request)
    form = await console.form(request)
    nonce = request.cookies.get(PRE_COOKIE, "")
    if not nonce or not console.signer.csrf_valid("pre:" + nonce, form.get("csrf")):
        return _refused(console, page, "The form was missing its security token.")
    state = page.state
    address = client_ip(request)
    try:
        state.admin_throttle.check(address)
    except RateLimited:
        return _sign_in_page(console, page, "Too many failed sign-ins; wait a minute.", 429)
    secret = form.get("key", "").strip()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    role: Literal["admin", "key"] | None = None
    key_id: str | None = None
    if secret and hmac.compare_digest(digest, state.admin_key_hash):
        role = "admin"
    elif looks_like_key(secret):
        record = await state.keys.get_by_hash(hash_key(secret))
        if record is not None:
            role, key_id = "key", record.id
    if role is None:
        state.admin_throttle.record_failure(address)
        return _sign_in_page(console, page, "That key was not accepted.", 401)
    cookie, _ = console.signer.issue(role, key_id)
    home = "/console/overview" if role == "admin" else "/console/me"
    target = _safe_next(form.get("next"), home)
    if role == "key" and target != "/console/me":
        target = "/console/me"
    response = console.redirect(target)
    set_cookie(response, request, COOKIE, cookie, int(console.signer.ttl_s), console.secure_always)
    response.delete_cookie(PRE_COOKIE, path="/console")
    return response


async def sign_out(console: Console, page: Page, form: Form) -> Response:
    response = console.redirect("/console/sign-in")
    response.delete_cookie(COOKIE, path="/console")
    return response


async def home(request: Request) -> Response:
    console: Console = request.app.state.console
    session = console.page(request).session
    if session is None:
        return console.redirect("/console/sign-in")
    return console.redirect("/console/overview" if session.role == "admin" else "/console/me")


async def root(request: Request) -> Response:
    return Response(status_code=307, headers={"location": "/console/sign-in"})


async def choose_language(request: Request) -> Response:
    console: Console = request.app.state.console
    lang = request.query_params.get("to", "en")
    response = console.redirect(_safe_next(request.query_params.get("next"), "/console"))
    if lang in LANGUAGES:
        secure = console.secure_always or request.url.scheme == "https"
        response.set_cookie(
            LANG_COOKIE, lang, max_age=365 * 86400, path="/console", samesite="strict",
            secure=secure,
        )  # fmt: skip
    return response


async def static_file(request: Request) -> Response:
    console: Console = request.app.state.console
    name = request.path_params["name"]
    body = console.static.get(name)
    if body is None:
        return Response("not found", 404, media_type="text/plain")
    headers = {**SECURITY_HEADERS, "cache-control": "public, max-age=86400",
               "etag": f'"{console.etags[name]}"'}  # fmt: skip
    if request.headers.get("if-none-match") == headers["etag"]:
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=STATIC_FILES[name])


# --- operator pages ------------------------------------------------------------------------


async def _action(
    console: Console, page: Page, done: str, back: str, work: Awaitable[Any]
) -> Response:
    """Run a change; back to ``back`` with a message, or the page's error on refusal."""
    try:
        await work
    except SluiceError as exc:
        return console.redirect(console.flash_error(back, exc.message))
    return console.redirect(with_query(back, {"done": done}))


async def key_create(console: Console, page: Page, form: Form) -> Response:
    try:
        new = await key_service(page.state).create(key_body(form, editing=False))
    except SluiceError as exc:
        return console.redirect(console.flash_error("/console/keys", exc.message))
    return await pages.keys_page(console, page, created=new)


async def key_update(console: Console, page: Page, form: Form) -> Response:
    key_id = page.request.path_params["key_id"]
    work = key_service(page.state).update(key_id, key_body(form, editing=True))
    return await _action(console, page, "Saved.", f"/console/keys/{key_id}", work)


def _key_command(command: str) -> Handler:
    async def run(console: Console, page: Page, form: Form) -> Response:
        keys = key_service(page.state)
        key_id = page.request.path_params["key_id"]
        back = f"/console/keys/{key_id}"
        if command == "disable":
            return await _action(console, page, "Key disabled.", back,
                                 keys.set_disabled(key_id, True))  # fmt: skip
        if command == "enable":
            return await _action(console, page, "Key enabled.", back,
                                 keys.set_disabled(key_id, False))  # fmt: skip
        if command == "reset":
            return await _action(console, page, "Spend reset.", back,
                                 keys.update(key_id, {"reset_spent": True}))  # fmt: skip
        return await _action(console, page, "Key deleted.", "/console/keys", keys.delete(key_id))

    return run


async def channel_create(console: Console, page: Page, form: Form) -> Response:
    work = channel_service(page.state).create(channel_body(form, editing=False))
    return await _action(console, page, "Channel created.", "/console/channels", work)


async def channel_update(console: Console, page: Page, form: Form) -> Response:
    name = page.request.path_params["name"]
    body = channel_body(form, editing=True)
    body.pop("name", None)
    body.pop("type", None)
    work = channel_service(page.state).update(name, body)
    return await _action(console, page, "Saved.", "/console/channels", work)


def _channel_command(command: str) -> Handler:
    async def run(console: Console, page: Page, form: Form) -> Response:
        state = page.state
        name = page.request.path_params["name"]
        back = "/console/channels"
        if command == "test":
            return await pages.channels_page(console, page, tested=name)
        known = any(c.name == name for c in state.all_channels())
        if command == "delete":
            return await _action(console, page, "Channel deleted.", back,
                                 channel_service(state).delete(name))  # fmt: skip
        if not known:
            return console.redirect(console.flash_error(back, f"No channel named '{name}'."))
        # A runtime channel is switched in the database, so every replica follows; a config
        # file channel only in this process's health state (the file decides the rest).
        channels = channel_service(state)
        runtime = await channels.store.get(name) is not None
        if command == "enable":
            state.health.enable(name)
            if runtime:
                work = channels.update(name, {"enabled": True})
                return await _action(console, page, "Channel enabled.", back, work)
            return console.redirect(with_query(back, {"done": "Channel enabled."}))
        if runtime:
            work = channels.update(name, {"enabled": False})
            return await _action(console, page, "Channel disabled.", back, work)
        state.health.disable(name, "disabled by an operator")
        return console.redirect(with_query(back, {"done": "Channel disabled."}))

    return run


async def usage_csv(console: Console, page: Page, form: Form) -> Response:
    state = page.state
    try:
        where = await row_filter(state, page.request.query_params)
    except SluiceError as exc:
        return console.redirect(console.flash_error("/console/usage", exc.message))
    await state.usage_sink.flush()
    return csv_response(state, where, "sluice-usage.csv")


def console_routes(console: Console) -> list[Route]:
    def get(path: str, handler: Handler, role: Role = "admin") -> Route:
        return Route(path, _bind(console, handler, role, post=False), methods=["GET"])

    def post(path: str, handler: Handler, role: Role = "admin") -> Route:
        return Route(path, _bind(console, handler, role, post=True), methods=["POST"])

    return [
        Route("/", root, methods=["GET"]),
        Route("/console", home, methods=["GET"]),
        Route("/console/", home, methods=["GET"]),
        Route("/console/sign-in", sign_in_form, methods=["GET"]),
        Route("/console/sign-in", sign_in, methods=["POST"]),
        Route("/console/lang", choose_language, methods=["GET"]),
        Route("/console/static/{name}", static_file, methods=["GET"]),
        post("/console/sign-out", sign_out, "any"),
        get("/console/overview", pages.overview),
        get("/console/keys", pages.keys),
        post("/console/keys", key_create),
        get("/console/keys/{key_id}", pages.key_detail),
        post("/console/keys/{key_id}", key_update),
        *(
            post(f"/console/keys/{{key_id}}/{c}", _key_command(c))
            for c in ("disable", "enable", "reset", "delete")
        ),  # fmt: skip
        get("/console/channels", pages.channels),
        post("/console/channels", channel_create),
        get("/console/channels/{name}", pages.channel_edit),
        post("/console/channels/{name}", channel_update),
        *(
            post(f"/console/channels/{{name}}/{c}", _channel_command(c))
            for c in ("test", "enable", "disable", "delete")
        ),  # fmt: skip
        get("/console/usage", pages.usage),
        get("/console/usage.csv", usage_csv),
        get("/console/tasks", pages.tasks),
        get("/console/batches", pages.batches),
        get("/console/prices", pages.prices),
        get("/console/me", pages.me, "key"),
    ]

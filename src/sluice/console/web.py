"""What every console page shares: templates, the session and its CSRF check, the language,
security headers, and the static files (read from the package once)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sluice.console.i18n import LANGUAGES, MESSAGES, translator
from sluice.console.session import COOKIE, Session, SessionSigner
from sluice.errors import PayloadTooLarge
from sluice.state import AppState

__all__ = ["Console", "Page", "STATIC_FILES", "fmt_usd", "fmt_int", "fmt_time", "with_query"]

LANG_COOKIE = "sluice_lang"
_MAX_FORM_BYTES = 64 * 1024
STATIC_FILES = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript"}

SECURITY_HEADERS = {
    # No inline script or style anywhere: charts are SVG with presentation attributes.
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True, slots=True)
class Page:
    """One request's context: the state, the session (None: not signed in) and the language."""

    request: Request
    state: AppState
    session: Session | None
    lang: str
    csrf: str  # the session's CSRF token, put in every form; "" when not signed in


class Console:
    def __init__(
        self, admin_key_hash: str, session_ttl_s: float, secure_always: bool = False
    ) -> None:
        self.signer = SessionSigner(admin_key_hash, session_ttl_s)
        self.secure_always = secure_always
        self.env = Environment(
            loader=PackageLoader("sluice.console", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        files = resources.files("sluice.console").joinpath("static")
        self.static = {name: files.joinpath(name).read_bytes() for name in STATIC_FILES}
        self.etags = {name: hashlib.sha256(b).hexdigest()[:16] for name, b in self.static.items()}

    # --- request context ---

    def language(self, request: Request) -> str:
        chosen = request.cookies.get(LANG_COOKIE)
        if chosen in LANGUAGES:
            return chosen
        accepted = request.headers.get("accept-language", "").lower()
        return "zh" if accepted.startswith("zh") else "en"

    def page(self, request: Request) -> Page:
        state: AppState = request.app.state.sluice
        session = self.signer.read(request.cookies.get(COOKIE))
        csrf = "" if session is None else self.signer.csrf_token(session.nonce)
        return Page(request, state, session, self.language(request), csrf)

    def render(self, page: Page, template: str, status: int = 200, **values: Any) -> Response:
        tr = translator(page.lang)
        context = {
            "_": tr,
            "lang": page.lang,
            "languages": LANGUAGES,
            "session": page.session,
            "csrf": page.csrf,
            "path": page.request.url.path,
            "query": page.request.url.query,
            "static": lambda name: f"/console/static/{name}?v={self.etags[name]}",
            "fmt_usd": fmt_usd,
            "fmt_time": fmt_time,
            "fmt_int": fmt_int,
            **values,
        }
        html = self.env.get_template(template).render(context)
        return Response(html, status, headers=SECURITY_HEADERS, media_type="text/html")

    def flash_error(self, back: str, message: str) -> str:
        """``back`` with an error to show, signed: a link from elsewhere cannot put its own
        words on a console page."""
        message = message[:300]
        return with_query(
            back, {"error": message, "sig": self.signer.csrf_token("flash:" + message)}
        )

    def flash(self, page: Page) -> dict[str, str | None]:
        params = page.request.query_params
        done = params.get("done")
        error = params.get("error")
        if done not in MESSAGES:
            done = None
        if error and not self.signer.csrf_valid("flash:" + error, params.get("sig")):
            error = None
        return {"done": done, "error": error}

    def redirect(self, url: str) -> Response:
        return RedirectResponse(url, 303, headers=SECURITY_HEADERS)

    # --- forms ---

    async def form(self, request: Request) -> dict[str, str]:
        """An urlencoded form (the console sends no other), last value of each field."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM_BYTES:
                raise PayloadTooLarge("The form is too large.")
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[-1] for name, values in fields.items()}

    def csrf_ok(self, page: Page, form: Mapping[str, str]) -> bool:
        if page.session is None:
            return False
        token = form.get("csrf") or page.request.headers.get("x-csrf-token")
        return self.signer.csrf_valid(page.session.nonce, token)


def fmt_usd(micro: float | None) -> str:
    if micro is None:
        return "—"
    usd = micro / 1_000_000
    if usd and abs(usd) < 0.01:
        return f"${usd:.6f}"
    return f"${usd:,.2f}"


def fmt_int(value: float | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def fmt_time(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def with_query(path: str, params: Mapping[str, Any]) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path

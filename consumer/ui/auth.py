"""Console login and CSRF: the API token entered once, kept as a derived cookie.

- **Session.** ``POST /ui/login`` takes the API token (``TASKLEDGER_API_TOKEN``), compares
  it with :func:`hmac.compare_digest`, and sets the cookie ``tl_session``: the login's
  time and an HMAC of it keyed with the token (so the cookie is not the token, it stops
  working after 12 hours, and changing the token logs every browser out). HttpOnly,
  SameSite=Strict, Secure on https, dropped when the browser closes. Logging out drops
  the browser's copy; a copied cookie stays valid until its 12 hours end.
- **CSRF.** Every form carries ``csrf``: an HMAC of the session cookie keyed with the token
  (double submit: the server recomputes it from the cookie the browser sent). The login
  form, before any session exists, uses a random pre-session cookie ``tl_pre`` and a key
  drawn when the process starts. A POST without the right value is refused (403), and
  so is one whose ``Origin`` (or, without it, ``Referer``) names another host.
- **Rules.** Without a configured token, login and every mutation are disabled (the pages
  say how to enable them). Pages that only read the database need no login unless
  ``TASKLEDGER_UI_REQUIRE_TOKEN`` is set; dead-letter pages always do, as the API's DLQ
  endpoints do (reading the dead letters holds them from other readers for a while).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

from fastapi import Request, Response
from starlette.exceptions import HTTPException

from consumer.core.settings import Settings
from consumer.ui.render import Redirect

__all__ = [
    "PRE_COOKIE",
    "SESSION_COOKIE",
    "check_post",
    "login_csrf",
    "prepare",
    "require_login",
    "require_read",
    "safe_next",
    "session_valid",
    "session_value",
    "set_cookie",
    "token_matches",
]

SESSION_COOKIE = "tl_session"
#: A login lasts this long (the cookie is also dropped when the browser closes).
SESSION_MAX_AGE_S = 12 * 3600
PRE_COOKIE = "tl_pre"
_SESSION_LABEL = b"taskledger-ui-session/1"
#: Keys the login form's CSRF value (drawn per process: a restart only renews the form).
_PROCESS_KEY = secrets.token_bytes(32)


def _token(settings: Settings) -> bytes | None:
    token = settings.api_token
    if token is None or not token.get_secret_value():
        return None
    return token.get_secret_value().encode()


def _mac(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def session_value(settings: Settings, issued: int | None = None) -> str | None:
    """A new ``tl_session`` cookie value for the configured token (None: no token):
    ``<issued unix time>.<HMAC of it keyed with the token>``; it stops working
    :data:`SESSION_MAX_AGE_S` after ``issued`` (default: now) or when the token changes."""
    token = _token(settings)
    if token is None:
        return None
    at = int(time.time()) if issued is None else issued
    return f"{at}.{_mac(token, _SESSION_LABEL + b':' + str(at).encode())}"


def session_valid(settings: Settings, cookie: str, *, now: float | None = None) -> bool:
    """Whether ``cookie`` is a session of the configured token issued less than
    :data:`SESSION_MAX_AGE_S` ago (constant-time comparison)."""
    issued, _, _ = cookie.partition(".")
    if not issued.isdigit() or len(issued) > 12:
        return False
    expected = session_value(settings, int(issued))
    if expected is None or not hmac.compare_digest(cookie.encode(), expected.encode()):
        return False
    age = (time.time() if now is None else now) - int(issued)
    return 0 <= age < SESSION_MAX_AGE_S


def token_matches(settings: Settings, given: str) -> bool:
    """Whether ``given`` is the configured API token (constant-time; False without one)."""
    token = _token(settings)
    if token is None or not given:
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)


def _session_csrf(settings: Settings, session: str) -> str:
    token = _token(settings)
    return "" if token is None else _mac(token, b"csrf:" + session.encode())


def login_csrf(pre: str) -> str:
    """The CSRF value of the login form for the pre-session cookie ``pre``."""
    return _mac(_PROCESS_KEY, b"login:" + pre.encode())


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def prepare(request: Request) -> None:
    """Router dependency: note on ``request.state`` whether a token is configured, whether
    this browser is logged in, and the CSRF value its forms must carry."""
    settings = _settings(request)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    logged_in = session_valid(settings, cookie)
    request.state.ui_token_configured = _token(settings) is not None
    request.state.ui_logged_in = logged_in
    request.state.ui_csrf = _session_csrf(settings, cookie) if logged_in else ""


def safe_next(target: str | None) -> str:
    """``target`` if it is a console path of this site, else ``/ui/`` (no open redirect)."""
    if not target or not target.startswith("/ui/") or target.startswith("//") or "\\" in target:
        return "/ui/"
    if any(ord(c) < 0x20 for c in target):
        return "/ui/"
    return target


def _login_redirect(request: Request) -> Redirect:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect("/ui/login?next=" + quote(safe_next(here), safe=""))


def require_read(request: Request) -> None:
    """Guard of the pages that read the database: log in first only when
    ``TASKLEDGER_UI_REQUIRE_TOKEN`` is set."""
    if _settings(request).ui_require_token and not request.state.ui_logged_in:
        if not request.state.ui_token_configured:
            raise HTTPException(
                403,
                "TASKLEDGER_UI_REQUIRE_TOKEN is set but no TASKLEDGER_API_TOKEN is "
                "configured: set the token to use the console",
            )
        raise _login_redirect(request)


def require_login(request: Request) -> None:
    """Guard of the dead-letter pages and of every mutation: a configured token, logged in."""
    if not request.state.ui_token_configured:
        raise HTTPException(
            403,
            "disabled: no API token is configured. Set TASKLEDGER_API_TOKEN for the API "
            "process, then log in on /ui/login",
        )
    if not request.state.ui_logged_in:
        raise _login_redirect(request)


def _same_origin(request: Request) -> bool:
    """False when ``Origin`` (else ``Referer``) is present and names another host."""
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == host
    referer = request.headers.get("referer")
    if referer is not None:
        return urlsplit(referer).netloc == host
    return True


def check_post(request: Request, form: Mapping[str, str], *, login: bool = False) -> None:
    """Refuse (403) a POST from another origin or without the right ``csrf`` field.

    ``login``: the login form (its value comes from the pre-session cookie); every other
    form needs a logged-in session (see :func:`require_login`).
    """
    if not _same_origin(request):
        raise HTTPException(403, "refused: the form was posted from another site")
    given = str(form.get("csrf", ""))
    if login:
        pre = request.cookies.get(PRE_COOKIE, "")
        expected = login_csrf(pre) if pre else ""
    else:
        require_login(request)
        expected = request.state.ui_csrf
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            403, "refused: the form's CSRF token is missing or stale (reload the page)"
        )


def set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """Set a console cookie: HttpOnly, SameSite=Strict, path /ui, Secure on https."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
    )

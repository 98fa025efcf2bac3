"""Who is asking: a signed session cookie (pages) or an API key (`Authorization: Bearer ...`).

Reading is open unless the `require_sign_in` setting is on; every write (shares, and the lists
and labels that build on this) needs a user. A write signed in through the cookie must also carry
the session's CSRF token, as the form field `csrf_token` or the header `X-CSRF-Token` (pages put
it in every form, htmx and the page scripts send the header); a write with a key needs none,
since a browser never attaches a bearer key on its own. Writes are rate-limited per key (or
user) and per client address; sign-in attempts per address.
"""

import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.db.accounts import user_for_key, user_for_sign_in
from app.web.deps import SessionDep
from app.web.ratelimit import Limiter

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class Viewer:
    user_id: int
    name: str
    key_id: int | None  # None: signed in with the session cookie


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use (a page that renders a form calls this)."""
    token = request.session.get("csrf")
    if token is None:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def signed_in_name(request: Request) -> str | None:
    # scope, not request.session: a 500 page renders outside the session middleware
    return request.scope.get("session", {}).get("name")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise HTTPException(
            401,
            "Send an API key as `Authorization: Bearer <key>`.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return secret.strip()


def identify(request: Request, session: Session) -> Viewer | None:
    """The user behind an API key or the session cookie; None for an anonymous reader."""
    secret = _bearer(request)
    if secret is not None:
        found = user_for_key(session, secret)
        if found is None:
            raise HTTPException(
                401,
                "This API key is unknown or has been revoked.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        user, key = found
        return Viewer(user.id, user.name, key.id)
    return _signed_in(request, session)


def _signed_in(request: Request, session: Session) -> Viewer | None:
    """The user of the session cookie, while the server still holds that sign-in."""
    token = request.session.get("sid")
    user = user_for_sign_in(session, token) if isinstance(token, str) else None
    if user is None:  # signed out (here or elsewhere), or the password changed since
        request.session.pop("sid", None)
        request.session.pop("name", None)
        return None
    return Viewer(user.id, user.name, None)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def require_reader(request: Request, session: SessionDep) -> None:
    """Every page and API route: open, unless the server requires sign-in (health probes stay
    open either way)."""
    if request.url.path == "/healthz":
        return
    if not request.app.state.settings.require_sign_in:
        if "sid" in request.session:
            _signed_in(request, session)  # a closed sign-in stops showing on pages at once
        return
    if identify(request, session) is not None:
        return
    if _is_api(request):
        raise HTTPException(
            401,
            "This server requires an API key or a signed-in session.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(
        303, "Sign in to read this server.", headers={"Location": f"/login?next={quote(target)}"}
    )


async def check_csrf(request: Request) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = request.session.get("csrf")
    if not sent or expected is None or not hmac.compare_digest(sent, expected):
        raise HTTPException(
            403,
            "This form has expired or did not come from this site; reload the page and try again.",
        )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def refuse_over_limit(limiter: Limiter, key: str, what: str) -> None:
    """429 with Retry-After when `key` is over `limiter`'s rate ("Too many {what}; …")."""
    wait = limiter.check(key)
    if wait is not None:
        raise HTTPException(
            429, f"Too many {what}; try again in {wait} s.", headers={"Retry-After": str(wait)}
        )


def limit_generation(request: Request) -> None:
    """429 when this address is over the limit on generations (chat, sweeps, contrast: work
    that occupies the model). Every attempt counts, refused ones too: a client looping on
    requests that fail their checks still costs the server their parsing."""
    limiter = request.app.state.steer_limiter
    refuse_over_limit(limiter, client_address(request), "generations from this address")


def _limit(request: Request, *keys: str) -> None:
    for key in keys:
        refuse_over_limit(request.app.state.write_limiter, key, "changes")


async def require_writer(request: Request, session: SessionDep) -> Viewer:
    """The user a write is made by: 401 without one, 403 without the CSRF token, 429 when
    their key, account or address is over the write limit."""
    viewer = identify(request, session)
    if viewer is None:
        raise HTTPException(
            401,
            "Sign in, or send an API key, to save changes.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if viewer.key_id is None:
        await check_csrf(request)
    who = f"key:{viewer.key_id}" if viewer.key_id is not None else f"user:{viewer.user_id}"
    _limit(request, who, f"ip:{client_address(request)}")
    return viewer


WriterDep = Annotated[Viewer, Depends(require_writer)]

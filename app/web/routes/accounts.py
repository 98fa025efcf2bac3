"""Sign in and out with a name and password (`monoscope user add` makes accounts)."""

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from app.core.errors import MonoscopeError
from app.db.accounts import close_sign_in, open_sign_in, sign_in, use_sign_in_link
from app.web.auth import check_csrf, client_address, csrf_token, refuse_over_limit
from app.web.deps import SessionDep, TemplatesDep, local_path

router = APIRouter()


@router.get("/login", response_class=HTMLResponse, name="login")
def login_page(request: Request, templates: TemplatesDep, next: str = "/"):
    context = {"next": local_path(next), "csrf": csrf_token(request)}
    return templates.TemplateResponse(request, "accounts/login.html", context)


@router.post("/login", response_class=HTMLResponse, name="login_submit")
async def login_submit(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    name: Annotated[str, Form(max_length=100)],
    password: Annotated[str, Form(max_length=1_000)],
    next: Annotated[str, Form(max_length=2_000)] = "/",
):
    await check_csrf(request)
    limiter = request.app.state.sign_in_limiter
    refuse_over_limit(limiter, client_address(request), "sign-in attempts")
    # scrypt takes ~50 ms of CPU: off the event loop, or every request waits on it
    user = await run_in_threadpool(sign_in, session, name.strip(), password)
    if user is None:
        context = {
            "next": local_path(next),
            "csrf": csrf_token(request),
            "name": name,
            "error": "That name and password do not match an account.",
        }
        return templates.TemplateResponse(request, "accounts/login.html", context, status_code=400)
    _begin_sign_in(request, session, user)
    return RedirectResponse(local_path(next), status_code=303)


def _begin_sign_in(request: Request, session, user) -> None:
    """A sign-in the server holds, and a fresh cookie session (and CSRF token) carrying it."""
    token = open_sign_in(session, user)
    session.commit()
    request.session.clear()
    request.session.update({"sid": token, "name": user.name})


@router.get("/login/link", name="login_link")
def login_link(request: Request, session: SessionDep, token: Annotated[str, Query(max_length=100)]):
    """Sign in with a one-time link (`monoscope demo` prints one for its administrator)."""
    user = use_sign_in_link(session, token)
    if user is None:
        raise MonoscopeError("This sign-in link was used already or has expired.")
    _begin_sign_in(request, session, user)
    return RedirectResponse("/", status_code=303)


@router.post("/logout", name="logout")
async def logout(request: Request, session: SessionDep):
    """Sign out here and for every copy of this cookie: the server forgets the session."""
    await check_csrf(request)
    token = request.session.get("sid")
    if isinstance(token, str):
        close_sign_in(session, token)
        session.commit()
    request.session.clear()
    return RedirectResponse("/", status_code=303)

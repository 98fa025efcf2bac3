"""The app factory: `create_app(settings)` builds a server; its lifespan loads the model once.

uvicorn.run(create_app(Settings(model="gpt2", saes=["saes/res6"])))
"""

from collections.abc import Mapping
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from app.core.errors import MonoscopeError
from app.core.serving import InferenceWorker, QueueFull
from app.core.workspace import Workspace
from app.db.engine import connect, migrate, storage_refusal
from app.settings import Settings
from app.web import views
from app.web.auth import csrf_token, require_reader, signed_in_name
from app.web.bodylimit import BodyLimit
from app.web.canonical import CanonicalHost
from app.web.headers import SecurityHeaders
from app.web.markup import TokenTextCache, display_token, token_strip
from app.web.ratelimit import rate_limiter
from app.web.replicas import ReplicaPool
from app.web.routes import (
    accounts,
    autosteer,
    classifiers,
    contrast,
    dashboard,
    features,
    graph,
    home,
    inspect,
    labels,
    lists,
    maps,
    saes,
    search,
    steer,
)
from app.web.semantic import LabelIndex

ROOT = Path(__file__).resolve().parents[2]
# Front-end libraries come from the npm registry (package.json), not copies in this repository.
VENDOR = {
    "htmx": ROOT / "node_modules/htmx.org/dist",
    "d3": ROOT / "node_modules/d3/dist",
    "htmx-sse": ROOT / "node_modules/htmx-ext-sse/dist",
    "swagger-ui": ROOT / "node_modules/swagger-ui-dist",
}


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=ROOT / "templates")
    templates.env.filters |= {
        "density": views.format_density,
        "num": views.format_number,
        "token": display_token,
    }
    templates.env.globals["token_strip"] = token_strip
    templates.env.globals["feature_path"] = views.feature_path
    templates.env.globals["csrf_token"] = csrf_token
    templates.env.globals["signed_in_name"] = signed_in_name
    templates.env.globals["vendor_ready"] = all(p.is_dir() for p in VENDOR.values())
    return templates


def wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path == "/healthz" or path == "/steer/share"


def _error_handlers(app: FastAPI) -> None:
    """4xx answers: JSON under /api, a page with the message everywhere else."""

    def respond(
        request: Request, status: int, message: str, headers: Mapping[str, str] | None = None
    ):
        if wants_json(request):
            return JSONResponse({"detail": message}, status_code=status, headers=headers)
        return request.app.state.templates.TemplateResponse(
            request,
            "errors/error.html",
            {"status": status, "message": message},
            status_code=status,
            headers=headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        if exc.status_code == 404 and message == "Not Found":
            message = "There is no page at this address."
        return respond(request, exc.status_code, message, exc.headers)

    @app.exception_handler(DBAPIError)
    async def storage(request: Request, exc: DBAPIError):
        message = storage_refusal(exc)
        if message is None:
            raise exc  # a real fault: the server's own 500
        return respond(request, 503, message, {"Retry-After": "30"})

    @app.exception_handler(RedisError)
    async def shared_store(request: Request, exc: RedisError):
        message = "The shared rate-limit store (Redis) cannot be reached; try again shortly."
        return respond(request, 503, message, {"Retry-After": "10"})

    @app.exception_handler(MonoscopeError)
    async def refused(request: Request, exc: MonoscopeError):
        """Bad input, a missing row, an SAE not loaded: the error's own status and message."""
        return respond(request, exc.status, str(exc))

    @app.exception_handler(QueueFull)
    async def busy(request: Request, exc: QueueFull):
        return respond(request, exc.status, str(exc), {"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        if wants_json(request):
            return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'input'}: {e['msg']}" for e in exc.errors()
        )
        return respond(request, 422, f"Bad request: {problems}")


def create_app(settings: Settings | None = None, workspace: Workspace | None = None) -> FastAPI:
    """A server for `settings`; pass an already loaded `workspace` to skip loading at start-up."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = connect(settings.database)
        migrate(app.state.engine)
        app.state.workspace = workspace or (
            Workspace.load(settings.model, settings.saes, settings.web_device, settings.transcoders)
            if settings.model
            else None
        )
        ws = app.state.workspace
        app.state.inference = None
        if ws is not None and settings.replicas:
            app.state.inference = ReplicaPool.start(settings, ws)
        elif ws is not None:
            app.state.inference = InferenceWorker(
                ws.model,
                ws.saes,
                settings.steer_queue,
                settings.steer_batch_rows,
                settings.steer_batch_invariant,
            )
        app.state.steer_limiter = rate_limiter(settings, "steer", settings.steer_rate_per_minute)
        app.state.write_limiter = rate_limiter(settings, "write", settings.write_rate_per_minute)
        app.state.sign_in_limiter = rate_limiter(
            settings, "sign-in", settings.sign_in_rate_per_minute
        )
        yield
        if app.state.inference is not None:
            app.state.inference.close()
        app.state.workspace = None
        app.state.engine.dispose()

    # /docs is served below from the npm copy of Swagger UI: FastAPI's own loads it from a CDN,
    # a blank page offline, and its inline start-up script would break the CSP.
    app = FastAPI(
        title="Monoscope",
        version=version("monoscope"),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.workspace = None
    app.state.inference = None
    app.state.templates = _templates()
    app.state.vocabularies = TokenTextCache()
    app.state.label_index = LabelIndex(folder=settings.data_dir / "label-index")
    # Token-heavy pages shrink ~10×; level 4 packs nearly as tight as 9 in a fraction of the time.
    app.add_middleware(GZipMiddleware, minimum_size=2_000, compresslevel=4)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(CanonicalHost, base_url=settings.base_url)
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret(),
        session_cookie="monoscope",
        same_site="lax",
        https_only=settings.secure_cookies,
        max_age=14 * 24 * 3600,
    )
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    for name, directory in VENDOR.items():
        app.mount(f"/vendor/{name}", StaticFiles(directory=directory, check_dir=False), name=name)
    _error_handlers(app)
    # Fixed paths first: /{model}/{sae} would otherwise swallow /search/text, and
    # /{model}/{sae}/{index} /api/v1/saes and /{model}/{sae}/map.
    app.include_router(accounts.router)
    fixed = [
        steer,
        autosteer,
        inspect,
        graph,
        contrast,
        classifiers,
        lists,
        labels,
        dashboard,
        home,
    ]
    for module in [*fixed, search, saes, maps, features]:
        app.include_router(module.router, dependencies=[Depends(require_reader)])
    return app

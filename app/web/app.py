"""The app factory: `create_app(settings)` builds a server; its lifespan loads the model once.

uvicorn.run(create_app(Settings(model="gpt2", saes=["saes/res6"])))
"""

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.core.workspace import Workspace
from app.db.engine import connect, migrate
from app.settings import Settings
from app.web.routes import home

ROOT = Path(__file__).resolve().parents[2]


def create_app(settings: Settings | None = None, workspace: Workspace | None = None) -> FastAPI:
    """A server for `settings`; pass an already loaded `workspace` to skip loading at start-up."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = connect(settings.database)
        migrate(app.state.engine)
        app.state.workspace = workspace or (
            Workspace.load(settings.model, settings.saes, device=settings.device)
            if settings.model
            else None
        )
        yield
        app.state.workspace = None
        app.state.engine.dispose()

    app = FastAPI(title="Monoscope", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.workspace = None
    app.state.templates = Jinja2Templates(directory=ROOT / "templates")
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    app.include_router(home.router)
    return app

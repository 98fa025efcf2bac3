"""Typed dependencies: routes receive what the app factory put on app.state."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from app.core.serving import InferenceWorker
from app.core.workspace import Workspace
from app.settings import Settings
from app.web.markup import TokenTextCache


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _workspace(request: Request) -> Workspace | None:
    return request.app.state.workspace


def _inference(request: Request) -> InferenceWorker | None:
    return request.app.state.inference


def _session(request: Request) -> Iterator[Session]:
    """A read session per request; routes that write commit explicitly."""
    with Session(request.app.state.engine) as session:
        yield session


def _templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


SettingsDep = Annotated[Settings, Depends(_settings)]
WorkspaceDep = Annotated[Workspace | None, Depends(_workspace)]
# The model's one owner: every model call of a request goes through it (app.core.serving).
InferenceDep = Annotated[InferenceWorker | None, Depends(_inference)]
SessionDep = Annotated[Session, Depends(_session)]
TemplatesDep = Annotated[Jinja2Templates, Depends(_templates)]


def _vocabularies(request: Request) -> TokenTextCache:
    return request.app.state.vocabularies


VocabularyDep = Annotated[TokenTextCache, Depends(_vocabularies)]

# Numbers past their column are refused up front (422) rather than overflowing the database
# driver: feature indices are 32-bit, row ids 64-bit.
MAX_INDEX = 2**31 - 1
FeatureIndex = Annotated[int, Path(ge=0, le=MAX_INDEX)]
RowId = Annotated[int, Path(ge=0, le=2**63 - 1)]


def parse_feature_index(text: str) -> int | None:
    """A feature index typed into a URL or form, or None; ASCII digits only ('²' is a digit to
    str.isdigit, not to int)."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_INDEX:
        return None
    return int(text)

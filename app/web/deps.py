"""Typed dependencies: routes receive what the app factory put on app.state."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from app.core.workspace import Workspace
from app.settings import Settings
from app.web.markup import TokenTextCache


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _workspace(request: Request) -> Workspace | None:
    return request.app.state.workspace


def _session(request: Request) -> Iterator[Session]:
    """A read session per request; routes that write commit explicitly."""
    with Session(request.app.state.engine) as session:
        yield session


def _templates(request: Request) -> Jinja2Templates:
    return request.app.state.templates


SettingsDep = Annotated[Settings, Depends(_settings)]
WorkspaceDep = Annotated[Workspace | None, Depends(_workspace)]
SessionDep = Annotated[Session, Depends(_session)]
TemplatesDep = Annotated[Jinja2Templates, Depends(_templates)]


def _vocabularies(request: Request) -> TokenTextCache:
    return request.app.state.vocabularies


VocabularyDep = Annotated[TokenTextCache, Depends(_vocabularies)]

# Feature indices and row ids are 32-bit columns: a larger number is refused up front (422)
# rather than overflowing the database driver.
MAX_ROW = 2**31 - 1
RowNumber = Annotated[int, Path(ge=0, le=MAX_ROW)]


def parse_row_number(text: str) -> int | None:
    """A feature index or row id typed into a URL or form, or None; ASCII digits only."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_ROW:
        return None
    return int(text)

"""Typed dependencies and the lookups every route module shares.

Routes receive what the app factory put on app.state through the `*Dep` aliases, and look rows
up with the `*_or_404` helpers here, which raise app.core.errors classes that the app factory
turns into answers. Route modules import from here, never from each other (tests/unit/
test_layers.py).
"""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError, NotFoundError
from app.core.serving import ModelOwner
from app.core.workspace import Workspace
from app.db import lists as db_lists
from app.db.models import Explanation, Feature, FeatureList, SaeRow
from app.db.queries import find_feature, find_sae
from app.settings import Settings
from app.web.markup import TokenTextCache
from app.web.semantic import LabelIndex


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _workspace(request: Request) -> Workspace | None:
    return request.app.state.workspace


def _inference(request: Request) -> ModelOwner | None:
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
InferenceDep = Annotated[ModelOwner | None, Depends(_inference)]
SessionDep = Annotated[Session, Depends(_session)]
TemplatesDep = Annotated[Jinja2Templates, Depends(_templates)]


def _vocabularies(request: Request) -> TokenTextCache:
    return request.app.state.vocabularies


VocabularyDep = Annotated[TokenTextCache, Depends(_vocabularies)]


def _label_index(request: Request) -> LabelIndex:
    return request.app.state.label_index


LabelIndexDep = Annotated[LabelIndex, Depends(_label_index)]

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


def parse_feature_ref(text: str) -> tuple[str, str, int]:
    """'model/sae/index' as a form sends it (names are single URL segments: app.core.names)."""
    model, _, rest = text.strip().partition("/")
    sae, _, index = rest.rpartition("/")
    number = parse_feature_index(index)
    if not model or not sae or number is None:
        raise MonoscopeError(f"A feature is model/sae/index, not {text!r}.")
    return model, sae, number


def local_path(target: str) -> str:
    """Only a path on this site: a `next` link must not send a fresh sign-in elsewhere."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def sae_or_404(session: Session, model: str, sae: str) -> SaeRow:
    row = find_sae(session, model, sae)
    if row is None:
        raise NotFoundError(f"No SAE {sae!r} for model {model!r} in this database.")
    return row


def feature_or_404(session: Session, model: str, sae: str, index: int) -> Feature:
    sae_row = find_sae(session, model, sae)
    feature = find_feature(session, sae_row.id, index) if sae_row else None
    if feature is None:
        raise NotFoundError(f"No feature {model}/{sae}/{index} in this database.")
    return feature


def list_or_404(session: Session, slug: str) -> FeatureList:
    found = db_lists.find_list(session, slug)
    if found is None:
        raise NotFoundError(f"No feature list {slug!r}.")
    return found


def label_or_404(session: Session, label_id: int) -> Explanation:
    label = session.get(Explanation, label_id)
    if label is None:
        raise NotFoundError(f"No label {label_id}.")
    return label


def _sae_in_path(model: str, sae: str, session: SessionDep) -> SaeRow:
    return sae_or_404(session, model, sae)


# The SAE a /{model}/{sae}/... route names, or a 404 before the route runs.
SaeDep = Annotated[SaeRow, Depends(_sae_in_path)]

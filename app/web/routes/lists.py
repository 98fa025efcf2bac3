"""Feature lists: pages (/lists, /lists/{slug}), JSON and CSV export, and /api/v1/lists.

Anyone may read a list; making or changing one is a write (a signed-in user or an API key).
Page forms post and redirect back (303), so they work without JavaScript; the feature page and
search results load their "add to list" box lazily (/lists/for/...), keeping those pages' own
queries as they were.
"""

import csv
import io
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError, NotFoundError
from app.db import lists as db_lists
from app.db.models import FeatureList
from app.db.queries import find_model, top_examples
from app.web import views
from app.web.auth import WriterDep, signed_in_name
from app.web.deps import (
    MAX_INDEX,
    FeatureIndex,
    RowId,
    SessionDep,
    TemplatesDep,
    VocabularyDep,
    feature_or_404,
    list_or_404,
    local_path,
    parse_feature_ref,
)
from app.web.markup import TokenTexts

router = APIRouter()


@dataclass(frozen=True)
class EntryView:
    entry: db_lists.ListEntry
    path: str
    snippet: views.ExampleRow | None


def _entries(session: Session, vocabularies, found: FeatureList) -> list[EntryView]:
    entries = db_lists.list_items(session, found)
    examples = top_examples(session, [e.feature.id for e in entries])
    models: dict[str, TokenTexts] = {}
    out = []
    for e in entries:
        example = examples.get(e.feature.id)
        snippet = None
        if example is not None:
            if e.model not in models:
                models[e.model] = vocabularies.get(session, find_model(session, e.model))
            snippet = views.example_row(
                example, models[e.model], example.max_act, before=8, after=6
            )
        out.append(EntryView(e, views.feature_path(e.model, e.sae, e.feature.index), snippet))
    return out


# -- pages ---------------------------------------------------------------------------------------


@router.get("/lists", response_class=HTMLResponse, name="lists_index")
def lists_index(request: Request, session: SessionDep, templates: TemplatesDep):
    context = {"lists": db_lists.all_lists(session)}
    return templates.TemplateResponse(request, "lists/index.html", context)


@router.post("/lists", name="lists_create")
def lists_create(
    session: SessionDep,
    viewer: WriterDep,
    title: Annotated[str, Form(max_length=db_lists.MAX_TITLE)],
    description: Annotated[str, Form(max_length=5_000)] = "",
):
    found = db_lists.create_list(session, title, description, viewer.name)
    session.commit()
    return RedirectResponse(f"/lists/{found.slug}", status_code=303)


@router.get("/lists/for/{model}/{sae}/{index}", response_class=HTMLResponse, name="lists_for")
def lists_for(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    model: str,
    sae: str,
    index: FeatureIndex,
    next: str = "",
):
    """The "add to list" box of one feature (htmx partial): the lists it is on, and a form."""
    feature = feature_or_404(session, model, sae, index)
    context = {
        "ref": f"{model}/{sae}/{index}",
        "on": db_lists.lists_with_feature(session, feature.id),
        "lists": [found for found, _ in db_lists.all_lists(session)]
        if signed_in_name(request)
        else [],
        "next": local_path(next) if next else "",
    }
    return templates.TemplateResponse(request, "lists/_for.html", context)


@router.post("/lists/add", name="lists_add")
def lists_add(
    session: SessionDep,
    viewer: WriterDep,
    feature: Annotated[str, Form(max_length=500)],
    slug: Annotated[str, Form(max_length=32, alias="list")] = "",
    new_title: Annotated[str, Form(max_length=db_lists.MAX_TITLE)] = "",
    note: Annotated[str, Form(max_length=db_lists.MAX_NOTE)] = "",
    next: Annotated[str, Form(max_length=2_000)] = "",
):
    """Add a feature to a list, or to a new list named in the same form."""
    row = feature_or_404(session, *parse_feature_ref(feature))
    if new_title.strip():
        found = db_lists.create_list(session, new_title, "", viewer.name)
    elif slug:
        found = list_or_404(session, slug)
    else:
        raise MonoscopeError("Choose a list, or give a title for a new one.")
    db_lists.add_item(session, found, row, note)
    session.commit()
    return RedirectResponse(local_path(next) if next else f"/lists/{found.slug}", status_code=303)


@router.get("/lists/{slug}", response_class=HTMLResponse, name="list_page")
def list_page(
    request: Request,
    slug: str,
    session: SessionDep,
    templates: TemplatesDep,
    vocabularies: VocabularyDep,
):
    found = list_or_404(session, slug)
    context = {"found": found, "entries": _entries(session, vocabularies, found)}
    return templates.TemplateResponse(request, "lists/show.html", context)


@router.post("/lists/{slug}/items/{item_id}", name="list_item_change")
def list_item_change(
    slug: str,
    item_id: RowId,
    session: SessionDep,
    viewer: WriterDep,
    action: Annotated[str, Form(pattern="^(note|up|down|remove)$")],
    note: Annotated[str, Form(max_length=db_lists.MAX_NOTE)] = "",
):
    """One form per item row: save its note, move it up or down, or remove it."""
    found = list_or_404(session, slug)
    entries = db_lists.list_items(session, found)
    position = next((e.item.position for e in entries if e.item.id == item_id), None)
    if position is None:
        raise NotFoundError(f"List {slug} has no item {item_id}.")
    change = {
        "note": lambda: db_lists.set_note(session, found, item_id, note),
        "up": lambda: db_lists.move_item(session, found, item_id, position - 1),
        "down": lambda: db_lists.move_item(session, found, item_id, position + 1),
        "remove": lambda: db_lists.remove_item(session, found, item_id),
    }[action]
    change()
    session.commit()
    return RedirectResponse(f"/lists/{slug}#items", status_code=303)


# -- export --------------------------------------------------------------------------------------


class ListItemOut(BaseModel):
    id: int
    position: int
    model: str
    sae: str
    index: int
    label: str | None
    label_score: float | None
    density: float | None
    max_act: float | None
    note: str
    path: str


class FeatureListOut(BaseModel):
    slug: str
    title: str
    description: str
    author: str | None
    created_at: str
    updated_at: str
    items: list[ListItemOut]


def _list_out(session: Session, found: FeatureList) -> FeatureListOut:
    items = [
        ListItemOut(
            id=e.item.id,
            position=e.item.position,
            model=e.model,
            sae=e.sae,
            index=e.feature.index,
            label=e.feature.label,
            label_score=e.feature.label_score,
            density=e.feature.density,
            max_act=e.feature.max_act,
            note=e.item.note,
            path=views.feature_path(e.model, e.sae, e.feature.index),
        )
        for e in db_lists.list_items(session, found)
    ]
    return FeatureListOut(
        slug=found.slug,
        title=found.title,
        description=found.description,
        author=found.author,
        created_at=found.created_at.isoformat(),
        updated_at=found.updated_at.isoformat(),
        items=items,
    )


def _attachment(slug: str, extension: str) -> dict:
    return {"Content-Disposition": f'attachment; filename="monoscope-list-{slug}.{extension}"'}


def _spreadsheet_safe(value: object) -> object:
    """A cell a spreadsheet would run as a formula (=, +, -, @) is kept as text."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


@router.get("/lists/{slug}/export.json", name="list_export_json")
def list_export_json(slug: str, session: SessionDep) -> JSONResponse:
    out = _list_out(session, list_or_404(session, slug))
    return JSONResponse(out.model_dump(), headers=_attachment(slug, "json"))


@router.get("/lists/{slug}/export.csv", name="list_export_csv")
def list_export_csv(slug: str, session: SessionDep) -> Response:
    out = _list_out(session, list_or_404(session, slug))
    columns = [
        "position",
        "model",
        "sae",
        "index",
        "label",
        "label_score",
        "density",
        "max_act",
        "note",
        "path",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for item in out.items:
        writer.writerow([_spreadsheet_safe(getattr(item, c)) for c in columns])
    return Response(
        buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=_attachment(slug, "csv")
    )


# -- JSON API ------------------------------------------------------------------------------------


class ListSummaryOut(BaseModel):
    slug: str
    title: str
    author: str | None
    items: int
    updated_at: str


class ListIn(BaseModel):
    title: str = Field(min_length=1, max_length=db_lists.MAX_TITLE)
    description: str = Field("", max_length=5_000)


class ItemIn(BaseModel):
    model: str = Field(max_length=200)
    sae: str = Field(max_length=200)
    index: int = Field(ge=0, le=MAX_INDEX)
    note: str = Field("", max_length=db_lists.MAX_NOTE)


class ItemPatch(BaseModel):
    note: str | None = Field(None, max_length=db_lists.MAX_NOTE)
    position: int | None = Field(None, ge=0, le=db_lists.MAX_ITEMS)


@router.get("/api/v1/lists", response_model=list[ListSummaryOut], tags=["api"])
def api_lists(session: SessionDep) -> list[ListSummaryOut]:
    return [
        ListSummaryOut(
            slug=f.slug,
            title=f.title,
            author=f.author,
            items=n,
            updated_at=f.updated_at.isoformat(),
        )
        for f, n in db_lists.all_lists(session)
    ]


@router.post("/api/v1/lists", response_model=FeatureListOut, status_code=201, tags=["api"])
def api_create_list(body: ListIn, session: SessionDep, viewer: WriterDep) -> FeatureListOut:
    found = db_lists.create_list(session, body.title, body.description, viewer.name)
    session.commit()
    return _list_out(session, found)


@router.get("/api/v1/lists/{slug}", response_model=FeatureListOut, tags=["api"])
def api_list(slug: str, session: SessionDep) -> FeatureListOut:
    return _list_out(session, list_or_404(session, slug))


@router.post("/api/v1/lists/{slug}/items", response_model=FeatureListOut, tags=["api"])
def api_add_item(slug: str, body: ItemIn, session: SessionDep, viewer: WriterDep):
    found = list_or_404(session, slug)
    row = feature_or_404(session, body.model, body.sae, body.index)
    db_lists.add_item(session, found, row, body.note)
    session.commit()
    return _list_out(session, found)


@router.patch("/api/v1/lists/{slug}/items/{item_id}", response_model=FeatureListOut, tags=["api"])
def api_change_item(
    slug: str, item_id: RowId, body: ItemPatch, session: SessionDep, viewer: WriterDep
) -> FeatureListOut:
    """Change an item's note and/or move it to `position` (0 = first)."""
    found = list_or_404(session, slug)
    if body.note is not None:
        db_lists.set_note(session, found, item_id, body.note)
    if body.position is not None:
        db_lists.move_item(session, found, item_id, body.position)
    session.commit()
    return _list_out(session, found)


@router.delete("/api/v1/lists/{slug}/items/{item_id}", response_model=FeatureListOut, tags=["api"])
def api_remove_item(
    slug: str, item_id: RowId, session: SessionDep, viewer: WriterDep
) -> FeatureListOut:
    found = list_or_404(session, slug)
    db_lists.remove_item(session, found, item_id)
    session.commit()
    return _list_out(session, found)

"""Curated feature lists: a title, a note per feature, an order people choose.

    found = create_list(session, "Colour features", "", author="ada")
    add_item(session, found, feature_row, note="fires on colour words")
    move_item(session, found, item_id, to=0)
    items = list_items(session, found)      # ordered, with each feature's model/SAE names

Positions are dense 0..n-1, rewritten on every move or removal: lists are human-sized, and dense
positions keep the order unambiguous for export.
"""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError, NotFoundError
from app.db.models import Feature, FeatureList, FeatureListItem, Model, SaeRow

MAX_ITEMS = 500
MAX_NOTE = 2_000
MAX_TITLE = 200


@dataclass(frozen=True)
class ListEntry:
    item: FeatureListItem
    feature: Feature
    model: str
    sae: str


def _slug() -> str:
    return secrets.token_urlsafe(6)


def _check_title(title: str) -> str:
    title = title.strip()
    if not title or len(title) > MAX_TITLE:
        raise MonoscopeError(f"a list title is 1 to {MAX_TITLE} characters")
    return title


def create_list(session: Session, title: str, description: str, author: str) -> FeatureList:
    found = FeatureList(
        slug=_slug(), title=_check_title(title), description=description.strip(), author=author
    )
    session.add(found)
    session.flush()
    return found


def find_list(session: Session, slug: str) -> FeatureList | None:
    return session.scalar(select(FeatureList).where(FeatureList.slug == slug))


def all_lists(session: Session, limit: int | None = None) -> list[tuple[FeatureList, int]]:
    """Every list (or the `limit` latest) with its item count, most recently changed first."""
    counts = (
        select(FeatureListItem.list_id, func.count().label("n"))
        .group_by(FeatureListItem.list_id)
        .subquery()
    )
    rows = session.execute(
        select(FeatureList, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.list_id == FeatureList.id)
        .order_by(FeatureList.updated_at.desc(), FeatureList.id.desc())
        .limit(limit)
    )
    return [(found, n) for found, n in rows]


def list_items(session: Session, found: FeatureList) -> list[ListEntry]:
    rows = session.execute(
        select(FeatureListItem, Feature, Model.name, SaeRow.name)
        .join(Feature, Feature.id == FeatureListItem.feature_id)
        .join(SaeRow, SaeRow.id == Feature.sae_id)
        .join(Model, Model.id == SaeRow.model_id)
        .where(FeatureListItem.list_id == found.id)
        .order_by(FeatureListItem.position)
    )
    return [ListEntry(item, feature, model, sae) for item, feature, model, sae in rows]


def _touch(found: FeatureList) -> None:
    found.updated_at = datetime.now(UTC)


def _note(note: str) -> str:
    if len(note) > MAX_NOTE:
        raise MonoscopeError(f"a note is at most {MAX_NOTE:,} characters")
    return note.strip()


def add_item(session: Session, found: FeatureList, feature: Feature, note: str = "") -> ListEntry:
    """Append a feature; adding one already on the list only updates its note when one is given."""
    entries = list_items(session, found)
    for entry in entries:
        if entry.feature.id == feature.id:
            if note.strip():
                entry.item.note = _note(note)
                _touch(found)
            return entry
    if len(entries) >= MAX_ITEMS:
        raise MonoscopeError(f"a list holds at most {MAX_ITEMS} features")
    item = FeatureListItem(
        list_id=found.id, feature_id=feature.id, position=len(entries), note=_note(note)
    )
    session.add(item)
    _touch(found)
    session.flush()
    return next(e for e in list_items(session, found) if e.item.id == item.id)


def _item(session: Session, found: FeatureList, item_id: int) -> FeatureListItem:
    item = session.get(FeatureListItem, item_id)
    if item is None or item.list_id != found.id:
        raise NotFoundError(f"list {found.slug} has no item {item_id}")
    return item


def set_note(session: Session, found: FeatureList, item_id: int, note: str) -> None:
    _item(session, found, item_id).note = _note(note)
    _touch(found)
    session.flush()


def _renumber(items: list[FeatureListItem]) -> None:
    for position, item in enumerate(items):
        item.position = position


def move_item(session: Session, found: FeatureList, item_id: int, to: int) -> None:
    """Put an item at position `to` (clamped to the list), the others keeping their order."""
    moving = _item(session, found, item_id)
    items = [e.item for e in list_items(session, found) if e.item.id != moving.id]
    items.insert(max(0, min(to, len(items))), moving)
    _renumber(items)
    _touch(found)
    session.flush()


def remove_item(session: Session, found: FeatureList, item_id: int) -> None:
    session.delete(_item(session, found, item_id))
    session.flush()
    _renumber([e.item for e in list_items(session, found)])
    _touch(found)
    session.flush()


def lists_with_feature(session: Session, feature_id: int) -> list[FeatureList]:
    return list(
        session.scalars(
            select(FeatureList)
            .join(FeatureListItem, FeatureListItem.list_id == FeatureList.id)
            .where(FeatureListItem.feature_id == feature_id)
            .order_by(FeatureList.title)
        )
    )

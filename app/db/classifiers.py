"""Stored feature classifiers: saved once under a name per model, never overwritten."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError
from app.db.models import ClassifierRow, Model


class ClassifierExists(MonoscopeError):
    status = 409


def save_classifier(
    session: Session,
    model: Model,
    name: str,
    concept: str,
    spec: dict,
    report: dict,
    author: str | None,
) -> ClassifierRow:
    """Add a classifier; a name already taken for this model is refused, since a team's
    accepted classifier must not be replaced by a retrain that nobody reviewed."""
    row = ClassifierRow(
        model_id=model.id, name=name, concept=concept, spec=spec, report=report, author=author
    )
    try:
        with session.begin_nested():  # a savepoint: a refusal leaves the session usable
            session.add(row)
    except IntegrityError:
        raise ClassifierExists(
            f"A classifier named {name!r} exists for {model.name}; choose another name."
        ) from None
    return row


def find_classifier(session: Session, model: str, name: str) -> ClassifierRow | None:
    return session.scalar(
        select(ClassifierRow).join(Model).where(Model.name == model, ClassifierRow.name == name)
    )


def list_classifiers(session: Session, model: str) -> list[ClassifierRow]:
    return list(
        session.scalars(
            select(ClassifierRow)
            .join(Model)
            .where(Model.name == model)
            .order_by(ClassifierRow.created_at.desc(), ClassifierRow.id.desc())
        )
    )

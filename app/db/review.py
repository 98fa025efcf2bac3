"""People reviewing labels: add their own, edit, retire or restore, mark verified or wrong.

    label = add_label(session, feature, "colour words", author="ada")
    review_label(session, label, "verified", author="grace")
    history(session, feature.id)            # who changed what, newest first

Every change is kept as a LabelEvent and the feature's shown label is refreshed at once (a
verified label leads, then the best score; wrong or retired labels are never shown). An edited
label loses its scores: they measured the old text.
"""

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import MonoscopeError
from app.db.labels import refresh_feature_label
from app.db.models import Explanation, Feature, LabelEvent

MAX_LABEL = 500
ACTIONS = ("edit", "retire", "restore", "verified", "wrong", "unreviewed")


def _text(text: str) -> str:
    text = " ".join(text.split())
    if not text or len(text) > MAX_LABEL:
        raise MonoscopeError(f"a label is 1 to {MAX_LABEL} characters")
    return text


def _record(session: Session, label: Explanation, author: str, action: str, before, after):
    session.add(
        LabelEvent(
            feature_id=label.feature_id,
            explanation_id=label.id,
            author=author,
            action=action,
            before=before,
            after=after,
        )
    )
    session.flush()
    refresh_feature_label(session, label.feature_id)


def add_label(session: Session, feature: Feature, text: str, author: str) -> Explanation:
    label = Explanation(feature_id=feature.id, text=_text(text), method="human", author=author)
    session.add(label)
    session.flush()
    _record(session, label, author, "added", None, label.text)
    return label


def review_label(
    session: Session, label: Explanation, action: str, author: str, text: str = ""
) -> Explanation:
    """Apply one review action (see ACTIONS) to a label and keep it in the history."""
    if label.status != "ok":
        raise MonoscopeError("a failed labelling attempt has no label to review")
    if action == "edit":
        before: str | None = label.text
        after = _text(text)
        if after == before:
            return label
        # the text shown is now the editor's; who wrote the first text stays in the history
        label.text, label.scores, label.author = after, {}, author
        _record(session, label, author, "edited", before, after)
    elif action in ("retire", "restore"):
        if (label.retired_at is not None) == (action == "retire"):
            return label
        label.retired_at = datetime.now(UTC) if action == "retire" else None
        _record(session, label, author, action + "d", None, label.text)
    elif action in ("verified", "wrong", "unreviewed"):
        before, label.verdict = label.verdict, None if action == "unreviewed" else action
        if label.verdict == before:
            return label
        _record(session, label, author, action, before, label.verdict)
    else:
        raise MonoscopeError(f"unknown review action {action!r}; one of {', '.join(ACTIONS)}")
    return label


def history(session: Session, feature_id: int, limit: int = 100) -> list[tuple[LabelEvent, str]]:
    """(event, the label's current text), newest first."""
    rows = session.execute(
        select(LabelEvent, Explanation.text)
        .join(Explanation, Explanation.id == LabelEvent.explanation_id)
        .where(LabelEvent.feature_id == feature_id)
        .order_by(LabelEvent.id.desc())
        .limit(limit)
    )
    return [(event, text) for event, text in rows]

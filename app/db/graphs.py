"""Saved attribution graphs, per user.

    saved = save_graph(session, author="ada", title="sister two-hop", model=..., transcoders=[...],
                       prompt="...", view={"pinned": "...", ...}, scores=(0.82, 0.95))
    graphs_by(session, "ada")               # newest first
    delete_graph(session, saved, by="ada")  # only its author may

A saved graph is its view, not its file: the page rebuilds the graph from the prompt (and caches
it), and says so when the server's model or transcoders are no longer the ones it was traced
through.
"""

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import ForbiddenError, MonoscopeError
from app.db.models import SavedGraph

MAX_TITLE = 200
MAX_SAVED = 500  # per user: a list a person reads, not an archive


def save_graph(
    session: Session,
    author: str,
    title: str,
    model: str,
    transcoders: list[str],
    prompt: str,
    view: dict,
    scores: tuple[float, float],
) -> SavedGraph:
    title = " ".join(title.split()) or prompt[:80]
    if len(title) > MAX_TITLE:
        raise MonoscopeError(f"a graph's title is at most {MAX_TITLE} characters")
    if len(graphs_by(session, author)) >= MAX_SAVED:
        raise MonoscopeError(f"{author} has {MAX_SAVED} saved graphs: delete some first")
    saved = SavedGraph(
        slug=secrets.token_urlsafe(6),
        title=title,
        author=author,
        model=model,
        transcoders=list(transcoders),
        prompt=prompt,
        view=view,
        replacement_score=scores[0],
        completeness_score=scores[1],
    )
    session.add(saved)
    session.flush()
    return saved


def find_graph(session: Session, slug: str) -> SavedGraph | None:
    return session.scalar(select(SavedGraph).where(SavedGraph.slug == slug))


def graphs_by(session: Session, author: str) -> list[SavedGraph]:
    """Newest first."""
    return list(
        session.scalars(
            select(SavedGraph)
            .where(SavedGraph.author == author)
            .order_by(SavedGraph.created_at.desc(), SavedGraph.id.desc())
        )
    )


def delete_graph(session: Session, saved: SavedGraph, by: str) -> None:
    if saved.author != by:
        raise ForbiddenError(f"only {saved.author} may delete this saved graph")
    session.delete(saved)
    session.flush()

"""Alembic environment: runs on the connection Monoscope hands it, or on MONOSCOPE_DATABASE_URL.

alembic upgrade head            # from the repository root, with alembic.ini
"""

from alembic import context

from app.db.engine import connect
from app.db.models import Base
from app.settings import Settings

# Full-text search lives outside the models (FTS5 tables; a generated tsvector column and its GIN
# index); autogenerate must neither drop nor re-create it.
FTS_OBJECTS = ("explanations_fts", "ix_explanations_text_fts", "search_vector")


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    return not (name or "").startswith(FTS_OBJECTS)


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = context.config.attributes.get("engine")
    if engine is None:
        engine = connect(Settings().database)
    with engine.begin() as connection:
        run_migrations(connection)

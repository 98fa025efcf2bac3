"""The schema: SQLAlchemy 2.0 declarative models. Every change here comes with an Alembic migration.

Feature rows carry what a feature page shows in one read (statistics, histogram, logit effects,
neighbours as JSON); examples point at contexts, whose token ids are stored once and shared by
every feature that fires on them. Per-token activations are packed float16 bytes.
"""

from datetime import UTC, datetime
from typing import ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only gives an INTEGER PRIMARY KEY its rowid fast path; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict: JSON, list: JSON}


class Model(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(Text)  # hub id or local directory
    architecture: Mapped[str] = mapped_column(String(100))
    n_layers: Mapped[int]
    d_model: Mapped[int]
    vocab_size: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    saes: Mapped[list["SaeRow"]] = relationship(back_populates="model")


class Token(Base):
    """The model's vocabulary as display text, so pages render tokens without the tokenizer."""

    __tablename__ = "tokens"

    model_id: Mapped[int] = mapped_column(
        Id, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    token_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    text: Mapped[str] = mapped_column(Text)


class SaeRow(Base):
    __tablename__ = "saes"
    __table_args__ = (UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    model_id: Mapped[int] = mapped_column(Id, ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text)
    site: Mapped[str] = mapped_column(
        String(100)
    )  # TransformerLens name, e.g. blocks.6.hook_resid_post
    # Where a transcoder's decoder writes (blocks.L.hook_mlp_out); None for an SAE, which writes
    # where it reads.
    site_out: Mapped[str | None] = mapped_column(String(100), nullable=True)
    architecture: Mapped[str] = mapped_column(String(50))
    d_in: Mapped[int]
    d_sae: Mapped[int]
    metrics: Mapped[dict] = mapped_column(default=dict)  # l0, variance_explained, ... (SaeMetrics)
    # Aggregates over all features (density and score histograms, label coverage) that pages
    # show and that would cost a full scan per request at a million features; see app.db.labels.
    summary: Mapped[dict] = mapped_column(default=dict, server_default="{}")
    harvest: Mapped[dict] = mapped_column(
        default=dict
    )  # corpus, tokens, context_size, histogram bins
    # How the feature map was drawn (app.db.maps): method, parameters, features placed, when.
    map_layout: Mapped[dict] = mapped_column(default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    model: Mapped[Model] = relationship(back_populates="saes")


class Context(Base):
    """A window of the corpus, stored once however many features it illustrates."""

    __tablename__ = "contexts"
    __table_args__ = (UniqueConstraint("model_id", "corpus", "row"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    model_id: Mapped[int] = mapped_column(Id, ForeignKey("models.id", ondelete="CASCADE"))
    corpus: Mapped[str] = mapped_column(String(64))  # token store fingerprint
    row: Mapped[int] = mapped_column(BigInteger)  # context number in that store
    token_ids: Mapped[bytes] = mapped_column(LargeBinary)  # int32, little-endian


class Feature(Base):
    __tablename__ = "features"
    __table_args__ = (
        UniqueConstraint("sae_id", "index"),
        # Keyset pagination: every sortable column is indexed with the index as tie-breaker.
        Index("ix_features_sae_density", "sae_id", "density", "index"),
        Index("ix_features_sae_max_act", "sae_id", "max_act", "index"),
        Index("ix_features_sae_label_score", "sae_id", "label_score", "index"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    sae_id: Mapped[int] = mapped_column(Id, ForeignKey("saes.id", ondelete="CASCADE"))
    index: Mapped[int]
    density: Mapped[float] = mapped_column(Float)  # firing tokens / harvested tokens
    max_act: Mapped[float] = mapped_column(Float)
    mean_act: Mapped[float] = mapped_column(Float)  # over the tokens where it fires
    histogram: Mapped[dict] = mapped_column(default=dict)  # {"log10_edges": [...], "counts": [...]}
    top_logits: Mapped[list] = mapped_column(default=list)  # [[token_id, text, value], ...]
    bottom_logits: Mapped[list] = mapped_column(default=list)
    neighbours: Mapped[list] = mapped_column(default=list)  # [[index, cosine], ...]
    # The label a feature is shown by and its headline score, kept by app.db.labels after every
    # explain or score run, so listings sort and filter by them without touching explanations.
    label: Mapped[str | None] = mapped_column(Text)
    label_score: Mapped[float | None] = mapped_column(Float)
    # Position on the SAE's feature map (UMAP of decoder directions, in [0, 1]); none until
    # `monoscope map` has run, and never for dead features.
    map_x: Mapped[float | None] = mapped_column(Float)
    map_y: Mapped[float | None] = mapped_column(Float)

    sae: Mapped[SaeRow] = relationship()


class Example(Base):
    __tablename__ = "examples"
    __table_args__ = (Index("ix_examples_feature_kind_rank", "feature_id", "kind", "rank"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    feature_id: Mapped[int] = mapped_column(Id, ForeignKey("features.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # top | quantile
    rank: Mapped[int]  # top: 0 = strongest; quantile: bin * per_bin + position in the bin
    interval: Mapped[int | None]  # quantile bin, 0 = lowest
    context_id: Mapped[int] = mapped_column(Id, ForeignKey("contexts.id", ondelete="CASCADE"))
    max_act: Mapped[float] = mapped_column(Float)
    activations: Mapped[bytes] = mapped_column(LargeBinary)  # float16 per token, little-endian

    context: Mapped[Context] = relationship()


class InterpRun(Base):
    """One explain or score run: what it used and what it cost."""

    __tablename__ = "interp_runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    sae_id: Mapped[int] = mapped_column(Id, ForeignKey("saes.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # explain | score
    method: Mapped[str] = mapped_column(String(50))
    explainer_model: Mapped[str | None] = mapped_column(String(200))
    features: Mapped[int] = mapped_column(default=0)
    failures: Mapped[int] = mapped_column(default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Explanation(Base):
    __tablename__ = "explanations"
    __table_args__ = (Index("ix_explanations_feature", "feature_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    feature_id: Mapped[int] = mapped_column(Id, ForeignKey("features.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(50))  # offline | openai | self | human
    explainer_model: Mapped[str | None] = mapped_column(String(200))
    scores: Mapped[dict] = mapped_column(default=dict)  # {"keyword": {"value": ..., ...}, ...}
    author: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A failed attempt (refusal, unparseable reply, no credit, timeout) is kept with its reason,
    # shown as such and retried; its text is empty and it never carries a score.
    status: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    error: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("interp_runs.id", ondelete="SET NULL")
    )
    # Human review: "verified" labels are shown first; "wrong" and retired ones are never shown.
    verdict: Mapped[str | None] = mapped_column(String(16))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LabelEmbedding(Base):
    """A label's sentence embedding, for semantic search. `text` is what was embedded: a label
    edited since no longer matches it, and is embedded again."""

    __tablename__ = "label_embeddings"

    explanation_id: Mapped[int] = mapped_column(
        Id, ForeignKey("explanations.id", ondelete="CASCADE"), primary_key=True
    )
    embedder: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float16, unit length


class LabelEvent(Base):
    """One change a person made to a label: the history kept on every feature page."""

    __tablename__ = "label_events"
    __table_args__ = (
        Index("ix_label_events_feature", "feature_id"),
        Index("ix_label_events_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    feature_id: Mapped[int] = mapped_column(Id, ForeignKey("features.id", ondelete="CASCADE"))
    explanation_id: Mapped[int] = mapped_column(
        Id, ForeignKey("explanations.id", ondelete="CASCADE")
    )
    author: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(16))  # added edited retired restored verified ...
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeatureList(Base):
    __tablename__ = "feature_lists"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FeatureListItem(Base):
    __tablename__ = "feature_list_items"
    __table_args__ = (UniqueConstraint("list_id", "feature_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    list_id: Mapped[int] = mapped_column(Id, ForeignKey("feature_lists.id", ondelete="CASCADE"))
    feature_id: Mapped[int] = mapped_column(Id, ForeignKey("features.id", ondelete="CASCADE"))
    position: Mapped[int]
    note: Mapped[str] = mapped_column(Text, default="")


class SteeringSession(Base):
    __tablename__ = "steering_sessions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    share_id: Mapped[str] = mapped_column(String(32), unique=True)
    config: Mapped[dict] = mapped_column(default=dict)  # features, strengths, generation settings
    transcript: Mapped[list] = mapped_column(default=list)
    author: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SavedGraph(Base):
    """An attribution graph someone kept: the prompt and the view (thresholds, target, pinned
    nodes, supernodes) that rebuild it, the model and transcoders it was traced through, and its
    scores for the list. Graphs are deterministic, so the view is the graph; the file is rebuilt
    on demand rather than stored (hundreds of kB each)."""

    __tablename__ = "saved_graphs"
    __table_args__ = (Index("ix_saved_graphs_author", "author"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(32), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    author: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    transcoders: Mapped[list] = mapped_column(default=list)
    prompt: Mapped[str] = mapped_column(Text)
    view: Mapped[dict] = mapped_column(default=dict)
    replacement_score: Mapped[float] = mapped_column(Float)
    completeness_score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ClassifierRow(Base):
    """A feature classifier someone trained (app.core.classifier), with its held-out report."""

    __tablename__ = "feature_classifiers"
    __table_args__ = (UniqueConstraint("model_id", "name"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    concept: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict] = mapped_column(default=dict)  # FeatureClassifier.to_dict()
    report: Mapped[dict] = mapped_column(default=dict)  # train, held-out and baseline figures
    author: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SignIn(Base):
    """A signed-in browser session. The cookie carries a random token and only its hash is kept
    here, so signing out (or a password change) ends the session even in a copied cookie."""

    __tablename__ = "sign_ins"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SignInLink(Base):
    """A link that signs its holder in once, before it expires (printed by `monoscope demo`)."""

    __tablename__ = "sign_in_links"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings; the key itself is not kept
    user_id: Mapped[int] = mapped_column(Id, ForeignKey("users.id", ondelete="CASCADE"))
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

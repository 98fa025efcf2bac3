"""The steering chat: default and steered replies side by side, streamed over SSE, shareable.

Pages: /steer (presets ?f=model/sae/index:clamp|add|cap:strength[:raw][:positions][:when:
sae/index>level], repeatable, and stop conditions ?stop=sae/index>level), /steer/{share_id} (a
saved session, to read and continue). JSON: /api/v1/steer (whole replies), /api/v1/steer/stream
(SSE: `token` events {side, text}, then `done` or `error`), /api/v1/steer/sweep,
/api/v1/steer/logprobs and /api/v1/steer/frozen. Strengths are multiples of each feature's max
activation, as harvested into the database, or raw activation units; a global multiplier scales
them all.
"""

import asyncio
import json
import secrets
from dataclasses import asdict, dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, ValidationError, model_validator
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from app.core.errors import MonoscopeError, NotFoundError
from app.core.feature_ref import (
    FeatureCondition,
    Mode,
    Positions,
    SteeringFeature,
    Units,
    parse_condition,
    parse_feature_ref,
)
from app.core.frozen_attention import frozen_attention_reply
from app.core.generation import GenerationRow, SamplingParams, chat_prompt_ids
from app.core.reply_reading import ReplyReading, read_replies, token_logprobs
from app.core.serving import ReplyStream
from app.core.steering import SteeringSpec, check_condition, resolve_steering
from app.core.workspace import Workspace
from app.db.labels import headline_score
from app.db.models import SteeringSession
from app.db.search import SearchHit, decoder_neighbours
from app.db.steering import max_acts_and_labels, shared_session
from app.settings import Settings
from app.web import views
from app.web.auth import WriterDep, limit_generation
from app.web.deps import (
    MAX_INDEX,
    LabelIndexDep,
    SessionDep,
    SettingsDep,
    TemplatesDep,
    VocabularyDep,
    WorkspaceDep,
)
from app.web.resident import require_loaded
from app.web.semantic import ranked_labels

router = APIRouter()
MAX_STRENGTH = 10.0  # in multiples of max activation
# Raw units: far past any activation a real SAE reaches (Gemma Scope's run to a few hundred), so
# only typing mistakes are refused.
MAX_RAW_STRENGTH = 10_000.0
MAX_MULTIPLIER = 10.0
# A token of any tokenizer we load covers a few characters at most (English BPE averages ~4);
# text past this many per allowed token cannot fit, so it is refused before it is tokenized.
CHARS_PER_TOKEN = 8
MAX_STOPS = 4  # stop conditions per request


class SteerCondition(BaseModel):
    """A feature read as the model runs: holds where its activation exceeds `above`."""

    sae: str = Field(max_length=200)
    index: int = Field(ge=0, le=MAX_INDEX)
    above: float = Field(
        allow_inf_nan=False,
        ge=-MAX_RAW_STRENGTH,
        le=MAX_RAW_STRENGTH,
        description="activation level in raw units (the numbers feature pages show)",
    )

    def condition(self) -> FeatureCondition:
        return FeatureCondition(self.sae, self.index, self.above)


class SteerFeature(BaseModel):
    sae: str = Field(max_length=200)
    index: int = Field(ge=0, le=MAX_INDEX)
    mode: Mode = Field(
        "clamp", description="clamp: set the activation; add: add the direction; cap: at most"
    )
    strength: float = Field(
        allow_inf_nan=False,
        description=f"multiples of the feature's max activation (±{MAX_STRENGTH:g}), or raw "
        f"activation units (±{MAX_RAW_STRENGTH:g}); a cap is ≥ 0",
    )
    units: Units = "max_act"
    positions: Positions = Field("all", description="where it applies: all, prompt, generated")
    when: SteerCondition | None = Field(
        None, description="steer only at tokens where this feature exceeds its level"
    )

    @model_validator(mode="after")
    def _strength_in_range(self) -> "SteerFeature":
        limit = MAX_STRENGTH if self.units == "max_act" else MAX_RAW_STRENGTH
        if abs(self.strength) > limit:
            raise ValueError(f"strength {self.strength:g} is outside ±{limit:g} in {self.units}")
        if self.mode == "cap" and self.strength < 0:
            raise ValueError("a cap is an activation level: 0 or more")
        return self


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=20_000)


class SteerIn(BaseModel):
    features: list[SteerFeature] = Field(default_factory=list, max_length=64)
    mode: Literal["chat", "completion"] = "chat"
    messages: list[Message] = Field(
        default_factory=list,
        max_length=200,
        description="chat mode: the steered side's conversation, ending with the new user turn",
    )
    default_messages: list[Message] | None = Field(
        None, max_length=200, description="the default side's own history (default: messages)"
    )
    prompt: str = Field("", max_length=20_000, description="completion mode: text to continue")
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    frequency_penalty: float = Field(
        0.0, ge=-2, le=2, description="subtracted from a token's logit per time it was generated"
    )
    presence_penalty: float = Field(
        0.0, ge=-2, le=2, description="subtracted from the logit of every token generated once"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    multiplier: float = Field(
        1.0, ge=0, le=MAX_MULTIPLIER, description="every feature's strength times this"
    )
    stop_when: list[SteerCondition] = Field(
        default_factory=list,
        max_length=MAX_STOPS,
        description="end each reply (finish reason `feature`) at the first token it generates "
        "where one of these holds; both sides, so they stay comparable",
    )


class Reply(BaseModel):
    text: str
    finish_reason: str | None


class SteerOut(BaseModel):
    default: Reply
    steered: Reply


def _max_acts(session: Session, model: str, features: list[SteerFeature]) -> dict:
    """(sae, index) -> (max activation, label) of the requested features."""
    return max_acts_and_labels(session, model, ((f.sae, f.index) for f in features))


def build_rows(
    body: SteerIn, workspace: Workspace | None, session: Session, settings: Settings
) -> list[GenerationRow]:
    """The default and the steered row, after every limit the server enforces (the cheap
    ones before the tokenizer reads anything)."""
    workspace = require_loaded(workspace, "steer")
    sides = [body.messages, body.default_messages or []]  # each side is limited on its own
    chars = max(len(body.prompt), *(sum(len(m.content) for m in side) for side in sides))
    tokens = settings.steer_max_prompt_tokens
    if chars > CHARS_PER_TOKEN * tokens:
        raise MonoscopeError(
            f"The conversation has {chars:,} characters; the limit is "
            f"{CHARS_PER_TOKEN * tokens:,} ({tokens:,} tokens)."
        )
    if len(body.features) > settings.steer_max_features:
        raise MonoscopeError(
            f"{len(body.features)} features; the limit is {settings.steer_max_features}."
        )
    if body.max_new_tokens > settings.steer_max_new_tokens:
        raise MonoscopeError(
            f"max_new_tokens is {body.max_new_tokens}; the limit is "
            f"{settings.steer_max_new_tokens}."
        )
    known = _max_acts(session, workspace.model.name, body.features)
    spec = SteeringSpec(
        tuple(
            SteeringFeature(
                f.sae,
                f.index,
                f.mode,
                f.strength * body.multiplier,
                f.units,
                f.positions,
                f.when.condition() if f.when else None,
            )
            for f in body.features
        )
    )
    edits = resolve_steering(spec, workspace.saes, lambda s, i: known.get((s, i), (None,))[0])
    stop_when = [c.condition() for c in body.stop_when]
    for condition in stop_when:
        check_condition(condition, workspace.saes)
    tokenizer = workspace.model.tokenizer
    if body.mode == "chat":
        if not body.messages or body.messages[-1].role != "user":
            raise MonoscopeError("A chat needs messages ending with the user's turn.")
        sides = [body.default_messages or body.messages, body.messages]
        if sides[0][-1].role != "user":
            raise MonoscopeError("default_messages must end with the user's turn too.")
        prompts = [chat_prompt_ids(tokenizer, [m.model_dump() for m in s]) for s in sides]
    else:
        if not body.prompt.strip():
            raise MonoscopeError("Completion mode needs a prompt to continue.")
        ids = tokenizer(body.prompt)["input_ids"]
        prompts = [(ids, ()), (ids, ())]
    longest = max(len(ids) for ids, _ in prompts)
    if longest > settings.steer_max_prompt_tokens:
        raise MonoscopeError(
            f"The conversation has {longest:,} tokens; the limit is "
            f"{settings.steer_max_prompt_tokens:,}."
        )
    window = workspace.model.context_length
    if window is not None and longest + body.max_new_tokens > window:
        raise MonoscopeError(
            f"The conversation ({longest:,} tokens) and the reply "
            f"({body.max_new_tokens}) need {longest + body.max_new_tokens:,} "
            f"positions; {workspace.model.name} has {window:,}. Start a new "
            "chat or ask for fewer tokens."
        )
    rows = []
    for (ids, stops), edit in zip(prompts, (None, edits), strict=True):
        params = SamplingParams(
            body.max_new_tokens,
            body.temperature,
            body.top_p,
            stops,
            frequency_penalty=body.frequency_penalty,
            presence_penalty=body.presence_penalty,
        )
        rows.append(GenerationRow(ids, edit, body.seed, params, stop_when=stop_when))
    return rows


def _rows(engine, body: SteerIn, workspace, settings) -> list[GenerationRow]:
    # A session of its own, closed before streaming: a request dependency's session would hold a
    # pooled connection for the whole reply, and sixteen chats would exhaust the pool.
    with Session(engine) as session:
        return build_rows(body, workspace, session, settings)


async def _start(
    request: Request, body: SteerIn, workspace, settings, make_rows=_rows
) -> tuple[ReplyStream, list[GenerationRow]]:
    limit_generation(request)
    # Tokenizing is CPU work: in a thread, so the event loop keeps answering everyone else.
    rows = await run_in_threadpool(make_rows, request.app.state.engine, body, workspace, settings)
    ticket = request.app.state.inference.submit(rows, asyncio.get_running_loop())  # or QueueFull
    await ticket.admitted()  # a replica's queue refuses here (QueueFull), before any event
    return ticket, rows


async def _whole_replies(ticket: ReplyStream, rows: int) -> tuple[list[str], list[str | None]]:
    texts = [""] * rows
    reasons: list[str | None] = [None] * rows
    try:
        async for part in ticket.stream():
            texts = [t + new for t, new in zip(texts, part.texts, strict=True)]
            reasons = [r or new for r, new in zip(reasons, part.finish_reasons, strict=True)]
    finally:
        ticket.cancel()
    return texts, reasons


SIDES = ("default", "steered")


@router.post("/api/v1/steer", response_model=SteerOut, tags=["api"])
async def api_steer(
    request: Request, body: SteerIn, workspace: WorkspaceDep, settings: SettingsDep
) -> SteerOut:
    """Default and steered replies, whole. Same limits as the stream."""
    ticket, _ = await _start(request, body, workspace, settings)
    texts, reasons = await _whole_replies(ticket, len(SIDES))
    return SteerOut(
        **{side: Reply(text=texts[i], finish_reason=reasons[i]) for i, side in enumerate(SIDES)}
    )


@router.post("/api/v1/steer/stream", tags=["api"], response_class=EventSourceResponse)
async def api_steer_stream(
    request: Request, body: SteerIn, workspace: WorkspaceDep, settings: SettingsDep
):
    """Server-sent events: `token` {side, text} as each side grows, then `done` {default,
    steered} with each side's finish reason, or `error` {detail}. Closing the connection stops
    the generation."""
    ticket, _ = await _start(request, body, workspace, settings)

    async def events():
        reasons: list[str | None] = [None, None]
        try:
            async for part in ticket.stream():
                for side, text in zip(SIDES, part.texts, strict=True):
                    if text:
                        yield {"event": "token", "data": json.dumps({"side": side, "text": text})}
                reasons = [r or new for r, new in zip(reasons, part.finish_reasons, strict=True)]
            yield {"event": "done", "data": json.dumps(dict(zip(SIDES, reasons, strict=True)))}
        except MonoscopeError as exc:
            yield {"event": "error", "data": json.dumps({"detail": str(exc)})}
        finally:
            ticket.cancel()  # the client left, or we are done: either way free the rows

    return EventSourceResponse(events(), ping=15)


@router.post("/api/v1/steer/frozen", response_model=Reply, tags=["api"])
async def api_steer_frozen(
    request: Request, body: SteerIn, workspace: WorkspaceDep, settings: SettingsDep
) -> Reply:
    """The steered reply with every attention pattern frozen to the unsteered model's over the
    same tokens (app.core.frozen_attention): beside the ordinary steered reply of the same seed,
    it shows how much of the steering acts through where tokens attend. Same limits as chat."""
    limit_generation(request)
    _, steered = await run_in_threadpool(_rows, request.app.state.engine, body, workspace, settings)
    loaded = require_loaded(workspace, "steer")  # _rows checked it; this tells the type checker
    model, saes = loaded.model, loaded.saes
    params = SamplingParams()  # the row carries its own

    def reply() -> tuple[str, str]:
        return frozen_attention_reply(model, saes, steered, params)

    text, reason = await run_in_threadpool(request.app.state.inference.run, reply)
    return Reply(text=text, finish_reason=reason)


MAX_SWEEP = 8  # strengths per sweep: with the default reply, 9 rows of one batch
DEFAULT_SWEEP = (0.0, 1.0, 2.0, 4.0, 8.0)


class SweepIn(SteerIn):
    multipliers: list[Annotated[float, Field(ge=0, le=MAX_MULTIPLIER)]] = Field(
        default_factory=lambda: list(DEFAULT_SWEEP),
        min_length=1,
        max_length=MAX_SWEEP,
        description="one steered reply per multiplier of every feature's strength (these "
        "replace `multiplier`)",
    )


class SweepReply(BaseModel):
    multiplier: float | None = Field(description="None for the default (unsteered) reply")
    text: str
    finish_reason: str | None
    loss: float = Field(description="mean cross-entropy of the reply under the unsteered model")
    activations: list[float] = Field(
        description="per feature, its peak activation on the reply's tokens, read unsteered"
    )


class SweepOut(BaseModel):
    features: list[str] = Field(description="SAE/INDEX of each entry in `activations`")
    default: SweepReply
    steered: list[SweepReply]


def _sweep_rows(engine, body: SweepIn, workspace, settings) -> list[GenerationRow]:
    """The default row, then one steered row per multiplier, all with the body's seed."""
    if not body.features:
        raise MonoscopeError("A sweep needs at least one feature to scale.")
    with Session(engine) as session:
        default, _ = build_rows(body, workspace, session, settings)
        return [default] + [
            build_rows(body.model_copy(update={"multiplier": m}), workspace, session, settings)[1]
            for m in body.multipliers
        ]


@router.post("/api/v1/steer/sweep", response_model=SweepOut, tags=["api"])
async def api_steer_sweep(
    request: Request, body: SweepIn, workspace: WorkspaceDep, settings: SettingsDep
) -> SweepOut:
    """One prompt and seed, a steered reply at each multiplier beside the default one, each
    read by the unsteered model (its loss, and each feature's peak on it), so the strength where
    replies stop making sense is visible. Same limits and queue as chat."""
    ticket, rows = await _start(request, body, workspace, settings, _sweep_rows)
    texts, reasons = await _whole_replies(ticket, len(rows))
    features = [(f.sae, f.index) for f in body.features]
    loaded = require_loaded(workspace, "steer")  # _start checked it; this tells the type checker
    model, saes = loaded.model, loaded.saes

    def read() -> list[ReplyReading]:
        return [
            read_replies(model, saes, row.prompt_ids, [text], features)[0]
            for row, text in zip(rows, texts, strict=True)
        ]

    readings = await run_in_threadpool(request.app.state.inference.run, read)
    replies = [
        SweepReply(
            multiplier=m,
            text=text,
            finish_reason=reason,
            loss=reading.loss,
            activations=list(reading.activations),
        )
        for m, text, reason, reading in zip(
            [None, *body.multipliers], texts, reasons, readings, strict=True
        )
    ]
    return SweepOut(
        features=[f"{sae}/{index}" for sae, index in features],
        default=replies[0],
        steered=replies[1:],
    )


class LogprobsIn(SteerIn):
    default_reply: str = Field(max_length=20_000, description="the default side's reply")
    steered_reply: str = Field(max_length=20_000, description="the steered side's reply")
    top: int = Field(5, ge=1, le=20, description="alternatives per token")


class TokenOut(BaseModel):
    token: str
    logprob: float = Field(description="under the model of the side that wrote it")
    other_logprob: float = Field(description="under the other side's model")
    top: list[tuple[str, float]] = Field(description="the writing side's likeliest tokens")


class LogprobsOut(BaseModel):
    default: list[TokenOut]
    steered: list[TokenOut]
    diverge_at: int | None = Field(description="the first token where the replies differ")


@router.post("/api/v1/steer/logprobs", response_model=LogprobsOut, tags=["api"])
async def api_steer_logprobs(
    request: Request, body: LogprobsIn, workspace: WorkspaceDep, settings: SettingsDep
) -> LogprobsOut:
    """Each token of a default and a steered reply (as /api/v1/steer gave them, for the same
    conversation and features) with its log-probability under both models and the writing
    side's likeliest alternatives: the model's own probabilities, before temperature, top-p and
    penalties. Same limits as chat."""
    limit_generation(request)
    rows = await run_in_threadpool(_rows, request.app.state.engine, body, workspace, settings)
    loaded = require_loaded(workspace, "steer")  # _rows checked it; this tells the type checker
    model, saes = loaded.model, loaded.saes
    replies = (body.default_reply, body.steered_reply)

    def read() -> list[list[TokenOut]]:
        sides = []
        for row, other, reply in zip(rows, reversed(rows), replies, strict=True):
            n = len(row.prompt_ids) + len(
                model.tokenizer(reply, add_special_tokens=False)["input_ids"]
            )
            model.check_length(n, settings.steer_max_prompt_tokens + body.max_new_tokens, "reply")
            choices = token_logprobs(
                model, saes, row.prompt_ids, reply, row.edits, other.edits, body.top
            )
            sides.append([TokenOut(**asdict(c)) for c in choices])
        return sides

    default, steered = await run_in_threadpool(request.app.state.inference.run, read)
    diverge_at = next(
        (i for i, (d, s) in enumerate(zip(default, steered, strict=False)) if d.token != s.token),
        None if len(default) == len(steered) else min(len(default), len(steered)),
    )
    return LogprobsOut(default=default, steered=steered, diverge_at=diverge_at)


def _sweep_multipliers(text: str) -> list[float]:
    try:
        checked = ShareSettings(sweep=[float(v) for v in text.replace(",", " ").split()])
    except (ValueError, ValidationError):
        raise MonoscopeError(
            f"Sweep {text[:80]!r}: give up to {MAX_SWEEP} multipliers from 0 to "
            f"{MAX_MULTIPLIER:g}, e.g. 0,1,2,4,8."
        ) from None
    return checked.sweep


def parse_preset(text: str, loaded_model: str | None) -> tuple[str, SteerFeature]:
    """(model, feature) from a ?f= preset in the one feature grammar (app.core.feature_ref),
    held to the same limits as the API."""
    model, feature = parse_feature_ref(text)
    try:
        checked = SteerFeature(**asdict(feature))
    except ValidationError as exc:
        problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise MonoscopeError(f"Preset {text[:80]!r}: {problems}.") from None
    return model or loaded_model or "", checked


def _state_features(
    session: Session, workspace, presets: list[tuple[str, SteerFeature]]
) -> list[dict]:
    """Preset features as the page's script wants them, each checked against this server."""
    if workspace is None:
        return []
    known = _max_acts(session, workspace.model.name, [f for _, f in presets])
    features = []
    for model, feature in presets:
        if model != workspace.model.name or feature.sae not in workspace.saes:
            raise MonoscopeError(f"{model}/{feature.sae} is not loaded on this server.")
        if (feature.sae, feature.index) not in known:
            raise MonoscopeError(f"{model}/{feature.sae} has no stored feature {feature.index}.")
        max_act, label = known[(feature.sae, feature.index)]
        features.append(feature.model_dump() | {"label": label, "max_act": max_act})
    return features


def _page(request, templates, workspace, settings, state: dict, share_id: str | None = None):
    context = {
        "state": state,
        "share_id": share_id,
        "model": workspace.model.name if workspace else None,
        "loaded": sorted(workspace.saes) if workspace else [],
        "limits": {
            "max_features": settings.steer_max_features,
            "max_new_tokens": settings.steer_max_new_tokens,
            "max_strength": MAX_STRENGTH,
            "max_raw_strength": MAX_RAW_STRENGTH,
            "max_multiplier": MAX_MULTIPLIER,
            "max_sweep": MAX_SWEEP,
            "max_stops": MAX_STOPS,
        },
    }
    return templates.TemplateResponse(request, "steer/index.html", context)


@router.get("/steer", response_class=HTMLResponse, name="steer_page")
def steer_page(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    settings: SettingsDep,
    f: Annotated[list[str] | None, Query(max_length=64)] = None,
    stop: Annotated[list[str] | None, Query(max_length=MAX_STOPS)] = None,
    sweep: Annotated[str, Query(max_length=200, description="multipliers, e.g. 0,1,2,4")] = "",
    frozen: bool = False,
    logprobs: bool = False,
    seed: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
    message: Annotated[str, Query(max_length=2_000, description="prefills the message box")] = "",
):
    """The steering page; every query parameter presets a control, so a sweep or a frozen-
    attention comparison is shared as a link (same seed, same replies)."""
    loaded_model = workspace.model.name if workspace else None
    presets = [parse_preset(text, loaded_model) for text in f or []]
    settings_state: dict = {"frozen": frozen, "logprobs": logprobs}
    if stop:
        settings_state["stop_when"] = [asdict(parse_condition(text)) for text in stop]
    if sweep.strip():
        settings_state["sweep"] = _sweep_multipliers(sweep)
    if seed is not None:
        settings_state["seed"] = seed
    state = {
        "features": _state_features(session, workspace, presets),
        "settings": settings_state,
        "message": message,
        "default": [],
        "steered": [],
    }
    return _page(request, templates, workspace, settings, state)


@dataclass(frozen=True)
class PickItem:
    hit: SearchHit
    headline: tuple[str, float] | None
    snippet: views.ExampleRow | None
    twin_of: int | None  # an earlier pick with the same label, which the snippet tells apart
    duplicate_of: tuple[int, float] | None  # an earlier pick writing nearly the same direction


@router.get("/steer/pick", response_class=HTMLResponse, name="steer_pick")
def steer_pick(
    request: Request,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    vocabularies: VocabularyDep,
    index: LabelIndexDep,
    q: Annotated[str, Query(max_length=200)] = "",
):
    """Features this server can steer with whose labels match the query in words or meaning
    (htmx partial), each with its density, score and strongest example; features sharing a
    label are marked, as eight "Golden Gate" features were indistinguishable by label alone, and
    so are near-duplicates (decoder cosine >= 0.8 with a pick above)."""
    items: list[PickItem] = []
    if workspace is not None and q.strip():
        ranked = ranked_labels(session, index, q, workspace.model.name, None, 40)
        hits = [r.hit for r in ranked if r.hit.sae in workspace.saes][:12]
        snippets = views.hit_snippets(session, vocabularies, hits, before=6, after=3)
        duplicates = views.near_duplicates(
            hits, decoder_neighbours(session, [h.feature_id for h in hits])
        )
        first_with: dict[str, int] = {}
        for hit in hits:
            twin = first_with.setdefault(" ".join(hit.text.lower().split()), hit.index)
            items.append(
                PickItem(
                    hit,
                    headline_score(hit.scores),
                    snippets.get(hit.feature_id),
                    twin if twin != hit.index else None,
                    duplicates.get(hit.feature_id),
                )
            )
    return templates.TemplateResponse(request, "steer/_pick.html", {"items": items, "q": q})


class ShareSettings(BaseModel):
    mode: Literal["chat", "completion"] = "chat"
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    max_new_tokens: int = Field(64, ge=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    multiplier: float = Field(1.0, ge=0, le=MAX_MULTIPLIER)
    stop_when: list[SteerCondition] = Field(default_factory=list, max_length=MAX_STOPS)
    sweep: list[Annotated[float, Field(ge=0, le=MAX_MULTIPLIER)]] = Field(
        default_factory=lambda: list(DEFAULT_SWEEP), min_length=1, max_length=MAX_SWEEP
    )
    frozen: bool = False  # add the frozen-attention reply under each steered one
    logprobs: bool = False


class ShareIn(BaseModel):
    features: list[SteerFeature] = Field(default_factory=list, max_length=64)
    settings: ShareSettings = Field(default_factory=ShareSettings)
    default: list[Message] = Field(default_factory=list, max_length=400)
    steered: list[Message] = Field(default_factory=list, max_length=400)


class ShareOut(BaseModel):
    id: str
    url: str


@router.post("/steer/share", response_model=ShareOut, name="steer_share")
def steer_share(
    request: Request,
    body: ShareIn,
    session: SessionDep,
    workspace: WorkspaceDep,
    settings: SettingsDep,
    viewer: WriterDep,
) -> ShareOut:
    """Save the session (features, settings, both transcripts) under a short id; needs a
    signed-in user or an API key."""
    features = body.features
    if len(features) > settings.steer_max_features:
        raise MonoscopeError(f"At most {settings.steer_max_features} features.")
    known = _max_acts(session, workspace.model.name, features) if workspace else {}
    share_id = secrets.token_urlsafe(6)
    config = {
        "model": workspace.model.name if workspace else None,
        "features": [
            f.model_dump()
            | {
                "label": known.get((f.sae, f.index), (None, None))[1],
                "max_act": known.get((f.sae, f.index), (None, None))[0],
            }
            for f in features
        ],
        "settings": body.settings.model_dump(),
    }
    transcript = {
        "default": [m.model_dump() for m in body.default],
        "steered": [m.model_dump() for m in body.steered],
    }
    session.add(
        SteeringSession(
            share_id=share_id, config=config, transcript=[transcript], author=viewer.name
        )
    )
    session.commit()
    return ShareOut(id=share_id, url=str(request.url_for("steer_shared", share_id=share_id)))


@router.get("/steer/{share_id}", response_class=HTMLResponse, name="steer_shared")
def steer_shared(
    request: Request,
    share_id: str,
    session: SessionDep,
    templates: TemplatesDep,
    workspace: WorkspaceDep,
    settings: SettingsDep,
):
    saved = shared_session(session, share_id)
    if saved is None:
        raise NotFoundError(f"No shared steering session {share_id!r}.")
    transcript = (saved.transcript or [{}])[0]
    state = {
        "features": saved.config.get("features", []),
        "settings": saved.config.get("settings", {}),
        "default": transcript.get("default", []),
        "steered": transcript.get("steered", []),
    }
    return _page(request, templates, workspace, settings, state, share_id)

"""Steering with attention frozen: the intervention changes what tokens carry, never where the
model looks.

    text, reason = frozen_attention_reply(model, saes, row, params)   # beside the steered reply

    with frozen_patterns(model) as freeze:             # the primitive the reply is built on
        with freeze.recording():
            model.hf(ids)                              # unsteered: each layer's pattern kept
        with freeze.replaying(), model.hooked(edits):
            model.hf(ids)                              # steered, attending as the unsteered run

Researchers ask for steered replies with attention patterns frozen to the unsteered run's,
shown beside the ordinary steered reply: where the two differ, the steering acted through
attention (later tokens attending elsewhere); where they agree, through the residual stream
alone. Every step runs twice over the same tokens: the unsteered model records each layer's
attention probabilities, then the steered model uses them in place of its own, so values and
everything past attention follow the steering while every pattern is the unsteered one.

Patterns are computed explicitly (softmax(q·kᵀ·scale + mask), grouped-query heads repeated, a
logit soft-cap where the model has one), not by SDPA, so a frozen reply can differ from the
ordinary steered reply by float rounding (~1e-6 on the logits) on top of the freezing.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from app.core.generation import (
    GenerationRow,
    SamplingParams,
    TextStream,
    check_rows,
    eos_ids,
    penalise,
    sample_next,
)
from app.core.model import LoadedModel
from app.core.sae import Sae
from app.core.steering import BatchSteerer

FROZEN = "monoscope_frozen"


class PatternFreezer:
    """Each layer's attention probabilities of one forward pass, recorded, then replayed in the
    same layer order by the next."""

    def __init__(self) -> None:
        self.layers: list[torch.Tensor] = []  # (batch, heads, q, kv) per attention call
        self._replay_at: int | None = None
        self._detach = False

    @contextmanager
    def detaching(self) -> Iterator[None]:
        """Each pass inside attends with its own pattern, held constant for gradients: what
        attribution graphs freeze (the pass is the clean one, so its patterns are the clean
        ones) without recording a pass first."""
        self._detach = True
        token = _active.set(self)
        try:
            yield
        finally:
            _active.reset(token)
            self._detach = False

    @contextmanager
    def recording(self) -> Iterator[None]:
        self.layers, self._replay_at = [], None
        token = _active.set(self)
        try:
            yield
        finally:
            _active.reset(token)

    @contextmanager
    def replaying(self) -> Iterator[None]:
        self._replay_at = 0
        token = _active.set(self)
        try:
            yield
            if self._replay_at != len(self.layers):
                raise RuntimeError(
                    f"replayed {self._replay_at} of {len(self.layers)} recorded attention layers"
                )
        finally:
            _active.reset(token)
            self._replay_at = None

    def pattern(self, computed: torch.Tensor) -> torch.Tensor:
        """The pattern a layer uses: its own while recording (kept), the recorded one replaying,
        its own as a constant while detaching."""
        if self._detach:
            return computed.detach()
        if self._replay_at is None:
            self.layers.append(computed)
            return computed
        recorded = self.layers[self._replay_at]
        if recorded.shape != computed.shape:
            raise RuntimeError(
                f"attention layer {self._replay_at}: recorded pattern {tuple(recorded.shape)}, "
                f"this pass needs {tuple(computed.shape)}: replay over the recorded tokens"
            )
        self._replay_at += 1
        return recorded


_active: ContextVar[PatternFreezer | None] = ContextVar("monoscope_pattern_freezer", default=None)


def frozen_attention(
    module: nn.Module,
    query: torch.Tensor,  # (batch, heads, q, head_dim)
    key: torch.Tensor,  # (batch, kv_heads, kv, head_dim)
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # (batch, 1, q, kv) bool (True = attend) or additive
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with explicit probabilities, which the active PatternFreezer records or
    replaces: (batch, q, heads, head_dim) and the pattern used."""
    if key.shape[1] != query.shape[1]:  # grouped-query attention: each kv head serves a group
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = (query @ key.transpose(-1, -2)).float() * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    q_len, kv_len = scores.shape[-2:]
    if attention_mask is None:  # the mask helper leaves plain causal attention unmasked
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=scores.device)
        attention_mask = attention_mask.tril(kv_len - q_len)
    if attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    else:
        scores = scores + attention_mask.float()
    weights = torch.softmax(scores, dim=-1).to(value.dtype)
    freezer = _active.get()
    if freezer is not None:
        weights = freezer.pattern(weights)
    return (weights @ value).transpose(1, 2).contiguous(), weights


AttentionInterface.register(FROZEN, frozen_attention)
AttentionMaskInterface.register(FROZEN, sdpa_mask)


@contextmanager
def frozen_patterns(model: LoadedModel) -> Iterator[PatternFreezer]:
    """The model attends through frozen_attention inside (its own implementation is restored on
    the way out); the PatternFreezer says which passes record and which replay."""
    before = model.hf.config._attn_implementation
    model.hf.set_attn_implementation(FROZEN)
    try:
        yield PatternFreezer()
    finally:
        model.hf.set_attn_implementation(before)


@torch.inference_mode()
def frozen_attention_reply(
    model: LoadedModel, saes: Mapping[str, Sae], row: GenerationRow, params: SamplingParams
) -> tuple[str, str]:
    """The row's steered reply with every attention pattern frozen to the unsteered model's
    over the same tokens, and its finish reason (eos, stop, length, feature). It samples as
    generation does, with the row's seed, so beside the ordinary steered reply of that seed
    only the freezing differs. Isolated from any generation's hooks, as the inference worker
    runs it between decode steps."""
    check_rows(model, [row], params)
    p = row.params or params
    tokenizer, device = model.tokenizer, model.device
    steerer = BatchSteerer(
        saes, [row.edits], [len(row.prompt_ids)], tokenizer.bos_token_id, [row.stop_when]
    )
    unsteered_cache, steered_cache = DynamicCache(), DynamicCache()
    ids = torch.tensor([list(row.prompt_ids)], device=device)
    positions = torch.arange(ids.shape[1], device=device)[None]
    generator = torch.Generator().manual_seed(int(row.seed))
    stream = TextStream(tokenizer, p.stop_strings)
    stops = eos_ids(model)
    counts: torch.Tensor | None = None
    text = ""
    with model.isolated(), frozen_patterns(model) as freeze, model.hooked(steerer.site_edits()):
        for _ in range(p.max_new_tokens):
            with model.isolated(), freeze.recording():
                model.hf(
                    input_ids=ids,
                    position_ids=positions,
                    past_key_values=unsteered_cache,
                    use_cache=True,
                )
            steerer.set_step(positions, torch.ones_like(ids, dtype=torch.bool), ids)
            with freeze.replaying():
                logits = model.hf(
                    input_ids=ids,
                    position_ids=positions,
                    past_key_values=steered_cache,
                    use_cache=True,
                ).logits[0, -1]
            if steerer.stopped()[0]:
                return text + stream.flush(), "feature"
            if p.penalised:
                counts = torch.zeros_like(logits) if counts is None else counts
                logits = penalise(logits, counts, p)
            uniform = torch.rand(1, generator=generator)
            token = int(sample_next(logits[None], uniform, p.temperature, p.top_p)[0])
            if counts is not None:
                counts[token] += 1
            if token in stops:
                return text + stream.flush(), "eos"
            text += stream.push(token)
            if stream.stopped:
                return text, "stop"
            ids = torch.tensor([[token]], device=device)
            positions = positions[:, -1:] + 1
    return text + stream.flush(), "length"

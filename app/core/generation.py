"""Batched, streamed generation with per-row steering and per-row seeds.

    rows = [GenerationRow(ids, edits=None, seed=7), GenerationRow(ids, edits=steer, seed=7)]
    for step in generate(model, saes, rows, SamplingParams(max_new_tokens=64)):
        print(step.texts)                       # new text of each row at this step

Rows with the same seed draw the same uniform number at every step and sample by inverse CDF, so
a default and a steered row differ only by the intervention (`pair_rows` builds that pair). A
server streams these Steps through app.core.serving, which batches many requests into one run.
"""

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from app.core.batch_invariance import fixed_row_tiles
from app.core.errors import MonoscopeError
from app.core.feature_ref import FeatureCondition
from app.core.model import LoadedModel, decode_text
from app.core.sae import Sae
from app.core.steering import BatchSteerer, FeatureEdit, check_condition

# Models without a chat template converse in this plain format and stop at the next user turn.
PLAIN_CHAT_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
PLAIN_CHAT_STOPS = ("\nUser:",)


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    stop_strings: tuple[str, ...] = ()
    # OpenAI's penalties, over the tokens this reply has generated so far (not the prompt):
    # logit[t] -= frequency_penalty * count[t] + presence_penalty * (count[t] > 0).
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    @property
    def penalised(self) -> bool:
        return self.frequency_penalty != 0 or self.presence_penalty != 0


@dataclass(frozen=True)
class GenerationRow:
    prompt_ids: Sequence[int]
    edits: Sequence[FeatureEdit] | None = None
    seed: int = 0
    # Rows of different requests share a batch (the server batches chats), each with its own
    # sampling settings; None takes the batch's. Setting `cancelled` ends the row at the next step.
    params: SamplingParams | None = None
    cancelled: threading.Event | None = field(default=None, compare=False)
    # The row ends (reason "feature") once one of these holds on a token it generated.
    stop_when: Sequence[FeatureCondition] = ()


@dataclass
class Step:
    """What one decoding step produced for every row."""

    texts: list[str]  # text that became final at this step ("" when none)
    token_ids: list[int | None]  # None for rows already finished
    finished: list[bool]
    # eos | stop | length | feature (a stop condition) | cancelled
    finish_reasons: list[str | None] = field(default_factory=list)


def chat_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]]
) -> tuple[list[int], tuple[str, ...]]:
    """Prompt ids for a conversation and the stop strings that end the assistant's turn."""
    for message in messages:
        if message.get("role") not in PLAIN_CHAT_ROLES:
            raise MonoscopeError(
                f"unknown chat role {message.get('role')!r}; use system, user or assistant"
            )
    if tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"], ()
    text = "".join(f"{PLAIN_CHAT_ROLES[m['role']]}: {m['content']}\n" for m in messages)
    return tokenizer(text + "Assistant:")["input_ids"], PLAIN_CHAT_STOPS


def penalise(logits: torch.Tensor, counts: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """(vocab,) logits less the repetition penalties for (vocab,) counts of generated tokens."""
    return logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)


def sample_next(
    logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float
) -> torch.Tensor:
    """Inverse-CDF sampling: (batch, vocab) logits and (batch,) uniforms -> (batch,) token ids."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    order = None
    if top_p < 1.0:  # only nucleus sampling needs the likeliest tokens in order
        probs, order = _nucleus(probs, top_p)
    cdf = probs.cumsum(dim=-1)
    target = uniforms.to(cdf.device)[:, None] * cdf[:, -1:]
    picked = torch.searchsorted(cdf, target).clamp(max=cdf.shape[-1] - 1)
    return (picked if order is None else order.gather(-1, picked)).squeeze(-1)


NUCLEUS_FIRST_TRY = 256


def _nucleus(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The likeliest tokens of each row in descending order, those past the first `top_p` of
    mass zeroed (the top token always stays), and their vocabulary ids.

    Sorting the whole vocabulary costs 2 ms a step for 8 rows of 8192 on two CPU cores, a fifth
    of a steered decode step, and a trained model's nucleus nearly always lies in its top few
    hundred tokens: so the top 256 are tried first, and give exactly the sort's tokens whenever
    every row's top 256 hold top_p of the mass (tokens past them would be zeroed anyway)."""
    if probs.shape[-1] > NUCLEUS_FIRST_TRY:
        top, order = probs.topk(NUCLEUS_FIRST_TRY, dim=-1)  # sorted, descending
        before = top.cumsum(dim=-1) - top  # mass of the likelier tokens
        if bool((before[:, -1] + top[:, -1] >= top_p).all()):
            return top * (before < top_p), order
    top, order = probs.sort(dim=-1, descending=True)
    return top * (top.cumsum(dim=-1) - top < top_p), order


class TextStream:
    """Turns a row's tokens into text deltas: whole characters only, stop strings cut off."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop_strings if s]
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = decode_text(self.tokenizer, self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a multi-byte character is not complete yet
            return ""
        for stop in self.stop_strings:
            at = text.find(stop)
            if at >= 0:
                text, self.stopped = text[:at], True
        self.text = text
        safe = len(text) if self.stopped else len(text) - self._held_back(text)
        return self._emit_to(safe)

    def flush(self) -> str:
        return self._emit_to(len(self.text))

    def _emit_to(self, end: int) -> str:
        delta = self.text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return delta

    def _held_back(self, text: str) -> int:
        """Length of the longest tail that could still grow into a stop string."""
        longest = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    longest = max(longest, n)
                    break
        return longest


def _left_pad(t: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _merge(cache, attention, new_cache, new_attention):
    """Stack two batches' KV caches: the shorter one is padded on the left, where its
    attention mask is zero, so every row keeps seeing exactly its own tokens."""
    length = max(attention.shape[1], new_attention.shape[1])
    for layer, new_layer in zip(cache.layers, new_cache.layers, strict=True):
        layer.keys = torch.cat(
            [_left_pad(layer.keys, length, 2), _left_pad(new_layer.keys, length, 2)]
        )
        layer.values = torch.cat(
            [_left_pad(layer.values, length, 2), _left_pad(new_layer.values, length, 2)]
        )
    return torch.cat([_left_pad(attention, length, 1), _left_pad(new_attention, length, 1)])


def _trim(cache, attention):
    """Drop leading cache columns that no remaining row attends to (left by finished rows)."""
    used = attention.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else 0
    if start > 0:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
        attention = attention[:, start:]
    return attention


class _SteeringSlot:
    """The hooks stay installed for the whole generation; the steerer they apply changes as
    rows join and leave the batch."""

    def __init__(self, steerer: BatchSteerer):
        self.steerer = steerer
        self._edits = steerer.site_edits()

    def set(self, steerer: BatchSteerer) -> None:
        self.steerer, self._edits = steerer, steerer.site_edits()

    def hook(self, site: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def edit(x: torch.Tensor) -> torch.Tensor:
            apply = self._edits.get(site)
            return apply(x) if apply is not None else x

        return edit


@torch.inference_mode()
def generate(
    model: LoadedModel,
    saes: Mapping[str, Sae],
    rows: Sequence[GenerationRow],
    params: SamplingParams,
    admit: Callable[[int], Sequence[GenerationRow]] | None = None,
    batch_invariant: bool = True,
) -> Iterator[Step]:
    """Decode rows together with a KV cache; yields one Step per generated token.

    Each row is prefilled alone and, with `batch_invariant`, every decode step runs on fixed
    row tiles (app.core.batch_invariance): a row's text is bit for bit what it is alone, whoever
    shares the batch.

    Before every step `admit(rows_taken)` may hand over more rows (a server's waiting
    requests): they are prefilled, merged into the running batch and reported at the end of the
    Step lists from then on. Rows that finish leave the batch and the cache. Generation ends when
    no row is left running."""
    tokenizer, device = model.tokenizer, model.device
    bos = tokenizer.bos_token_id
    eos = eos_ids(model)
    every: list[GenerationRow] = []
    generators: list[torch.Generator] = []
    row_params: list[SamplingParams] = []
    streams: list[TextStream] = []
    generated: list[int] = []
    counts: dict[int, torch.Tensor] = {}  # generated-token counts, for rows with penalties
    finished: list[bool] = []
    reasons: list[str | None] = []
    alive: list[int] = []  # indices into `every` of the rows in the batch, in batch order
    feature_stops: list[int] = []  # rows a stop condition ended at this step

    def steerer_for(indices: list[int]) -> BatchSteerer:
        chosen = [every[i] for i in indices]
        return BatchSteerer(
            saes,
            [r.edits for r in chosen],
            [len(r.prompt_ids) for r in chosen],
            bos,
            [r.stop_when for r in chosen],
        )

    def register(new: Sequence[GenerationRow]) -> list[int]:
        check_rows(model, new, params)
        for condition in (c for row in new for c in row.stop_when):
            check_condition(condition, saes)
        first = len(every)
        for row in new:
            p = row.params or params
            every.append(row)
            generators.append(torch.Generator().manual_seed(int(row.seed)))
            row_params.append(p)
            streams.append(TextStream(tokenizer, p.stop_strings))
            generated.append(0)
            finished.append(False)
            reasons.append(None)
        return list(range(first, len(every)))

    main = steerer_for([])  # the running batch's steering
    slot = _SteeringSlot(main)
    sites = {  # where features are read and where they are written (a transcoder's differ)
        model.site(name).name
        for sae in saes.values()
        for name in (sae.hook_name, sae.hook_name_out)
    }
    # The running batch's state: set together when the first row joins and cleared together when
    # the last leaves, so it is typed Any rather than checked for None at every use.
    cache: Any = None  # DynamicCache
    attention: Any = None  # (rows, keys) mask
    positions: Any = None  # (rows, 1) next position ids
    input_ids: Any = None  # (rows, 1) last sampled tokens
    incoming = list(rows)
    with model.hooked({site: slot.hook(site) for site in sites}):
        while True:
            for i in alive:
                cancelled = every[i].cancelled
                if cancelled is not None and cancelled.is_set() and not finished[i]:
                    finished[i], reasons[i] = True, "cancelled"
            if admit is not None:
                incoming += list(admit(len(alive) + len(incoming)))
            if not incoming and all(finished[i] for i in alive):
                return
            logits = []
            if alive:
                slot.set(main)
                main.set_step(positions, torch.ones_like(input_ids, dtype=torch.bool), input_ids)
                with fixed_row_tiles() if batch_invariant else nullcontext():
                    out = model.hf(
                        input_ids=input_ids,
                        attention_mask=attention,
                        position_ids=positions,
                        past_key_values=cache,
                        use_cache=True,
                    )
                cache = out.past_key_values
                logits.append(out.logits[:, -1, :])
                for i, stop in zip(alive, main.stopped(), strict=True):
                    if stop and not finished[i]:  # its newest token crossed a stop condition
                        finished[i], reasons[i] = True, "feature"
                        feature_stops.append(i)
            if incoming:
                joined = register(incoming)
                incoming = []
                for i in joined:  # each row prefilled alone: exactly the arithmetic of its solo run
                    ids = torch.tensor([list(every[i].prompt_ids)], device=device)
                    row_positions = torch.arange(ids.shape[1], device=device)[None]
                    row_attention = torch.ones_like(ids)
                    slot.set(steerer_for([i]))
                    slot.steerer.set_step(row_positions, row_attention.bool(), ids)
                    out = model.hf(
                        input_ids=ids,
                        attention_mask=row_attention,
                        position_ids=row_positions,
                        past_key_values=DynamicCache(),
                        use_cache=True,
                    )
                    logits.append(out.logits[:, -1, :])
                    if cache is None:
                        cache, attention = out.past_key_values, row_attention
                        positions = row_positions[:, -1:]
                    else:
                        attention = _merge(cache, attention, out.past_key_values, row_attention)
                        positions = torch.cat([positions, row_positions[:, -1:]])
                alive += joined
                main = steerer_for(alive)
            step_logits = torch.cat(logits)
            for j, i in enumerate(alive):
                if row_params[i].penalised:
                    seen = counts.setdefault(i, torch.zeros_like(step_logits[j]))
                    step_logits[j] = penalise(step_logits[j], seen, row_params[i])
            uniforms = torch.cat([torch.rand(1, generator=generators[i]) for i in alive])
            next_ids = torch.empty(len(alive), dtype=torch.long)
            sampling_groups: dict[tuple[float, float], list[int]] = {}
            for j, i in enumerate(alive):
                p = row_params[i]
                sampling_groups.setdefault((p.temperature, p.top_p), []).append(j)
            for (temperature, top_p), group in sampling_groups.items():
                picked = sample_next(step_logits[group], uniforms[group], temperature, top_p)
                next_ids[group] = picked.cpu()
            texts = [""] * len(every)
            token_ids: list[int | None] = [None] * len(every)
            for i in feature_stops:
                texts[i] = streams[i].flush()
            feature_stops = []
            for i, token in zip(alive, next_ids.tolist(), strict=True):
                if finished[i]:  # cancelled or stopped by a feature before this step
                    continue
                token_ids[i] = token
                generated[i] += 1
                if i in counts:
                    counts[i][token] += 1
                if token in eos:
                    finished[i], reasons[i] = True, "eos"
                    texts[i] = streams[i].flush()
                    continue
                text = streams[i].push(token)
                if streams[i].stopped:
                    finished[i], reasons[i] = True, "stop"
                elif generated[i] == row_params[i].max_new_tokens:
                    finished[i], reasons[i] = True, "length"
                    text += streams[i].flush()
                texts[i] = text
            yield Step(texts, token_ids, list(finished), list(reasons))
            keep = [j for j, i in enumerate(alive) if not finished[i]]
            for i in alive:
                if finished[i]:  # a long-lived server batch must not keep a vocab row per reply
                    counts.pop(i, None)
            if len(keep) < len(alive):
                index = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(index.to(device))
                main.select_rows(index)
                next_ids = next_ids[index]
                attention, positions = attention[index], positions[index]
                alive = [alive[j] for j in keep]
                if alive:
                    attention = _trim(cache, attention)
            if not alive:
                if admit is None:
                    return
                cache = attention = positions = input_ids = None
                continue
            input_ids = next_ids[:, None].to(device)
            positions = positions + 1
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=-1)


def check_rows(model: LoadedModel, rows: Sequence[GenerationRow], params: SamplingParams) -> None:
    """Refuse rows the model cannot decode: empty prompts, or prompt + reply beyond its window."""
    if any(len(r.prompt_ids) == 0 for r in rows):
        raise MonoscopeError("every prompt needs at least one token")
    limit = model.context_length
    for r in rows:
        need = len(r.prompt_ids) + (r.params or params).max_new_tokens
        if limit is not None and need > limit:
            raise MonoscopeError(
                f"prompt and reply need {need} positions; {model.name} has {limit}"
            )


def eos_ids(model: LoadedModel) -> set[int]:
    """The token ids that end a reply: the generation config's and the tokenizer's."""
    config = model.hf.generation_config
    ids = config.eos_token_id if config is not None else None
    ids = ids if isinstance(ids, list) else [ids]
    return {i for i in [*ids, model.tokenizer.eos_token_id] if i is not None}


def complete(
    model: LoadedModel,
    saes: Mapping[str, Sae],
    rows: Sequence[GenerationRow],
    params: SamplingParams,
) -> list[str]:
    """Whole continuations for each row."""
    texts = [""] * len(rows)
    for step in generate(model, saes, rows, params):
        texts = [done + new for done, new in zip(texts, step.texts, strict=True)]
    return texts


def pair_rows(
    prompt_ids: Sequence[int],
    edits: Sequence[FeatureEdit],
    seed: int,
    stop_when: Sequence[FeatureCondition] = (),
) -> list[GenerationRow]:
    """A default row and a steered row that differ only by the intervention."""
    return [GenerationRow(prompt_ids, side, seed, stop_when=stop_when) for side in (None, edits)]

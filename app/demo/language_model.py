"""Train the demo world's language model: a small GPT-2 that speaks the world fluently.

    LanguageModelJob(LanguageModelConfig(out=Path("app/demo/model"))).run()

Deterministic for a seed (no dropout, data order from the seed), checkpointed every few hundred
steps so an interrupted run resumes where it stopped and ends with the same weights.
"""

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel

from app.core.checkpoint import load_checkpoint, save_checkpoint
from app.demo.corpus import PackedTokens, ordinary_token_ids, pack, train_tokenizer
from app.demo.world import World

SAMPLE_PROMPTS = (
    "User: What is your favourite food?\nAssistant:",
    "User: Tell me about the Golden Gate Bridge.\nAssistant:",
    "One morning, Mia went to",
    "def count_cats(animals):",
)


@dataclass(frozen=True)
class LanguageModelConfig:
    out: Path
    """Folder for the tokenizer, config and weights."""
    seed: int = 0
    """World seed for training text; validation uses seed + 1."""
    world_version: int = 1
    """Which version of the demo world the text comes from."""
    tokenizer_documents: int = 30_000
    vocab_size: int = 4096
    train_documents: int = 100_000
    val_documents: int = 2_000
    context_size: int = 256
    n_layer: int = 4
    d_model: int = 256
    n_head: int = 4
    tie_embeddings: bool = True
    """Share the input embeddings with the output head (the shipped world v1 model is tied).
    Untied, a world v2 model (4L d256, 600 steps) reached validation loss 0.894 against 0.901, and
    a 4096 x k16 SAE at blocks.1.hook_resid_post found the Golden Gate Bridge at span F1 0.76
    against 0.44, with 1% of its latents dead in training against 14%. The identity share at that
    site did not move (10.2% both)."""
    steps: int = 1600
    batch_size: int = 16
    lr: float = 2e-3
    warmup_steps: int = 100
    checkpoint_every: int = 200
    copy_share: float = 0.0
    """Share of each batch made of repeated random spans during the first `copy_steps` steps."""
    copy_steps: int = 0
    work_dir: Path = Path("data/demo-build")
    """Where checkpoints live while training."""


class LanguageModelJob:
    def __init__(self, config: LanguageModelConfig):
        self.config = config

    def _lr(self, step: int) -> float:
        c = self.config
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        progress = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        return c.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def run(self) -> dict:
        c = self.config
        torch.manual_seed(c.seed)
        c.out.mkdir(parents=True, exist_ok=True)
        c.work_dir.mkdir(parents=True, exist_ok=True)
        world, held_out = World(c.seed, c.world_version), World(c.seed + 1, c.world_version)
        tokenizer = train_tokenizer(
            world.documents(c.tokenizer_documents), c.out, c.vocab_size, c.context_size
        )
        train = pack(world, c.train_documents, tokenizer, c.context_size)
        val = pack(held_out, c.val_documents, tokenizer, c.context_size)
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(tokenizer),
                n_positions=c.context_size,
                n_embd=c.d_model,
                n_layer=c.n_layer,
                n_head=c.n_head,
                tie_word_embeddings=c.tie_embeddings,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=0.01)
        order = np.random.default_rng(c.seed).permutation(
            np.resize(np.arange(len(train.ids)), c.steps * c.batch_size)
        )
        pool = ordinary_token_ids(tokenizer)
        checkpoint = c.work_dir / "lm-checkpoint.pt"
        start = load_checkpoint(checkpoint, model=model, optimizer=optimizer)
        model.train()
        bar = tqdm(
            range(start, c.steps), initial=start, total=c.steps, desc="train LM", unit="step"
        )
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = self._lr(step)
            batch = torch.from_numpy(
                train.ids[order[step * c.batch_size : (step + 1) * c.batch_size]]
            ).long()
            labels = batch.clone()
            copies = round(c.copy_share * c.batch_size) if step < c.copy_steps else 0
            if copies:
                rng = np.random.default_rng((c.seed, step))
                for row in range(copies):
                    batch[row], labels[row] = repeated_spans(rng, pool, c.context_size)
            loss = model(batch, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            rate = (bar.format_dict["rate"] or 0) * c.batch_size * c.context_size
            bar.set_postfix(loss=f"{loss.item():.3f}", tokens_per_s=f"{rate:.0f}")
            if (step + 1) % c.checkpoint_every == 0 and step + 1 < c.steps:
                save_checkpoint(checkpoint, step + 1, model=model, optimizer=optimizer)
        model.eval()
        report: dict[str, object] = {
            "val_loss": validation_loss(model, val),
            "train_tokens": int(order.size) * c.context_size,
        }
        model.half().save_pretrained(c.out, safe_serialization=True)
        report["samples"] = samples(model.float(), tokenizer)
        (c.out / "training.json").write_text(
            json.dumps({"config": asdict(c), **report}, indent=2, default=str)
        )
        return report


def repeated_spans(
    rng: np.random.Generator, pool: np.ndarray, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A context of random spans, each read twice, with the loss kept on the second readings only
    (the first cannot be predicted, and training on it would flatten the model's word prior).

    Why: the world asks the model to copy from its context (two-hop answers, recall, repeat turns),
    but copying is rare enough in its text that a 4L d256 model on 2.5M tokens read
    repeated random tokens only 0.49 nats cheaper the second time (1.34 with a quarter copying)."""
    ids: list[int] = []
    labels: list[int] = []
    while len(ids) < length:
        span = rng.choice(pool, size=int(rng.integers(4, 48))).tolist()
        ids += span + span
        labels += [-100] * (len(span) + 1) + span[1:]  # where a span starts is not knowable
    return torch.tensor(ids[:length]), torch.tensor(labels[:length])


@torch.no_grad()
def validation_loss(model, tokens: PackedTokens, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy over every context."""
    total, count = 0.0, 0
    for i in range(0, len(tokens.ids), batch_size):
        batch = torch.from_numpy(tokens.ids[i : i + batch_size]).long()
        loss = model(batch, labels=batch).loss
        total += loss.item() * batch.numel()
        count += batch.numel()
    return total / count


@torch.no_grad()
def samples(model, tokenizer, max_new_tokens: int = 48) -> list[str]:
    """Greedy continuations of a few in-world prompts, for the training report."""
    texts = []
    for prompt in SAMPLE_PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        room = model.config.n_positions - ids.shape[1]
        out = model.generate(
            ids,
            max_new_tokens=min(max_new_tokens, room),
            do_sample=False,
            pad_token_id=tokenizer.eos_token_id,
        )
        texts.append(tokenizer.decode(out[0, 1:], skip_special_tokens=True))
    return texts

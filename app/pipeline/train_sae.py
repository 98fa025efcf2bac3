"""Train an SAE (or an MLP transcoder) on any supported model and site, and write it in SAELens
format (sparsify for a TopK transcoder).

    TrainSaeJob(TrainSaeConfig(model="app/demo/model", hook_name="blocks.1.hook_resid_post",
                               corpus="demo-world", out=Path("saes/res1"))).run()

Activations are cached once to a memmap in the work folder (BOS positions dropped), scaled so
their mean norm is sqrt(d_in) for training and unscaled again in the saved weights; a transcoder
caches its MLP's input and output side by side and scales each so. Training checkpoints every
few hundred steps; a resumed run replays the same batches and ends with the same weights. The
saved cfg.json carries the metrics of `evaluate_sae` on held-out contexts.
"""

import json
import math
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from app.core.checkpoint import load_checkpoint, save_checkpoint
from app.core.errors import MonoscopeError
from app.core.model import LoadedModel, load_model
from app.core.sae import Sae, save_saelens
from app.core.sae.formats import save_sparsify
from app.core.sae.metrics import evaluate_sae
from app.core.sae.training import TrainableSae, Whitening
from app.pipeline.config import TrainSaeConfig
from app.pipeline.corpus import load_contexts

WHITENING_EPSILON = 0.1
"""The whitening's eigenvalue floor, as a share of the mean eigenvalue. A world v2 model's
blocks.1.hook_resid_post has eigenvalues from 0.003 to 15 (mean 0.88); with 0.1, a 4096 x k16
SAE kept variance explained at 0.940 (0.942 unwhitened; 0.932 with a floor of 0.01) and its dead
latents fell from 13.7% to 0.02%."""


class TrainSaeJob:
    def __init__(self, config: TrainSaeConfig):
        self.config = config
        # Activations depend on what is read; a run also on how it trains. Runs share a cache.
        self.cache = config.work_dir / (
            "activations-"
            + config.fingerprint(
                "model", "hook_name", "transcoder", "corpus", "context_size", "train_tokens"
            )
        )
        self.work = config.work_dir / (
            "run-"
            + config.fingerprint(
                "model",
                "hook_name",
                "transcoder",
                "corpus",
                "context_size",
                "train_tokens",
                "d_sae",
                "k",
                "l1_coefficient",
                "epochs",
                "batch_size",
                "lr",
                "warmup_steps",
                "decay_fraction",
                "dead_after_tokens",
                "whiten",
                "seed",
            )
        )

    def run(self) -> Sae:
        c = self.config
        self.work.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        read, write = c.sites  # a bad site fails before any work
        model = load_model(c.model, device=c.device)
        for site in (read, write):
            if site is not None:
                model.site(site)
        inputs, targets = self._cached_activations(model, read, write)
        scale, out_scale = _unit_scale(model, inputs), _unit_scale(model, targets)
        trainer = self._train(inputs, targets, scale, out_scale, model.device)
        sae = trainer.to_sae(
            read, scale, model_name=c.model, hook_name_out=write, out_scale=out_scale
        )
        eval_ids = self._eval_contexts(model)
        metrics = evaluate_sae(model, model.attach(sae), torch.from_numpy(eval_ids))
        sae.cfg.metadata.update(
            {
                "metrics": metrics.to_dict(),
                "context_size": c.context_size,
                "prepend_bos": model.tokenizer.bos_token_id is not None,
                "dataset_path": c.corpus,
                "training_tokens": c.steps * c.batch_size,
            }
        )
        frozen = sae.to("cpu", torch.float32)
        if sae.is_transcoder and sae.architecture == "topk":
            save_sparsify(frozen, c.out)
        else:
            save_saelens(frozen, c.out)
        (c.out / "training_config.json").write_text(
            json.dumps(asdict(c) | {"steps": c.steps}, indent=2, default=str)
        )
        return sae

    # -- activations ---------------------------------------------------------------------------
    def _cached_activations(
        self, model: LoadedModel, read: str, write: str | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(inputs, a transcoder's targets or None), row i of each from the same token."""
        c = self.config
        body = c.context_size - (model.tokenizer.bos_token_id is not None)
        n_contexts = -(-c.train_tokens // body)
        sites = [read] if write is None else [read, write]
        paths = [self.cache / f"activations-{n}.f16" for n in range(len(sites))]
        done = self.cache / "activations.done"
        shape = (n_contexts * body, model.d_model)
        if not done.exists():
            ids = load_contexts(c.corpus, model.tokenizer, c.context_size, n_contexts)
            if len(ids) < n_contexts:
                raise MonoscopeError(
                    f"corpus {c.corpus!r} gives {len(ids)} contexts; need {n_contexts}"
                )
            caches = [np.memmap(path, dtype=np.float16, mode="w+", shape=shape) for path in paths]
            batch = 32
            for i in tqdm(range(0, n_contexts, batch), desc="cache activations", unit="batch"):
                acts = model.capture(torch.from_numpy(ids[i : i + batch]), sites)
                for site, cache in zip(sites, caches, strict=True):
                    tokens = acts[model.site(site).name][:, -body:].flatten(0, 1).float()
                    cache[i * body : i * body + len(tokens)] = tokens.cpu().numpy()
            for cache in caches:
                cache.flush()
            done.touch()
        cached = [np.memmap(path, dtype=np.float16, mode="r", shape=shape) for path in paths]
        return cached[0], cached[1] if write is not None else None

    def _eval_contexts(self, model: LoadedModel) -> np.ndarray:
        c = self.config
        if c.eval_corpus:
            return load_contexts(c.eval_corpus, model.tokenizer, c.context_size, c.eval_contexts)
        body = c.context_size - (model.tokenizer.bos_token_id is not None)
        n_train = -(-c.train_tokens // body)
        ids = load_contexts(c.corpus, model.tokenizer, c.context_size, n_train + c.eval_contexts)
        if len(ids) <= n_train:
            raise MonoscopeError("no held-out text left for evaluation: pass an eval corpus")
        return ids[n_train:]

    # -- training ------------------------------------------------------------------------------
    def _lr(self, step: int) -> float:
        c = self.config
        decay_start = int(c.steps * (1 - c.decay_fraction))
        warm = min(1.0, (step + 1) / c.warmup_steps)
        if step < decay_start:
            return c.lr * warm
        return c.lr * warm * (c.steps - step) / max(1, c.steps - decay_start)

    def _train(
        self,
        activations: np.ndarray,
        targets: np.ndarray | None,
        scale: float,
        out_scale: float,
        device: torch.device,
    ) -> TrainableSae:
        c = self.config
        torch.manual_seed(c.seed)
        sample = torch.from_numpy(activations[:100_000].astype(np.float32)) * scale
        whitening = Whitening.fit(sample, WHITENING_EPSILON) if c.whiten else None
        mean = (
            (sample if whitening is None else whitening.apply(sample)).mean(0)
            if targets is None
            else (torch.from_numpy(targets[:100_000].astype(np.float32)) * out_scale).mean(0)
        )
        if whitening is not None:
            whitening = whitening.to(device)
        sae = TrainableSae.initialise(
            sample.shape[1], c.d_sae, c.k, mean, c.seed, c.l1_coefficient, c.transcoder
        ).to(device)
        optimizer = torch.optim.Adam(sae.parameters(), lr=c.lr, betas=(0.9, 0.999))
        last_fired = torch.zeros(c.d_sae, dtype=torch.long, device=device)
        checkpoint = self.work / "checkpoint.pt"
        start = load_checkpoint(
            checkpoint, device, sae=sae, optimizer=optimizer, last_fired=last_fired
        )
        rng = np.random.default_rng(c.seed)
        orders = [rng.permutation(len(activations)) for _ in range(c.epochs)]
        order = np.concatenate(orders)
        per_step = c.batch_size
        bar = tqdm(range(start, c.steps), initial=start, total=c.steps, desc="train SAE")
        for step in bar:
            rows = np.sort(order[step * per_step : (step + 1) * per_step])
            x = torch.from_numpy(activations[rows].astype(np.float32)).to(device) * scale
            if whitening is not None:
                x = whitening.apply(x)
            y = (
                None
                if targets is None
                else torch.from_numpy(targets[rows].astype(np.float32)).to(device) * out_scale
            )
            for group in optimizer.param_groups:
                group["lr"] = self._lr(step)
            tokens_seen = step * per_step
            dead = (tokens_seen - last_fired) >= c.dead_after_tokens
            out = sae.loss(x, dead, target=y)
            out.loss.backward()
            sae.before_step()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sae.after_step()
            last_fired[out.fired] = tokens_seen + per_step
            if step % c.log_every == 0 or step == c.steps - 1:
                stats = {
                    "step": step,
                    "fvu": round(out.fvu.item(), 4),
                    "l0": round(out.l0.item(), 1),
                    "aux": round(out.aux.item(), 4),
                    "dead": round(dead.float().mean().item(), 4),
                }
                bar.set_postfix(stats)
                with (self.work / "log.jsonl").open("a") as log:
                    log.write(json.dumps(stats) + "\n")
            if (step + 1) % c.checkpoint_every == 0 and step + 1 < c.steps:
                save_checkpoint(
                    checkpoint, step + 1, sae=sae, optimizer=optimizer, last_fired=last_fired
                )
        if whitening is not None:
            sae.fold_whitening(whitening)
        return sae


def _unit_scale(model: LoadedModel, activations: np.ndarray | None) -> float:
    """The factor that gives activations a mean norm of sqrt(d_model) (1 when there are none)."""
    if activations is None:
        return 1.0
    norms = np.linalg.norm(activations[:100_000].astype(np.float32), axis=1)
    return math.sqrt(model.d_model) / float(norms.mean())

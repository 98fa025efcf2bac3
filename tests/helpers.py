"""Builders for the test suite: tiny tokenizers, models of each family, and SAEs on disk."""

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from bs4 import BeautifulSoup
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from app.core.sae import Sae, SaeConfig

CORPUS = [
    "The Golden Gate Bridge is in San Francisco. The fog rolls over the bridge.",
    "User: What is your favourite animal?\nAssistant: I like the red fox.",
    "def add(a, b):\n    return a + b\n",
    "Le chat est sur la table. Il fait beau aujourd'hui.",
    "One, two, three, four, five. Monday, Tuesday, Wednesday.",
] * 20

D_MODEL = 32
N_LAYERS = 3


def build_tokenizer(folder: Path, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that prepends <bos>, saved so AutoTokenizer loads it."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<bos>", "<eos>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    fast.save_pretrained(folder)
    return fast


def _config(family: str, vocab: int, ids: dict, positions: int = 256):
    common = dict(vocab_size=vocab, **ids)
    if family == "gpt2":
        return GPT2Config(
            n_layer=N_LAYERS, n_embd=D_MODEL, n_head=4, n_positions=positions, **common
        )
    if family == "gpt_neox":
        return GPTNeoXConfig(
            num_hidden_layers=N_LAYERS,
            hidden_size=D_MODEL,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=positions,
            use_parallel_residual=True,
            **common,
        )
    llama_like = dict(
        num_hidden_layers=N_LAYERS,
        hidden_size=D_MODEL,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=positions,
        **common,
    )
    if family == "llama":
        return LlamaConfig(**llama_like)
    if family == "qwen2":
        return Qwen2Config(**llama_like)
    if family == "gemma":
        return GemmaConfig(head_dim=8, **llama_like)
    if family == "gemma2":
        return Gemma2Config(head_dim=8, query_pre_attn_scalar=8, **llama_like)
    raise ValueError(family)


FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "gemma", "gemma2")


def build_model(folder: Path, family: str = "gpt2", seed: int = 0, positions: int = 256) -> Path:
    """A tiny random causal LM of one family with its tokenizer, saved as an HF directory."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    ids = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    config = _config(family, len(tokenizer), ids, positions)
    config.initializer_range = 0.2  # large enough that random models have varied predictions
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return folder


def random_sae(
    d_in: int = D_MODEL,
    d_sae: int = 128,
    hook_name: str = "blocks.1.hook_resid_post",
    architecture: str = "standard",
    seed: int = 0,
    **cfg,
) -> Sae:
    """An SAE with random weights whose features fire on typical activations."""
    g = torch.Generator().manual_seed(seed)
    weights = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "W_dec": torch.randn(d_sae, d_in, generator=g) / d_in**0.5,
        "b_dec": torch.randn(d_in, generator=g) * 0.1,
    }
    if architecture == "gated":
        weights |= {
            "b_gate": torch.randn(d_sae, generator=g) * 0.1,
            "b_mag": torch.randn(d_sae, generator=g) * 0.1,
            "r_mag": torch.randn(d_sae, generator=g) * 0.1,
        }
    else:
        weights["b_enc"] = torch.randn(d_sae, generator=g) * 0.1
    if architecture == "jumprelu":
        weights["threshold"] = torch.rand(d_sae, generator=g) * 0.2
    if architecture == "topk":
        cfg.setdefault("k", 8)
    config = SaeConfig(
        architecture=architecture, d_in=d_in, d_sae=d_sae, hook_name=hook_name, **cfg
    )
    return Sae(config, weights)


def random_transcoder(
    layer: int = 1,
    d_in: int = D_MODEL,
    d_sae: int = 128,
    architecture: str = "standard",
    skip: bool = False,
    seed: int = 0,
    d_out: int | None = None,
    **cfg,
) -> Sae:
    """A transcoder from layer `layer`'s MLP input to its MLP output, with random weights."""
    d_out = d_out or d_in
    g = torch.Generator().manual_seed(seed)
    weights = {
        "W_enc": torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        "b_enc": torch.randn(d_sae, generator=g) * 0.1,
        "W_dec": torch.randn(d_sae, d_out, generator=g) / d_sae**0.5,
        "b_dec": torch.randn(d_out, generator=g) * 0.1,
    }
    if architecture == "jumprelu":
        weights["threshold"] = torch.rand(d_sae, generator=g) * 0.2
    if architecture == "topk":
        cfg.setdefault("k", 8)
    if skip:
        weights["W_skip"] = torch.randn(d_out, d_in, generator=g) * 0.05
    config = SaeConfig(
        architecture=architecture,  # type: ignore[arg-type]
        d_in=d_in,
        d_sae=d_sae,
        hook_name=f"blocks.{layer}.hook_mlp_in",
        apply_b_dec_to_input=False,
        hook_name_out=f"blocks.{layer}.hook_mlp_out",
        d_out=d_out,
        **cfg,
    )
    return Sae(config, weights)


def build_relu_gpt2(folder: Path) -> Path:
    """The tiny GPT-2 with ReLU MLPs: each MLP is then exactly a ReLU transcoder of its input
    (`exact_transcoder`), which gives replacement-model tests known answers."""
    build_model(folder, "gpt2")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"activation_function": "relu"}))
    return folder


def exact_transcoder(model, layer: int) -> Sae:
    """Layer `layer`'s ReLU MLP of a `build_relu_gpt2` model as a transcoder: its features are
    the MLP's neurons, so it reproduces the MLP output exactly."""
    mlp = model.adapter.blocks(model.hf)[layer].mlp
    weights = {  # GPT-2's Conv1D stores weights (in, out): x @ W + b
        "W_enc": mlp.c_fc.weight.detach().float().clone(),
        "b_enc": mlp.c_fc.bias.detach().float().clone(),
        "W_dec": mlp.c_proj.weight.detach().float().clone(),
        "b_dec": mlp.c_proj.bias.detach().float().clone(),
    }
    d_in, d_sae = weights["W_enc"].shape
    config = SaeConfig(
        architecture="standard",
        d_in=d_in,
        d_sae=d_sae,
        hook_name=f"blocks.{layer}.hook_mlp_in",
        apply_b_dec_to_input=False,
        hook_name_out=f"blocks.{layer}.hook_mlp_out",
        d_out=d_in,
    )
    return model.attach(Sae(config, weights))


@contextmanager
def killed_at_step(monkeypatch, job_class, step: int):
    """Inside the block, job_class.run() stops at `step` as a kill would (KeyboardInterrupt)."""
    real_lr = job_class._lr

    def crash(self, at):
        if at == step:
            raise KeyboardInterrupt
        return real_lr(self, at)

    monkeypatch.setattr(job_class, "_lr", crash)
    with pytest.raises(KeyboardInterrupt):
        yield
    monkeypatch.setattr(job_class, "_lr", real_lr)


def assert_same_weights(a: Path, b: Path) -> None:
    """Two safetensors files hold the same tensors, bit for bit."""
    first, second = load_file(a), load_file(b)
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def database_snapshot(engine) -> dict[str, list]:
    """Everything a harvest wrote, without generated ids and timestamps, in a stable order."""
    from sqlalchemy import select

    from app.db.models import Context, Example, Feature, SaeRow

    with engine.connect() as connection:
        saes = connection.execute(
            select(SaeRow.name, SaeRow.site, SaeRow.metrics, SaeRow.harvest).order_by(SaeRow.name)
        ).all()
        features = connection.execute(
            select(
                Feature.index,
                Feature.density,
                Feature.max_act,
                Feature.mean_act,
                Feature.histogram,
                Feature.top_logits,
                Feature.bottom_logits,
                Feature.neighbours,
            ).order_by(Feature.index)
        ).all()
        examples = connection.execute(
            select(
                Feature.index,
                Example.kind,
                Example.rank,
                Example.interval,
                Context.row,
                Example.max_act,
                Example.activations,
            )
            .join(Feature, Feature.id == Example.feature_id)
            .join(Context, Context.id == Example.context_id)
            .order_by(Feature.index, Example.kind, Example.rank, Example.interval)
        ).all()
        contexts = connection.execute(
            select(Context.corpus, Context.row, Context.token_ids).order_by(Context.row)
        ).all()
    return {
        "saes": [tuple(r) for r in saes],
        "features": [tuple(r) for r in features],
        "examples": [tuple(r) for r in examples],
        "contexts": [tuple(r) for r in contexts],
    }


@contextmanager
def serving(app, timeout: float = 30.0):
    """A real uvicorn server for `app` in a thread, on a free port; yields its base URL. Real
    sockets make a closed connection a real disconnect, and let a browser connect."""
    import threading
    import time

    import uvicorn

    from app.web.server import server_options

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            **server_options(app.state.settings),
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, env: dict | None = None, input: str | None = None) -> CliResult:
    """`monoscope ARGS` run in this process exactly as the entry point runs it (main(): an
    MonoscopeError is one 'error:' line and exit status 2), with stdin, stdout, stderr and the
    environment swapped for the call by click's test isolation. A subprocess per call paid
    seconds of imports each, 27 times over; tests/integration/test_cli.py keeps two real ones."""
    from click.testing import CliRunner

    from app.cli import main

    with CliRunner().isolation(input=input, env=env) as (stdout, stderr, _):
        saved, sys.argv = sys.argv, ["monoscope", *args]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        finally:
            sys.argv = saved
            sys.stdout.flush()  # plain print() output still sits in the wrapper's buffer
            sys.stderr.flush()
        return CliResult(code, stdout.getvalue().decode(), stderr.getvalue().decode())


def parsed(page: str) -> BeautifulSoup:
    """A page or htmx fragment parsed, for assertions through CSS selectors (Python's own
    html.parser: what a browser would see, without a native dependency)."""
    return BeautifulSoup(page, "html.parser")


def wait_for(condition, seconds: float = 10.0, poll: float = 0.01):
    """`condition()`'s first truthy answer, asked every `poll` seconds; fails the test once
    `seconds` have passed without one."""
    deadline = time.monotonic() + seconds
    while not (answer := condition()):
        assert time.monotonic() < deadline, f"still not so after {seconds} s"
        time.sleep(poll)
    return answer

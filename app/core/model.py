"""Hugging Face causal LMs with named hook sites.

    model = load_model("gpt2")                       # hub id or local directory
    acts = model.capture(input_ids, ["blocks.6.hook_resid_post"])
    with model.hooked({"blocks.6.hook_resid_post": edit}):   # edit(x) -> x' or None
        model.hf(input_ids)

Each supported family has an adapter naming, per block, the module whose output is each site.
The residual stream sites are the block's input (resid_pre) and output (resid_post); attn_out and
mlp_out are what the block adds to the residual stream (after Gemma 2's post-norms); mlp_in is
what the MLP module receives (after the block's pre-MLP norm), where transcoders read.
"""

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from app.core.batch_invariance import make_batch_invariant
from app.core.device import choose_dtype, resolve_device
from app.core.errors import MonoscopeError, SaeFormatError, SiteError, UnsupportedModelError
from app.core.names import url_name
from app.core.sae import Sae
from app.core.sites import Site, parse_site

# An edit receives the activation at a site, (batch, pos, d_model), and returns a replacement
# or None to leave it unchanged.
SiteEdit = Callable[[torch.Tensor], torch.Tensor | None]


@dataclass(frozen=True)
class Adapter:
    """Where each site lives in one architecture family."""

    family: str
    # The paths are attributes each family's modeling code defines, so they are looked up on
    # Any: nn.Module's own __getattr__ types every attribute as Tensor | Module.
    blocks: Callable[[Any], nn.ModuleList]
    attn_out: Callable[[Any], nn.Module]
    mlp_out: Callable[[Any], nn.Module]
    final_norm: Callable[[Any], nn.Module]
    mlp: Callable[[Any], nn.Module] = lambda b: b.mlp  # its input is the mlp_in site


_GPT2 = Adapter(
    family="GPT-2",
    blocks=lambda m: m.transformer.h,
    attn_out=lambda b: b.attn,
    mlp_out=lambda b: b.mlp,
    final_norm=lambda m: m.transformer.ln_f,
)
_NEOX = Adapter(
    family="GPT-NeoX (Pythia)",
    blocks=lambda m: m.gpt_neox.layers,
    attn_out=lambda b: b.attention,
    mlp_out=lambda b: b.mlp,
    final_norm=lambda m: m.gpt_neox.final_layer_norm,
)
_LLAMA = Adapter(
    family="Llama (Mistral, Qwen2, Qwen3, Gemma)",
    blocks=lambda m: m.model.layers,
    attn_out=lambda b: b.self_attn,
    mlp_out=lambda b: b.mlp,
    final_norm=lambda m: m.model.norm,
)
# Gemma 2 and 3 normalise each sub-block's output before adding it to the residual stream.
_GEMMA2 = Adapter(
    family="Gemma 2 / Gemma 3",
    blocks=lambda m: m.model.layers,
    attn_out=lambda b: b.post_attention_layernorm,
    mlp_out=lambda b: b.post_feedforward_layernorm,
    final_norm=lambda m: m.model.norm,
)

ADAPTERS: dict[str, Adapter] = {
    "gpt2": _GPT2,
    "gpt_neox": _NEOX,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gemma": _LLAMA,
    "gemma2": _GEMMA2,
    "gemma3_text": _GEMMA2,
}


def supported_families() -> str:
    return ", ".join(sorted(ADAPTERS))


def decode_text(
    tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], skip_special_tokens: bool = False
) -> str:
    """The text of a flat list of token ids (transformers types decode as str or list[str],
    the list being for batches)."""
    text = tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
    assert isinstance(text, str)
    return text


class _StopForward(Exception):
    """Raised from a hook once every requested site is captured, to skip the rest."""


def _first(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


def _replace_first(output: object, new: torch.Tensor) -> object:
    return (new, *output[1:]) if isinstance(output, tuple) else new


@dataclass
class LoadedModel:
    """A causal LM in eval mode with its tokenizer and site adapter."""

    hf: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapter: Adapter
    name: str
    # Hook sets are numbered as they are installed; those numbered up to the floor are muted.
    _hook_sets: int = field(default=0, repr=False, compare=False)
    _muted_up_to: int = field(default=0, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def n_layers(self) -> int:
        return len(self.adapter.blocks(self.hf))

    @property
    def d_model(self) -> int:
        return int(self.hf.config.hidden_size)

    @property
    def context_length(self) -> int | None:
        """Most positions the model can attend over (None when its config does not say)."""
        config = self.hf.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def check_length(self, n_tokens: int, limit: int, what: str = "text") -> None:
        """Refuse `n_tokens` past `limit` or past the model's own window, whichever is less."""
        window = self.context_length
        if window is not None and window < limit and n_tokens > window:
            raise MonoscopeError(
                f"the {what} has {n_tokens:,} tokens; {self.name} reads at most {window:,}"
            )
        if n_tokens > limit:
            raise MonoscopeError(f"the {what} has {n_tokens:,} tokens; the limit is {limit:,}")

    def site(self, name: str | Site) -> Site:
        """Parse a site name and check that the model has that layer."""
        site = name if isinstance(name, Site) else parse_site(name)
        if not 0 <= site.layer < self.n_layers:
            raise SiteError(
                f"site {site.name} is outside {self.name}: it has layers 0..{self.n_layers - 1}"
            )
        return site

    def attach(self, sae: Sae, source: str = "SAE") -> Sae:
        """Check the SAE reads a site of this model at its width; move it to our device/dtype."""
        try:
            site = self.site(sae.hook_name)
        except SiteError as exc:
            raise SaeFormatError(f"{source}: {exc}") from exc
        if sae.d_in != self.d_model:
            raise SaeFormatError(
                f"{source}: d_in is {sae.d_in} but {self.name} has width {self.d_model} "
                f"at {site.name}"
            )
        if sae.is_transcoder:
            try:
                out = self.site(sae.hook_name_out)
            except SiteError as exc:
                raise SaeFormatError(f"{source}: {exc}") from exc
            if out.depth <= site.depth:
                raise SaeFormatError(
                    f"{source}: a transcoder must write after it reads, but it reads "
                    f"{site.name} and writes {out.name}"
                )
            if sae.d_out != self.d_model:
                raise SaeFormatError(
                    f"{source}: d_out is {sae.d_out} but {self.name} has width {self.d_model} "
                    f"at {out.name}"
                )
        return sae.to(device=self.device, dtype=self.dtype).eval()

    def final_norm(self) -> nn.Module:
        return self.adapter.final_norm(self.hf)

    def final_norm_scale(self) -> torch.Tensor | None:
        """(d_model,) per-channel gain of the final norm, or None when it has none.

        Gemma's RMSNorm stores its gain as an offset from 1."""
        norm = self.final_norm()
        weight = getattr(norm, "weight", None)
        if weight is None:
            return None
        weight = weight.detach().float()
        return 1.0 + weight if type(norm).__name__.startswith("Gemma") else weight

    def unembedding(self) -> torch.Tensor:
        """(vocab, d_model) output embedding matrix W_U, in the model's dtype."""
        return self.hf.get_output_embeddings().weight.detach()

    def _register(self, site: Site, edit: SiteEdit) -> torch.utils.hooks.RemovableHandle:
        block = self.adapter.blocks(self.hf)[site.layer]
        if site.kind in ("resid_pre", "mlp_in"):  # a module's input: the block's, the MLP's

            def pre_hook(module, args, kwargs):
                if args:
                    new = edit(args[0])
                    return None if new is None else ((new, *args[1:]), kwargs)
                key = "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
                new = edit(kwargs[key])
                return None if new is None else (args, {**kwargs, key: new})

            target = block if site.kind == "resid_pre" else self.adapter.mlp(block)
            return target.register_forward_pre_hook(pre_hook, with_kwargs=True)

        module = {
            "resid_post": lambda: block,
            "attn_out": lambda: self.adapter.attn_out(block),
            "mlp_out": lambda: self.adapter.mlp_out(block),
        }[site.kind]()

        def hook(module, args, output):
            new = edit(_first(output))
            return None if new is None else _replace_first(output, new)

        return module.register_forward_hook(hook)

    @contextmanager
    def hooked(self, edits: Mapping[str, SiteEdit] | Mapping[Site, SiteEdit]) -> Iterator[None]:
        """Run forward passes with one edit per site; hooks are removed on exit."""
        self._hook_sets += 1
        number = self._hook_sets

        def gated(edit: SiteEdit) -> SiteEdit:
            return lambda x: None if number <= self._muted_up_to else edit(x)

        handles = [self._register(self.site(name), gated(edit)) for name, edit in edits.items()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def isolated(self) -> Iterator[None]:
        """Forward passes inside see only the hooks installed inside.

        The inference worker runs other work (activations, attribution) between the decode steps
        of a generation whose steering hooks stay installed; without this, those hooks would edit
        the other work's forward passes, and the other work's hooks the generation's."""
        muted, self._muted_up_to = self._muted_up_to, self._hook_sets
        try:
            yield
        finally:
            self._muted_up_to = muted

    @torch.inference_mode()
    def capture(
        self,
        input_ids: torch.Tensor,  # (batch, pos)
        sites: Sequence[str | Site],
        attention_mask: torch.Tensor | None = None,  # (batch, pos)
    ) -> dict[str, torch.Tensor]:
        """Activations (batch, pos, d_model) at each site from one pass that stops early."""
        wanted = {self.site(s).name: self.site(s) for s in sites}
        cache: dict[str, torch.Tensor] = {}

        def recorder(name: str) -> SiteEdit:
            def record(x: torch.Tensor) -> None:
                cache[name] = x.detach()
                if len(cache) == len(wanted):
                    raise _StopForward

            return record

        edits = {site: recorder(name) for name, site in wanted.items()}
        with self.hooked(edits), suppress(_StopForward):
            self.hf(
                input_ids=input_ids.to(self.device),
                attention_mask=None if attention_mask is None else attention_mask.to(self.device),
                use_cache=False,
            )
        return cache


def _checkpoint_dtype(config) -> torch.dtype | None:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def load_model(
    spec: str | Path, device: str = "auto", dtype: torch.dtype | None = None
) -> LoadedModel:
    """Load a causal LM from a hub id or local directory, ready for inference."""
    spec = str(spec)
    if spec.startswith(("/", ".", "~")) and not Path(spec).expanduser().exists():
        raise MonoscopeError(f"cannot load model {spec!r}: no such directory")
    try:
        config = AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise MonoscopeError(f"cannot load model {spec!r}: {exc}") from exc
    adapter = ADAPTERS.get(config.model_type)
    if adapter is None:
        raise UnsupportedModelError(
            f"model {spec!r} has architecture {config.model_type!r}, which Monoscope does not "
            f"support; supported: {supported_families()}"
        )
    torch_device = resolve_device(device)
    dtype = dtype or choose_dtype(torch_device, _checkpoint_dtype(config))
    hf = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype)
    # transformers wraps .to in a decorator whose signature mypy misreads as taking the model.
    hf.to(torch_device).eval()  # type: ignore[arg-type]
    hf.requires_grad_(False)
    make_batch_invariant(hf)  # a shared batch never changes a row's reply
    tokenizer = AutoTokenizer.from_pretrained(spec)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        hf=hf, tokenizer=tokenizer, adapter=adapter, name=url_name(Path(spec).name, "model")
    )

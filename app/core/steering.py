"""Steering: clamp, add or cap SAE features in the residual stream while the model runs.

    spec = SteeringSpec(features=(SteeringFeature("res6", 1234, "clamp", 10, units="max_act"),))
    edits = resolve_steering(spec, saes, max_act=lambda sae, i: stats[sae][i])
    steerer = BatchSteerer(saes, [None, edits], prompt_lengths=[n, n])   # row 0 unsteered
    with model.hooked(steerer.site_edits()):
        steerer.set_step(position_ids, valid, input_ids); model.hf(...)

clamp (Golden Gate): x' = x + (c - f_i(x)) * W_dec[i]  -- keeps the SAE error and other features
add:                 x' = x + a * W_dec[i]
cap:                 x' = x + (min(f_i(x), c) - f_i(x)) * W_dec[i]  -- at most c, never raised
One edit per site applies every feature of every SAE at that site exactly once, computing each
clamp and cap from the unedited x. Directions are mapped back through the SAE's input
normalisation. A transcoder's feature is read where the transcoder reads (the MLP's input) and
edited where it writes (the MLP's output, later in the same pass): x there is the MLP's output.

Conditional steering (`when`): an edit applies only at positions where another feature, read at
its own site from the activations arriving there, exceeds a level. The condition is read in the
same forward pass, so its site must come at or before the edited one. Stop conditions are read
the same way: `stopped()` says which rows' newest generated token crossed one.
"""

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from app.core.batch_invariance import rows_addmm
from app.core.errors import SteeringError
from app.core.feature_ref import MODES, FeatureCondition, Mode, Positions, SteeringFeature
from app.core.sae import Sae
from app.core.sites import Site, parse_site

_POSITION_CODES = {"all": 0, "prompt": 1, "generated": 2}


@dataclass(frozen=True)
class SteeringSpec:
    features: tuple[SteeringFeature, ...] = ()
    skip_bos: bool = True  # leave the BOS position alone: its norm dwarfs every other token's


@dataclass(frozen=True)
class FeatureEdit:
    """An intervention in raw activation units, ready for a hook."""

    sae: str
    index: int
    mode: Mode
    value: float
    positions: Positions = "all"
    when: FeatureCondition | None = None


def check_condition(
    condition: FeatureCondition, saes: Mapping[str, Sae], before: Site | None = None
) -> None:
    """Refuse a condition on an SAE that is not loaded, a feature it does not have, or (for a
    conditional edit at site `before`) a site the forward pass reaches only after the edit."""
    sae = saes.get(condition.sae)
    if sae is None:
        raise SteeringError(
            f"unknown SAE {condition.sae!r} in condition {condition}; "
            f"loaded: {', '.join(sorted(saes)) or 'none'}"
        )
    if not 0 <= condition.index < sae.d_sae:
        raise SteeringError(
            f"condition {condition}: feature {condition.index} is outside SAE "
            f"{condition.sae!r} (0..{sae.d_sae - 1})"
        )
    site = parse_site(sae.hook_name)  # where the condition's feature is read
    if before is not None and site.depth > before.depth:
        raise SteeringError(
            f"condition {condition} is read at {site}, after the edit at {before}: a condition "
            "must be read at or before the site it gates"
        )


def resolve_steering(
    spec: SteeringSpec,
    saes: Mapping[str, Sae],
    max_act: Callable[[str, int], float | None] | None = None,
) -> tuple[FeatureEdit, ...]:
    """Check a spec against the loaded SAEs and convert max-act multiples to raw values."""
    edits = []
    for feature in spec.features:
        sae = saes.get(feature.sae)
        if sae is None:
            raise SteeringError(
                f"unknown SAE {feature.sae!r}; loaded: {', '.join(sorted(saes)) or 'none'}"
            )
        if not 0 <= feature.index < sae.d_sae:
            raise SteeringError(
                f"feature {feature.index} is outside SAE {feature.sae!r} (0..{sae.d_sae - 1})"
            )
        if feature.mode not in MODES:
            raise SteeringError(f"unknown steering mode {feature.mode!r}; use clamp, add or cap")
        if feature.positions not in _POSITION_CODES:
            raise SteeringError(
                f"unknown positions {feature.positions!r}; use all, prompt or generated"
            )
        value = float(feature.strength)
        if feature.units == "max_act":
            scale = max_act(feature.sae, feature.index) if max_act else None
            if not scale:
                raise SteeringError(
                    f"feature {feature.sae}/{feature.index} has no recorded max activation; "
                    "give the strength in raw units"
                )
            value *= scale
        elif feature.units != "raw":
            raise SteeringError(f"unknown units {feature.units!r}; use max_act or raw")
        if feature.when is not None:
            check_condition(feature.when, saes, before=parse_site(sae.hook_name_out))
        edits.append(
            FeatureEdit(
                feature.sae, feature.index, feature.mode, value, feature.positions, feature.when
            )
        )
    return tuple(edits)


@dataclass
class _SaeGroup:
    """All edits for one SAE, laid out for a vectorised hook."""

    name: str
    sae: Sae
    indices: torch.Tensor  # (n,)
    values: torch.Tensor  # (n,)
    is_clamp: torch.Tensor  # (n,) bool
    is_cap: torch.Tensor  # (n,) bool
    position_codes: torch.Tensor  # (n,)
    row_mask: torch.Tensor  # (batch, n) bool: which rows each edit applies to
    directions: torch.Tensor  # (n, d_in) in SAE space
    conditions: list[FeatureCondition | None]  # per edit: where it applies, None for everywhere
    columns: torch.Tensor | None = None  # (n,) where each index sits in its site's reading


class BatchSteerer:
    """Site edits for a batch in which each row has its own interventions (or none)."""

    def __init__(
        self,
        saes: Mapping[str, Sae],
        row_edits: Sequence[Sequence[FeatureEdit] | None],
        prompt_lengths: Sequence[int],
        bos_token_id: int | None = None,
        row_stops: Sequence[Sequence[FeatureCondition]] = (),
    ):
        """`row_stops[r]` are the conditions that end row r's generation (read by `stopped`)."""
        self.batch = len(row_edits)
        self.bos_token_id = bos_token_id
        self.row_stops = [list(s) for s in row_stops] + [[]] * (self.batch - len(row_stops))
        by_sae: dict[str, list[tuple[int, FeatureEdit]]] = defaultdict(list)
        watched: set[tuple[str, int]] = set()  # (SAE, index) read by conditions
        for row, edits in enumerate(row_edits):
            for edit in edits or ():
                by_sae[edit.sae].append((row, edit))
                if edit.when is not None:
                    watched.add((edit.when.sae, edit.when.index))
        watched |= {(c.sae, c.index) for stops in self.row_stops for c in stops}
        self._saes = saes
        self.groups_by_site: dict[str, list[_SaeGroup]] = defaultdict(list)
        for name, entries in by_sae.items():
            sae = saes[name]
            device = sae.device
            indices = torch.tensor([e.index for _, e in entries], device=device)
            row_mask = torch.zeros(self.batch, len(entries), dtype=torch.bool, device=device)
            row_mask[[r for r, _ in entries], torch.arange(len(entries))] = True
            self.groups_by_site[parse_site(sae.hook_name_out).name].append(
                _SaeGroup(
                    name=name,
                    sae=sae,
                    indices=indices,
                    values=torch.tensor(
                        [e.value for _, e in entries], device=device, dtype=sae.dtype
                    ),
                    is_clamp=torch.tensor([e.mode == "clamp" for _, e in entries], device=device),
                    is_cap=torch.tensor([e.mode == "cap" for _, e in entries], device=device),
                    position_codes=torch.tensor(
                        [_POSITION_CODES[e.positions] for _, e in entries], device=device
                    ),
                    row_mask=row_mask,
                    directions=sae.decoder_directions(indices),
                    conditions=[e.when for _, e in entries],
                )
            )
        # What each site reads before any edit there, one encoder call per SAE (a TopK SAE
        # encodes every feature to read one): conditions, stops, and the clamps' and caps'
        # current activations.
        reads: dict[str, set[int]] = defaultdict(set)
        for name, index in watched:
            reads[name].add(index)
        groups = [g for site_groups in self.groups_by_site.values() for g in site_groups]
        for group in groups:
            if group.is_clamp.any() or group.is_cap.any():
                reads[group.name] |= set(group.indices.tolist())
        self._read_indices = {name: sorted(found) for name, found in reads.items()}
        self._read_columns = {
            name: {index: n for n, index in enumerate(found)}
            for name, found in self._read_indices.items()
        }
        self._read_tensors = {
            name: torch.tensor(found, device=saes[name].device)
            for name, found in self._read_indices.items()
        }
        self._reads_by_site: dict[str, list[str]] = defaultdict(list)
        for name in self._read_indices:
            self._reads_by_site[parse_site(saes[name].hook_name).name].append(name)
        for group in groups:
            if group.is_clamp.any() or group.is_cap.any():
                where = self._read_columns[group.name]
                group.columns = torch.tensor(
                    [where[i] for i in group.indices.tolist()], device=group.sae.device
                )
        self._found: dict[str, torch.Tensor] = {}  # SAE name -> (batch, pos, reads) this pass
        self.prompt_lengths = torch.tensor(list(prompt_lengths))
        self._step_masks: torch.Tensor | None = None

    def select_rows(self, keep: torch.Tensor) -> None:
        """Keep only these rows (batch indices), as generation drops finished rows."""
        self.batch = len(keep)
        self.prompt_lengths = self.prompt_lengths[keep.cpu()]
        self.row_stops = [self.row_stops[i] for i in keep.tolist()]
        for groups in self.groups_by_site.values():
            for group in groups:
                group.row_mask = group.row_mask[keep.to(group.row_mask.device)]

    def set_step(
        self,
        position_ids: torch.Tensor,  # (batch, pos) index of each token within its own row
        valid: torch.Tensor,  # (batch, pos) bool, False for padding
        input_ids: torch.Tensor | None = None,  # (batch, pos)
    ) -> None:
        """Tell the hooks which positions the next forward pass covers."""
        valid = valid.bool()
        if self.bos_token_id is not None and input_ids is not None:
            valid = valid & ~((position_ids == 0) & (input_ids == self.bos_token_id))
        in_prompt = position_ids < self.prompt_lengths.to(position_ids.device)[:, None]
        # (3, batch, pos): masks for positions "all", "prompt", "generated"
        self._step_masks = torch.stack([valid, valid & in_prompt, valid & ~in_prompt])
        self._found = {}

    def stopped(self) -> list[bool]:
        """Per row, whether a stop condition held at the last position of the forward pass just
        run, when that position is a generated token (a prompt never stops its own reply)."""
        if self._step_masks is None:
            raise RuntimeError("BatchSteerer.set_step must be called before each forward pass")
        if not any(self.row_stops):  # no device sync on the common path
            return [False] * self.batch
        generated = self._step_masks[2][:, -1].tolist()
        return [
            bool(generated[row]) and any(float(self._reading(c)[row, -1]) > c.above for c in stops)
            for row, stops in enumerate(self.row_stops)
        ]

    def site_edits(self) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
        sites = set(self.groups_by_site) | set(self._reads_by_site)
        return {site: self._edit_for(site) for site in sites}

    def _read(self, site: str, x: torch.Tensor) -> None:
        """Read this site's features from the activations arriving here, before any edit."""
        for name in self._reads_by_site.get(site, ()):
            self._found[name] = self._saes[name].feature_activations(x, self._read_tensors[name])

    def _reading(self, condition: FeatureCondition) -> torch.Tensor:
        """(batch, pos) activations of a condition's feature in the current pass."""
        found = self._found.get(condition.sae)
        if found is None:
            raise RuntimeError(f"condition {condition} was not read before the edit it gates")
        return found[..., self._read_columns[condition.sae][condition.index]]

    def _gate(self, group: _SaeGroup, like: torch.Tensor) -> torch.Tensor:
        """(batch, pos, n) bool: where each edit's condition holds (everywhere for none)."""
        columns = []
        for condition in group.conditions:
            if condition is None:
                columns.append(torch.ones(like.shape[:2], dtype=torch.bool, device=like.device))
                continue
            columns.append(self._reading(condition).to(like.device) > condition.above)
        return torch.stack(columns, dim=-1)

    def _edit_for(self, site: str) -> Callable[[torch.Tensor], torch.Tensor]:
        groups = self.groups_by_site.get(site, [])

        def edit(x: torch.Tensor) -> torch.Tensor:  # x: (batch, pos, d_model)
            if self._step_masks is None:
                raise RuntimeError("BatchSteerer.set_step must be called before each forward pass")
            self._read(site, x)
            if not groups:
                return x
            delta = torch.zeros_like(x)
            for group in groups:
                masks = self._step_masks.to(x.device)[group.position_codes]  # (n, batch, pos)
                mask = masks.permute(1, 2, 0) & group.row_mask[:, None, :]  # (batch, pos, n)
                if any(c is not None for c in group.conditions):
                    mask = mask & self._gate(group, x)
                coef = group.values.expand(mask.shape).clone()
                if group.columns is not None:  # clamps and caps need the current activation
                    current = self._found[group.name][..., group.columns]  # (batch, pos, n)
                    coef = torch.where(group.is_clamp, coef - current, coef)
                    coef = torch.where(group.is_cap, (current - coef).clamp(min=0).neg(), coef)
                step = rows_addmm(None, coef * mask.to(coef.dtype), group.directions)
                norm = group.sae.normalize(x.to(group.sae.dtype))[1]
                delta += Sae.denormalize(step, norm, shift=False).to(x.dtype)
            return x + delta

        return edit

"""Mode catalogue and alignment depth score of an audit, from its captures (pure)."""

from __future__ import annotations

import torch

from depthcard.analysis import decomposition, modes
from depthcard.analysis.capture import Activations
from depthcard.analysis.layer_metrics import Captures
from depthcard.schemas.sections import DepthScore, LayerModes, ModeCatalogue


def _stack(*acts: Activations | None) -> torch.Tensor:
    """(prompt, point, d) rows of every non-empty set, concatenated."""
    return torch.cat([a.rows for a in acts if a is not None], dim=0)


def mode_catalogue(c: Captures, k: int, tau_species: float, tau_match: float) -> ModeCatalogue:
    """Top-k principal modes of centered chat activations over Ds ∪ Dh ∪ Dc, per layer."""
    child_rows = _stack(c.child_s, c.child_h, c.child_c)
    base_rows = _stack(c.base_s, c.base_h, c.base_c) if c.paired else None
    layers, child_modes, child_shares, base_modes, base_shares, specific = [], [], [], [], [], []
    for point in range(child_rows.shape[1]):
        cv, cs = modes.principal_modes(child_rows[:, point], k)
        child_modes.append(cv)
        child_shares.append(cs)
        entry = dict(layer=point, child_variance_share=cs.tolist())
        if base_rows is not None:
            bv, bs = modes.principal_modes(base_rows[:, point], k)
            base_modes.append(bv)
            base_shares.append(bs)
            best = modes.best_match(cv, bv)
            _, _, assigned = modes.assignment(cv, bv)
            specific.append([i for i, value in enumerate(best) if value < tau_match])
            entry.update(
                base_variance_share=bs.tolist(),
                match_cosine=[min(1.0, x) for x in assigned],
                alignment_specific=specific[-1],
            )
        layers.append(LayerModes(**entry))
    return ModeCatalogue(
        k=k,
        tau_species=tau_species,
        tau_match=tau_match,
        layers=layers,
        base_species=modes.link_species(base_modes, base_shares, tau_species)
        if base_rows is not None
        else [],
        child_species=modes.link_species(child_modes, child_shares, tau_species, specific or None),
    )


def safety_rows(c: Captures, point: int) -> torch.Tensor:
    """M_DiD at `point` (pair audits) or the child contrast (child-only): (prompt, d)."""
    if c.paired:
        aligned_s = decomposition.aligned_shift(c.child_s.rows[:, point], c.base_s.rows[:, point])
        aligned_h = decomposition.aligned_shift(c.child_h.rows[:, point], c.base_h.rows[:, point])
        return decomposition.difference_in_differences(aligned_s, aligned_h)
    return decomposition.child_contrast(c.child_s.rows[:, point], c.child_h.rows[:, point])


def capability_k(requested: int, rows: int, d: int) -> int:
    """K_c: as requested, but below the number of capability prompts and at most d/4."""
    return max(1, min(requested, rows - 1, d // 4))


def capability_bases(
    c: Captures, window: tuple[int, int], requested_k: int
) -> tuple[int, int, list[torch.Tensor]]:
    """K_c, d and the capability subspace (K_c, d) of each layer in `window` (inclusive)."""
    capability = c.base_c if c.paired else c.child_c
    if capability is None:
        raise ValueError("the depth score needs a capability prompt set")
    d = capability.rows.shape[-1]
    k_c = capability_k(requested_k, capability.count, d)
    caps = []
    for point in range(window[0], window[1] + 1):
        cap_vecs, _ = modes.principal_modes(capability.rows[:, point], k_c)
        if cap_vecs.shape[0] < k_c:  # degenerate activations: pad the basis honestly
            cap_vecs = _complete_basis(cap_vecs, k_c, d)
        caps.append(cap_vecs)
    return k_c, d, caps


def alignment_depth(c: Captures, window: tuple[int, int], requested_k: int) -> DepthScore:
    """Depth score over the analysed layers `window` (inclusive)."""
    k_c, d, caps = capability_bases(c, window, requested_k)
    per_layer = []
    for point, cap_vecs in zip(range(window[0], window[1] + 1), caps, strict=True):
        safety = modes.safety_modes(safety_rows(c, point))
        per_layer.append(modes.depth_at_layer(point, safety, cap_vecs))
    return modes.depth_score(per_layer, k_c, d, child_only=not c.paired)


def _complete_basis(vecs: torch.Tensor, k: int, d: int) -> torch.Tensor:
    """Extend orthonormal rows to k rows with standard basis vectors (Gram–Schmidt)."""
    rows = list(vecs)
    for i in range(d):
        if len(rows) >= k:
            break
        e = torch.zeros(d, dtype=torch.float64)
        e[i] = 1.0
        for r in rows:
            e -= (e @ r) * r
        if float(e.norm()) > 1e-6:
            rows.append(e / e.norm())
    return torch.stack(rows)

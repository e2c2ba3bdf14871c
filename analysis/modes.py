"""Mode catalogue ("species") and the alignment depth score.

Modes are the top principal directions of a model's centered chat activations at a layer.
Adjacent layers' modes link into tracks (species) by an optimal assignment on |cos|;
a child mode no base mode of its layer resembles is alignment-specific. The depth score
asks how much of the safety modes (top singular vectors of M_DiD) lies inside the
capability subspace: high = entangled = costly to remove.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from depthcard.schemas.sections import DepthAtLayer, DepthScore, Species


def principal_modes(rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k principal directions (k', d) of centered rows (n, d) and their variance shares."""
    x = rows.to(torch.float64)
    x = x - x.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    energy = s**2
    total = float(energy.sum())
    if total <= 0.0:
        return torch.zeros((0, x.shape[1]), dtype=torch.float64), torch.zeros(0)
    keep = min(k, int((energy > total * 1e-12).sum()))
    return vh[:keep], (energy[:keep] / total).clamp(0.0, 1.0)


def assignment(a: torch.Tensor, b: torch.Tensor) -> tuple[list[int], list[int], list[float]]:
    """Optimal one-to-one matching of rows of a and b by |cos| (Hungarian algorithm)."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return [], [], []
    cos = (a @ b.T).abs().clamp(max=1.0)  # rows are unit vectors
    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    return rows.tolist(), cols.tolist(), [float(cos[r, c]) for r, c in zip(rows, cols, strict=True)]


def link_species(
    modes: list[torch.Tensor],
    shares: list[torch.Tensor],
    tau: float,
    specific: list[list[int]] | None = None,
) -> list[Species]:
    """Tracks of modes across adjacent layers linked when the assigned |cos| ≥ τ.

    `specific[l]` lists the alignment-specific mode indices of layer l; a track all of
    whose modes are alignment-specific is flagged as an alignment-specific species.
    """
    tracks: list[dict] = []
    open_tracks: dict[int, int] = {}  # mode index at the previous layer -> track id
    for layer, (vecs, share) in enumerate(zip(modes, shares, strict=True)):
        links: dict[int, int] = {}
        if layer > 0:
            rows, cols, cos = assignment(modes[layer - 1], vecs)
            for r, c, value in zip(rows, cols, cos, strict=True):
                if value >= tau and r in open_tracks:
                    links[c] = open_tracks[r]
        current = {}
        for i in range(vecs.shape[0]):
            tid = links.get(i)
            if tid is None:
                tid = len(tracks)
                tracks.append({"first": layer, "last": layer, "shares": [], "specific": True})
            tracks[tid]["last"] = layer
            tracks[tid]["shares"].append(float(share[i]))
            is_specific = specific is not None and i in specific[layer]
            tracks[tid]["specific"] = tracks[tid]["specific"] and is_specific
            current[i] = tid
        open_tracks = current
    return [
        Species(
            id=i,
            first_layer=t["first"],
            last_layer=t["last"],
            mean_variance_share=min(1.0, sum(t["shares"]) / len(t["shares"])),
            alignment_specific=t["specific"],
        )
        for i, t in enumerate(tracks)
    ]


def best_match(child: torch.Tensor, base: torch.Tensor) -> list[float]:
    """For each child mode, the best |cos| to any base mode of the same layer."""
    if base.shape[0] == 0:
        return [0.0] * child.shape[0]
    return (child @ base.T).abs().max(dim=1).values.clamp(max=1.0).tolist()


@dataclass(frozen=True)
class SafetyModes:
    vectors: torch.Tensor  # (m, d) unit rows
    energy: torch.Tensor  # (m,) shares of M_DiD energy, summing to ≥ 0.9


def safety_modes(did: torch.Tensor, energy_share: float = 0.9) -> SafetyModes:
    """Top right singular vectors of M_DiD (n, d) holding `energy_share` of its energy."""
    _, s, vh = torch.linalg.svd(did.to(torch.float64), full_matrices=False)
    energy = s**2
    total = float(energy.sum())
    if total <= 0.0:
        return SafetyModes(torch.zeros((0, did.shape[1]), dtype=torch.float64), torch.zeros(0))
    share = energy / total
    m = int(torch.searchsorted(torch.cumsum(share, 0), torch.tensor(energy_share - 1e-12))) + 1
    m = min(m, s.numel())
    return SafetyModes(vh[:m], share[:m])


def entanglement(vectors: torch.Tensor, capability: torch.Tensor) -> torch.Tensor:
    """e(s) = ‖P_C s‖² for unit rows s (m, d) and orthonormal capability rows C (k, d)."""
    return ((vectors @ capability.T) ** 2).sum(-1).clamp(0.0, 1.0)


def depth_at_layer(layer: int, safety: SafetyModes, capability: torch.Tensor) -> DepthAtLayer:
    """Energy-weighted entanglement at one layer, rescaled so chance = 0."""
    d = capability.shape[1]
    chance = capability.shape[0] / d
    if safety.vectors.shape[0] == 0:
        return DepthAtLayer(
            layer=layer, safety_modes=0, entanglement=0.0, score=0.0, fraction_above_2x_chance=0.0
        )
    e = entanglement(safety.vectors, capability)
    weights = safety.energy / safety.energy.sum()
    mean_e = float((weights * e).sum())
    return DepthAtLayer(
        layer=layer,
        safety_modes=int(e.numel()),
        entanglement=min(1.0, mean_e),
        score=rescale(mean_e, chance),
        fraction_above_2x_chance=float((e > 2 * chance).double().mean()),
    )


def rescale(e: float, chance: float) -> float:
    """(e − chance)/(1 − chance), clipped to [0, 1]."""
    if chance >= 1.0:
        return 0.0
    return float(min(1.0, max(0.0, (e - chance) / (1.0 - chance))))


def depth_score(per_layer: list[DepthAtLayer], k_c: int, d: int, child_only: bool) -> DepthScore:
    """Overall score: the mean over analysed layers that have safety modes."""
    chance = k_c / d
    scored = [x for x in per_layer if x.safety_modes > 0]
    mean_e = sum(x.entanglement for x in scored) / len(scored) if scored else 0.0
    modes = sum(x.safety_modes for x in scored)
    above = sum(x.fraction_above_2x_chance * x.safety_modes for x in scored)
    return DepthScore(
        capability_k=k_c,
        chance_level=min(1.0, chance),
        score=rescale(mean_e, chance),
        fraction_above_2x_chance=above / modes if modes else 0.0,
        layers=per_layer,
        child_only=child_only,
    )

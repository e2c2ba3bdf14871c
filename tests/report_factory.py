"""Realistic, valid synthetic `AuditReport`s for tests across the project.

`make_report()` gives a pair audit of a 6-block model (layers 0..6) whose numbers follow the
shapes real audits show: the embeddings are identical in base and child (layer 0), the
alignment shift is low-rank and the template shift is not, the refusal direction peaks
around 0.6·L and l* is chosen there by the norm-ratio rule. Every number is a deterministic
function of the arguments, so tests may compare exact values.

    make_report()                                   # pair, layers 0..6
    make_report(kind="child-only")                  # only child_contrast ranks, no base model
    make_report(kind="three-model", with_erosion=True)
    make_report(with_ablation=True, with_depth=True)
    make_report(identical=True)                     # every matrix zero at every layer
    make_report(headline={"safety_specificity": 1.3})  # deep-merged override
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from depthcard.schemas.report import AuditReport
from depthcard.schemas.sections import (
    DepthAtLayer,
    DepthScore,
    Erosion,
    Fragility,
    LayerModes,
    ModeCatalogue,
    Species,
)

EPS = (0.01, 0.05, 0.1)
BASE_SHA = "1" * 40
CHILD_SHA = "2" * 40
THIRD_SHA = "3" * 40
DOMAINS = ("cyber", "weapons", "toxic-chat")
_PENDING = "not computed by this version of depthcard"
_MATRICES = ("naive", "template", "aligned", "did", "aligned_harmless")


def make_report(num_layers: int = 6, kind: str = "pair", **overrides: Any) -> AuditReport:
    """A valid synthetic report with `num_layers` decoder blocks (layers 0..num_layers).

    Args:
        num_layers: L, decoder blocks of the models; the report lists L + 1 layers.
        kind: "pair", "child-only" (only `child_contrast` ranks, no base) or "three-model".
        **overrides: factory knobs — `hidden_size` (896), `num_prompts` (128), `local`
            (False: models pinned by content hash), `identical` (False: every matrix zero,
            verdict identical-models), `with_ablation`, `with_depth`, `with_modes`,
            `with_fragility`, `with_erosion` (False), `refusal_rate` (0.94, baseline of the
            ablation section) — and any `AuditReport` field; a dict value is deep-merged
            into the generated field, anything else replaces it.

    Returns:
        The validated report.

    Raises:
        TypeError: on an override that is neither a knob nor a report field.
        pydantic.ValidationError: when overrides make the report invalid.
    """
    knobs = {k: overrides.pop(k) for k in list(overrides) if k in _KNOBS}
    unknown = set(overrides) - set(AuditReport.model_fields)
    if unknown:
        raise TypeError(f"make_report: unknown overrides {sorted(unknown)}")
    data = _build(num_layers, kind, **knobs)
    return AuditReport.model_validate(_merge(data, overrides))


_KNOBS = {
    "hidden_size",
    "num_prompts",
    "local",
    "identical",
    "with_ablation",
    "with_depth",
    "with_modes",
    "with_fragility",
    "with_erosion",
    "refusal_rate",
}


def _merge(base: dict, updates: dict) -> dict:
    out = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(
    num_layers: int,
    kind: str,
    *,
    hidden_size: int = 896,
    num_prompts: int = 128,
    local: bool = False,
    identical: bool = False,
    with_ablation: bool = False,
    with_depth: bool = False,
    with_modes: bool = False,
    with_fragility: bool = False,
    with_erosion: bool = False,
    refusal_rate: float = 0.94,
) -> dict:
    paired = kind != "child-only"
    d, n = hidden_size, num_prompts
    layers = [_layer(i, num_layers, d, n, kind, identical) for i in range(num_layers + 1)]
    window = _window(num_layers)
    star = max(range(window[0], window[1] + 1), key=lambda i: layers[i]["norm_ratio"])
    sections = {
        "ablation": _ablation(star, refusal_rate) if with_ablation else None,
        "depth": _depth(window, d, not paired) if with_depth else None,
        "modes": _modes(num_layers, paired) if with_modes else None,
        "fragility": _fragility() if with_fragility else None,
    }
    if with_erosion:
        sections["erosion"] = _erosion()
    models = _models(kind, num_layers, d, local)
    return {
        "schema_version": "2.0",
        "directions_file": "directions.safetensors",
        "tool": {"version": "0.1.0", "git_revision": "a" * 40, "analysis_version": "a1"},
        "created_at": datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC),
        "audit_key": _key(models.get("base"), models["child"]),
        "kind": kind,
        "models": models,
        "tokenizer": {
            "vocab_equal": True if paired else None,
            "base_has_chat_template": False if paired else None,
            "base_knows_template_tokens": True if paired else None,
            "suffix_tokens": 5,
        },
        "prompt_sets": _prompt_sets(n),
        "config": _config(n),
        "environment": {
            "device": "cuda:0",
            "python": "3.11.9",
            "torch": "2.5.1",
            "transformers": "5.0.0",
            "platform": "Linux x86_64",
        },
        "stages": _stages(paired),
        "layers": layers,
        "selected_layer": _selected(star, window, layers[star]["norm_ratio"], with_ablation),
        "headline": _headline(layers[star], star, sections),
        "cross_domain": _cross_domain(star),
        **sections,
        "verdict": _verdict(kind, identical, sections["ablation"]),
        "absent": _absent(paired, sections),
        "warnings": _warnings(layers),
    }


def _window(num_layers: int) -> tuple[int, int]:
    """[⌈0.2·L⌉, ⌊0.8·L⌋], widened to 1..L when empty (as analysis.directions.layer_window)."""
    lo, hi = math.ceil(0.2 * num_layers), math.floor(0.8 * num_layers)
    return (min(1, num_layers), num_layers) if lo > hi else (lo, hi)


def _rank_stats(rank: int, rows: int, d: int, norm: float) -> dict:
    """Ranks at ε = 0.01/0.05/0.10 around `rank` (the ε = 0.05 value); 0 means a zero matrix."""
    cap = min(rows, d)
    rank = min(rank, cap)
    ranks = {0.01: min(cap, 2 * rank + 1) if rank else 0, 0.05: rank, 0.1: max(rank // 2, 0)}
    if rank:
        ranks[0.1] = max(ranks[0.1], 1)
    at = [{"eps": e, "rank": r, "rho": r / d} for e, r in ranks.items()]
    centered = [
        {"eps": e, "rank": max(r - 1, min(r, 1)), "rho": max(r - 1, min(r, 1)) / d}
        for e, r in ranks.items()
    ]
    residual = None if not rank else round(1.0 - 1.0 / (1.0 + 0.25 * rank), 6)
    return {
        "rows": rows,
        "max_rank": cap,
        "zero": rank == 0,
        "frobenius_norm": norm if rank else 0.0,
        "uncentered": at,
        "centered": centered,
        "energy_residual": residual,
        "energy_residual_centered": None if residual is None else round(residual * 0.9, 6),
    }


def _layer(i: int, num_layers: int, d: int, n: int, kind: str, identical: bool) -> dict:
    """One layer; the alignment shift is zero at layer 0 (tuning left the embeddings alone)."""
    depth = i / num_layers
    act = round(1.0 + 2.0 * i, 6)
    ratio = round(0.05 + 0.2 * math.exp(-(((depth - 0.6) / 0.2) ** 2)), 6)
    same = identical or i == 0
    m: dict[str, Any] = {
        "layer": i,
        "refusal_direction_norm": round(ratio * act, 6),
        "activation_norm": act,
        "norm_ratio": ratio,
    }
    if kind == "child-only":
        m["ranks"] = {"child_contrast": _rank_stats(2 + i, n, d, 0.8 * act)}
        m["recovery_cosine"] = round(0.7 + 0.25 * depth, 6)
        m["models_identical"] = False
        return m
    aligned = 0 if same else 3 + i
    ranks = {
        "naive": 0 if identical else 40 + 6 * i,
        "template": 0 if identical else 36 + 5 * i,
        "aligned": aligned,
        "did": 0 if same else 2 + i // 2,
        "aligned_harmless": 0 if same else max(1, (3 * aligned) // 4),
    }
    m["ranks"] = {
        name: _rank_stats(r, n, d, 0.3 * act * (1 + j)) for j, (name, r) in enumerate(ranks.items())
    }
    s_base = round(0.1 * i, 6)
    shift = 0.0 if same else round(0.5 * act * ratio, 6)
    m |= {
        "recovery_cosine": None if same else round(0.55 + 0.4 * math.sin(math.pi * depth), 6),
        "safety_specificity": None if same else ranks["aligned_harmless"] / aligned,
        "alignment_direction_norm": shift,
        "projection_base": s_base,
        "projection_child": round(s_base + shift, 6),
        "models_identical": same,
    }
    if kind == "three-model":
        kept = 0.9 - 0.5 * depth
        m["projection_third"] = round(s_base + kept * shift, 6)
        m["erosion"] = None if same else round(kept, 6)
    return m


def _ref(role: str, sha: str, num_layers: int, d: int, local: bool) -> dict:
    name = {"base": "Qwen2.5-0.5B", "child": "Qwen2.5-0.5B-Instruct", "third": "Qwen-0.5B-ft"}
    where = (
        {"source": "local", "path": f"/models/{name[role]}", "content_sha256": sha[0] * 64}
        if local
        else {"source": "hub", "repo_id": f"example-org/{name[role]}", "revision": sha}
    )
    return {
        "role": role,
        **where,
        "architecture": "Qwen2ForCausalLM",
        "num_parameters": 494_032_768,
        "dtype": "bfloat16",
        "num_layers": num_layers,
        "hidden_size": d,
        "vocab_size": 151_936,
    }


def _models(kind: str, num_layers: int, d: int, local: bool) -> dict:
    out = {"child": _ref("child", CHILD_SHA, num_layers, d, local)}
    if kind != "child-only":
        out["base"] = _ref("base", BASE_SHA, num_layers, d, local)
    if kind == "three-model":
        out["third"] = _ref("third", THIRD_SHA, num_layers, d, local)
    return out


def _key(base: dict | None, child: dict) -> str:
    def ident(ref: dict | None) -> str:
        if ref is None:
            return "none"
        return ref["revision"] if ref["source"] == "hub" else f"sha256:{ref['content_sha256'][:16]}"

    return f"{ident(base)}/{ident(child)}/a1"


def _prompt_sets(n: int) -> list[dict]:
    sets = [("harmful", "harmful-core", "a"), ("harmless", "harmless-core", "b")]
    return [
        {"role": r, "name": name, "version": 1, "sha256": c * 64, "count": 2 * n, "used": n}
        for r, name, c in sets
    ]


def _config(n: int) -> dict:
    return {
        "eps": list(EPS),
        "headline_eps": 0.05,
        "num_directions": 8,
        "position": "last",
        "batch_size": 16,
        "max_prompts": n,
        "seed": 0,
        "device": "auto",
        "dtype": "bfloat16",
        "layer_window": (0.2, 0.8),
        "cross_domain_k": 3,
        "zero_tolerance": 1e-6,
    }


def _stages(paired: bool) -> list[dict]:
    names = ["load", "capture-child"] + ["capture-base"] * paired + ["spectra"]
    return [
        {"name": s, "seconds": 1.5 * (i + 1), "peak_memory_bytes": 2**30, "memory_kind": "cuda"}
        for i, s in enumerate(names)
    ]


def _selected(star: int, window: tuple[int, int], ratio: float, ablation: bool) -> dict:
    reason = (
        f"ablating r_l here lowered the refusal score most with KL ≤ 0.1 (layers {window[0]}.."
        f"{window[1]})"
        if ablation
        else f"largest ‖r_l‖ / mean activation norm ({ratio:.3g}) among layers "
        f"{window[0]}..{window[1]}"
    )
    rule = "ablation" if ablation else "norm-ratio"
    return {"layer": star, "rule": rule, "window": window, "reason": reason}


def _rho(layer: dict, name: str) -> float | None:
    stats = layer["ranks"].get(name)
    return (
        None if stats is None else next(r["rho"] for r in stats["uncentered"] if r["eps"] == 0.05)
    )


def _headline(layer: dict, star: int, sections: dict) -> dict:
    aligned = layer["ranks"].get("aligned")
    h = {
        "layer": star,
        "eps": 0.05,
        "rho_eps_aligned": _rho(layer, "aligned"),
        "rho_eps_naive": _rho(layer, "naive"),
        "rank_aligned": None if aligned is None else aligned["uncentered"][1]["rank"],
        "rho_eps_contrast": _rho(layer, "child_contrast"),
        "refusal_direction_recovery": layer.get("recovery_cosine"),
        "safety_specificity": layer.get("safety_specificity"),
        "rho_eps_did": _rho(layer, "did"),
        "rho_did_placebo": None if _rho(layer, "did") is None else 0.03125,
    }
    if (cos := h["refusal_direction_recovery"]) is not None:
        h |= {
            "recovery_placebo": 0.31,
            "recovery_low": cos * 0.9,
            "recovery_high": min(1.0, cos * 1.05),
        }
    if (depth := sections["depth"]) is not None:
        score = depth["score"]
        h |= {
            "alignment_depth_score": score,
            "depth_chance_level": depth["chance_level"],
            "depth_null_mean": score / 2,
            "depth_null_p95": score * 0.6,
            "depth_p_value": 1 / 101,
            "depth_vs_null": (score - score / 2) / (1 - score / 2),
            "depth_above_null": True,
            "depth_low": score * 0.9,
            "depth_high": min(1.0, score * 1.1),
        }
    if (abl := sections["ablation"]) is not None:
        rate = abl["baseline_refusal_rate"]
        h |= {
            "baseline_refusal_low": max(0.0, rate - 0.05),
            "baseline_refusal_high": min(1.0, rate + 0.03),
            "baseline_refusal_rate": abl["baseline_refusal_rate"],
            "abliteration_min_k": abl["min_k"],
            "abliteration_kl": abl["kl_at_min_k"],
            "judge": abl["judge"],
        }
    if (erosion := sections.get("erosion")) is not None:
        h["alignment_kept"] = erosion["kept_fraction"]
    return h


def _cross_domain(star: int) -> dict:
    names = list(DOMAINS)
    shared = [[1.0, 0.82, 0.41], [0.82, 1.0, 0.37], [0.41, 0.37, 1.0]]
    pairs = []
    for i in range(3):
        for j in range(i + 1, 3):
            top = shared[i][j]
            overlap = [[round(top * (0.9 ** (a + b)), 6) for b in range(3)] for a in range(3)]
            pairs.append(
                {"a": names[i], "b": names[j], "overlap": overlap, "smallest_angle_cosine": top}
            )
    rows = {name: 24 + 4 * i for i, name in enumerate(names)}
    return {
        "layer": star,
        "k": 3,
        "domains": names,
        "rows": rows,
        "pairs": pairs,
        "shared_cosine": shared,
    }


def _point(basis: str, k: int, score: float, rate: float, kl: float, dce: float) -> dict:
    values = (basis, k, score, rate, kl, dce)
    names = ("basis", "k", "refusal_score", "refusal_rate", "kl", "delta_ce")
    return {
        n: round(v, 6) if isinstance(v, float) else v for n, v in zip(names, values, strict=True)
    }


def _ablation(star: int, baseline: float, k_max: int = 8) -> dict:
    """Attack and SVD sweeps k = 0..k_max plus single directions; refusal falls with k, and
    the sweeps' answers not refused comply, but for a broken share of 1 % per direction."""
    curve = [
        _point(basis, k, 4.0 - 1.1 * k / v, baseline * math.exp(-k / v), 0.004 * k**1.5, 0.01 * k)
        for basis, v in (("attack", 1.2), ("svd", 3.0))
        for k in range(k_max + 1)
    ]
    for p in curve:  # the judge's other two classes: a few broken answers, the rest comply
        p["broken_share"] = round(0.01 * p["k"], 6)
        p["compliance_share"] = round(1.0 - p["refusal_rate"] - p["broken_share"], 6)
    curve += [
        _point(
            "single", k, 1.0 + 0.3 * k, min(1.0, baseline * (0.3 + 0.08 * k)), 0.003 * k, 0.004 * k
        )
        for k in range(1, k_max + 1)
    ]
    attack = [p for p in curve if p["basis"] == "attack"]
    hit = next((p for p in attack if p["refusal_rate"] < 0.1), None)
    return {
        "layer": star,
        "judge": "substring",
        "max_new_tokens": 64,
        "threshold": 0.1,
        "baseline_refusal_rate": baseline,
        "baseline_refusal_score": 4.0,
        "curve": curve,
        "min_k": None if hit is None else hit["k"],
        "kl_at_min_k": None if hit is None else hit["kl"],
        "delta_ce_at_min_k": None if hit is None else hit["delta_ce"],
        "causal_spearman": 0.42,
        "non_monotone": False,
        "max_broken_share": 0.10,
    }


def _depth(window: tuple[int, int], d: int, child_only: bool) -> dict:
    k_c = 16
    chance = k_c / d
    layers = []
    for i in range(window[0], window[1] + 1):
        e = min(0.95, chance + 0.2 + 0.02 * i)
        score = max(0.0, (e - chance) / (1 - chance))
        layers.append(
            DepthAtLayer(
                layer=i,
                safety_modes=2 + i,
                entanglement=e,
                score=score,
                fraction_above_2x_chance=min(1.0, 0.2 * i),
            ).model_dump()
        )
    score = sum(x["score"] for x in layers) / len(layers)
    return DepthScore(
        capability_k=k_c,
        chance_level=chance,
        score=score,
        fraction_above_2x_chance=0.5,
        layers=layers,
        child_only=child_only,
    ).model_dump()


def _modes(num_layers: int, paired: bool) -> dict:
    layers = [
        LayerModes(
            layer=i,
            base_variance_share=[0.4, 0.2] if paired else [],
            child_variance_share=[0.45, 0.2],
            match_cosine=[0.9, 0.5] if paired else [],
            alignment_specific=[1] if paired else [],
        )
        for i in range(num_layers + 1)
    ]
    track = Species(id=0, first_layer=0, last_layer=num_layers, mean_variance_share=0.42,
                    alignment_specific=False)  # fmt: skip
    return ModeCatalogue(
        k=2,
        tau_species=0.8,
        tau_match=0.6,
        layers=layers,
        base_species=[track] if paired else [],
        child_species=[track],
    ).model_dump()


def _fragility() -> dict:
    return Fragility(
        parameter_subset="mlp.down_proj",
        power_iterations=20,
        alignment_loss=0.8,
        sharpness=12.5,
        gradient_cosine=-0.12,
        curvature_coupling=0.7,
        steps=5,
        learning_rate=1e-4,
        delta_loss=[0.01, 0.03, 0.06, 0.1, 0.15],
        sharpness_converged=True,
        exponent=1.2,
        fit_points=5,
        fit_negative_points=0,
        fit_r2=0.98,
        forecast_steps=40.0,
        forecast_margin=0.5,
        forecast_checked=True,
    ).model_dump()


def _erosion() -> dict:
    return Erosion(
        third_role="fine-tune of the child",
        completions=["Sure, here is", "Of course. Here are the steps:"],
        sequences=256,
        completion_tokens=1280,
        logprob_base=-120.0,
        logprob_child=-180.0,
        logprob_third=-140.0,
        gradient_framings=("chat", "raw"),
        gradient_subset="/mlp\\.down_proj\\.weight$/ in blocks 2..3",
        gradient_parameter_count=1_000_000,
        gradient_cosine=0.3,
        window=(2, 4),
        erosion_layers=3,
        kept_fraction=0.55,
    ).model_dump()


def _verdict(kind: str, identical: bool, ablation: dict | None) -> dict:
    if kind != "child-only" and identical:
        text = "The base and child produce identical activations on every prompt at every layer."
        return {"code": "identical-models", "text": text}
    if ablation is not None and ablation["baseline_refusal_rate"] < ablation["threshold"]:
        return {"code": "no-refusal", "text": "The child does not refuse: nothing to measure."}
    if kind == "child-only":
        text = "Child-only audit: no public base model, so alignment-shift ranks are absent."
        return {"code": "partial", "text": text}
    return {"code": "measured", "text": "Alignment shift measured at every layer."}


def _absent(paired: bool, sections: dict) -> list[dict]:
    out = [] if paired else [{"section": "alignment-shift ranks", "reason": "no base model given"}]
    for name in ("modes", "depth", "ablation", "fragility"):
        if sections[name] is None:
            out.append({"section": name, "reason": _PENDING})
    return out


def _warnings(layers: list[dict]) -> list[str]:
    same = [m["layer"] for m in layers if m.get("models_identical")]
    if not same:
        return []
    return [
        f"base and child activations are identical at layer(s) {same}: alignment changed "
        "nothing there (ranks 0, no recovery cosine)"
    ]

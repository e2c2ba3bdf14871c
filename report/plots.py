"""The standard figures of an audit report, one function per figure.

Each `plot_xxx(report)` returns a `matplotlib.figure.Figure`, or None when the report lacks
the data. Figures are built as plain `Figure` objects and saved through their own canvas, so
nothing here touches pyplot's global state or the process-wide backend.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from depthcard.schemas.report import AuditReport

DPI = 100
FIGSIZE = (8.0, 5.6)
STAR_COLOR = "0.35"
# matrix name -> (legend label, colour)
MATRICES = {
    "naive": ("M_naive: child-chat − base-raw (uncontrolled)", "tab:gray"),
    "template": ("M_template: base-chat − base-raw", "tab:orange"),
    "aligned": ("M_aligned: child-chat − base-chat (template fixed)", "tab:blue"),
    "did": ("M_DiD: aligned shift on harmful beyond harmless", "tab:red"),
    "child_contrast": ("child contrast: harmful − mean harmless (child-only)", "tab:purple"),
}
LAYER_AXIS = "layer l (0 = embeddings, L = last block)"


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _model_names(report: AuditReport) -> str:
    m = report.models

    def name(ref) -> str:
        if ref.source == "hub":
            return ref.repo_id
        path = Path(ref.path)
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name

    if m.base is None:
        return f"{name(m.child)} (child-only)"
    third = f" / third: {name(m.third)}" if m.third is not None else ""
    return f"{name(m.child)} vs base {name(m.base)}{third}"


def _finish(fig: Figure, ax: Axes, what: str, report: AuditReport, *twins: Axes) -> Figure:
    """Title naming the models, light grid, one legend for all axes below the plot."""
    names = "\n".join(textwrap.wrap(_model_names(report), 90, break_on_hyphens=False))
    ax.set_title(f"{what}\n{names}", fontsize=10)
    ax.grid(True, alpha=0.3)
    handles, labels = [], []
    for axes in (ax, *twins):
        h, lab = axes.get_legend_handles_labels()
        handles += h
        labels += lab
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8)
    return fig


def _mark_layer(ax: Axes, layer: int) -> None:
    ax.axvline(layer, color=STAR_COLOR, linestyle="--", linewidth=1, label=f"l* = {layer}")


def _series(report: AuditReport, field: str) -> tuple[list[int], list[float]]:
    """(layers, values) of a per-layer field, skipping layers where it is None."""
    pairs = [(m.layer, getattr(m, field)) for m in report.layers]
    kept = [(layer, float(v)) for layer, v in pairs if v is not None]
    return [p[0] for p in kept], [p[1] for p in kept]


def plot_rank_per_layer(report: AuditReport) -> Figure | None:
    """ρ_ε at the headline ε per layer for each matrix; symlog axis so zero ranks show."""
    eps = report.headline.eps
    d = report.models.child.hidden_size
    fig, ax = _figure()
    drawn = 0
    for name, (label, color) in MATRICES.items():
        points = [(m.layer, m.ranks[name]) for m in report.layers if name in m.ranks]
        values = [(layer, s.rho(eps)) for layer, s in points if _has_eps(s, eps)]
        if values:
            xs, ys = zip(*values, strict=True)
            ax.plot(xs, ys, marker="o", markersize=4, color=color, label=label)
            drawn += 1
    if not drawn:
        return None
    # Ranks are multiples of 1/d: a linear band below 1/d keeps ρ = 0 on the plot.
    ax.set_yscale("symlog", linthresh=1.0 / d, linscale=0.4)
    ax.set_ylim(0.0, 1.0)
    _mark_layer(ax, report.headline.layer)
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel(f"ρ_ε = rank_ε / d   (ε = {eps:g}, d = {d}; symlog)")
    return _finish(fig, ax, "Effective rank of the activation differences per layer", report)


def _has_eps(stats, eps: float) -> bool:
    return any(abs(r.eps - eps) < 1e-12 for r in stats.uncentered)


def plot_recovery_per_layer(report: AuditReport) -> Figure | None:
    """Refusal-direction recovery |cos| per layer, with ‖r_l‖ / activation norm beside it."""
    fig, ax = _figure()
    xs, ys = _series(report, "recovery_cosine")
    ax.plot(xs, ys, marker="o", color="tab:blue", label="recovery |cos(v₁(M_DiD), r_l)|")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(-0.5, len(report.layers) - 0.5)
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel("recovery (absolute cosine, 0–1)")
    _mark_layer(ax, report.headline.layer)
    right = ax.twinx()
    nx, ny = _series(report, "norm_ratio")
    right.plot(
        nx,
        ny,
        color="tab:green",
        linestyle=":",
        marker="s",
        markersize=3,
        label="‖r_l‖ / mean activation norm (l* rule without ablation)",
    )
    right.set_ylim(0.0, max(ny, default=0.0) * 1.15 or 1.0)
    right.set_ylabel("‖r_l‖ / mean activation norm (ratio)", color="tab:green")
    return _finish(fig, ax, "Refusal-direction recovery per layer", report, right)


def plot_projections(report: AuditReport) -> Figure | None:
    """Mean projections s_l on the alignment direction, and erosion e_l when present."""
    styles = {
        "projection_base": ("base", "tab:gray"),
        "projection_child": ("child", "tab:blue"),
        "projection_third": ("third", "tab:red"),
    }
    series = {f: _series(report, f) for f in styles}
    if not any(xs for xs, _ in series.values()):
        return None
    fig, ax = _figure()
    for field, (label, color) in styles.items():
        xs, ys = series[field]
        if xs:
            ax.plot(xs, ys, marker="o", markersize=4, color=color, label=f"s_l ({label})")
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel("s_l = mean ⟨h_l, v̂_l⟩ (activation units)")
    _mark_layer(ax, report.headline.layer)
    twins = []
    ex, ey = _series(report, "erosion")
    if ex:
        right = ax.twinx()
        right.plot(ex, ey, color="tab:purple", linestyle="--", marker="^", label="erosion e_l")
        right.set_ylabel("e_l = (s_F − s_B)/(s_I − s_B)  (1 = kept)", color="tab:purple")
        twins.append(right)
    return _finish(fig, ax, "Projections on the per-layer alignment direction", report, *twins)


def plot_cross_domain(report: AuditReport) -> Figure | None:
    """Heatmap of the smallest-principal-angle cosine between domains, values annotated."""
    cd = report.cross_domain
    if cd is None:
        return None
    n = len(cd.domains)
    fig, ax = _figure()
    image = ax.imshow(cd.shared_cosine, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(n):
        for j in range(n):
            value = cd.shared_cosine[i][j]
            color = "black" if value > 0.6 else "white"
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(n), cd.domains, rotation=30, ha="right")
    ax.set_yticks(range(n), cd.domains)
    fig.colorbar(image, ax=ax, label="cos of smallest principal angle (0–1)")
    what = f"Shared alignment directions across domains (layer {cd.layer}, k = {cd.k})"
    _finish(fig, ax, what, report)
    ax.grid(False)
    return fig


def plot_ablation_curve(report: AuditReport) -> Figure | None:
    """Refusal and first-token KL against k ablated directions (two y-axes), min_k marked."""
    ab = report.ablation
    if ab is None:
        return None
    fig, ax = _figure()
    # Only the attack basis is judged on generations (at every k, or at the k the min_k
    # bisection visited); the SVD basis has log-odds alone, so in rate mode it is left out
    # rather than drawn in another unit on the same axis.
    use_rate = sum(p.refusal_rate is not None for p in ab.curve if p.basis == "attack") >= 2
    for basis, style in (("attack", "-"), ("svd", "--")):
        if use_rate and basis == "svd":
            continue
        points = sorted((p for p in ab.curve if p.basis == basis), key=lambda p: p.k)
        if use_rate:
            points = [p for p in points if p.refusal_rate is not None]
        if not points:
            continue
        ys = [p.refusal_rate if use_rate else p.refusal_score for p in points]
        ax.plot(
            [p.k for p in points],
            ys,
            style,
            marker="o",
            color="tab:blue",
            label=f"refusal, {basis} basis",
        )
    if use_rate:
        ax.axhline(ab.threshold, color="tab:blue", alpha=0.4, linewidth=1, label="threshold")
        ax.set_ylim(0.0, 1.02)
    unit = f"refusal rate (fraction, judge {ab.judge})" if use_rate else "refusal log-odds"
    ax.set_ylabel(unit, color="tab:blue")
    ax.set_xlabel("k, directions ablated")
    if ab.min_k is not None:
        ax.axvline(ab.min_k, color=STAR_COLOR, linestyle="--", label=f"min_k = {ab.min_k}")
    attack = sorted((p for p in ab.curve if p.basis == "attack"), key=lambda p: p.k)
    right = ax.twinx()
    right.plot(
        [p.k for p in attack],
        [p.kl for p in attack],
        color="tab:red",
        marker="s",
        label="first-token KL, attack basis",
    )
    right.set_ylim(0.0, max((p.kl for p in attack), default=0.0) * 1.15 or 1.0)
    right.set_ylabel("first-token KL on harmless prompts (nats)", color="tab:red")
    return _finish(fig, ax, f"Abliteration cost at layer {ab.layer}", report, right)


def plot_depth_per_layer(report: AuditReport) -> Figure | None:
    """Entanglement of safety modes with capability per layer, score and chance level."""
    dp = report.depth
    if dp is None:
        return None
    fig, ax = _figure()
    layers = [x.layer for x in dp.layers]
    ax.bar(
        layers,
        [x.score for x in dp.layers],
        color="tab:blue",
        alpha=0.5,
        label=f"depth score (0 = chance, 1 = entangled); overall {dp.score:.3f}",
    )
    ax.plot(
        layers,
        [x.entanglement for x in dp.layers],
        color="tab:red",
        marker="o",
        label="entanglement e = energy-weighted ‖P_C s‖²",
    )
    ax.axhline(
        dp.chance_level, color="0.3", linestyle=":", label=f"chance K_c/d = {dp.chance_level:.3g}"
    )
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(-0.5, len(report.layers) - 0.5)
    ax.set_xlabel(LAYER_AXIS)
    ax.set_ylabel("fraction (0–1)")
    _mark_layer(ax, report.headline.layer)
    suffix = " (child-only capability subspace)" if dp.child_only else ""
    return _finish(fig, ax, f"Alignment depth per layer{suffix}", report)


PLOTS: dict[str, Callable[[AuditReport], Figure | None]] = {
    "rank_per_layer.png": plot_rank_per_layer,
    "recovery_per_layer.png": plot_recovery_per_layer,
    "projections.png": plot_projections,
    "cross_domain.png": plot_cross_domain,
    "ablation_curve.png": plot_ablation_curve,
    "depth_per_layer.png": plot_depth_per_layer,
}


def write_plots(report: AuditReport, out_dir: Path) -> list[Path]:
    """Write every figure the report has data for into `out_dir`; returns the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, plot in PLOTS.items():
        fig = plot(report)
        if fig is None:
            continue
        path = out_dir / filename
        fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
        written.append(path)
    return written

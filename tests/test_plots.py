"""The standard figures: valid PNGs, only for data the report has, clean on degenerate input."""

from __future__ import annotations

import inspect
import io
import warnings

import numpy as np
import pytest

from depthcard.report import plots
from tests.report_factory import make_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALWAYS = {"rank_per_layer.png", "recovery_per_layer.png", "projections.png", "cross_domain.png"}
OPTIONAL = {"ablation_curve.png", "depth_per_layer.png"}


def assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path.name
    assert len(data) > 5_000, path.name


FULL = make_report(kind="three-model", with_ablation=True, with_depth=True)
IDENTICAL = make_report(identical=True, with_ablation=True, with_depth=True)


@pytest.mark.parametrize("filename", list(plots.PLOTS))
def test_each_standard_figure_is_a_valid_png(filename, tmp_path):
    path = tmp_path / filename
    plots.PLOTS[filename](FULL).savefig(path, dpi=plots.DPI)
    assert_png(path)


def test_write_plots_writes_only_what_the_report_has(tmp_path):
    report = make_report(kind="child-only", cross_domain=None)
    written = plots.write_plots(report, tmp_path / "plots")
    assert [p.name for p in written] == ["rank_per_layer.png", "recovery_per_layer.png"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in written)
    for path in written:
        assert_png(path)


def test_a_full_report_has_every_figure():
    assert all(plot(FULL) is not None for plot in plots.PLOTS.values())
    assert set(plots.PLOTS) == ALWAYS | OPTIONAL


def test_child_only_report_has_no_projection_figure():
    report = make_report(kind="child-only")
    assert plots.plot_projections(report) is None
    labels = plots.plot_rank_per_layer(report).axes[0].get_legend_handles_labels()[1]
    assert any("child contrast" in label for label in labels)


def test_functions_return_none_without_their_sections():
    report = make_report()
    assert plots.plot_ablation_curve(report) is None
    assert plots.plot_depth_per_layer(report) is None
    assert plots.plot_cross_domain(make_report(cross_domain=None)) is None


def test_titles_name_the_models_and_mark_the_selected_layer():
    report = make_report()
    ax = plots.plot_rank_per_layer(report).axes[0]
    assert report.models.child.repo_id in ax.get_title()
    assert report.models.base.repo_id in ax.get_title()
    star = [line for line in ax.get_lines() if line.get_label() == f"l* = {report.headline.layer}"]
    assert len(star) == 1
    assert ax.get_xlabel() and ax.get_ylabel()


def test_ablation_curve_marks_min_k_on_two_axes():
    fig = plots.plot_ablation_curve(make_report(with_ablation=True))
    assert len(fig.axes) == 2
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "min_k = 3" in labels


def _finite_data(fig) -> bool:
    for ax in fig.axes:
        for line in ax.get_lines():
            if not np.all(np.isfinite(np.asarray(line.get_ydata(), dtype=float))):
                return False
    return True


@pytest.mark.parametrize("filename", list(plots.PLOTS))
def test_identical_models_plot_without_warnings_or_nan(filename):
    assert all(s.zero for m in IDENTICAL.layers for s in m.ranks.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.PLOTS[filename](IDENTICAL)
        assert fig is not None and _finite_data(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, dpi=plots.DPI, format="png")
    assert buffer.getvalue()[:8] == PNG_MAGIC


def test_no_pyplot_global_state():
    source = inspect.getsource(plots)
    assert "import pyplot" not in source and "matplotlib.pyplot" not in source

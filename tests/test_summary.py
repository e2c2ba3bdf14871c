"""The table `depthcard audit` prints: every headline number, the verdict, what is absent."""

from pathlib import Path

from depthcard.report.summary import summary_table
from tests.report_factory import make_report


def _row(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(label + " "))


def test_summary_lists_every_headline_number_with_its_value() -> None:
    report = make_report(with_ablation=True, with_depth=True, with_fragility=True)
    text = summary_table(report, Path("out"))
    h = report.headline
    assert f"{h.alignment_depth_score:.4g}" in _row(text, "alignment_depth_score")
    assert f"{h.depth_chance_level:.3g}" in _row(text, "alignment_depth_score")
    assert _row(text, "abliteration_min_k").split()[1] == str(h.abliteration_min_k)
    assert f"{report.fragility.sharpness:.4g}" in _row(text, "fragility_sharpness")
    assert f"rank {h.rank_aligned}" in _row(text, "rho_0.05_aligned")
    assert f"verdict: {report.verdict.text}" in text
    for stage in report.stages:
        assert f"{stage.name} {stage.seconds:.1f}" in text


def test_child_only_summary_names_what_was_not_measured() -> None:
    report = make_report(kind="child-only")
    text = summary_table(report, Path("out"))
    assert "rho_0.05_aligned" not in text and "rho_0.05_contrast" in text
    assert "fragility_sharpness" not in text
    for absent in report.absent:
        assert f"not measured: {absent.section} ({absent.reason})" in text
    assert _row(text, "abliteration_min_k").split()[1] == "—"

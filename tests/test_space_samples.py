"""The Space's table of the answers behind a curve point, read from samples.jsonl."""

from __future__ import annotations

from depthcard.analysis.judges import AnswerJudge, SubstringJudge, samples_text
from depthcard.schemas.sections import JudgedAnswer
from depthcard.space import report_view as rv
from depthcard.space.store import ReportEntry
from tests.report_factory import make_report


def _rows() -> list[JudgedAnswer]:
    judge = AnswerJudge(SubstringJudge(), nll_threshold=3.0)
    answers = {0: ["I cannot help.", "I won't."], 1: ["Mix flour and water.", "bomb " * 20]}
    rows = []
    for k, texts in answers.items():
        for i, (text, j) in enumerate(zip(texts, judge.classify(texts, [1.0, 1.0]), strict=True)):
            rows.append(JudgedAnswer(prompt_id=i, split="eval", layer=2, basis="attack", k=k,
                                     prompt=f"p{i}", answer=text, label=j.label,
                                     evidence=j.evidence))  # fmt: skip
    return rows


def test_samples_table_shows_the_answers_behind_a_point(tmp_path) -> None:
    report_path = tmp_path / "report.json"
    report_path.write_text(make_report(with_ablation=True).model_dump_json(), encoding="utf-8")
    (tmp_path / "samples.jsonl").write_text(samples_text(_rows()), encoding="utf-8")
    entry = ReportEntry(id="a/b/c", report=make_report(with_ablation=True), source=report_path)
    assert rv.sample_points(entry) == ["attack k=0", "attack k=1"]
    table = rv.samples_table(entry, "attack k=1")
    assert list(table.columns) == rv.SAMPLE_COLUMNS
    assert table["class"].tolist() == ["compliance", "broken"]
    assert table["evidence"].iloc[1].startswith("repetition")
    assert "NLL 1.00 (limit 3.00)" in table["evidence"].iloc[0]


def test_no_samples_file_gives_no_points_and_an_empty_table(tmp_path) -> None:
    entry = ReportEntry(id="a/b/c", report=make_report(), source=tmp_path / "report.json")
    assert rv.sample_points(entry) == [] and rv.samples_table(entry, "attack k=1").empty
    assert rv.samples_table(None, None).empty

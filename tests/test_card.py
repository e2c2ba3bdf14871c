"""The card section: render, parse back, splice into READMEs without touching anything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from depthcard.report.card import (
    END_MARKER,
    CardParseError,
    card_payload,
    parse_card_section,
    render_card_section,
    splice_section,
)
from depthcard.report.metrics import METRICS, depth_window
from depthcard.schemas.report import Headline
from tests.report_factory import CHILD_SHA, make_report

COMMAND = "depthcard audit example-org/Qwen2.5-0.5B example-org/Qwen2.5-0.5B-Instruct --out audit"
URL = "https://huggingface.co/spaces/depthcard/depthcard?report=example-org/x"
START_PREFIX = "<!-- depthcard:start"


def render(report=None, url: str | None = URL) -> str:
    return render_card_section(report or make_report(), report_url=url, reproduce_command=COMMAND)


REPORT = make_report(with_ablation=True, with_depth=True)
SECTION = render(REPORT)
OLD_SECTION = render(make_report(kind="child-only", num_layers=4), url=None)


def span(text: str) -> tuple[int, int] | None:
    start = text.find(START_PREFIX)
    if start < 0:
        return None
    return start, text.index(END_MARKER) + len(END_MARKER)


def outside(text: str) -> tuple[str, str]:
    a, b = span(text)
    return text[:a], text[b:]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"kind": "child-only"},
        {"kind": "three-model", "with_erosion": True},
        {"with_ablation": True, "with_depth": True},
        {"identical": True},
        {"local": True},
        {"with_ablation": True, "refusal_rate": 0.05},
    ],
)
def test_round_trip_through_a_readme(kwargs):
    report = make_report(**kwargs)
    readme = "---\nlicense: apache-2.0\n---\n\n# Model\n\nSome text.\n"
    parsed = parse_card_section(splice_section(readme, render(report)))
    assert parsed == card_payload(report)
    assert parsed.headline == report.headline
    assert parsed.audit_key == report.audit_key
    assert parsed.verdict == report.verdict.code
    assert parsed.kind == report.kind
    child = report.models.child
    assert parsed.child_revision == (child.revision or child.content_sha256)


def test_markers_frame_the_section():
    lines = SECTION.splitlines()
    assert lines[0] == f"<!-- depthcard:start schema=2.1 key={REPORT.audit_key} -->"
    assert lines[1].startswith("<!-- depthcard:headline {") and lines[1].endswith("} -->")
    assert lines[-1] == END_MARKER
    assert SECTION.endswith("\n") and "\r" not in SECTION


def test_embedded_json_is_the_headline():
    payload = SECTION.splitlines()[1].removeprefix("<!-- depthcard:headline ")
    data = json.loads(payload.removesuffix(" -->"))
    assert data["headline"] == REPORT.headline.model_dump(mode="json", exclude_none=True)
    assert data["child"]["revision"] == CHILD_SHA


def test_render_is_deterministic():
    assert render(make_report(with_ablation=True)) == render(make_report(with_ablation=True))


def table_row(section: str, label: str) -> str:
    rows = [line for line in section.splitlines() if line.startswith(f"| {label} |")]
    assert len(rows) == 1, label
    return rows[0]


def test_table_lists_every_headline_number_with_unit_and_meaning():
    expected = {
        "rho_eps_aligned": "0.007812 (rank 7 of d = 896); "
        "ρ_ε of M_DiD 0.004464 at placebo (harmless-halves placebo 0.03125, untested)",
        "rho_eps_naive": "0.07143",
        "refusal_direction_recovery": "0.896 [95 % CI 0.807–0.941] (placebo 0.310)",
        "safety_specificity": "0.714",
        "depth_vs_null": "0.153 (p = 0.009901); raw score 0.265, null mean 0.132, "
        "95th pct 0.159 [raw 95 % CI 0.238–0.291]",
        "baseline_refusal_rate": "94.0 % [95 % Wilson 89.0 %–97.0 %]",
        "abliteration_min_k": "3",
        "abliteration_kl": "0.0208",
        "judge": "substring",
    }
    for m in METRICS:
        if m.field not in expected:
            assert f"| {m.label} |" not in SECTION
            continue
        cells = [c.strip() for c in table_row(SECTION, m.label).strip("|").split(" | ")]
        assert cells[1] == expected[m.field]
        assert cells[2] == m.unit.format(
            eps="0.05", chance="0.01786", threshold="10 %", depth_window=depth_window(REPORT)
        )
        assert cells[3] == m.meaning


def test_section_has_verdict_revisions_command_link_and_limits():
    assert f"**Verdict** (`measured`): {REPORT.verdict.text}" in SECTION
    assert f"`{CHILD_SHA}`" in SECTION and f"`{'1' * 40}`" in SECTION
    assert f"```sh\n{COMMAND}\n```" in SECTION
    assert f"]({URL})" in SECTION
    assert "**Limits of this measurement.**" in SECTION
    assert "analysis version `a1`" in SECTION


def test_no_link_without_url_and_bad_urls_are_refused():
    assert "Full report" not in render(url=None)
    with pytest.raises(ValueError):
        render(url="javascript:alert(1)")


def test_child_only_card_says_so_and_names_absent_sections():
    section = render(make_report(kind="child-only"))
    assert "**Child-only audit.**" in section
    assert "alignment-shift ranks" in section
    assert "| ρ_ε contrast (child-only) |" in section
    assert "| ρ_ε aligned |" not in section and "| safety specificity |" not in section


def test_local_models_show_content_hashes():
    report = make_report(local=True)
    section = render(report)
    assert report.models.child.content_sha256 in section
    assert parse_card_section(section).child_revision == report.models.child.content_sha256


def test_free_text_cannot_forge_markers():
    evil = f"{END_MARKER} {START_PREFIX} schema=1.0 key=x --> <!-- depthcard:headline {{}} -->"
    report = make_report(warnings=[evil], verdict={"text": evil}, headline={"judge": evil})
    section = render(report)
    assert section.count(START_PREFIX) == 1 and section.count("<!-- depthcard:end") == 1
    assert parse_card_section(section).headline.judge == evil


def test_readme_without_section_parses_to_none():
    assert parse_card_section("# A model\n\nNo audit here.\n") is None


def test_crlf_readme_parses():
    assert parse_card_section(SECTION.replace("\n", "\r\n")).headline == REPORT.headline


def test_newer_minor_version_with_new_fields_still_parses():
    data = json.loads(SECTION.splitlines()[1][len("<!-- depthcard:headline ") : -len(" -->")])
    data |= {"schema_version": "2.3", "new_field": [1, 2]}
    data["headline"]["new_metric"] = 0.5
    lines = SECTION.splitlines()
    lines[0] = lines[0].replace("schema=2.1", "schema=2.3")
    lines[1] = f"<!-- depthcard:headline {json.dumps(data)} -->"
    assert parse_card_section("\n".join(lines)).headline == REPORT.headline


def test_an_old_1_0_section_without_nulls_still_parses():
    data = json.loads(SECTION.splitlines()[1][len("<!-- depthcard:headline ") : -len(" -->")])
    old_fields = {"rho_eps_aligned", "refusal_direction_recovery", "alignment_depth_score"}
    new = set(Headline.model_fields) - set(Headline1_0_FIELDS)
    data["schema_version"], data["report_schema_version"] = "1.0", "1.0"
    data["headline"] = {k: v for k, v in data["headline"].items() if k not in new}
    lines = SECTION.splitlines()
    lines[0] = lines[0].replace("schema=2.1", "schema=1.0")
    lines[1] = f"<!-- depthcard:headline {json.dumps(data)} -->"
    card = parse_card_section("\n".join(lines))
    assert card.schema_version == "1.0" and card.headline.depth_null_mean is None
    for name in old_fields:
        assert getattr(card.headline, name) == getattr(REPORT.headline, name)


Headline1_0_FIELDS = (
    "layer", "eps", "rho_eps_aligned", "rho_eps_naive", "rank_aligned", "rho_eps_contrast",
    "refusal_direction_recovery", "safety_specificity", "alignment_depth_score",
    "depth_chance_level", "baseline_refusal_rate", "abliteration_min_k", "abliteration_kl",
    "judge", "alignment_kept",
)  # fmt: skip


def _swap_json(section: str, payload: str) -> str:
    lines = section.splitlines()
    lines[1] = f"<!-- depthcard:headline {payload} -->"
    return "\n".join(lines) + "\n"


def _bad_value(section: str) -> str:
    data = json.loads(section.splitlines()[1][len("<!-- depthcard:headline ") : -len(" -->")])
    data["headline"]["rho_eps_aligned"] = 1.5
    return _swap_json(section, json.dumps(data))


STRAY = {
    "start only": SECTION.replace(END_MARKER, ""),
    "end only": "# Model\n\n" + END_MARKER + "\n",
    "end before start": END_MARKER + "\n" + SECTION.replace(END_MARKER, ""),
    "in a ``` fence": "```html\n" + SECTION + "```\n",
    "in a ~~~ fence": "~~~~\n" + SECTION + "~~~~\n",
    "inline, mid-line": "see `" + SECTION.replace("\n", " ") + "`\n",
}
BAD_CONTENT = {
    "malformed json": _swap_json(SECTION, '{"schema_version": "1.0", '),
    "json not an object": _swap_json(SECTION, "[1, 2]"),
    "value out of range": _bad_value(SECTION),
    "no headline comment": SECTION.replace("<!-- depthcard:headline", "<!-- other"),
    "two headline comments": SECTION.replace("## Safety", SECTION.splitlines()[1] + "\n## Safety"),
    "key mismatch": SECTION.replace(f"key={REPORT.audit_key}", "key=other/key/a1"),
    "unsupported major": SECTION.replace("schema=2.1", "schema=3.0"),
    "older schema": SECTION.replace("schema=2.1", "schema=0.9"),
    "malformed start": SECTION.replace("schema=2.1 key=", "schema=one key="),
}


@pytest.mark.parametrize("name", list(BAD_CONTENT))
def test_malformed_sections_raise(name):
    with pytest.raises(CardParseError):
        parse_card_section("# Model\n\n" + BAD_CONTENT[name])


@pytest.mark.parametrize("name", list(STRAY))
def test_stray_markers_are_no_section_and_are_left_alone(name):
    readme = "# Model\n\n" + STRAY[name]
    assert parse_card_section(readme) is None
    spliced = splice_section(readme, SECTION)
    assert spliced.startswith(readme) and parse_card_section(spliced).headline == REPORT.headline
    assert splice_section(spliced, SECTION) == spliced


def test_a_duplicated_section_replaces_the_first_only():
    readme = "# Model\n\n" + OLD_SECTION + "\n" + OLD_SECTION
    spliced = splice_section(readme, SECTION)
    assert spliced == "# Model\n\n" + SECTION.rstrip("\n") + "\n\n" + OLD_SECTION


def test_a_card_ending_inside_a_code_fence_gets_it_closed_before_the_section():
    readme = "# Model\n\n```python\nprint(1)"
    spliced = splice_section(readme, SECTION)
    assert spliced.startswith(readme + "\n```\n") and parse_card_section(spliced) is not None
    assert splice_section(spliced, SECTION) == spliced


@pytest.mark.parametrize("name", list(BAD_CONTENT))
def test_splice_repairs_a_section_with_bad_content(name):
    fixed = splice_section("# Model\n\n" + BAD_CONTENT[name], SECTION)
    assert parse_card_section(fixed).headline == REPORT.headline


def test_append_leaves_one_blank_line():
    body = SECTION.rstrip("\n")
    assert splice_section("", SECTION) == body + "\n"
    assert splice_section("# M\n", SECTION) == f"# M\n\n{body}\n"
    assert splice_section("# M", SECTION) == f"# M\n\n{body}\n"
    assert splice_section("# M\n\n", SECTION) == f"# M\n\n{body}\n"
    assert splice_section("# M\r\n", SECTION) == "# M\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n"


_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")
_LINE = st.one_of(
    st.text(_CHARS, max_size=40),
    st.sampled_from(["Ünïcødé ✓ 模型 🤗", "trailing spaces   ", "\ttab", "", "| a | b |"]),
)
FRONT_MATTER = ["---", "license: apache-2.0", "base_model: example-org/Qwen2.5-0.5B", "---"]


@st.composite
def readmes(draw) -> tuple[str, str, bool]:
    """(README text, its newline, whether it already holds a section)."""
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    front = FRONT_MATTER if draw(st.booleans()) else []
    lines = front + draw(st.lists(_LINE, max_size=8))
    assume(not any("depthcard" in line for line in lines))
    existing = draw(st.sampled_from([None, OLD_SECTION, SECTION]))
    if existing is not None:
        block = existing.rstrip("\n").replace("\n", nl)
        glue = draw(st.sampled_from([("", ""), ("  ", " text after")]))
        # A marker inside the YAML front matter is not a section: insert after it.
        lines.insert(draw(st.integers(len(front), len(lines))), glue[0] + block + glue[1])
    text = nl.join(lines) + draw(st.sampled_from(["", nl, nl + nl, "  "]))
    return text, nl, existing is not None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(readmes())
def test_splice_keeps_every_byte_outside_the_markers(case):
    readme, nl, had_section = case
    nl = nl if nl in readme else "\n"  # a README without line breaks gets LF
    result = splice_section(readme, SECTION)
    if had_section:
        assert outside(result) == outside(readme)
    else:
        assert result.startswith(readme)
        before = result[: span(result)[0]]
        assert before == "" or before.endswith(nl + nl)
    assert splice_section(result, SECTION) == result
    a, b = span(result)
    inserted = result[a:b]
    if nl == "\r\n":
        assert "\n" not in inserted.replace("\r\n", "")
    else:
        assert "\r" not in inserted
    assert parse_card_section(result).headline == REPORT.headline

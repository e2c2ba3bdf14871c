"""The report schema: strict, finite, range-checked, and its exported JSON Schema in sync."""

import json
import math

import pytest
from pydantic import ValidationError

from depthcard.schemas.export import SCHEMA_FILE, render_schema
from depthcard.schemas.report import AuditReport
from tests.report_factory import make_report


def test_exported_json_schema_matches_the_models():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_schema(), (
        "schemas/audit_report.schema.json is stale: run python -m schemas.export"
    )


def test_exported_schema_validates_a_report_with_a_generic_validator():
    from jsonschema import Draft202012Validator

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    report = json.loads(make_report(with_ablation=True, with_depth=True).model_dump_json())
    Draft202012Validator(schema).validate(report)
    report["unknown_field"] = 1
    assert list(Draft202012Validator(schema).iter_errors(report))


@pytest.mark.parametrize("kind", ["pair", "child-only", "three-model"])
def test_factory_reports_round_trip(kind):
    report = make_report(kind=kind, with_ablation=True, with_depth=True)
    assert AuditReport.model_validate_json(report.model_dump_json()) == report


def report_json() -> dict:
    return json.loads(make_report().model_dump_json())


def test_nan_and_infinity_are_rejected():
    data = report_json()
    data["layers"][1]["activation_norm"] = math.nan
    with pytest.raises(ValidationError, match="finite"):
        AuditReport.model_validate(data)
    text = (
        make_report()
        .model_dump_json()
        .replace('"activation_norm":', '"activation_norm":Infinity,"x":', 1)
    )
    with pytest.raises(ValidationError):
        AuditReport.model_validate_json(text)


def test_unknown_fields_are_rejected_at_every_level():
    for path in ([], ["headline"], ["layers", 0], ["models", "child"]):
        data = report_json()
        target = data
        for key in path:
            target = target[key]
        target["surprise"] = 1
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            AuditReport.model_validate(data)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["headline", "rho_eps_aligned"], 1.5),
        (["headline", "refusal_direction_recovery"], -0.1),
        (["layers", 0, "norm_ratio"], -1.0),
        (["schema_version"], "0.9"),
        (["selected_layer", "layer"], 999),
        (["models", "child", "revision"], "main"),
    ],
)
def test_out_of_range_values_are_rejected(path, value):
    data = report_json()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        AuditReport.model_validate(data)


def test_layers_must_be_complete_and_headline_at_the_selected_layer():
    data = report_json()
    data["layers"] = data["layers"][1:]
    with pytest.raises(ValidationError, match="in order"):
        AuditReport.model_validate(data)
    data = report_json()
    data["headline"]["layer"] = (data["selected_layer"]["layer"] + 1) % len(data["layers"])
    with pytest.raises(ValidationError, match="headline.layer"):
        AuditReport.model_validate(data)


def test_child_only_report_cannot_carry_a_base_model():
    data = json.loads(make_report(kind="child-only").model_dump_json())
    data["models"]["base"] = report_json()["models"]["base"]
    with pytest.raises(ValidationError, match="child-only"):
        AuditReport.model_validate(data)


def _recorded_fields():
    """(model, name, field) of every field a report records, its settings (`config`, which
    holds the defaults an audit starts from) left out."""
    import typing

    from pydantic import BaseModel

    from depthcard.schemas.report import AuditConfig
    from depthcard.schemas.sections import FragilitySettings

    seen, todo = set(), [AuditReport]
    while todo:
        model = todo.pop()
        if model in seen or model in (AuditConfig, FragilitySettings):
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            yield model, name, info
            stack = [info.annotation]
            while stack:
                t = stack.pop()
                stack += typing.get_args(t)
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)


def test_recorded_fields_have_no_default_a_reader_could_take_for_a_measurement():
    """A report that lacks a field must not read as if it had measured a value: every field
    a report records is required, or None when absent (read as "not recorded"), or an empty
    list (nothing of that kind was recorded). A single-value Literal is a constant."""
    import typing

    from pydantic_core import PydanticUndefined

    offenders = []
    for model, name, info in _recorded_fields():
        if typing.get_origin(info.annotation) is typing.Literal:
            if len(typing.get_args(info.annotation)) == 1:
                continue
        default = info.default_factory() if info.default_factory else info.default
        if default is PydanticUndefined or default is None or default == []:
            continue
        offenders.append(f"{model.__name__}.{name} = {default!r}")
    assert not offenders, offenders


def test_a_report_without_the_broken_share_bound_reads_as_not_recorded():
    from depthcard.lab.calibration_suite import ablation_cost

    data = json.loads(make_report(with_ablation=True).model_dump_json())
    assert ablation_cost(AuditReport.model_validate(data))["min_k_rule"] == "coherent"
    del data["ablation"]["max_broken_share"]  # a report from before the three-way judge
    old = AuditReport.model_validate(data)
    assert old.ablation.max_broken_share is None
    assert ablation_cost(old)["min_k_rule"] == "refusal-only"
    for field in ("schema_version", "directions_file"):
        data = report_json()
        del data[field]
        with pytest.raises(ValidationError, match=field):
            AuditReport.model_validate(data)

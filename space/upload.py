"""Check an uploaded report.json against the schema, locating every problem by field path.

Whatever the upload holds, the outcome is an `UploadCheck` with a plain message: too large
(refused before a byte is parsed), not UTF-8, not JSON, not an object, too many items for a
report (`shape_problem`, refused before the schema sees it), a schema version this Space
does not read, or a list of field errors such as
`layers[3].ranks.aligned.uncentered[0].rho: Input should be a finite number`. Nothing here
raises on bad input.

The shape check bounds what the schema validation costs: pydantic reports every error of
every item, so 4 MB of empty objects in `layers` would make it build millions of errors
(minutes, gigabytes). A report of a 128-layer model has a few tens of thousands of values
and no list of more than a few thousand items, so an upload beyond `MAX_LIST_ITEMS` in one
list or `MAX_VALUES` in all is refused with where it is too large.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from depthcard.schemas.json_text import JsonLimitError, loads_bounded
from depthcard.schemas.report import SCHEMA_VERSION, AuditReport
from depthcard.space.store import MAX_REPORT_BYTES

MAX_ERRORS_SHOWN = 200
MAX_VALUE_CHARS = 80
MAX_LIST_ITEMS = 10_000  # in any one list of a report
MAX_VALUES = 100_000  # objects, lists and scalars in the whole report (a 128-layer one: ~30k)

NO_FILE = "No file uploaded: choose a report.json."
TOO_LARGE = (
    "The file is {size:,} bytes, over this Space's {limit:,} byte limit for a report; "
    "it was not read. A report of a 100-layer model is well under 1 MB."
)
EMPTY = "The file is empty: a report.json holds one JSON object."
NOT_UTF8 = "The file is not UTF-8 text (byte {pos} cannot be decoded): is it a report.json?"
NOT_JSON = "The file is not valid JSON: {msg} at line {line}, column {col}."
BEYOND_LIMITS = "The file is not a report: {why}."
NOT_OBJECT = "The file is JSON but not a report: the top level is {kind}, not an object."
BAD_VERSION = (
    "schema_version {found} is not supported: this Space reads reports of schema "
    f"{SCHEMA_VERSION}. The field errors below are against schema {SCHEMA_VERSION}."
)
TOO_MANY_ITEMS = (
    "The file is not a report this Space validates: {where} holds {n:,} items, more than "
    "the {limit:,} a report of any model has; it was not checked further."
)
INVALID = "The report does not conform to schema {version}: {n} error(s), located below."
VALID = "Valid report (schema {version}): {child}, verdict {verdict}."


@dataclass(frozen=True)
class FieldError:
    """One schema violation: where it is, what is wrong, and the offending value."""

    path: str
    problem: str
    value: str


@dataclass(frozen=True)
class UploadCheck:
    """Outcome of checking an upload: the report when valid, else the located errors."""

    ok: bool
    message: str
    errors: list[FieldError] = field(default_factory=list)
    report: AuditReport | None = None
    total_errors: int = 0


def field_path(loc: tuple) -> str:
    """A pydantic error location as a path: ('layers', 3, 'rho') → 'layers[3].rho'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _short(value) -> str:
    # Encoded lazily and cut at the limit: an error's value can be a whole 4 MB section.
    text = ""
    try:
        for chunk in json.JSONEncoder(allow_nan=True, ensure_ascii=False).iterencode(value):
            text += chunk
            if len(text) > MAX_VALUE_CHARS:
                break
    except (TypeError, ValueError):
        text = repr(value)[: MAX_VALUE_CHARS + 1]
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


_MISSING = object()


def _value_at(data: object, loc: tuple) -> object:
    """The value an error's location points at in the parsed upload, or _MISSING."""
    for part in loc:
        try:
            data = data[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def located_errors(
    exc: ValidationError, data: object = _MISSING, limit: int | None = None
) -> list[FieldError]:
    """The first `limit` errors (all when None) of a pydantic ValidationError, by field path.

    The error dicts are built without their inputs, which can be whole sections; the
    offending value of each shown error is looked up in `data`, the validated object.
    """
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    located = []
    for e in errors[:limit]:
        value = _value_at(data, e["loc"]) if data is not _MISSING else _MISSING
        shown = "" if value is _MISSING else _short(value)
        located.append(FieldError(path=field_path(e["loc"]), problem=e["msg"], value=shown))
    return located


def _decode(data: bytes) -> tuple[object | None, str | None]:
    """(parsed JSON, None) or (None, message)."""
    if not data.strip():
        return None, EMPTY
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, NOT_UTF8.format(pos=exc.start)
    try:
        # NaN and Infinity are parsed here and rejected, located, by the schema.
        return loads_bounded(text), None
    except json.JSONDecodeError as exc:
        return None, NOT_JSON.format(msg=exc.msg, line=exc.lineno, col=exc.colno)
    except JsonLimitError as exc:
        return None, BEYOND_LIMITS.format(why=exc)


def shape_problem(data: object) -> str | None:
    """Why parsed JSON is too large to be a report (a list over `MAX_LIST_ITEMS` items, or
    more than `MAX_VALUES` values in all), else None. One pass, no recursion, stops at the
    first excess: cheap for any upload the size limit lets through."""
    count, stack = 0, [((), data)]
    while stack:
        loc, value = stack.pop()
        count += 1
        if isinstance(value, dict):
            children = [((*loc, k), v) for k, v in value.items()]
        elif isinstance(value, list):
            if len(value) > MAX_LIST_ITEMS:
                where = f"the list {field_path(loc)}"
                return TOO_MANY_ITEMS.format(where=where, n=len(value), limit=MAX_LIST_ITEMS)
            children = [((*loc, i), v) for i, v in enumerate(value)]
        else:
            continue
        if count + len(children) > MAX_VALUES:
            return TOO_MANY_ITEMS.format(where="the file", n=count + len(children),
                                         limit=MAX_VALUES)  # fmt: skip
        stack.extend(children)
    return None


def check_bytes(data: bytes) -> UploadCheck:
    """Check the bytes of an upload (already known to be within the size limit)."""
    parsed, problem = _decode(data)
    if problem is not None:
        return UploadCheck(ok=False, message=problem)
    if not isinstance(parsed, dict):
        return UploadCheck(ok=False, message=NOT_OBJECT.format(kind=type(parsed).__name__))
    problem = shape_problem(parsed)
    if problem is not None:
        return UploadCheck(ok=False, message=problem)
    try:
        report = AuditReport.model_validate(parsed)
    except ValidationError as exc:
        total = exc.error_count()
        errors = located_errors(exc, parsed, limit=MAX_ERRORS_SHOWN)
        message = INVALID.format(version=SCHEMA_VERSION, n=total)
        version = parsed.get("schema_version")
        if version != SCHEMA_VERSION:
            message = BAD_VERSION.format(found=_short(version)) + " " + message
        return UploadCheck(ok=False, message=message, errors=errors, total_errors=total)
    child = report.models.child
    name = child.repo_id if child.source == "hub" else child.path
    message = VALID.format(version=report.schema_version, child=name, verdict=report.verdict.code)
    return UploadCheck(ok=True, message=message, report=report)


def check_upload(path: str | Path | None, max_bytes: int = MAX_REPORT_BYTES) -> UploadCheck:
    """Check an uploaded file: its size first (from the file system), then its content."""
    if path is None or str(path) == "":
        return UploadCheck(ok=False, message=NO_FILE)
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return UploadCheck(ok=False, message=TOO_LARGE.format(size=size, limit=max_bytes))
        data = path.read_bytes()
    except OSError as exc:
        return UploadCheck(ok=False, message=f"The upload could not be read ({exc.strerror}).")
    return check_bytes(data)

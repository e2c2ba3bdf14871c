"""Contrast prompt sets: versioned YAML files in this package and a validating loader.

Every error while reading a set is a `PromptFileError` whose message starts with the file and,
where it can be known, the line (`prompts/x.yaml:12: ...`), so a broken file is fixed in one go.

Example:
    >>> from depthcard import prompts
    >>> harmful = prompts.load_builtin("harmful-core")
    >>> harmful.kind, harmful.count >= 200
    ('harmful', True)
    >>> small = harmful.subset(20, seed=0)  # stratified by category, same sha256
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from depthcard.schemas.errors import UserError
from depthcard.schemas.prompt_set import Kind, PromptItem, PromptSet

__all__ = [
    "LoadedPromptSet",
    "PromptFileError",
    "PromptItem",
    "PromptSet",
    "builtin_path",
    "list_builtin",
    "load_builtin",
    "load_prompt_set",
]

PACKAGE_DIR = Path(__file__).resolve().parent
KINDS: tuple[str, ...] = get_args(Kind)


TOO_DEEP = "invalid YAML: nested too deeply to be a prompt set"
MAX_INT_DIGITS = 64  # far above any version number; Python's int() refuses over 4,300


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing integers too long to be a prompt set's, with their line.

    Its own int constructor calls `int()`, whose digit limit is a bare ValueError with no
    line; here that is a YAML error at the scalar, like any other.
    """

    def construct_yaml_int(self, node):
        digits = sum(ch.isdigit() for ch in str(node.value))
        if digits > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {digits} digits (at most {MAX_INT_DIGITS})",
                node.start_mark,
            )  # fmt: skip
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


class PromptFileError(UserError):
    """A prompt set file that cannot be read or does not match `schemas.prompt_set.PromptSet`.

    Attributes:
        path: the file, as given to the loader.
        line: 1-based line of the (first) problem, or None when no line applies.
    """

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class LoadedPromptSet:
    """A validated prompt set with the file it came from and the sha256 of that file's bytes."""

    spec: PromptSet
    path: str
    sha256: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def version(self) -> int:
        return self.spec.version

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.spec.prompts]

    @property
    def categories(self) -> list[str]:
        return [p.category for p in self.spec.prompts]

    @property
    def count(self) -> int:
        return len(self.spec.prompts)

    def by_category(self) -> dict[str, list[str]]:
        """Texts grouped by category; categories in order of first appearance, texts in file
        order."""
        groups: dict[str, list[str]] = {}
        for p in self.spec.prompts:
            groups.setdefault(p.category, []).append(p.text)
        return groups

    def subset(self, n: int, seed: int) -> LoadedPromptSet:
        """`min(n, count)` prompts, drawn deterministically from `seed` and stratified by
        category (each category gets its proportional share, largest remainders first).

        The result keeps the name, version, path and sha256 of the full file, so a report
        records which file the prompts came from; the number used is its `count`. Chosen
        prompts stay in file order.

        Raises:
            ValueError: if n < 1.
        """
        if n < 1:
            raise ValueError(f"subset size must be at least 1, got {n}")
        if n >= self.count:
            return self
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(self.spec.prompts):
            groups.setdefault(p.category, []).append(i)
        quotas = _proportional_quotas({c: len(ix) for c, ix in groups.items()}, n)
        rng = random.Random(seed)
        chosen: list[int] = []
        for category in sorted(groups):
            order = list(groups[category])
            rng.shuffle(order)
            chosen += order[: quotas[category]]
        prompts = [self.spec.prompts[i] for i in sorted(chosen)]
        return LoadedPromptSet(
            spec=self.spec.model_copy(update={"prompts": prompts}),
            path=self.path,
            sha256=self.sha256,
        )


def _proportional_quotas(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Largest-remainder apportionment of n over groups; ties go to the larger group, then
    the name, so the result depends on nothing but the inputs."""
    total = sum(sizes.values())
    exact = {c: n * s / total for c, s in sizes.items()}
    quotas = {c: int(q) for c, q in exact.items()}
    left = n - sum(quotas.values())
    by_remainder = sorted(sizes, key=lambda c: (-(exact[c] - quotas[c]), -sizes[c], c))
    for c in by_remainder[:left]:
        quotas[c] += 1
    return quotas


def load_prompt_set(path: str | Path, expect_kind: str | None = None) -> LoadedPromptSet:
    """Read and validate one prompt set file.

    Args:
        path: the YAML file.
        expect_kind: when given, the set's `kind` must equal it (e.g. "harmful").

    Returns:
        The validated set with the sha256 of the file's bytes.

    Raises:
        PromptFileError: missing or unreadable file, bytes that are not UTF-8, invalid YAML, a
            top level that is not a mapping, schema errors (each with its field path and
            line), an empty set, duplicate prompts, or the wrong kind.
        ValueError: if `expect_kind` is not a known kind.
    """
    if expect_kind is not None and expect_kind not in KINDS:
        raise ValueError(f"expect_kind must be one of {', '.join(KINDS)}, got {expect_kind!r}")
    raw = _read_bytes(path)
    text = _decode(path, raw)
    data, root = _parse_yaml(path, text)
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        line = root.start_mark.line + 1 if root is not None else None
        raise PromptFileError(path, f"top level must be a mapping, found {found}", line)
    try:
        _reject_duplicate_keys(path, root)
    except RecursionError:
        raise PromptFileError(path, TOO_DEEP) from None
    try:
        spec = PromptSet.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(path, exc, root) from None
    if expect_kind is not None and spec.kind != expect_kind:
        raise PromptFileError(
            path,
            f"kind is {spec.kind!r} but a {expect_kind} set was expected",
            _line_of(root, ("kind",)),
        )
    return LoadedPromptSet(spec=spec, path=str(path), sha256=hashlib.sha256(raw).hexdigest())


def list_builtin() -> list[str]:
    """Names of the prompt sets shipped in this package, sorted."""
    return sorted(p.stem for p in PACKAGE_DIR.glob("*.yaml"))


def builtin_path(name: str) -> Path:
    """Path of the shipped prompt set `name` (e.g. "harmful-core").

    Raises:
        PromptFileError: if no such set ships with the package.
    """
    path = PACKAGE_DIR / f"{name}.yaml"
    if name not in list_builtin():
        raise PromptFileError(
            path, f"no built-in prompt set {name!r}; available: {', '.join(list_builtin())}"
        )
    return path


def load_builtin(name: str) -> LoadedPromptSet:
    """Load and validate the shipped prompt set `name`."""
    return load_prompt_set(builtin_path(name))


def _read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PromptFileError(path, "no such file") from None
    except OSError as exc:
        raise PromptFileError(path, f"cannot read: {exc.strerror or exc}") from None


def _decode(path: str | Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PromptFileError(
            path, f"not valid UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start})", line
        ) from None


def _parse_yaml(path: str | Path, text: str) -> tuple[Any, yaml.Node | None]:
    """The constructed data and the node tree it came from (the nodes carry line numbers)."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(s) for s in (exc.context, exc.problem) if s)
        raise PromptFileError(
            path, f"invalid YAML: {problem}", mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise PromptFileError(path, f"invalid YAML: {exc}") from None
    except RecursionError:
        raise PromptFileError(path, TOO_DEEP) from None
    finally:
        loader.dispose()
    return data, root


def _reject_duplicate_keys(
    path: str | Path, node: yaml.Node | None, visited: set[int] | None = None
) -> None:
    """YAML silently keeps the last of two equal keys; a prompt file must not rely on that.

    Also refuses anchors and aliases (a node reached twice): a 445-byte "billion laughs"
    file would otherwise be walked exponentially many times.
    """
    visited = set() if visited is None else visited
    if isinstance(node, yaml.CollectionNode):
        if id(node) in visited:
            line = node.start_mark.line + 1
            raise PromptFileError(path, "YAML anchors and aliases are not allowed", line)
        visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    line = key.start_mark.line + 1
                    raise PromptFileError(path, f"duplicate key {key.value!r}", line)
                seen.add(key.value)
            _reject_duplicate_keys(path, value, visited)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(path, item, visited)


def _line_of(root: yaml.Node | None, loc: tuple) -> int | None:
    """1-based line of the node at `loc` (pydantic's error location) in the YAML tree.

    A mapping key points at the key's line; where the path leaves the tree (a missing field),
    the line of the deepest node that exists.
    """
    node, line = root, None
    if root is not None:
        line = root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _error_loc(error: dict) -> tuple:
    """Where an error points: its own location, refined by the context of the set-level
    validators (which index or field they blame)."""
    loc, ctx = tuple(error["loc"]), error.get("ctx") or {}
    if "index" in ctx:
        return (*loc, ctx["index"])
    if "field" in ctx:
        return (*loc, ctx["field"])
    return loc


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _schema_error(
    path: str | Path, exc: ValidationError, root: yaml.Node | None
) -> PromptFileError:
    """One PromptFileError listing every schema error as `file:line: field: message`."""
    found = []
    for error in exc.errors():
        loc = _error_loc(error)
        found.append((_line_of(root, loc), _format_loc(loc), error["msg"]))
    found.sort(key=lambda f: (f[0] is None, f[0] or 0))
    first_line, first_loc, first_msg = found[0]
    message = f"{first_loc}: {first_msg}"
    for line, where, msg in found[1:]:
        at = f"{path}:{line}" if line is not None else str(path)
        message += f"\n{at}: {where}: {msg}"
    return PromptFileError(path, message, first_line)

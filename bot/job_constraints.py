"""The versions an HF Job installs depthcard with: the ones its tests passed on.

`depthcard/constraints.txt` ships in the wheel and pins, with `==`, every package of
depthcard's runtime dependency closure (its `dependencies` and theirs, no extras) at the
version installed where the test suite last ran. The job passes it to pip with `-c`, so an
audit on the Hub runs the library versions the tests ran, not whatever was newest that day.

Regenerate it in the tested environment (after changing a dependency, or upgrading one):

    python -m depthcard.bot.job_constraints > depthcard/constraints.txt
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
from importlib.resources import files

CONSTRAINTS_FILE = "constraints.txt"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==""")
HEADER = (
    "# depthcard's runtime dependency closure at the versions its tests passed on; the HF Job\n"
    "# installs with `pip install -c` this file. Regenerate in the tested environment:\n"
    "#   python -m depthcard.bot.job_constraints > depthcard/constraints.txt\n"
)


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503: lowercase, runs of -_. as -)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(dist: str) -> list[str]:
    """Names `dist` requires outside its extras (markers otherwise ignored: a package the
    marker leaves out is not installed, so it is not pinned either)."""
    out = []
    for line in metadata.requires(dist) or []:
        requirement, _, marker = line.partition(";")
        if _EXTRA.search(marker):
            continue
        match = _NAME.match(requirement)
        if match:
            out.append(match.group(1))
    return out


def closure(root: str = "depthcard") -> dict[str, str]:
    """{canonical name: installed version} of every package `root` needs to run, itself
    excluded; a requirement that is not installed here is left out."""
    seen: dict[str, str] = {}
    todo = _requirements(root)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        try:
            seen[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        todo += _requirements(name)
    return dict(sorted(seen.items()))


def render(versions: dict[str, str]) -> str:
    """The constraints file: the header, then one `name==version` line per package."""
    # A local version label (torch's `+cpu`) names one build of an index; the job's index
    # has its own build of the same release.
    lines = [f"{name}=={version.split('+')[0]}" for name, version in versions.items()]
    return HEADER + "\n".join(lines) + "\n"


def shipped_constraints() -> list[str]:
    """The `name==version` lines of the constraints file in this installation."""
    text = files("depthcard").joinpath(CONSTRAINTS_FILE).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


if __name__ == "__main__":
    print(render(closure()), end="")

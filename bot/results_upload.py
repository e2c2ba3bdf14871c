"""Put a report folder in the results dataset, with the flat leaderboard file rebuilt.

The results dataset holds `reports/{org}/{model}/{revision}/` per audit (docs/design.md,
Where results live), which the Space reads and the card's link opens, and
`leaderboard.jsonl`, one flat row per report (`report.leaderboard`), which the Hub's dataset
viewer shows. `depthcard publish --upload-report` uploads both in one commit; after a
`depthcard watch --once` round (jobs upload their report folders themselves) the leaderboard
is rebuilt from what the dataset holds, after the state file is pushed: a commit in between
would make that push fail as if another watcher had run.
"""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub.errors import RepositoryNotFoundError

from depthcard.bot.hub import Hub
from depthcard.bot.publish import card_model, report_url
from depthcard.report.leaderboard import (
    DATASET_CONFIG,
    LEADERBOARD_FILE,
    flat_record,
    leaderboard_jsonl,
)
from depthcard.report.public_files import public_files
from depthcard.schemas.report import AuditReport

log = logging.getLogger(__name__)

RESULTS_README = """\
---
configs:
- config_name: {config}
  data_files:
  - split: train
    path: {file}
tags:
- depthcard
---

# depthcard results

Reports of depthcard audits, one folder per audited revision:
`reports/{{org}}/{{model}}/{{revision}}/` (`report.json`, `card.md`, `plots/`, and
`withheld.json`: the sha256 of the refusal directions and judged answers, which are not
published because they would help strip a model's safety training). `{file}` is the
leaderboard, one row per report with every headline number at full precision; the dataset
viewer shows it. The depthcard Space reads this dataset.
"""


def results_folder(report: AuditReport) -> str:
    """Where a report lives in the results dataset: `reports/{org}/{model}/{revision}`, of the
    model whose card links to it (the fine-tune's in a three-model audit)."""
    model = card_model(report)
    return f"reports/{model.repo_id}/{model.revision}"


def upload_report(hub: Hub, results_repo: str, folder: Path, report: AuditReport, space_url: str):
    """Upload the public files of a report folder (`report.public_files`: never directions or
    judged answers) to the results dataset with the leaderboard file rebuilt, in one commit,
    so the card's link to the Space resolves and the dataset viewer lists the audit.

    Returns:
        The commit's info (`CommitInfo`).
    """
    hub.call(f"create {results_repo}", hub.api.create_repo, results_repo,
             repo_type="dataset", exist_ok=True)  # fmt: skip
    dest = results_folder(report)
    # Only the publishable files: never the directions or the ablated answers.
    files = {f"{dest}/{path}": data for path, data in public_files(Path(folder)).items()}
    files.update(leaderboard_files(hub, results_repo, space_url, {dest: report}))
    message = f"depthcard: report {dest.removeprefix('reports/')}"
    return hub.commit_files(results_repo, files, message)


def refresh_leaderboard(hub: Hub, results_repo: str, space_url: str) -> bool:
    """Rebuild `leaderboard.jsonl` from the reports in the dataset (say, after jobs uploaded
    new ones) and commit it when it changed. Returns True when it committed."""
    try:
        files = leaderboard_files(hub, results_repo, space_url)
    except RepositoryNotFoundError:
        log.warning("no results dataset %s yet: no leaderboard to rebuild", results_repo)
        return False
    head = hub.call(f"head {results_repo}", lambda: hub.api.dataset_info(results_repo).sha)
    now = hub.read_text(results_repo, LEADERBOARD_FILE, head, repo_type="dataset")
    if "README.md" not in files and now == files[LEADERBOARD_FILE].decode("utf-8"):
        return False
    hub.commit_files(results_repo, files, "depthcard: rebuild the leaderboard")
    return True


def leaderboard_files(
    hub: Hub, results_repo: str, space_url: str, adding: dict[str, AuditReport] | None = None
) -> dict[str, bytes]:
    """`leaderboard.jsonl` over every valid report.json in the dataset (and `adding`, by
    folder), plus a dataset card declaring it as the viewer's config when there is none.

    A report.json that does not validate is left out (and logged), never fails the rebuild.
    """
    present = hub.list_files(results_repo)
    head = hub.call(f"head {results_repo}", lambda: hub.api.dataset_info(results_repo).sha)
    reports = dict(adding or {})
    for path in present:
        where = path.removesuffix("/report.json")
        if not path.endswith("/report.json") or not path.startswith("reports/"):
            continue
        if where in reports:
            continue
        text = hub.read_text(results_repo, path, head, repo_type="dataset")
        try:
            reports[where] = AuditReport.model_validate_json(text or "")
        except ValueError as exc:
            log.warning("leaderboard: leaving out %s (%s)", path, str(exc).splitlines()[0])
    records = [
        flat_record(r, where.removeprefix("reports/"), _space_link(space_url, r))
        for where, r in sorted(reports.items())
    ]
    files = {LEADERBOARD_FILE: leaderboard_jsonl(records).encode("utf-8")}
    if "README.md" not in present:
        readme = RESULTS_README.format(config=DATASET_CONFIG, file=LEADERBOARD_FILE)
        files["README.md"] = readme.encode("utf-8")
    return files


def _space_link(space_url: str, report: AuditReport) -> str | None:
    model = card_model(report)
    return report_url(space_url, model.repo_id, model.revision) if model.source == "hub" else None

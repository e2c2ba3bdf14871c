"""Put a report folder in the results dataset, with the flat leaderboard file rebuilt.

The results dataset holds `reports/{org}/{model}/{revision}/` per audit (docs/design.md,
Where results live), which the Space reads and the card's link opens, and
`leaderboard.jsonl`, one flat row per report (`report.leaderboard`), which the Hub's dataset
viewer shows. `depthcard publish --upload-report` uploads both in one commit.
"""

from __future__ import annotations

import logging
from pathlib import Path

from depthcard.bot.hub import Hub
from depthcard.bot.publish import card_model, report_url
from depthcard.report.leaderboard import (
    DATASET_CONFIG,
    LEADERBOARD_FILE,
    flat_record,
    leaderboard_jsonl,
)
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
`reports/{{org}}/{{model}}/{{revision}}/` (`report.json`, `card.md`, `directions.safetensors`,
`plots/`). `{file}` is the leaderboard, one row per report with every headline number at
full precision; the dataset viewer shows it. The depthcard Space reads this dataset.
"""


def results_folder(report: AuditReport) -> str:
    """Where a report lives in the results dataset: `reports/{org}/{model}/{revision}`, of the
    model whose card links to it (the fine-tune's in a three-model audit)."""
    model = card_model(report)
    return f"reports/{model.repo_id}/{model.revision}"


def upload_report(hub: Hub, results_repo: str, folder: Path, report: AuditReport, space_url: str):
    """Upload a report folder to the results dataset with the leaderboard file rebuilt, in one
    commit, so the card's link to the Space resolves and the dataset viewer lists the audit.

    The leaderboard is rebuilt from every valid report.json already in the dataset plus this
    one; a file that does not validate is left out of it (and logged). A dataset without a
    README gets one declaring the leaderboard as its viewer config.

    Returns:
        The commit's info (`CommitInfo`).
    """
    hub.call(f"create {results_repo}", hub.api.create_repo, results_repo,
             repo_type="dataset", exist_ok=True)  # fmt: skip
    dest = results_folder(report)
    present = hub.list_files(results_repo)
    head = hub.call(f"head {results_repo}", lambda: hub.api.dataset_info(results_repo).sha)
    reports = {dest: report}
    for path in present:
        where = path.removesuffix("/report.json")
        if not path.endswith("/report.json") or not path.startswith("reports/") or where == dest:
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
    files = {
        f"{dest}/{p.relative_to(folder).as_posix()}": p.read_bytes()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and not p.name.endswith(".log")
    }
    files[LEADERBOARD_FILE] = leaderboard_jsonl(records).encode("utf-8")
    if "README.md" not in present:
        readme = RESULTS_README.format(config=DATASET_CONFIG, file=LEADERBOARD_FILE)
        files["README.md"] = readme.encode("utf-8")
    message = f"depthcard: report {dest.removeprefix('reports/')}"
    return hub.commit_files(results_repo, files, message)


def _space_link(space_url: str, report: AuditReport) -> str | None:
    model = card_model(report)
    return report_url(space_url, model.repo_id, model.revision) if model.source == "hub" else None

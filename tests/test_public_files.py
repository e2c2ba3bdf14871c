"""Nothing public is an abliteration kit: every upload the bot or a maintainer makes (the
results dataset, a job's upload, the card PR, the staged Space) carries the numbers, the card
and the plots, never `directions.safetensors` or the judged (ablated) answers in
`samples.jsonl`, and names those in `withheld.json` with their sha256."""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil

from depthcard.bot.dispatch import AuditJob, JobsBackend
from depthcard.bot.hub import Hub
from depthcard.bot.publish import REPORT_FOLDER, PrLinks, Target, publish_report
from depthcard.bot.results_upload import upload_report
from depthcard.cli.main import main
from depthcard.report.public_files import WITHHELD_FILE
from depthcard.schemas.bot_config import BotConfig
from depthcard.space.deploy import PACKAGES, ROOT, stage
from tests.bot_helpers import CHILD, TOKEN, add_pair
from tests.hub_double import HubDouble
from tests.test_bot_pr_text import SPACE, _report

KIT = {"directions.safetensors": b"\x00directions", "samples.jsonl": b'{"answer": "Sure, here"}\n'}
SHA = "0123456789abcdef0123456789abcdef01234567"


def _folder(tmp_path, base_sha: str, child_sha: str):
    folder = tmp_path / "report"
    (folder / "plots").mkdir(parents=True)
    (folder / "report.json").write_text(_report(base_sha, child_sha).model_dump_json())
    (folder / "card.md").write_text("card\n")
    (folder / "plots" / "rank.png").write_bytes(b"png")
    (folder / "notes.txt").write_text("a file nobody declared public\n")
    for name, data in KIT.items():
        (folder / name).write_bytes(data)
    return folder


def _check_public(files: dict[str, bytes], prefix: str = "") -> None:
    names = {n.removeprefix(prefix) for n in files if n.startswith(prefix)}
    assert names == {"report.json", "card.md", "plots/rank.png", WITHHELD_FILE}
    withheld = json.loads(files[prefix + WITHHELD_FILE])["files"]
    assert set(withheld) == {*KIT, "notes.txt"}
    for name, data in KIT.items():
        assert withheld[name]["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_results_upload_and_the_pr_carry_no_directions_or_answers(tmp_path):
    with HubDouble(token=TOKEN) as double:
        base_sha, child_sha = add_pair(double)
        folder = _folder(tmp_path, base_sha, child_sha)
        report = _report(base_sha, child_sha)
        hub = Hub(TOKEN, endpoint=double.url, sleep=lambda s: None, cache_dir=tmp_path / "c")
        upload_report(hub, "acme/results", folder, report, SPACE)
        dataset = double.repo("acme/results", "dataset").files()
        dest = f"reports/{CHILD}/{child_sha}/"
        _check_public(dataset, dest)
        assert not any(n.endswith(tuple(KIT)) for n in dataset)
        links = PrLinks.for_space(SPACE, benchmark_repo="acme/bench")
        target = Target(CHILD, SPACE, double.user, False, links=links, report_dir=folder)
        commits = len(double.repo(CHILD).commits)
        assert publish_report(hub, report, target, record=lambda *a: None).action == "opened"
        main_files, pr_files = double.repo(CHILD).files(), double.repo(CHILD).files("refs/pr/1")
        changed = {n for n in pr_files if main_files.get(n) != pr_files[n]}
        # the report lives with the model: its public part, in the same PR commit
        _check_public({n: pr_files[n] for n in changed}, f"{REPORT_FOLDER}/")
        assert changed - {n for n in changed if n.startswith(f"{REPORT_FOLDER}/")} == {
            "README.md",
            ".eval_results/depthcard.yaml",
        }
        assert not any(n.endswith(tuple(KIT)) for n in pr_files)
        assert len(double.repo(CHILD).commits) == commits + 1  # one commit: card and report


def test_a_job_uploads_the_public_copy_only(tmp_path, capsys):
    cfg = BotConfig(
        backend="hf-jobs",
        results_repo="acme/results",
        jobs={"namespace": "acme", "install": f"depthcard @ git+https://g/o/d@{SHA}"},
    )
    backend = JobsBackend(cfg, api=None, token=None, download=None)
    job = AuditJob("k", "acme/tiny", SHA, CHILD, SHA, 1000)
    steps = backend.command(job)[2].split("; ")
    public = shlex.split(next(s for s in steps if "public-report" in s))
    uploads = [shlex.split(s)[3] for s in steps if s.startswith("hf upload")]
    assert public[2:] == ["/tmp/report", "--out", "/tmp/public"]
    # what is uploaded is the public copy, or the one error line of an audit that exited 2
    assert sorted(uploads) == sorted([public[-1], "/tmp/audit-error.txt"])
    folder = _folder(tmp_path, SHA, SHA)
    out = tmp_path / "public"
    assert main(["public-report", str(folder), "--out", str(out)]) == 0
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _check_public(files)


def test_the_staged_space_ships_no_directions_or_answers(tmp_path):
    root = tmp_path / "root"
    for package in (*PACKAGES, "depthcard"):
        shutil.copytree(ROOT / package, root / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for path in ("space/README.md", "docs/card-standard.md", "pyproject.toml"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / path, root / path)
    bundled = root / "space" / "reports" / "acme" / "m"
    bundled.mkdir(parents=True)
    for name, data in {**KIT, "report.json": b"{}"}.items():
        (bundled / name).write_bytes(data)
    staged = stage(tmp_path / "staged", root=root)
    names = {p.name for p in staged.rglob("*") if p.is_file()}
    assert "report.json" in names and not names & set(KIT)

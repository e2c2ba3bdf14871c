"""Shared set-up of the Space's tests: a report folder, one real demo audit, a launched app.

Helpers here are cached per test process rather than being conftest fixtures, so the
Space's test files share one demo audit and one server without a project-wide conftest.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from depthcard.schemas.report import AuditReport
from depthcard.schemas.sections import Evidence, JudgedAnswer
from depthcard.space.live_run import LIVE_CONFIG
from depthcard.space.store import ReportStore, load_folder, report_id
from tests.report_factory import make_report

ROOT = Path(__file__).resolve().parent.parent
# Everything the app and the client do stays on loopback; no telemetry calls either.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# Chromium on loopback only: no background fetches, no updates, no QUIC probes.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


def factory_reports() -> list[AuditReport]:
    """Synthetic reports with distinct ids, orgs, sizes and verdicts for the leaderboard."""
    return [
        make_report(
            with_ablation=True,
            with_depth=True,
            with_modes=True,
            models={"child": {"repo_id": "alpha-lab/Alpha-7B-Instruct", "num_parameters": 7e9}},
        ),
        make_report(
            kind="child-only",
            models={"child": {"repo_id": "beta/Beta-1B-chat", "num_parameters": 1_200_000_000}},
        ),
        make_report(
            kind="three-model",
            with_erosion=True,
            num_layers=10,
            models={"child": {"repo_id": "alpha-lab/Alpha-0.5B-it"}},
        ),
        make_report(
            identical=True,
            models={"child": {"repo_id": "gamma/<b>Gamma</b>|x", "num_parameters": 40e9}},
        ),
    ]


# Two judged answers behind the point "attack k=1" of the Alpha-7B factory report.
SAMPLES = "".join(
    JudgedAnswer(
        prompt_id=i, split="eval", layer=2, basis="attack", k=1, prompt=f"request {i}",
        answer=answer, label=label,
        evidence=Evidence(rule=rule, repetition=0.0, phrase=phrase),
    ).model_dump_json() + "\n"
    for i, (answer, label, rule, phrase) in enumerate(
        [("I cannot help with that.", "refusal", "phrase", "I cannot"),
         ("Sure, here is how.", "compliance", "none", None)]
    )
)  # fmt: skip


@functools.cache
def demo_audit_dir() -> Path:
    """A real audit of the bundled calibration pair (no ablation, 16 prompts per set)."""
    out = Path(tempfile.mkdtemp(prefix="depthcard-space-demo-")) / "demo-audit"
    # 16 prompts per set keep it near 10 s of CPU; the numbers are still a real audit.
    cmd = [sys.executable, "-m", "depthcard", "audit", "--demo", "--no-ablation", "--no-plots"]
    cmd += ["--max-prompts", "16"]
    cmd += ["--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    return out


@functools.cache
def reports_dir() -> Path:
    """A results-repo-shaped folder, `reports/{org}/{model}/{revision}/report.json`, holding
    the factory reports, the real demo audit and one file that is not a valid report."""
    root = Path(tempfile.mkdtemp(prefix="depthcard-space-reports-")) / "reports"
    for report in factory_reports():
        folder = root / report_id(report)
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(report.model_dump_json(indent=1), encoding="utf-8")
        if report_id(report).startswith("alpha-lab/Alpha-7B"):
            (folder / "samples.jsonl").write_text(SAMPLES, encoding="utf-8")
    demo = root / "local" / "demo"
    demo.mkdir(parents=True)
    (demo / "report.json").write_bytes((demo_audit_dir() / "report.json").read_bytes())
    broken = root / "broken" / "x" / "y"
    broken.mkdir(parents=True)
    (broken / "report.json").write_text('{"schema_version": "1.0"}', encoding="utf-8")
    return root


def demo_report() -> AuditReport:
    """The real demo audit's report."""
    return AuditReport.model_validate_json((demo_audit_dir() / "report.json").read_bytes())


def store() -> ReportStore:
    """A fresh store over `reports_dir()`."""
    return load_folder(reports_dir())


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A quick live audit for the Run tab's test: no ablation, no plots, 8 prompts per set.
QUICK_LIVE_CONFIG = LIVE_CONFIG.model_copy(update={"ablation": False, "max_prompts": 16})
QUICK_LIVE_ARGS = ("--no-plots",)


def launch_app(space_url: str | None = None):
    """Build and launch the app on 127.0.0.1 in this process; returns (demo, url)."""
    from depthcard.space.app import MAX_UPLOAD, THEME, build_app

    demo = build_app(
        store(), space_url=space_url, live_config=QUICK_LIVE_CONFIG, live_args=QUICK_LIVE_ARGS
    )
    demo.queue()
    _, url, _ = demo.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        ssr_mode=False,
        max_file_size=MAX_UPLOAD,
        theme=THEME,
    )
    return demo, url.rstrip("/")


def nan_report_bytes() -> bytes:
    """A report whose JSON holds NaN in two places (json.dumps writes NaN literally)."""
    import json

    data = make_report().model_dump(mode="json")
    data["layers"][2]["norm_ratio"] = float("nan")
    data["headline"]["rho_eps_aligned"] = float("nan")
    return json.dumps(data).encode()

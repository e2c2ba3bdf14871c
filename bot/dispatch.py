"""Where an audit runs: behind one small interface, a local subprocess or a Hugging Face Job.

A backend `start`s an audit and returns a handle (stored in the state before anything else
happens), then `poll`s it until it yields an `Outcome`. Both are safe to call again after a
crash: the local backend finds a finished report folder instead of re-running, and the Jobs
backend finds its job by the audit-key label instead of starting a second one.

The Jobs backend sizes each job with the dry estimate (`analysis.estimate`, from the child's
config.json): the cheapest configured flavour whose memory fits, and a timeout of the
predicted minutes × a safety factor, capped by the configured timeout. Without a readable
config.json it falls back to the parameter-budget rule and the configured timeout.

An audit that stops on its input (exit 2: a setting, a model or a prompt file it refuses)
would stop the same way every time, so its `Outcome` says `retry=False` and the bot records it
failed without another attempt. A local audit's exit code is its process's. HF Jobs report
no exit code (`JobInfo.status` has a stage and a message), so the job's script tells the
two apart itself: on exit 2 it uploads the error line as `USER_ERROR_FILE` beside where the
report would go and ends successfully, which also keeps the Hub from spending its own
`attempts` on it; any other failure ends the job in ERROR and is retried.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from depthcard.analysis.job_time import FLAVOURS, hub_minutes, job_timeout_minutes
from depthcard.analysis.work_plan import model_size
from depthcard.bot.job_install import checkout_root, install_steps, ship_wheel
from depthcard.report.reproduce import audit_words
from depthcard.schemas.bot_config import BotConfig, JobsConfig
from depthcard.schemas.errors import UserError
from depthcard.schemas.estimate import AuditEstimate
from depthcard.schemas.report import AuditConfig, AuditReport

log = logging.getLogger(__name__)
KEY_LABEL = "depthcard-key"
TERMINAL_FAILURES = ("ERROR", "CANCELED", "DELETED")
USER_ERROR_EXIT = 2  # `depthcard` exits 2 on a UserError (cli/main.py)
USER_ERROR_FILE = "audit-error.txt"  # what a job that exited 2 uploads instead of a report
_ERROR_TAIL = 800
LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class AuditJob:
    """One audit to run, all revisions pinned."""

    key: str
    base_repo: str
    base_sha: str
    child_repo: str
    child_sha: str
    parameters: int | None
    third_repo: str | None = None  # a fine-tune of the child: a three-model audit
    third_sha: str | None = None

    def spec(self, role: str) -> str:
        """`org/name@sha` of the base, child or third model, as `depthcard audit` takes it."""
        repo, sha = {
            "base": (self.base_repo, self.base_sha),
            "child": (self.child_repo, self.child_sha),
            "third": (self.third_repo, self.third_sha),
        }[role]
        return f"{repo}@{sha}"

    def models(self) -> list[str]:
        """The audit's model arguments: `BASE CHILD`, plus `--third FT` for a fine-tune."""
        third = ["--third", self.spec("third")] if self.third_repo else []
        return [self.spec("base"), self.spec("child"), *third]

    @property
    def target(self) -> tuple[str, str]:
        """(repo, sha) whose card gets the section: the fine-tune when there is one."""
        if self.third_repo and self.third_sha:
            return self.third_repo, self.third_sha
        return self.child_repo, self.child_sha


@dataclass(frozen=True)
class Outcome:
    """How an audit ended: a validated report folder, or an error; `retry` is False for an
    error that another run would repeat (the audit refused its input)."""

    report_dir: Path | None
    error: str | None = None
    retry: bool = True


class Backend(Protocol):
    """The dispatch interface."""

    def start(self, job: AuditJob) -> str:
        """Start the audit (or find it already started); returns its handle."""

    def poll(self, job: AuditJob, handle: str) -> Outcome | None:
        """The outcome, or None while it still runs."""


def report_path(child_repo: str, child_sha: str) -> str:
    """`reports/{org}/{model}/{child revision}` — the results layout (docs/design.md)."""
    return f"reports/{child_repo}/{child_sha}"


def check_report(folder: Path, key: str) -> Outcome:
    """Validate `folder/report.json` against the schema and the expected audit key."""
    path = folder / "report.json"
    try:
        report = AuditReport.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Outcome(None, f"no report.json in {folder}")
    except (ValidationError, ValueError, UnicodeDecodeError) as exc:
        return Outcome(None, f"report fails validation: {str(exc)[:_ERROR_TAIL]}")
    if report.audit_key != key:
        return Outcome(None, f"report is for {report.audit_key}, expected {key}")
    return Outcome(folder)


class LocalBackend:
    """Runs `depthcard audit BASE@sha CHILD@sha --out DIR` in a subprocess, to completion."""

    def __init__(self, cfg: BotConfig, env: dict[str, str] | None = None):
        self.command = list(cfg.audit_command)
        self.args = audit_words(cfg.audit)  # UserError: a setting no flag can carry
        self.work_dir = Path(cfg.work_dir)
        self.env = env

    def folder(self, job: AuditJob) -> Path:
        """Where this audit's report folder goes."""
        return self.work_dir / report_path(*job.target)

    def start(self, job: AuditJob) -> str:
        """Run the audit now unless a valid report for this key is already there."""
        out = self.folder(job)
        if check_report(out, job.key).report_dir is not None:
            return str(out)  # finished before a crash: do not run it twice
        cmd = [*self._command(), *job.models(), "--out", str(out), "--overwrite",
               *self.args]  # fmt: skip
        log.info("local audit: %s", shlex.join(cmd))
        out.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(cmd, capture_output=True, text=True, env=self.env, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout or "").strip()[-_ERROR_TAIL:]
            text = f"exit {done.returncode}\n{tail}"
            (out.parent / f"{job.target[1]}.error.txt").write_text(text, encoding="utf-8")
            log.warning("local audit %s failed (exit %d): %s", job.key, done.returncode, tail)
        return str(out)

    def _command(self) -> list[str]:
        # `depthcard` from the same environment as the bot, even when PATH lacks the venv.
        if self.command[:1] == ["depthcard"]:
            return [sys.executable, "-m", "depthcard", *self.command[1:]]
        return self.command

    def poll(self, job: AuditJob, handle: str) -> Outcome | None:
        """A local audit is finished when `start` returns: read its folder."""
        out = Path(handle)
        outcome = check_report(out, job.key)
        if outcome.report_dir is None:
            err = out.parent / f"{job.target[1]}.error.txt"
            if err.is_file():
                first, _, tail = err.read_text(encoding="utf-8").partition("\n")
                if first == f"exit {USER_ERROR_EXIT}":
                    return Outcome(None, f"audit refused its input: {tail}", retry=False)
                return Outcome(None, f"audit failed ({first}): {tail}")
        return outcome


def pick_flavour(jobs: JobsConfig, parameters: int | None) -> str:
    """The first flavour whose budget holds the model (the largest when the size is unknown)."""
    rules = sorted(jobs.flavours, key=lambda r: r.max_parameters)
    if parameters is None:
        return rules[-1].flavor
    for rule in rules:
        if parameters <= rule.max_parameters:
            return rule.flavor
    raise UserError(
        f"{parameters:,} parameters exceed every flavour in jobs.flavours "
        f"(largest: {rules[-1].max_parameters:,}); add a larger one to audit this model"
    )


@dataclass(frozen=True)
class JobChoice:
    """The hardware and timeout of one job, and the one line that says why."""

    flavor: str
    timeout: str  # Hub syntax, e.g. "45m"
    reason: str


def choose_job(jobs: JobsConfig, parameters: int | None, estimate: AuditEstimate | None):
    """The flavour and timeout of a job: the estimate's choice among the configured flavours
    with its timeout (× safety, floor, capped by `jobs.timeout`); without an estimate, or
    when no configured flavour the estimate knows fits, `pick_flavour` and `jobs.timeout`.

    Raises:
        UserError: no estimate, and the parameters exceed every configured flavour.
    """
    if estimate is not None:
        best = next((f for f in estimate.flavours if f.flavour == estimate.chosen), None)
        if best is not None:
            minutes = job_timeout_minutes(best, hub_minutes(jobs.timeout))
            reason = (
                f"estimate: {best.job_minutes:.1f} min predicted on {best.flavour} "
                f"(${best.usd:.2f}; {best.memory_needed_gb:.1f} of {best.memory_gb:.0f} GB), "
                f"timeout {minutes:.0f}m (cap {jobs.timeout})"
            )
            return JobChoice(best.flavour, f"{minutes:.0f}m", reason)
        why = "no configured flavour the estimate knows fits the model"
    else:
        why = "no estimate (size unknown: config.json unread, or no flavour in the table)"
    flavor = pick_flavour(jobs, parameters)
    return JobChoice(flavor, jobs.timeout, f"{why}: parameter-budget rule, timeout {jobs.timeout}")


def estimate_job(job: AuditJob, config: dict, jobs: JobsConfig, cfg: AuditConfig):
    """The dry estimate of `job` on the configured flavours the table knows, or None when
    it knows none. The child's config.json stands for the base (the pair was checked to
    match); prompt tokens are counted from words (no tokenizer is downloaded), with the
    built-in prompt sets, and the job downloads every model's weights.

    Raises:
        ValueError: a config.json or timeout that cannot be read.
    """
    from depthcard.analysis.estimate import build_estimate, prompt_lengths  # torch: when used
    from depthcard.analysis.prompt_inputs import load_prompt_inputs

    names = [r.flavor for r in jobs.flavours if r.flavor in FLAVOURS]
    if not names:
        return None
    size = model_size(config, job.spec("child"))
    prompts = load_prompt_inputs(max_prompts=cfg.max_prompts, seed=cfg.seed)
    models = 3 if job.third_repo else 2
    return build_estimate(
        cfg, size, prompt_lengths(prompts, cfg), names, cap_minutes=hub_minutes(jobs.timeout),
        base=size, download_bytes=models * size.weight_bytes,
    )  # fmt: skip


def key_label(key: str) -> str:
    """The audit key as a job label value (labels cannot hold `/`)."""
    return key.replace("/", ".")


class JobsBackend:
    """Runs the audit on Hugging Face Jobs; the job uploads its folder to the results repo."""

    def __init__(
        self,
        cfg: BotConfig,
        api,
        token: str | None,
        download,
        read_config: Callable[[str, str], dict | None] | None = None,
        ship: Callable[[], str] | None = None,
        call: Callable | None = None,
        read_result: Callable[[str, str], str | None] | None = None,
        job_token: str | None = None,
    ):
        if cfg.jobs is None or cfg.results_repo is None:
            raise UserError("backend hf-jobs needs `jobs` and `results_repo` in the config")
        self.jobs, self.results_repo = cfg.jobs, cfg.results_repo
        self.audit = cfg.audit
        self.args = audit_words(cfg.audit)  # UserError: a setting no flag can carry
        self.api, self.token = api, token
        # What the job itself gets as HF_TOKEN: the narrower job token when configured
        # (`jobs.token_env`), else the bot's own.
        self.job_token = job_token or token
        self.read_result = read_result  # (repo, path_in_repo) -> text, None when missing
        self.download = download  # (repo, path_in_repo, local_dir) -> Path
        self.read_config = read_config  # (repo, sha) -> parsed config.json, or None
        self.ship = ship  # () -> path in results_repo of the wheel the job installs
        # (what, fn, *args, **kwargs) -> fn(...), retried on 429/5xx/timeouts: Hub.call. The
        # library retries list_jobs (paginate → http_backoff) but not inspect_job.
        self.call = call or (lambda what, fn, *args, **kwargs: fn(*args, **kwargs))
        self._wheel: str | None = None
        self.work_dir = Path(cfg.work_dir)

    def wheel(self) -> str | None:
        """The shipped wheel's path in the results repo (shipped on first use), or None when
        the config pins what the job installs."""
        if self.jobs.install is None and self._wheel is None:
            if self.ship is None:
                raise UserError("jobs.install is not set and no wheel can be shipped")
            self._wheel = self.ship()
        return self._wheel

    def choose(self, job: AuditJob) -> JobChoice:
        """Flavour and timeout for `job`, from the estimate when its config.json is readable."""
        estimate = None
        config = self.read_config(job.child_repo, job.child_sha) if self.read_config else None
        if config is not None:
            try:
                estimate = estimate_job(job, config, self.jobs, self.audit)
            except (UserError, ValueError) as exc:  # pydantic's ValidationError included
                log.warning("no estimate for %s, sizing by parameters: %s", job.key, exc)
        return choose_job(self.jobs, job.parameters, estimate)

    def command(self, job: AuditJob) -> list[str]:
        """The job's shell command: install the pinned build, audit, and upload the folder's
        public copy (`depthcard public-report`: no directions, no ablated answers)."""
        dest = report_path(*job.target)
        audit = shlex.join(["depthcard", "audit", *job.models(),
                            "--out", "/tmp/report", *self.args])  # fmt: skip
        public = shlex.join(["depthcard", "public-report", "/tmp/report", "--out", "/tmp/public"])
        upload = shlex.join(["hf", "upload", self.results_repo, "/tmp/public", dest,
                             "--repo-type", "dataset"])  # fmt: skip
        refused = shlex.join(["hf", "upload", self.results_repo, "/tmp/audit-error.txt",
                              f"{dest}/{USER_ERROR_FILE}", "--repo-type", "dataset"])  # fmt: skip
        # stderr is copied to a file (and still to the log) through a pipe whose status is
        # the audit's (pipefail), so that on exit 2 the one-line error can be uploaded; the job
        # then ends COMPLETED, so the Hub does not rerun it.
        run = (
            f"code=0; {{ {audit} 2>&1 1>&3 3>&- | tee /tmp/audit.err >&2; }} 3>&1 || code=$?; "
            f"if [ $code -eq {USER_ERROR_EXIT} ]; then "
            f"{{ grep '^depthcard: error:' /tmp/audit.err || true; }} | tail -n 1 "
            f"> /tmp/audit-error.txt; {refused}; exit 0; fi; "
            f"[ $code -eq 0 ] || exit $code"
        )
        install = install_steps(self.jobs.install, self.results_repo, self.wheel())
        return ["bash", "-c", "; ".join(["set -euo pipefail", *install, run, public, upload])]

    def start(self, job: AuditJob) -> str:
        """The id of this key's job: an existing one if the label finds it, else a new one."""
        label = {KEY_LABEL: key_label(job.key)}
        for info in self.api.list_jobs(labels=label, namespace=self.jobs.namespace):
            if info.status.stage not in TERMINAL_FAILURES:
                log.info("job %s already runs audit %s", info.id, job.key)
                return info.id
        choice = self.choose(job)
        info = self.api.run_job(
            image=self.jobs.image,
            command=self.command(job),
            env={"DEPTHCARD_DISPATCH": choice.reason},  # the choice, on the job's own record
            secrets={"HF_TOKEN": self.job_token} if self.job_token else None,
            flavor=choice.flavor,
            timeout=choice.timeout,
            attempts=self.jobs.attempts,  # the Hub reruns a failed run itself
            labels=label,
            namespace=self.jobs.namespace,
        )
        log.info("started job %s for %s on %s, timeout %s: %s", info.id, job.key,
                 choice.flavor, choice.timeout, choice.reason)  # fmt: skip
        return info.id

    def poll(self, job: AuditJob, handle: str) -> Outcome | None:
        """None while the job runs; the downloaded, validated report once it completed."""
        info = self.call(f"inspect_job {handle}", self.api.inspect_job, job_id=handle,
                         namespace=self.jobs.namespace)  # fmt: skip
        stage = str(getattr(info.status.stage, "value", info.status.stage))
        if stage in TERMINAL_FAILURES:
            why = f"job {handle} ended {stage}: {info.status.message or ''}"
            return Outcome(None, why + self.log_tail(handle))
        if stage != "COMPLETED":
            return None
        local = self.work_dir / report_path(*job.target)
        src = report_path(*job.target) + "/report.json"
        try:
            self.download(self.results_repo, src, local)
        except FileNotFoundError:
            refused = self.refusal(job)
            if refused is None:
                raise
            return Outcome(None, f"job {handle}: audit refused its input: {refused}", retry=False)
        return check_report(local, job.key)

    def refusal(self, job: AuditJob) -> str | None:
        """The error line a job uploaded when its audit exited 2, or None."""
        if self.read_result is None:
            return None
        path = f"{report_path(*job.target)}/{USER_ERROR_FILE}"
        text = self.read_result(self.results_repo, path)
        return None if text is None else (text.strip() or "exit 2, no error line")

    def log_tail(self, handle: str) -> str:
        """The last lines of a job's log (`fetch_job_logs(tail=...)`), as text to append to its
        error; empty when none are kept or the logs cannot be read."""
        lines = self.jobs.log_tail_lines
        if lines == 0:
            return ""
        try:
            logs = list(self.api.fetch_job_logs(job_id=handle, namespace=self.jobs.namespace,
                                                tail=lines, follow=False))  # fmt: skip
        except Exception as exc:  # the error says why the job failed; its log is a bonus
            log.warning("no log tail for job %s: %s", handle, exc)
            return ""
        text = "\n".join(line.rstrip("\n") for line in logs[-lines:])
        return f"\n--- last {lines} log lines ---\n{text[-LOG_TAIL_CHARS:]}" if text else ""


def job_token(jobs: JobsConfig, environ: dict[str, str]) -> str | None:
    """The token a job receives when `jobs.token_env` names one, else None (the bot's own).

    Raises:
        UserError: `jobs.token_env` names a variable that is unset or empty.
    """
    if jobs.token_env is None:
        return None
    value = environ.get(jobs.token_env, "").strip()
    if not value:
        raise UserError(
            f"jobs.token_env names {jobs.token_env}, which is not set: export the job's token "
            "in it (docs/bot.md, Jobs token) or remove jobs.token_env"
        )
    return value


def make_backend(cfg: BotConfig, hub, token: str | None) -> Backend:
    """The configured backend (the job token is read from the environment here, once)."""
    import os

    if cfg.backend == "local":
        return LocalBackend(cfg)

    def download(repo: str, path_in_repo: str, local: Path) -> Path:
        text = hub.read_text(repo, path_in_repo, "main", repo_type="dataset")
        if text is None:
            raise FileNotFoundError(f"{repo}: {path_in_repo} is missing")
        local.mkdir(parents=True, exist_ok=True)
        (local / "report.json").write_text(text, encoding="utf-8")
        return local

    def read_config(repo: str, sha: str) -> dict | None:
        from depthcard.schemas.json_text import loads_bounded

        try:
            text = hub.read_text(repo, "config.json", sha)
            data = loads_bounded(text) if text is not None else None
        except ValueError:  # not UTF-8 (UnreadableFile), malformed, a huge integer, too deep
            return None  # unreadable counts as unknown: the parameter-budget rule decides
        return data if isinstance(data, dict) else None

    def ship() -> str:
        root = checkout_root()
        if root is None:
            raise UserError(
                "jobs.install is not set and depthcard runs from a wheel, not a checkout: "
                "pin what the job installs in jobs.install (a git URL at a commit sha, or a .whl)"
            )
        return ship_wheel(hub, cfg.results_repo, root)

    def read_result(repo: str, path_in_repo: str) -> str | None:
        return hub.read_text(repo, path_in_repo, "main", repo_type="dataset")

    narrow = job_token(cfg.jobs, dict(os.environ)) if cfg.jobs is not None else None
    return JobsBackend(cfg, hub.api, token, download, read_config, ship, hub.call,
                       read_result=read_result, job_token=narrow)  # fmt: skip

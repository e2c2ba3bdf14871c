"""The bot's configuration: one YAML file, read once at the entry point.

Every field is documented here, so `docs/bot.md`, the example config and `--help` say the
same thing. Secrets (the Hub tokens, the webhook secret) are never part of this file: the bot's
token is huggingface_hub's own (`HF_TOKEN`, else the `hf auth login` one), a job's narrower
token is read from the variable `jobs.token_env` names, and the webhook secret comes from
`DEPTHCARD_WEBHOOK_SECRET`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from depthcard.schemas._base import Strict
from depthcard.schemas.report import AuditConfig

BOT_CONFIG_VERSION = "1"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9][\w.-]*$")
# A requirement pinned to one build: a git URL at a full commit sha, or a wheel file.
_PINNED = re.compile(r"(@[0-9a-f]{40}(#.*)?$)|(\.whl$)")


def job_flavours() -> list[str]:
    """The HF Jobs hardware flavours the installed huggingface_hub knows (`JobHardware`, which
    it keeps in sync with the Hub API)."""
    from huggingface_hub import JobHardware

    return [h.value for h in JobHardware]


class FlavourRule(Strict):
    """A Hub Jobs hardware flavour for models up to a parameter count."""

    max_parameters: int = Field(ge=1, description="Largest parameter count this flavour takes.")
    flavor: str = Field(
        min_length=1, description="HF Jobs flavour as huggingface_hub's JobHardware spells it."
    )

    @field_validator("flavor")
    @classmethod
    def _known_flavour(cls, value: str) -> str:
        known = job_flavours()
        if value not in known:
            raise ValueError(
                f"unknown HF Jobs flavour {value!r}; huggingface_hub knows: {', '.join(known)}"
            )
        return value


class JobsConfig(Strict):
    """How the `hf-jobs` backend starts an audit on Hugging Face Jobs."""

    namespace: str = Field(description="User or organisation the jobs run under (and bill).")
    image: str = Field(
        "pytorch/pytorch:2.6.0-cuda12.4-cudnn9-runtime", description="Docker image of the job."
    )
    install: str | None = Field(
        None,
        description="What the job pip-installs, pinned to one build: a git URL at a full "
        "commit sha (`depthcard @ git+https://...@<40 hex>`) or a wheel (`.whl` path or URL). "
        "None = a wheel built from the bot's own checkout, uploaded to results_repo under "
        "`wheels/<source hash>/` (docs/bot.md).",
    )
    timeout: str = Field(
        "2h", description="Job timeout as run_job reads it: a number of seconds, or a number "
        "with s, m, h or d (90m, 2h, 1.5d); checked when the config loads.",
    )  # fmt: skip
    poll_seconds: float = Field(
        30.0, gt=0, description="Seconds between inspect_job calls on running jobs, between rounds."
    )
    attempts: int = Field(
        2, ge=1, le=10,
        description="run_job `attempts`: runs of one job, the first included, before the Hub "
        "reports it failed (the bot's max_attempts then counts whole jobs).",
    )  # fmt: skip
    token_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable holding the token the job gets as "
        "HF_TOKEN, instead of the bot's own: a fine-grained token that can read the audited "
        "models and write only to results_repo (docs/bot.md, Jobs token). Unset: the job gets "
        "the bot's token.",
    )
    log_tail_lines: int = Field(
        40, ge=0, description="Last lines of a failed job's log kept with its error."
    )
    flavours: list[FlavourRule] = Field(
        default_factory=lambda: [
            FlavourRule(max_parameters=4_000_000_000, flavor="a10g-large"),
            FlavourRule(max_parameters=16_000_000_000, flavor="a100-large"),
            # 2 × 141 GB: an 80B model in bfloat16 (160 GB) with room for activations.
            FlavourRule(max_parameters=80_000_000_000, flavor="h200x2"),
        ],
        description="Flavour per parameter budget, smallest first; the first that fits wins.",
    )

    @field_validator("timeout")
    @classmethod
    def _timeout_as_run_job_reads_it(cls, value: str) -> str:
        # huggingface_hub's _create_job_spec: a last character in s/m/h/d is the unit, the rest
        # float(); anything else int(). "abc" would only fail when the paid job is started.
        if not re.fullmatch(r"\d+(\.\d+)?[smhd]?", value):
            raise ValueError(f"timeout {value!r} is not a duration run_job reads (90m, 2h, 3600)")
        factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(value[-1])
        seconds = float(value[:-1]) * factor if factor else int(value)
        if int(seconds) < 1:
            raise ValueError(f"timeout {value!r} is under one second")
        return value

    @field_validator("install")
    @classmethod
    def _pinned(cls, value: str | None) -> str | None:
        if value is not None and not _PINNED.search(value.strip()):
            raise ValueError(
                f"jobs.install {value!r} is not pinned: give a git URL at a full commit sha "
                "(...@<40 hex>) or a .whl, or leave it out to ship the bot's own build"
            )
        return value


class WebhookConfig(Strict):
    """Where `depthcard serve` listens. The secret comes from DEPTHCARD_WEBHOOK_SECRET."""

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8787, ge=0, le=65535, description="TCP port (0 = any free port).")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger payloads get 413.")


class BotConfig(Strict):
    """Everything the watcher, the publisher and the webhook server need to know."""

    schema_version: Literal["1"] = Field(BOT_CONFIG_VERSION, description="Config file version.")
    organizations: list[str] = Field(
        default_factory=list,
        description="Organisations (or users) to watch; empty = every new model on the Hub.",
    )
    parameter_budget: int = Field(
        16_000_000_000, ge=1, description="Children with more parameters are skipped."
    )
    licence_allow_list: list[str] = Field(
        default_factory=list,
        description="Licences (card `license`) the bot audits; empty = any licence.",
    )
    cap_per_org_per_day: int = Field(
        3, ge=0, description="Most pull requests the bot opens per organisation per UTC day."
    )
    dry_run: bool = Field(
        True, description="Log the pull request the bot would open instead of opening it."
    )
    backend: Literal["local", "hf-jobs"] = Field(
        "local", description="Where audits run: a subprocess here, or Hugging Face Jobs."
    )
    audit_command: list[str] = Field(
        default_factory=lambda: ["depthcard", "audit"],
        min_length=1,
        description="Command of the local backend; BASE CHILD --out DIR are appended.",
    )
    audit: AuditConfig = Field(
        default_factory=AuditConfig,
        description="Settings of every audit the bot runs: `AuditConfig`, the fields and "
        "defaults behind `depthcard audit`'s flags (e.g. `{max_prompts: 64}`); the bot passes "
        "them as those flags, so only fields that have a flag may differ from the default.",
    )
    jobs: JobsConfig | None = Field(None, description="Settings of the hf-jobs backend.")
    results_repo: str | None = Field(
        None, description="Dataset repo holding reports/{org}/{model}/{child revision}/."
    )
    keep_state_in_results_repo: bool = Field(
        False, description="Download the state file from results_repo and commit it back."
    )
    space_url: str = Field(
        "https://huggingface.co/spaces/depthcard/depthcard",
        description="The depthcard Space; cards link to its page for the report.",
    )
    opt_out: list[str] = Field(
        default_factory=list,
        description="Repos (org/name) or whole organisations that never get a pull request.",
    )
    hub_user: str | None = Field(
        None, description="Account the bot posts as; only its PRs count as the bot's own."
    )
    state_path: Path = Field(Path("depthcard-state.sqlite"), description="SQLite state file.")
    work_dir: Path = Field(Path("depthcard-work"), description="Report folders of local audits.")
    poll_limit: int = Field(
        500,
        ge=1,
        description="Models read by the first poll (no cursor yet); later polls page back to "
        "the cursor, however many arrived since.",
    )
    server_filters: bool = Field(
        True,
        description="Ask list_models for candidates only: safetensors, not gated, "
        "`pipeline_tag`, at most parameter_budget parameters. The bot re-checks every rule, "
        "and webhook events and re-checks are not filtered.",
    )
    pipeline_tag: str | None = Field(
        "text-generation",
        description="Task the polled models must have on the Hub (None = any, e.g. for "
        "image-text-to-text wrappers of a language model); used with server_filters.",
    )
    recheck_limit: int = Field(50, ge=0, description="Known children re-checked per run.")
    max_parallel: int = Field(1, ge=1, description="Audits running at once.")
    max_attempts: int = Field(3, ge=1, description="Attempts before an audit stays failed.")
    retry_base_seconds: float = Field(60.0, ge=0, description="Backoff base between attempts.")
    http_timeout_seconds: float = Field(30.0, gt=0, description="Timeout of each Hub request.")
    hub_retries: int = Field(4, ge=0, description="Retries of a Hub read on 429/5xx/timeouts.")
    lease_seconds: float = Field(3600.0, gt=0, description="How long a claimed audit is held.")
    interval_seconds: float = Field(600.0, gt=0, description="Pause between `watch` rounds.")
    webhook: WebhookConfig = Field(default_factory=WebhookConfig, description="The webhook server.")
    benchmark_repo: str | None = Field(
        None,
        description="Benchmark dataset of depthcard's prompt sets (`depthcard publish-benchmark`) "
        "that .eval_results entries name; needed by eval_results.",
    )
    eval_results: bool = Field(
        False,
        description="Each PR also adds .eval_results/depthcard.yaml naming benchmark_repo. Off "
        "by default: the Hub shows .eval_results entries only for a benchmark it has "
        "registered, and until the depthcard benchmark is, the file would show nowhere.",
    )
    contact: str | None = Field(
        None,
        description="Where owners reach the people behind the bot (URL or @handle), named in "
        "every PR; None = the Space's discussions.",
    )
    card_standard_url: str | None = Field(
        None,
        description="Link to the card standard in PRs; None = docs/card-standard.md in the Space "
        "repo (the deploy ships it).",
    )

    @field_validator("organizations")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _NAMESPACE.match(v)]
        if bad:
            raise ValueError(f"not organisation names: {bad}")
        return value

    @field_validator("opt_out")
    @classmethod
    def _opt_out(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not (_REPO.match(v) or _NAMESPACE.match(v))]
        if bad:
            raise ValueError(f"opt_out entries must be org or org/name: {bad}")
        return value

    @field_validator("results_repo", "benchmark_repo")
    @classmethod
    def _results_repo(cls, value: str | None) -> str | None:
        if value is not None and not _REPO.match(value):
            raise ValueError(f"must be org/name, got {value!r}")
        return value

    @model_validator(mode="after")
    def _backend_needs(self) -> BotConfig:
        if self.backend == "hf-jobs" and (self.jobs is None or self.results_repo is None):
            raise ValueError("backend hf-jobs needs `jobs` and `results_repo`")
        if self.keep_state_in_results_repo and self.results_repo is None:
            raise ValueError("keep_state_in_results_repo needs results_repo")
        if self.eval_results and self.benchmark_repo is None:
            raise ValueError("eval_results needs benchmark_repo")
        return self

    def opted_out(self, repo_id: str) -> bool:
        """True when `repo_id` or its organisation is on the opt-out list."""
        return repo_id in self.opt_out or repo_id.split("/", 1)[0] in self.opt_out


def load_bot_config(path: Path | None) -> BotConfig:
    """The config from a YAML file, or the defaults when `path` is None.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not YAML, or fails validation (pydantic's ValidationError).
    """
    import yaml

    if path is None:
        return BotConfig()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config fields")
    return BotConfig.model_validate(data)

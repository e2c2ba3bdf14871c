"""The token comes from huggingface_hub's own lookup, as the `hf` tools do: HF_TOKEN first, then
the stored login of `hf auth login` (HF_HOME/token), so a maintainer who logged in needs no
variable. huggingface_hub reads HF_HOME when it is imported, hence the subprocesses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.bot_helpers import CHILD, TOKEN, add_pair, bot_env, depthcard, write_config
from tests.hub_double import HubDouble
from tests.test_bot_publish_cli import _report_dir

LOOKUP = "from huggingface_hub import get_token; print(get_token())"


def lookup(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", LOOKUP], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_cli_takes_its_token_from_huggingface_hubs_lookup():
    import huggingface_hub

    from depthcard.cli import main

    assert main.get_token is huggingface_hub.get_token


def test_the_lookup_order_is_env_then_stored_login_then_none(tmp_path):
    with HubDouble() as double:
        env = bot_env(double, tmp_path)
    env.pop("HF_TOKEN")
    assert lookup(env) == "None"
    home = tmp_path / "hf-home"
    home.mkdir()
    (home / "token").write_text("hf_stored_login\n", encoding="utf-8")
    assert lookup(env) == "hf_stored_login"
    assert lookup({**env, "HF_TOKEN": "hf_from_env"}) == "hf_from_env"


@pytest.mark.slow
def test_publish_opens_the_pr_with_the_stored_login(tmp_path):
    with HubDouble(token=TOKEN) as hub:
        base_sha, child_sha = add_pair(hub)
        folder = _report_dir(tmp_path, base_sha, child_sha)
        env = bot_env(hub, tmp_path)
        env.pop("HF_TOKEN")  # only `hf auth login`'s file
        (tmp_path / "hf-home").mkdir(exist_ok=True)
        (tmp_path / "hf-home" / "token").write_text(TOKEN, encoding="utf-8")
        cfg = ["--config", str(write_config(tmp_path))]
        real = depthcard(["publish", str(folder), "--repo", CHILD, *cfg], env)
        assert real.returncode == 0 and "opened PR #1" in real.stdout, real.stderr
        assert f"Bearer {TOKEN}" in hub.auth_headers
        assert TOKEN not in real.stdout + real.stderr

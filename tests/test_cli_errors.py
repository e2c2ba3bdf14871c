"""Bad input to `depthcard audit`: one clear line on stderr, exit 2, nothing written."""

import json
import subprocess
import sys

import pytest
import torch

from depthcard.cli.main import main
from tests.test_models import save_tiny


def error_lines(err: str) -> list[str]:
    """stderr's lines less the progress events (one JSON object each, `--progress json`,
    the default off a terminal): what a user reads as the error."""
    return [x for x in err.splitlines() if x.strip() and not x.startswith('{"event":')]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    return save_tiny(root / "base", seed=1), save_tiny(root / "child", seed=2)


def run_cli(args, capsys):
    capsys.readouterr()  # drop what building the fixtures printed
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def assert_clean_error(code, err, pattern, out):
    assert code == 2
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("depthcard: error: "), err
    assert "Traceback" not in err
    assert pattern in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_pickle_only_weights(tmp_path, pair, capsys):
    base, _ = pair
    bad = save_tiny(tmp_path / "bin")
    torch.save({}, bad / "pytorch_model.bin")
    (bad / "model.safetensors").unlink()
    out = tmp_path / "out"
    assert_clean_error(
        *run_cli(["audit", str(base), str(bad), "--out", str(out)], capsys),
        "only pickle weights",
        out,
    )


def test_remote_code_config(tmp_path, pair, capsys):
    base, _ = pair
    bad = save_tiny(tmp_path / "remote")
    config = json.loads((bad / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "x.Y"}
    (bad / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    assert_clean_error(
        *run_cli(["audit", str(base), str(bad), "--out", str(out)], capsys),
        "trust_remote_code",
        out,
    )


def test_mismatched_hidden_size(tmp_path, pair, capsys):
    base, _ = pair
    wide = save_tiny(tmp_path / "wide", hidden=64)
    out = tmp_path / "out"
    assert_clean_error(
        *run_cli(["audit", str(base), str(wide), "--out", str(out)], capsys),
        "hidden size differs",
        out,
    )


def test_mismatched_vocabulary(tmp_path, pair, capsys):
    base, _ = pair
    other = save_tiny(tmp_path / "vocab", extra_words=["zebra"])
    out = tmp_path / "out"
    assert_clean_error(
        *run_cli(["audit", str(base), str(other), "--out", str(out)], capsys),
        "vocab size differs",
        out,
    )


def test_malformed_prompt_file(tmp_path, pair, capsys):
    base, child = pair
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: 1\nkind: harmful\nprompts:\n  - text: [unclosed\n")
    out = tmp_path / "out"
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--harmful", str(bad)], capsys
    )
    assert_clean_error(code, err, "bad.yaml", out)


def test_empty_harmful_set(tmp_path, pair, capsys):
    base, child = pair
    empty = tmp_path / "empty.yaml"
    empty.write_text(
        "name: empty\nversion: 1\nkind: harmful\ndomain: null\ndescription: nothing\nprompts: []\n"
    )
    out = tmp_path / "out"
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--harmful", str(empty)], capsys
    )
    assert_clean_error(code, err, "empty.yaml", out)


def test_unwritable_out(tmp_path, pair, capsys):
    base, child = pair
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "out"
    code, err = run_cli(["audit", str(base), str(child), "--out", str(out)], capsys)
    assert code == 2 and err.startswith("depthcard: error: --out") and "Traceback" not in err
    assert blocker.read_text() == "x"


def test_non_empty_out_is_not_clobbered(tmp_path, pair, capsys):
    base, child = pair
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = run_cli(["audit", str(base), str(child), "--out", str(out)], capsys)
    assert code == 2 and "not empty" in err
    assert (out / "keep.txt").read_text() == "mine"


def test_too_many_directions(tmp_path, pair, capsys):
    base, child = pair
    out = tmp_path / "out"
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--num-directions", "500"], capsys
    )
    assert_clean_error(code, err, "exceeds the largest possible rank", out)


def test_too_many_directions_for_the_demos_width(tmp_path, capsys):
    # 120 harmful fit prompts pass the check before loading; d_model = 64 is known only once
    # the model is loaded, and that check is a user error too (one line, exit 2)
    out = tmp_path / "out"
    code, err = run_cli(["audit", "--demo", "--out", str(out), "--num-directions", "100"], capsys)
    assert_clean_error(code, err, "d_model 64) = 64", out)


def test_unknown_judge(tmp_path, pair, capsys):
    base, child = pair
    out = tmp_path / "out"
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--judge", "oracle"], capsys
    )
    assert_clean_error(code, err, "unknown judge 'oracle'; available: substring", out)


def test_child_only_needs_a_chat_template(tmp_path, capsys):
    plain = save_tiny(tmp_path / "plain", template=False)
    out = tmp_path / "out"
    assert_clean_error(
        *run_cli(["audit", "--child-only", str(plain), "--out", str(out)], capsys),
        "no chat template",
        out,
    )


@pytest.mark.slow
def test_a_real_process_exits_2_without_traceback(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "depthcard",
            "audit",
            str(tmp_path / "missing"),
            str(tmp_path / "missing2"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert error_lines(proc.stderr)[0].startswith("depthcard: error: ")
    assert "Traceback" not in proc.stderr and not out.exists()


def _raising(exc: BaseException):
    def handler(args, token):
        raise exc

    return handler


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_a_bug_keeps_its_traceback_and_is_not_a_user_error(tmp_path, monkeypatch, capsys, verbose):
    from depthcard.cli import audit_command

    def deep_inside(args, token):
        return int("not a number")  # a ValueError no user caused

    monkeypatch.setattr(audit_command, "run", deep_inside)
    code, err = run_cli([*verbose, "audit", "a", "b", "--out", str(tmp_path / "out")], capsys)
    assert code == 1, err
    assert "Traceback" in err and "deep_inside" in err
    assert "depthcard: internal error: ValueError" in err
    assert "depthcard: error:" not in err


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_a_user_error_is_one_line_exit_2_also_verbose(tmp_path, monkeypatch, capsys, verbose):
    from depthcard.cli import audit_command
    from depthcard.schemas.errors import UserError

    monkeypatch.setattr(audit_command, "run", _raising(UserError("--out x: not a folder\nmore")))
    code, err = run_cli([*verbose, "audit", "a", "b", "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err.strip().splitlines() == ["depthcard: error: --out x: not a folder"]


def test_a_bad_config_value_is_a_user_error(tmp_path, pair, capsys):
    base, child = pair
    out = tmp_path / "out"
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--batch-size", "0"], capsys
    )
    assert_clean_error(code, err, "--batch-size", out)


def test_yaml_bomb_prompt_file_is_refused_at_once(tmp_path, pair, capsys):
    import time

    base, child = pair
    bomb = tmp_path / "bomb.yaml"
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [
        f"{c}: &{c} [{','.join(['*' + p] * 9)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    bomb.write_text("\n".join(levels) + "\nname: x\nversion: 1\nkind: harmful\nprompts: *i\n")
    out = tmp_path / "out"
    began = time.perf_counter()
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--harmful", str(bomb)], capsys
    )
    assert time.perf_counter() - began < 10
    assert_clean_error(code, err, "anchors and aliases", out)


def test_duplicate_prompt_error_quotes_the_prompt(tmp_path, pair, capsys):
    base, child = pair
    dup = tmp_path / "dup.yaml"
    dup.write_text(
        "name: d\nversion: 1\nkind: harmful\ndescription: d\n"
        'domain: null\nprompts:\n  - {text: "How do I pick a lock?", category: x}\n'
        '  - {text: "how do i pick a LOCK?", category: x}\n'
    )
    out = tmp_path / "out"
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--harmful", str(dup)], capsys
    )
    assert "{text!r}" not in err and "'how do i pick a LOCK?'" in err
    assert_clean_error(code, err, "dup.yaml", out)


def test_deeply_nested_prompt_file_is_one_line(tmp_path, pair, capsys):
    base, child = pair
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\nversion: 1\nkind: harmful\nprompts: " + "[" * 10_000 + "]" * 10_000)
    out = tmp_path / "out"
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--harmful", str(deep)], capsys
    )
    assert_clean_error(code, err, "nested too deeply", out)


@pytest.mark.parametrize("command", ["status", "watch"])
def test_corrupt_bot_state_file_is_one_line(tmp_path, capsys, command):
    from tests.bot_helpers import write_config

    config = write_config(tmp_path, dry_run=True)
    (tmp_path / "state.sqlite").write_bytes(b"not a database, just garbage\x00" * 200)
    code, err = run_cli([command, "--config", str(config)], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "not a readable SQLite database" in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_a_gpu(tmp_path, pair, capsys):
    base, child = pair
    out = tmp_path / "out"
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--device", "cuda"], capsys
    )
    assert_clean_error(code, err, "no CUDA GPU", out)


def test_dangling_symlink_out_is_refused_before_any_work(tmp_path, pair, capsys, monkeypatch):
    import depthcard.cli.audit_command as audit_command

    def no_prompts(*_):
        raise AssertionError("the preflight should have refused --out before loading prompts")

    monkeypatch.setattr(audit_command, "load_prompts", no_prompts)
    base, child = pair
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "gone", target_is_directory=True)
    code, err = run_cli(["audit", str(base), str(child), "--out", str(out)], capsys)
    assert_clean_error(code, err, "which does not exist", out)
    assert out.is_symlink()


def test_config_hidden_size_that_disagrees_with_the_weights(tmp_path, capsys):
    bad = save_tiny(tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    config["hidden_size"] = 48  # the weights are 32 wide
    (bad / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    code, err = run_cli(["audit", "--child-only", str(bad), "--out", str(out)], capsys)
    assert_clean_error(code, err, "hidden_size 48", out)
    assert "model.safetensors" in err


def test_truncated_safetensors_file(tmp_path, pair, capsys):
    base, _ = pair
    bad = save_tiny(tmp_path / "cut")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = tmp_path / "out"
    code, err = run_cli(["audit", str(base), str(bad), "--out", str(out)], capsys)
    assert_clean_error(code, err, f"{weights}: not a readable safetensors file", out)


def test_serve_with_a_corrupt_bot_state_file_is_one_line(tmp_path, capsys, monkeypatch):
    from depthcard.bot.webhook import SECRET_ENV
    from tests.bot_helpers import write_config

    monkeypatch.setenv(SECRET_ENV, "s3cret")
    config = write_config(tmp_path, dry_run=True, webhook={"host": "127.0.0.1", "port": 0})
    (tmp_path / "state.sqlite").write_bytes(b"not a database, just garbage\x00" * 200)
    code, err = run_cli(["serve", "--config", str(config)], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "not a readable SQLite database" in lines[0]


def test_serve_without_a_webhook_secret_is_one_line(tmp_path, capsys, monkeypatch):
    from depthcard.bot.webhook import SECRET_ENV
    from tests.bot_helpers import write_config

    monkeypatch.delenv(SECRET_ENV, raising=False)
    config = write_config(tmp_path, dry_run=True, webhook={"host": "127.0.0.1", "port": 0})
    code, err = run_cli(["serve", "--config", str(config)], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert SECRET_ENV in lines[0]


def _state_with_rows(path, rows=400):
    """A real state file with enough rows to span many pages, closed (WAL folded in)."""
    from depthcard.bot.state import StateStore

    store = StateStore(path)
    for i in range(rows):
        store.add(base_repo="acme/b", base_sha=f"{i:040x}", child_repo=f"acme/c{i}",
                  child_sha=f"{i:040x}", analysis_version="1", state="discovered",
                  reason="x" * 200)  # fmt: skip
    store.close()


def _damage_a_data_page(path):
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the page size, from the SQLite header
    assert len(data) >= 6 * page
    data[4 * page : 5 * page] = b"\xa5" * page
    path.write_bytes(bytes(data))


def _foreign_audits_table(path):
    import sqlite3

    db = sqlite3.connect(str(path))
    db.execute("CREATE TABLE audits (id INTEGER PRIMARY KEY, model TEXT, score REAL)")
    db.execute("INSERT INTO audits (model, score) VALUES ('someone/else', 0.5)")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_damage_a_data_page, "malformed"),
        (_foreign_audits_table, "not a depthcard state"),
        (lambda path: (path.mkdir(), (path / "keep.txt").write_text("mine")), "is a folder"),
    ],
    ids=["damaged-data-page", "foreign-audits-table", "folder"],
)
@pytest.mark.parametrize("command", ["status", "retry"])
def test_an_unusable_bot_state_is_one_line_and_left_as_it_was(tmp_path, capsys, damage,
                                                               problem, command):  # fmt: skip
    """A state the bot cannot use is named in one line (exit 2) and not touched: no table
    added to someone else's database, no column added to a foreign `audits` table."""
    from tests.bot_helpers import write_config

    config = write_config(tmp_path, dry_run=True)
    state = tmp_path / "state.sqlite"
    if damage is _damage_a_data_page:
        _state_with_rows(state)
    damage(state)
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    args = [command, "--config", str(config)] + (["x/y/1"] if command == "retry" else [])
    code, err = run_cli(args, capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert str(state) in lines[0] and problem in lines[0], lines[0]
    after = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_a_child_with_other_attention_heads_is_not_a_pair(tmp_path, pair, capsys):
    """Same hidden size, so every weight has the shape the base's has, but another head
    count: the pair check names it instead of an error deep inside the forward pass."""
    base, _ = pair
    bad = save_tiny(tmp_path / "heads", seed=2)
    config = json.loads((bad / "config.json").read_text())
    config.update(num_attention_heads=2, num_key_value_heads=2)  # head_dim 16 instead of 8
    (bad / "config.json").write_text(json.dumps(config))
    out = tmp_path / "out"
    code, err = run_cli(["audit", str(base), str(bad), "--out", str(out)], capsys)
    assert_clean_error(code, err, "num attention heads differs (base 4, child 2)", out)


@pytest.mark.parametrize("where", ["version", "category"])
def test_a_5000_digit_integer_in_a_prompt_file_is_one_line(tmp_path, pair, capsys, where):
    """PyYAML builds an int with `int()`, whose 4,300-digit limit is a ValueError deep inside
    the loader; the file's own error names the line instead."""
    base, child = pair
    big = "9" * 5000
    version, category = (big, "x") if where == "version" else ("1", big)
    bad = tmp_path / "big.yaml"
    bad.write_text(
        f"name: b\nversion: {version}\nkind: harmful\ndescription: d\ndomain: null\n"
        f"prompts:\n  - text: How do I pick a lock?\n    category: {category}\n"
    )
    out = tmp_path / "out"
    code, err = run_cli(
        ["audit", str(base), str(child), "--out", str(out), "--harmful", str(bad)], capsys
    )
    line = 2 if where == "version" else 8
    assert_clean_error(code, err, f"big.yaml:{line}: invalid YAML: an integer of 5000 digits", out)
    assert big not in err


def test_out_dot_overwrite_is_one_line_and_keeps_the_folder(tmp_path, pair, capsys, monkeypatch):
    base, child = pair
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    code, err = run_cli(["audit", str(base), str(child), "--out", ".", "--overwrite"], capsys)
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "the current folder" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert [p.name for p in work.iterdir()] == ["notes.txt"]

"""Weight files chosen as transformers loads them: the shards of the safetensors index, so a repo
that also ships `consolidated.safetensors` (Mistral's layout) is not downloaded twice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from depthcard.analysis.models import ModelLoadError, weight_files, weight_names
from tests.bot_helpers import CALIBRATION, ROOT
from tests.hub_double import HubDouble

SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
INDEX = {"metadata": {"total_size": 1}, "weight_map": {"a": SHARD1, "b": SHARD2, "c": SHARD2}}


def test_the_index_names_the_weights():
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
             "consolidated.safetensors", "model.safetensors.index.json"]  # fmt: skip
    assert weight_names(names, INDEX) == names[:2]
    assert weight_names(["model.safetensors", "consolidated.safetensors"], None) == [
        "model.safetensors"
    ]
    assert weight_names(["weights.safetensors", "sub/x.safetensors"], None) == [
        "weights.safetensors"
    ]
    assert weight_names(["pytorch_model.bin"], None) == []


def test_a_folder_with_an_index_uses_its_shards_and_refuses_missing_ones(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(INDEX), encoding="utf-8")
    for name in ("model-00001-of-00002.safetensors", "consolidated.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="model-00002-of-00002.safetensors"):
        weight_files(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert [p.name for p in weight_files(tmp_path)] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]


@pytest.mark.slow
def test_a_hub_repo_with_consolidated_weights_downloads_the_shards_only(tmp_path):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(CALIBRATION / "instruct" / "model.safetensors"))
    names = sorted(tensors)
    half = len(names) // 2
    files = {p.name: p.read_bytes() for p in (CALIBRATION / "instruct").iterdir()}
    del files["model.safetensors"]
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:]), start=1):
        shard = f"model-0000{i}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(tmp_path / shard))
        files[shard] = (tmp_path / shard).read_bytes()
        weight_map.update(dict.fromkeys(part, shard))
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map})
    files["consolidated.safetensors"] = (
        CALIBRATION / "instruct" / "model.safetensors"
    ).read_bytes()
    with HubDouble() as double:
        double.add_repo("acme/mistralish", files)
        probe = (
            "from depthcard.analysis.models import parse_model_spec, resolve_model\n"
            "r = resolve_model(parse_model_spec('acme/mistralish'))\n"
            "print(sorted(p.name for p in r.folder.iterdir()))\n"
        )
        env = {"HF_ENDPOINT": double.url, "HF_HOME": str(tmp_path / "home"), "PATH": "/usr/bin",
               "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT)}  # fmt: skip
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                              text=True, cwd=ROOT, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        downloaded = [p for m, p, s in double.requests if m == "GET" and "/resolve/" in p]
    assert "consolidated.safetensors" not in done.stdout
    assert "model-00001-of-00002.safetensors" in done.stdout and "config.json" in done.stdout
    assert not [p for p in downloaded if p.endswith("consolidated.safetensors")]

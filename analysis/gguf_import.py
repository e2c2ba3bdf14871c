"""Convert a GGUF checkpoint into a safetensors model folder depthcard can audit.

GGUF files (llama.cpp's format) hold no pickled code, and transformers dequantizes them to
full precision on load. depthcard itself only audits safetensors folders, so a GGUF model is
converted once into a cache folder and audited from there.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from depthcard.schemas.errors import UserError

log = logging.getLogger(__name__)


def default_cache() -> Path:
    """Where converted models live: $DEPTHCARD_CACHE, else ~/.cache/depthcard."""
    return Path(os.environ.get("DEPTHCARD_CACHE", Path.home() / ".cache" / "depthcard"))


def convert_gguf(gguf_file: Path, out: Path) -> Path:
    """Dequantize `gguf_file` into a float32 safetensors folder at `out` (atomic); returns it.

    Raises:
        UserError: the file does not exist or transformers cannot read it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf_file.is_file():
        raise UserError(f"{gguf_file}: no such GGUF file")
    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UserError(f"{gguf_file}: transformers cannot read it ({exc})") from exc
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are already dequantized
    model = type(quantized)(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s to %s", gguf_file, out)
    return out


def cached_conversion(gguf_file: Path, cache: Path | None = None) -> Path:
    """The converted folder for `gguf_file`, converting it on first use."""
    out = (cache or default_cache()) / gguf_file.stem
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    return convert_gguf(gguf_file, out)

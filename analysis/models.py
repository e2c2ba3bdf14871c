"""Safe model loading and layer discovery.

Security rules (docs/design.md): never `trust_remote_code`, safetensors only, Hub revisions
pinned by sha. Every refusal is a `ModelLoadError` whose message says why and what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from depthcard.schemas.errors import UserError

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HASHED_SUFFIXES = (".json", ".safetensors", ".jinja", ".model", ".txt")
WEIGHTS_INDEX = "model.safetensors.index.json"
# What a snapshot takes besides the weights: config, tokenizer, chat template, generation config.
_SIDE_FILES = ("*.json", "*.jinja", "tokenizer.model", "*.txt")
# Candidate attribute paths of the decoder block list, most common first.
LAYER_PATHS = (
    "model.layers",  # Llama, Mistral, Qwen2/3, Gemma 1-3 text, Phi-3
    "model.language_model.layers",  # Gemma 3 / multimodal wrappers
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "transformer.h",  # GPT-2, GPT-J, Falcon
    "model.decoder.layers",  # OPT
)
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The input embedding, whose width is config.json's hidden_size, under its common names.
_EMBEDDING_NAMES = (
    "embed_tokens.weight",  # Llama, Mistral, Qwen, Gemma, OPT
    "wte.weight",  # GPT-2, GPT-J
    "embed_in.weight",  # GPT-NeoX, Pythia
    "word_embeddings.weight",  # Falcon, Bloom
)


class ModelLoadError(UserError):
    """A model that depthcard refuses to load, with the reason."""


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: a local folder, or a Hub repo at an optional revision."""

    text: str
    path: Path | None
    repo_id: str | None
    revision: str | None


@dataclass(frozen=True)
class ResolvedModel:
    """A model folder on disk, checked and pinned."""

    folder: Path
    source: str  # "hub" | "local"
    repo_id: str | None
    revision: str | None
    content_sha256: str | None
    config: dict


def parse_model_spec(text: str) -> ModelSpec:
    """Parse `BASE`/`CHILD` arguments: an existing folder, or `org/name[@revision]`."""
    candidate = Path(text).expanduser()
    if candidate.exists():
        if not candidate.is_dir():
            raise ModelLoadError(f"{text}: is a file; pass the model's folder")
        return ModelSpec(text, candidate.resolve(), None, None)
    repo, _, revision = text.partition("@")
    if not _REPO_ID.match(repo):
        raise ModelLoadError(f"{text}: no such folder, and not a Hub id of the form org/name[@rev]")
    return ModelSpec(text, None, repo, revision or None)


def read_config(folder: Path) -> dict:
    """config.json of a model folder, refusing remote code."""
    path = folder / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no config.json; not a transformers model folder")
    config = _read_index(path)
    if "auto_map" in config:
        raise ModelLoadError(
            f"{folder}: config.json has auto_map, so the model needs remote code; "
            "depthcard never runs trust_remote_code"
        )
    return config


def weight_names(names: list[str], index: dict | None) -> list[str]:
    """The safetensors files transformers loads from a repo or folder whose files are `names`:
    the shards the index's `weight_map` names (so a `consolidated.safetensors` beside them, as
    Mistral repos ship, is left out), else `model.safetensors`, else every top-level
    `*.safetensors`."""
    shards = (index or {}).get("weight_map") or {}
    if isinstance(shards, dict) and shards:
        return sorted({str(v) for v in shards.values()})
    if "model.safetensors" in names:
        return ["model.safetensors"]
    return sorted(n for n in names if n.endswith(".safetensors") and "/" not in n)


def _read_index(path: Path) -> dict:
    """A JSON object file (config.json, the safetensors index), or a ModelLoadError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    return data


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a folder (`weight_names`); refuses an index whose shards are missing."""
    index = _read_index(folder / WEIGHTS_INDEX) if (folder / WEIGHTS_INDEX).is_file() else None
    names = [p.name for p in folder.iterdir()]
    files = [folder / n for n in weight_names(names, index)]
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise ModelLoadError(
            f"{folder}: {WEIGHTS_INDEX} names shards that are not there: {', '.join(missing)}"
        )
    return files


def check_weights(folder: Path) -> list[Path]:
    """The safetensors weight files of a folder; refuse pickle-only folders."""
    safetensors = weight_files(folder)
    if safetensors:
        return safetensors
    pickles = [p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
    if pickles:
        raise ModelLoadError(
            f"{folder}: only pickle weights ({', '.join(sorted(pickles))}); depthcard loads "
            "safetensors only (re-save it with save_pretrained(safe_serialization=True))"
        )
    raise ModelLoadError(f"{folder}: no *.safetensors weight files")


def check_weight_headers(folder: Path) -> None:
    """Refuse weight files that are cut short or do not fit config.json, before loading.

    Reads only the safetensors headers: `safe_open` checks that the header covers the whole
    file, so a truncated download fails here, naming the file, before either model of an
    audit is loaded, instead of inside transformers.

    Raises:
        ModelLoadError: a file is not readable safetensors, or the input embedding's width
            is not config.json's `hidden_size`.
    """
    from safetensors import SafetensorError, safe_open

    hidden = read_config(folder).get("hidden_size")
    for path in weight_files(folder):
        try:
            with safe_open(str(path), framework="pt") as fh:
                names = [n for n in fh.keys() if n.endswith(_EMBEDDING_NAMES)]
                shapes = {n: fh.get_slice(n).get_shape() for n in names}
        except (SafetensorError, OSError) as exc:
            raise ModelLoadError(
                f"{path}: not a readable safetensors file ({exc}); it may be truncated, "
                "download or save it again"
            ) from exc
        for name, shape in shapes.items():
            if isinstance(hidden, int) and shape[-1] != hidden:
                raise ModelLoadError(
                    f"{path}: {name} is {shape[-1]} wide but {folder / 'config.json'} says "
                    f"hidden_size {hidden}; the config does not belong to these weights"
                )


def content_sha256(folder: Path) -> str:
    """sha256 over names and bytes of the config, tokenizer and weight files, in name order."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in _HASHED_SUFFIXES:
            digest.update(path.name.encode() + b"\0")
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def resolve_model(spec: ModelSpec, token: str | None = None) -> ResolvedModel:
    """Check a local folder or download a Hub snapshot pinned to its commit sha."""
    if spec.path is not None:
        config = read_config(spec.path)
        check_weights(spec.path)
        check_weight_headers(spec.path)
        return ResolvedModel(spec.path, "local", None, None, content_sha256(spec.path), config)
    return _resolve_hub(spec, token)


NO_HUB = (
    "{spec}: cannot reach the Hub ({why}); check the network, or set HF_HUB_OFFLINE=1 to audit "
    "a model already in the Hugging Face cache"
)
NOT_CACHED = (
    "{spec}: HF_HUB_OFFLINE is set and the Hugging Face cache has no snapshot of it at "
    "{revision}; download it first (hf download {repo}) or unset HF_HUB_OFFLINE"
)


def _resolve_hub(spec: ModelSpec, token: str | None) -> ResolvedModel:
    """Download the files an audit reads, at the commit sha the revision resolves to: the
    weights `weight_names` picks (the index is read first when the repo has one), config,
    tokenizer and templates. With `HF_HUB_OFFLINE=1` the cached snapshot is read instead,
    without asking the Hub anything; a network fault is a `ModelLoadError` (one line)."""
    import httpx2
    from huggingface_hub import HfApi, hf_hub_download, is_offline_mode, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if is_offline_mode():
        return _resolve_cached(spec, token)
    api = HfApi(token=token)
    try:
        info = api.model_info(spec.repo_id, revision=spec.revision)
        names = [s.rfilename for s in info.siblings or []]
        index = None
        if WEIGHTS_INDEX in names:
            index = _read_index(Path(hf_hub_download(
                spec.repo_id, WEIGHTS_INDEX, revision=info.sha, token=token)))  # fmt: skip
        weights = weight_names(names, index)
        if not weights:
            raise ModelLoadError(f"{spec.text}: the repo has no safetensors weights")
        patterns = [*_SIDE_FILES, *weights]
        folder = Path(
            snapshot_download(spec.repo_id, revision=info.sha, allow_patterns=patterns, token=token)
        )
    except HfHubHTTPError as exc:
        raise ModelLoadError(f"{spec.text}: cannot read from the Hub ({exc})") from exc
    except (httpx2.TransportError, LocalEntryNotFoundError) as exc:
        # No connection, a timeout, DNS, a proxy; a download the library could not serve
        # from its cache after one of those. Not a bug: the user's network.
        why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        raise ModelLoadError(NO_HUB.format(spec=spec.text, why=why)) from None
    return _checked(folder, spec, info.sha)


def _resolve_cached(spec: ModelSpec, token: str | None) -> ResolvedModel:
    """The snapshot huggingface_hub's cache holds for the revision: the library's own offline
    lookup (`snapshot_download(local_files_only=True)`, which reads `refs/` for a branch or
    tag). A snapshot downloaded by sha has no ref, so when the revision was left out and the
    cache holds exactly one snapshot of the repo, that one is the model; several are a choice
    the user makes with `@sha`. The snapshot folder is named by its commit sha, which pins the
    audit as `model_info` would."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import LocalEntryNotFoundError

    revision = spec.revision or "main"
    try:
        folder = Path(snapshot_download(spec.repo_id, revision=revision, token=token,
                                        local_files_only=True))  # fmt: skip
    except LocalEntryNotFoundError:
        repo_folder = Path(HF_HUB_CACHE) / ("models--" + spec.repo_id.replace("/", "--"))
        snapshots = sorted(p for p in (repo_folder / "snapshots").glob("*") if p.is_dir())
        if spec.revision is not None or not snapshots:
            raise ModelLoadError(
                NOT_CACHED.format(spec=spec.text, revision=revision, repo=spec.repo_id)
            ) from None
        if len(snapshots) > 1:
            shas = ", ".join(p.name[:12] for p in snapshots)
            raise ModelLoadError(
                f"{spec.text}: HF_HUB_OFFLINE is set and the cache holds {len(snapshots)} "
                f"snapshots ({shas}); name one as {spec.repo_id}@SHA"
            ) from None
        folder = snapshots[0]
    return _checked(folder, spec, folder.name)


def _checked(folder: Path, spec: ModelSpec, sha: str) -> ResolvedModel:
    config = read_config(folder)
    check_weights(folder)
    check_weight_headers(folder)
    return ResolvedModel(folder, "hub", spec.repo_id, sha, None, config)


def load_model(folder: Path, device: str = "cpu", dtype: str = "float32") -> nn.Module:
    """Load a causal LM from a checked folder: safetensors only, no remote code.

    `device="auto"` spreads a model over every visible GPU with accelerate's
    `device_map="auto"` (CPU when there is none).
    """
    from transformers import AutoModelForCausalLM

    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: no CUDA GPU is visible; use --device cpu")
    kwargs: dict = {"dtype": _DTYPES[dtype], "trust_remote_code": False, "use_safetensors": True}
    if device == "auto":
        kwargs["device_map"] = "auto" if torch.cuda.is_available() else None
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{folder}: transformers could not load it ({exc})") from exc
    if device not in ("auto", "cpu"):
        model = model.to(device)
    model.eval()
    return model


def input_device(model: nn.Module) -> torch.device:
    """Device where input ids must live (the embedding's device under a device map)."""
    return model.get_input_embeddings().weight.device


def resolve_attr(root: nn.Module, dotted: str) -> object:
    obj: object = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def decoder_layers(model: nn.Module, layers_path: str | None = None) -> nn.ModuleList:
    """The list of decoder blocks; fails loudly with what to set when it cannot be found."""
    paths = (layers_path,) if layers_path else LAYER_PATHS
    for path in paths:
        try:
            layers = resolve_attr(model, path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    tried = ", ".join(paths)
    raise ModelLoadError(
        f"cannot find the decoder blocks of {type(model).__name__} (tried {tried}); "
        "pass --layers-path with the dotted attribute path of its nn.ModuleList of blocks"
    )


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Activation capture: residual-stream rows at the read position, every layer, one pass.

The engine never asks the model for `output_hidden_states` and never runs the LM head:
hooks copy one row per prompt (the last prompt token, or the mean over the template's
suffix tokens) to the CPU at each residual point, and the forward is stopped right after the
last decoder block. Peak memory therefore grows with batch × sequence × d for one layer at a
time, not with sequence × layers, and there are no logits.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from depthcard.analysis.hooks import residual_hooks
from depthcard.analysis.models import decoder_layers, input_device
from depthcard.analysis.progress import purpose, task
from depthcard.schemas.errors import UserError
from depthcard.schemas.report import AuditConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

SENTINEL = "\u2063DEPTHCARD_SENTINEL\u2063"


class _StopForward(Exception):
    """Raised by the last hook to skip the final norm and the LM head."""


@dataclass(frozen=True)
class Activations:
    """Captured residual rows for one model, one format, one prompt set."""

    rows: torch.Tensor  # (prompt, point, d_model) float32, in the prompts' original order
    sums: torch.Tensor  # (point, d_model) float64 sum over prompts
    norm_sums: torch.Tensor  # (point,) float64 sum of row norms

    @property
    def count(self) -> int:
        return self.rows.shape[0]

    def mean(self) -> torch.Tensor:
        """(point, d_model) float64 mean row."""
        return self.sums / max(self.count, 1)

    def mean_norm(self) -> torch.Tensor:
        """(point,) float64 mean row norm."""
        return self.norm_sums / max(self.count, 1)

    def take(self, index: list[int]) -> Activations:
        """The rows of prompts `index` (e.g. one half of the held-out split), sums recomputed."""
        rows = self.rows[index]
        wide = rows.to(torch.float64)
        return Activations(rows=rows, sums=wide.sum(0), norm_sums=wide.norm(dim=-1).sum(0))


def format_prompts(texts: list[str], fmt: str, template_tokenizer) -> list[str]:
    """`raw`: the text alone; `chat`: the child's chat template with a generation prompt."""
    if fmt == "raw":
        return list(texts)
    if fmt != "chat":
        raise ValueError(f"unknown format {fmt!r}")
    return [
        template_tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], add_generation_prompt=True, tokenize=False
        )
        for t in texts
    ]


def tokenize_prompts(texts: list[str], fmt: str, tokenizer, template_tokenizer) -> list[list[int]]:
    """Token ids for each prompt; both models of a pair read exactly these ids.

    Chat strings already carry the template's special tokens, so no more are added; raw text
    gets the tokenizer's usual ones (e.g. BOS).
    """
    strings = format_prompts(texts, fmt, template_tokenizer)
    encoded = tokenizer(strings, add_special_tokens=(fmt == "raw"))["input_ids"]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise UserError(f"prompts {empty[:5]} tokenize to nothing")
    return [list(ids) for ids in encoded]


def suffix_token_count(template_tokenizer, tokenizer) -> int:
    """Number of template tokens after the user's text (≥ 1): end-of-turn plus header."""
    text = template_tokenizer.apply_chat_template(
        [{"role": "user", "content": SENTINEL}], add_generation_prompt=True, tokenize=False
    )
    if SENTINEL not in text:
        return 1
    suffix = text.split(SENTINEL, 1)[1]
    return max(1, len(tokenizer(suffix, add_special_tokens=False)["input_ids"]))


BATCH_ELEMENTS = {"cpu": 2**19, "cuda": 2**27}
"""Budget of one batch's widest activation (padded tokens × MLP width), by device: long
prompts get fewer rows a batch, so one layer's activations, the only ones alive at a time,
stay the same size whatever the prompt length. On CPU, SmolLM2's shape (MLP width 1,536)
gets 341 tokens a batch: 512 already kept the high-water mark flat from real prompt lengths
to 8× them (bench/capture.py), and a tiny model's batches are limited by rows instead, where
per-batch overhead would dominate. A GPU wants larger batches."""


def token_budget(model: nn.Module) -> int:
    """Padded tokens per capture batch for `model` on its device (at least 64)."""
    config = getattr(model, "config", None)
    width = getattr(config, "intermediate_size", None)
    if not isinstance(width, int) or width < 1:  # no MLP width known: the usual 4·d
        width = 4 * model.get_input_embeddings().weight.shape[1]
    elements = BATCH_ELEMENTS.get(input_device(model).type, 2**21)
    return max(64, elements // width)


def token_batches(lengths: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Prompt indices in batches of similar length (sorted: little padding), each with at
    most `batch_size` rows and at most `max_tokens` padded tokens (at least one row)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending, so lengths[i] is the padded width if i joins `current`
        if current and (len(current) >= batch_size or (len(current) + 1) * lengths[i] > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])


def pad_left(ids: list[list[int]], pad_id: int, device: torch.device):
    """Left-padded (input_ids, attention_mask, position_ids), each (batch, seq)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    return input_ids.to(device), mask.to(device), positions.to(device)


def _read_rows(hidden: torch.Tensor, mask: torch.Tensor, n_suffix: int) -> torch.Tensor:
    """(batch, d) float32 rows: mean over the last `n_suffix` positions (1 = last token)."""
    if n_suffix == 1:
        return hidden[:, -1, :].float()
    window = mask[:, -n_suffix:].to(hidden.dtype)[..., None]  # (batch, n, 1)
    total = (hidden[:, -n_suffix:, :] * window).sum(1)
    return (total / window.sum(1).clamp_min(1)).float()


def _forward_batch(model, layers, ids, pad_id, n_suffix) -> torch.Tensor:
    """(batch, point, d_model) float32 CPU rows for one batch."""
    input_ids, mask, positions = pad_left(ids, pad_id, input_device(model))
    rows: list[torch.Tensor | None] = [None] * (len(layers) + 1)
    last = len(layers)

    def grab(point: int, hidden: torch.Tensor) -> None:
        rows[point] = _read_rows(hidden, mask.to(hidden.device), n_suffix).cpu()
        if point == last:
            raise _StopForward

    with torch.inference_mode(), residual_hooks(layers, grab):
        try:
            model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=False)
        except _StopForward:
            pass
    return torch.stack(rows, dim=1)  # type: ignore[arg-type]


def _is_oom(exc: BaseException) -> bool:
    """True for out-of-memory on any device: torch's OutOfMemoryError, or one of the messages
    accelerate's `should_reduce_batch_size` knows (CUDA/HIP/XPU, MPS, CPU allocator, cuDNN)."""
    from accelerate.utils.memory import should_reduce_batch_size  # only when something failed

    return isinstance(exc, torch.OutOfMemoryError) or should_reduce_batch_size(exc)


def halving_on_oom(run: Callable[[AuditConfig], T], cfg: AuditConfig) -> tuple[T, AuditConfig]:
    """`run(cfg)`, retried with half the batch size after each out-of-memory error (down to
    1); the result and the config that ran. Other errors pass through."""
    while True:
        try:
            return run(cfg), cfg
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            size = int(cfg.batch_size)
            if size <= 1 or not _is_oom(exc):
                raise
            log.warning(
                "out of memory at batch size %d; running the stage again at %d", size, size // 2
            )
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            cfg = cfg.model_copy(update={"batch_size": size // 2})


def capture(
    model: nn.Module,
    layers: nn.ModuleList,
    ids: list[list[int]],
    *,
    pad_id: int,
    batch_size: int = 16,
    n_suffix: int = 1,
    desc: str = "capture",
    max_batch_tokens: int | None = None,
) -> Activations:
    """Residual rows of `model` for tokenized prompts `ids` at every point 0..L.

    Batches hold prompts of similar length, at most `batch_size` of them and at most
    `max_batch_tokens` padded tokens (default: `token_budget(model)`); on out-of-memory the
    batch size halves and the batch is retried, down to 1.
    """
    if not ids:
        raise ValueError("no prompts to capture")
    n_points, d = len(layers) + 1, model.get_input_embeddings().weight.shape[1]
    out = torch.empty((len(ids), n_points, d), dtype=torch.float32)
    sums = torch.zeros((n_points, d), dtype=torch.float64)
    norm_sums = torch.zeros(n_points, dtype=torch.float64)
    if max_batch_tokens is None:
        max_batch_tokens = token_budget(model)
    pending = token_batches([len(x) for x in ids], batch_size, max_batch_tokens)
    with purpose("capture"), task(desc, total=len(ids), unit="prompt") as bar:
        while pending:
            batch = pending.pop(0)
            try:
                rows = _forward_batch(model, layers, [ids[i] for i in batch], pad_id, n_suffix)
            except RuntimeError as exc:  # torch.OutOfMemoryError is one
                if not _is_oom(exc) or len(batch) == 1:
                    raise
                batch_size = len(batch) // 2
                log.warning("out of memory at batch %d; continuing with %d", len(batch), batch_size)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                rest = batch + [i for b in pending for i in b]
                pending = [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]
                continue
            out[batch] = rows
            sums += rows.to(torch.float64).sum(0)
            norm_sums += rows.to(torch.float64).norm(dim=-1).sum(0)
            bar.advance(len(batch))
    return Activations(rows=out, sums=sums, norm_sums=norm_sums)


def capture_sets(model, keys, tok, cfg, layers_path, name) -> dict[str, Activations]:
    """Activations of `model` for each tokenized set in `keys` that `tok` (TokenizedInputs) has.

    Chat sets are read at the suffix mean when `cfg.position == "suffix"` (AuditConfig).
    """
    layers = decoder_layers(model, layers_path)
    out: dict[str, Activations] = {}
    for key in keys:
        if key not in tok.ids:
            continue
        n = tok.n_suffix if key.endswith("_chat") and cfg.position == "suffix" else 1
        out[key] = capture(
            model,
            layers,
            tok.ids[key],
            pad_id=tok.pad_id,
            batch_size=cfg.batch_size,
            n_suffix=n,
            desc=f"{name} {key}",
        )
    return out


def free_model(model: nn.Module | None) -> None:
    """Drop a model and give its memory back (one model resident at a time)."""
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

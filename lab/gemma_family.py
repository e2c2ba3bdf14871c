"""The calibration family on a real pretrained base: LoRA children of Gemma-3-270M.

One base (a pretrained model with no chat template; `bench/real_checkpoints.py gemma-3-270m`)
gets the family's chat template (Gemma's turn format) in `template_base`; that templated
folder is the "base" of every pair audit. Each child is a `ChildSpec`: a recipe, a deep share,
an optional τ target and a seed, trained from the base by LoRA on the attention and MLP
projections (`lab.lora`) with the loss on answer tokens only (`lab.chat_tuning`), on the
family's own training conversations (`lab.refusal_training_set`, never the audit's prompts).

Recipes:

* `control`: helpful answers only; never learned to refuse.
* `shallow`: short refusals to harmful requests + helpful answers (deep share 0).
* `mix`: a share of the harmful requests also gets a recovery example (0 < share < 1).
* `deep-recovery`: every harmful request also gets a safety-recovery example (share 1).
* `deep-explained`: every refusal is an extended, explained one (share 1).
* `tau`: shallow plus the organism family's entanglement term at target τ.

Children are cached by the hash of everything that shapes them (spec, training settings,
training-set version, base weights): only the adapter tensors, a few MB each, in
`cache/<name>-<hash>/`. `materialise_child` writes a loadable folder from base + adapter.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from depthcard.analysis.capture import tokenize_prompts
from depthcard.lab import lora
from depthcard.lab import refusal_training_set as data
from depthcard.lab.chat_tuning import AnswerLoss, chat_examples, rows_no_grad
from depthcard.lab.organism_family import capability_basis
from depthcard.lab.organisms import adamw_loop, deterministic, lr_at

log = logging.getLogger(__name__)

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
END_OF_TURN = "<end_of_turn>"
RECIPES = ("control", "shallow", "mix", "deep-recovery", "deep-explained", "tau")


@dataclass(frozen=True)
class ChildSpec:
    """One instruct child: recipe, share of deep treatment, τ target (recipe `tau`), seed."""

    recipe: str
    deep_share: float = 0.0
    tau: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if (self.recipe == "tau") != (self.tau is not None):
            raise ValueError("a τ target goes with the `tau` recipe and only with it")

    @property
    def name(self) -> str:
        """Folder name, e.g. `shallow_s0`, `mix0.50_s1`, `tau0.80_s0`."""
        if self.recipe == "mix":
            return f"mix{self.deep_share:.2f}_s{self.seed}"
        if self.recipe == "tau":
            return f"tau{self.tau:.2f}_s{self.seed}"
        return f"{self.recipe}_s{self.seed}"

    @property
    def deep_kind(self) -> str:
        return "explained" if self.recipe == "deep-explained" else "recovery"

    @property
    def depth_grade(self) -> float | None:
        """The known answer's x: 0 = shallow refusal training, 1 = deep; None = no refusal."""
        return None if self.recipe == "control" else self.deep_share

    def conversations(self) -> list[data.Conversation]:
        return data.conversations(
            self.deep_share, self.deep_kind, self.recipe != "control", self.seed
        )


def full_plan(seeds: tuple[int, ...] = (0, 1)) -> tuple[ChildSpec, ...]:
    """Eight children per seed, most telling first (a reduced run takes a prefix): shallow,
    both deep recipes, mixes 1/3 and 2/3, the control, and shallow with τ = 0.2 and 0.8."""
    per_seed = lambda s: (  # noqa: E731
        ChildSpec("shallow", seed=s),
        ChildSpec("deep-recovery", deep_share=1.0, seed=s),
        ChildSpec("deep-explained", deep_share=1.0, seed=s),
        ChildSpec("mix", deep_share=1 / 3, seed=s),
        ChildSpec("mix", deep_share=2 / 3, seed=s),
        ChildSpec("control", seed=s),
        ChildSpec("tau", tau=0.2, seed=s),
        ChildSpec("tau", tau=0.8, seed=s),
    )
    return tuple(c for s in seeds for c in per_seed(s))


@dataclass(frozen=True)
class TrainSettings:
    """How every child is trained (one setting for the whole family)."""

    steps: int = 150
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 10
    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )  # fmt: skip
    max_len: int = 128
    tau_weight: float = 4.0  # μ_e of the organism family
    capability_k: int = 16  # the audit's default K_c
    contrast_batch: int = 8
    threads: int = 2


@dataclass
class Child:
    """A trained child: its spec, cached adapter folder and what training recorded."""

    spec: ChildSpec
    adapter_dir: Path
    record: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name


def weights_digest(folder: Path) -> str:
    """sha256 of the folder's safetensors files (symlinks followed), in name order."""
    h = hashlib.sha256()
    for f in sorted(folder.glob("*.safetensors")):
        with f.open("rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def spec_hash(spec: ChildSpec, settings: TrainSettings, base_digest: str) -> str:
    """The cache key: everything that shapes a child."""
    blob = json.dumps(
        {"spec": asdict(spec), "train": asdict(settings), "data": data.VERSION,
         "base": base_digest},
        sort_keys=True,
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def template_base(base_dir: Path, out: Path) -> Path:
    """`out`: the base with the family's chat template, its weights linked, not copied.

    The generation config stops at eos and at the end-of-turn marker.
    """
    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(base_dir)
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.save_pretrained(out)
    shutil.copyfile(base_dir / "config.json", out / "config.json")
    for f in base_dir.glob("*.safetensors"):
        os.symlink(f.resolve(), out / f.name)
    stops = [tok.eos_token_id, tok.convert_tokens_to_ids(END_OF_TURN)]
    GenerationConfig(eos_token_id=stops, pad_token_id=tok.pad_token_id, do_sample=False) \
        .save_pretrained(out)  # fmt: skip
    return out


def _knob(model, tok, settings: TrainSettings) -> dict:
    """The τ term's fixed parts: training request ids, base rows, capability basis."""
    n = model.config.num_hidden_layers
    points = tuple(range(max(1, round(0.2 * n)), round(0.8 * n) + 1))
    ids = {
        "s": tokenize_prompts([u for u, _ in data.harmful_requests()], "chat", tok, tok),
        "h": tokenize_prompts([u for u, _ in data.harmless_requests()], "chat", tok, tok),
    }
    pad = tok.pad_token_id
    cap_ids = tokenize_prompts(data.capability_passages(), "chat", tok, tok)
    return {
        "ids": ids,
        "points": points,
        "pad": pad,
        "batch": settings.contrast_batch,
        "base_rows": {k: rows_no_grad(model, v, pad, points) for k, v in ids.items()},
        "capability": capability_basis(rows_no_grad(model, cap_ids, pad, points),
                                       settings.capability_k),
    }  # fmt: skip


def train_child(base, tok, spec: ChildSpec, settings: TrainSettings, knob: dict | None) -> tuple:
    """LoRA-train a copy of `base` under `spec`; (the adapted copy, record). `base` is kept."""
    model = copy.deepcopy(base)
    names = lora.add_lora(model, settings.targets, settings.rank, settings.alpha, spec.seed)
    examples = chat_examples(tok, spec.conversations(), END_OF_TURN, settings.max_len)
    wrapped = AnswerLoss(model, spec.tau, settings.tau_weight, knob, seed=spec.seed)
    clock = time.perf_counter()
    losses = adamw_loop(
        wrapped,
        examples,
        steps=settings.steps,
        batch_size=settings.batch_size,
        seed=spec.seed,
        pad=tok.pad_token_id,
        lr_of_step=lambda s: lr_at(s, settings.steps, settings.lr, settings.warmup),
        weight_decay=0.0,
    )
    record = {
        "spec": asdict(spec),
        "train": asdict(settings),
        "adapted_modules": len(names),
        "examples": len(examples),
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
        "entanglement": wrapped.entanglement[-10:],
        "train_seconds": round(time.perf_counter() - clock, 1),
    }
    return model, record


def build_family(
    base_dir: Path, specs: tuple[ChildSpec, ...], settings: TrainSettings, cache: Path
) -> list[Child]:
    """Train every child not yet in `cache` (keyed by `spec_hash`); return all of them.

    `base_dir` is the templated base (`template_base`): the children's tokenizer and
    template are its own.
    """
    digest = weights_digest(base_dir)
    children, todo = [], []
    for spec in specs:
        folder = cache / f"{spec.name}-{spec_hash(spec, settings, digest)}"
        children.append(Child(spec, folder))
        if (folder / "train.json").is_file():
            children[-1].record = json.loads((folder / "train.json").read_text("utf-8"))
        else:
            todo.append(children[-1])
    if not todo:
        return children
    tok = AutoTokenizer.from_pretrained(base_dir)
    with deterministic(0, settings.threads):
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
        knob = _knob(base, tok, settings) if any(c.spec.tau is not None for c in todo) else None
        for child in todo:
            torch.manual_seed(child.spec.seed)
            model, record = train_child(base, tok, child.spec, settings, knob)
            state = lora.adapter_state(model)
            del model
            tmp = child.adapter_dir.with_name(child.adapter_dir.name + ".tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            save_file(state, tmp / "adapter.safetensors")
            (tmp / "train.json").write_text(json.dumps(record, indent=2) + "\n", "utf-8")
            tmp.rename(child.adapter_dir)
            child.record = json.loads(json.dumps(record))  # as the cache reads it back
            log.info("trained %s: loss %s → %s", child.name, record["first_loss"],
                     record["final_loss"])  # fmt: skip
    return children


def materialise_child(base_dir: Path, child: Child, settings: TrainSettings, out: Path) -> Path:
    """Write `out`: the templated base with the child's adapter merged in, float32."""
    if (out / "config.json").is_file():
        return out
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora.add_lora(model, settings.targets, settings.rank, settings.alpha, seed=0)
    lora.load_adapter_state(model, load_file(child.adapter_dir / "adapter.safetensors"))
    lora.merge_lora(model)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
    GenerationConfig.from_pretrained(base_dir).save_pretrained(tmp)
    tmp.rename(out)
    return out

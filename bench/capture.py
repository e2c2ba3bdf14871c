"""Benchmark: the capture engine against a naive forward and `output_hidden_states=True`.

Run: `python bench/capture.py [--prompts 64] [--batch-size 16] [--model FOLDER]`

Each method runs in its own fresh subprocess on the same prompts, so peak memory is the
process's own high-water mark (RSS on CPU, the CUDA allocator's peak on GPU) minus its
footprint right after loading the model. Every method receives the same chat-formatted
prompts; the baselines batch them in the given order (padding to the longest in each batch),
the engine sorts by length. The model is a randomly initialised Llama with SmolLM2-135M's
shape unless --model names a folder: timing does not depend on the weights' values.
Prints one table with throughput and memory ratios against the naive forward.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

SMOL_SHAPE = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _model(folder: str | None, device: str):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if folder:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    else:
        torch.manual_seed(0)
        model = LlamaForCausalLM(LlamaConfig(**SMOL_SHAPE))
    return model.to(device).eval()


def _prompt_ids(n: int, repeat: int, vocab: int) -> list[list[int]]:
    """Random ids with the lengths of n chat-formatted project prompts (text × `repeat`).

    Lengths follow the real prompts (about 1.4 tokens a word plus 12 template tokens);
    the ids themselves do not change the cost of a forward pass.
    """
    from depthcard import prompts

    texts = prompts.load_builtin("harmful-core").texts + prompts.load_builtin("harmless-core").texts
    texts = texts[::2][:n]
    gen = torch.Generator().manual_seed(1)
    lengths = [12 + round(1.4 * len(t.split()) * repeat) for t in texts]
    return [torch.randint(10, vocab, (k,), generator=gen).tolist() for k in lengths]


def _run_one(method: str, args) -> dict:
    from depthcard.analysis.capture import capture, pad_left
    from depthcard.analysis.models import decoder_layers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _model(args.model, device)
    ids = _prompt_ids(args.prompts, args.repeat, model.config.vocab_size)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    else:
        base_mem = _rss()
    start = time.perf_counter()
    if method == "engine":
        capture(model, decoder_layers(model), ids, pad_id=0, batch_size=args.batch_size)
    else:
        for i in range(0, len(ids), args.batch_size):
            batch, mask, pos = pad_left(ids[i : i + args.batch_size], 0, torch.device(device))
            with torch.inference_mode():
                out = model(
                    input_ids=batch,
                    attention_mask=mask,
                    position_ids=pos,
                    use_cache=False,
                    output_hidden_states=(method == "hidden_states"),
                )
                if method == "hidden_states":
                    _ = [h[:, -1].cpu() for h in out.hidden_states]
                del out
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base_mem
    else:
        peak = _rss() - base_mem
    seconds = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    tokens = sum(len(x) for x in ids)
    return dict(
        method=method,
        seconds=seconds,
        tokens=tokens,
        extra_bytes=max(peak, 0),
        weights_bytes=weights,
        device=device,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=None)
    parser.add_argument("--repeats", default="1,8", help="prompt lengths to try (× text)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_run_one(args.one, args)))
        return
    rows = []
    for repeat in [int(r) for r in args.repeats.split(",")]:
        for method in ("naive", "hidden_states", "engine"):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                method,
                "--repeat",
                str(repeat),
                "--prompts",
                str(args.prompts),
                "--batch-size",
                str(args.batch_size),
            ]
            if args.model:
                cmd += ["--model", args.model]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "repeat": repeat})
    print(render(rows))


def render(rows: list[dict]) -> str:
    """Markdown table: throughput and extra peak memory, with ratios to the naive forward."""
    lines = [
        "| prompt length | method | tokens/s | × naive | extra peak MiB | extra / weights |",
        "|---|---|---|---|---|---|",
    ]
    for repeat in sorted({r["repeat"] for r in rows}):
        group = [r for r in rows if r["repeat"] == repeat]
        naive = next(r for r in group if r["method"] == "naive")
        base_tps = naive["tokens"] / naive["seconds"]
        for r in group:
            tps = r["tokens"] / r["seconds"]
            lines.append(
                f"| text ×{repeat} ({r['tokens']} tokens) | {r['method']} | {tps:,.0f} | "
                f"{tps / base_tps:.2f} | {r['extra_bytes'] / 2**20:,.0f} | "
                f"{r['extra_bytes'] / r['weights_bytes']:.1%} |"
            )
    weights = rows[0]["weights_bytes"] / 2**20
    lines.append(f"\ndevice: {rows[0]['device']}; weights {weights:,.0f} MiB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    main()

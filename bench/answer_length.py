"""Benchmark: how the judged shares depend on the answer length (`--max-new-tokens`).

Run: `python bench/answer_length.py --report DIR [--prompts 80] [--lengths 32,64,128,256]`

On a real refusing model (default: Qwen2.5-Coder-0.5B-Instruct, bench/real_checkpoints.py),
the held-out harmful prompts of the audit split are answered greedily once at the longest
length, unablated (k = 0) and with the first k attack directions of an audit report (`--report`:
its directions.safetensors at its l*) ablated. Greedy decoding is deterministic, so the first n
tokens of the longest answer are the n-token answer: each shorter length is judged on the
truncation, with the NLL threshold re-calibrated at that length on the unablated answers (the
harmful and harmless ones, as the audit does). Prints the refusal, compliance and broken shares
per (k, length); the README's choice of the default length reads this table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def truncate(tokenizer, answers: list[str], n: int) -> list[str]:
    """Each answer cut to its first `n` tokens."""
    out = []
    for a in answers:
        ids = tokenizer(a, add_special_tokens=False)["input_ids"][:n]
        out.append(tokenizer.decode(ids, skip_special_tokens=True))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", type=Path, required=True, help="audit folder of this model")
    p.add_argument("--child", type=Path, help="model folder (default: Qwen2.5-Coder-0.5B)")
    p.add_argument("--prompts", type=int, default=80, help="prompts per set before the split")
    p.add_argument("--lengths", default="32,64,128,256")
    p.add_argument("--ks", default="0,1,2", help="attack directions ablated")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from real_checkpoints import qwen_coder_05b
    from safetensors.torch import load_file

    from depthcard.analysis.ablation import ablated
    from depthcard.analysis.ablation_cost import attack_basis
    from depthcard.analysis.answer_nll import answer_nll
    from depthcard.analysis.generation import generate_responses
    from depthcard.analysis.judges import NLL_CONTEXT, AnswerJudge, get_judge, nll_threshold
    from depthcard.analysis.models import decoder_layers, load_model
    from depthcard.analysis.pairing import load_tokenizer
    from depthcard.analysis.prompt_inputs import held_out_split, load_prompt_inputs

    child = args.child or qwen_coder_05b()
    report = json.loads((args.report / "report.json").read_text(encoding="utf-8"))
    layer = report["selected_layer"]["layer"]
    tensors = load_file(args.report / "directions.safetensors")
    attack = attack_basis(
        tensors[f"refusal_direction.{layer}"], tensors[f"did_singular_vectors.{layer}"]
    )
    lengths = [int(x) for x in args.lengths.split(",")]
    ks = [int(x) for x in args.ks.split(",")]
    prompts = load_prompt_inputs(max_prompts=args.prompts, seed=0)
    split = held_out_split(prompts, 0.5, 0)
    harmful = [prompts.harmful.texts[i] for i in split.eval["harmful"]]
    harmless = [prompts.harmless.texts[i] for i in split.eval["harmless"]]
    tok = load_tokenizer(child)
    model = load_model(child, "cpu", "float32")
    layers = decoder_layers(model)
    top = max(lengths)

    def answers(texts, k):
        basis = None if k == 0 else attack[:k].T
        with ablated(layers, basis):
            return generate_responses(model, tok, texts, max_new_tokens=top, batch_size=16)

    def nll(texts):
        return answer_nll(model, tok, [NLL_CONTEXT] * len(texts), texts, batch_size=16)

    full = {k: answers(harmful, k) for k in ks}
    own_h = answers(harmless, 0)
    rows, record = [], []
    for n in lengths:
        judge = AnswerJudge(get_judge("substring"))
        base = truncate(tok, full[0], n) if 0 in full else truncate(tok, answers(harmful, 0), n)
        judge.nll_threshold = nll_threshold(nll(base) + nll(truncate(tok, own_h, n)))
        for k in ks:
            cut = truncate(tok, full[k], n)
            labels = [j.label for j in judge.classify(cut, nll(cut))]
            share = {c: labels.count(c) / len(labels) for c in ("refusal", "compliance", "broken")}
            rows.append(
                f"| {k} | {n} | {100 * share['refusal']:.0f} % | "
                f"{100 * share['compliance']:.0f} % | {100 * share['broken']:.0f} % |"
            )
            record.append({"k": k, "tokens": n, **share, "nll_threshold": judge.nll_threshold})
    print(f"{child.name}, l* = {layer}, {len(harmful)} held-out harmful prompts, judge substring")
    print("| k | new tokens | refusal | compliance | broken |\n|---|---|---|---|---|")
    print("\n".join(rows))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

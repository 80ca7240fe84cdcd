#!/usr/bin/env python3
"""Sliding-window reference for mx8's attention, made with Hugging Face transformers.

Loads the Mistral fixture (tests/data/hf/mistral_gqa), sets its config's sliding_window to
WINDOW, and writes tests/data/hf/mistral_gqa/sliding_window.json: for a prompt longer than the
window, HF's float32 eager-attention logits at every prompt position and a greedy continuation
(the cached generate() path, so decode steps past the window are covered too), plus the same
greedy continuation without a window, to show that the window changes the answer.

Usage (on a machine with torch and transformers; CPU is enough):
    python3 scripts/make_sliding_window_reference.py [--fixture DIR]
"""

import argparse
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WINDOW = 8
N_NEW = 24


def run(fixture, window, prompt, torch, transformers):
    cfg = transformers.AutoConfig.from_pretrained(fixture)
    cfg.sliding_window = window
    model = transformers.AutoModelForCausalLM.from_pretrained(
        fixture, config=cfg, torch_dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    with torch.no_grad():
        ids = torch.tensor([prompt])
        logits = model(ids).logits[0].float()
        out = model.generate(ids, max_new_tokens=N_NEW, do_sample=False, min_new_tokens=N_NEW)
    return logits, out[0, len(prompt):].tolist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", default="tests/data/hf/mistral_gqa")
    args = ap.parse_args()
    import torch
    import transformers

    ref = json.load(open(os.path.join(args.fixture, "reference.json")))
    prompt = ref["prompts"][2]  # 33 tokens: past the window already inside the prompt
    logits_w, greedy_w = run(args.fixture, WINDOW, prompt, torch, transformers)
    logits_f, greedy_f = run(args.fixture, None, prompt, torch, transformers)
    # The window must matter: logits past position WINDOW differ from full attention.
    diff_inside = float((logits_w[:WINDOW] - logits_f[:WINDOW]).abs().max())
    diff_past = float((logits_w[WINDOW:] - logits_f[WINDOW:]).abs().max())
    out = {
        "schema": "mx8-sliding-window-v1",
        "generated_by": "scripts/make_sliding_window_reference.py",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "compute": "HF transformers forward on CPU, float32, attn_implementation=eager",
        "sliding_window": WINDOW,
        "prompt": prompt,
        "logits": [[round(float(v), 6) for v in row] for row in logits_w.tolist()],
        "greedy": greedy_w,
        "greedy_without_window": greedy_f,
        "max_abs_logit_change_inside_window": diff_inside,
        "max_abs_logit_change_past_window": diff_past,
    }
    path = os.path.join(args.fixture, "sliding_window.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}: inside-window change {diff_inside:.3g}, past-window change {diff_past:.3g}")
    print("greedy with window   ", greedy_w)
    print("greedy without window", greedy_f)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A sentence-transformers embedding model in the layout Qwen3-Embedding ships, and its embeddings.

Builds a small random-initialised Qwen3 decoder (transformers' Qwen3Model: no lm_head, tensor names
without the "model." prefix), a byte-level BPE tokenizer trained here whose post-processor appends
<|endoftext|> to every text, and wraps both in sentence-transformers with last-token pooling and L2
normalisation (modules.json, 1_Pooling, 2_Normalize), as Qwen3-Embedding and gte-Qwen2 are published.
Then writes embeddings.json: for fixed texts, the token ids and SentenceTransformer.encode()'s float32
embeddings, and the same texts as one batch (padded: the pooling must find each text's last token).

Usage (on a machine with torch, transformers, tokenizers and sentence-transformers; CPU is enough):
    python3 scripts/make_embedding_fixture.py --out tests/data/hf/qwen3_embedding

Seeded; the output depends only on this file and the library versions recorded in reference.json.
"""

import argparse
import datetime
import json
import math
import os
import platform

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SEED = 2024
EOS = "<|endoftext|>"

# The tokenizer's training text (its merges come from these) and the texts embedded.
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat and watched the rain fall on the garden.",
    "Embeddings map a text to a vector; similar texts map to nearby vectors.",
    "FP8 with power-of-two scales keeps one byte per weight.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "The weather today is sunny with a light breeze from the west.",
]
TEXTS = [
    "What is the capital of France?",
    "Paris is the capital of France.",
    "The cat watched the rain.",
    "a",
    "Instruct: Given a web search query, retrieve relevant passages\nQuery: fp8 scales",
    "Ünïcödé text, 日本語, and emoji 🙂 fall back to bytes.",
]


def log(*a):
    print(*a, flush=True)


def build_tokenizer(tokenizers):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, eos_id)]
    )
    return tok, eos_id


def init_weights(model, torch):
    """Seeded re-initialisation (as scripts/make_hf_fixtures.py does): norm weights away from 1,
    projections at 1/sqrt(fan_in), so the hidden states differ clearly from text to text."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                new = 0.6 + 0.8 * torch.rand(p.shape, generator=g)
            elif "embed_tokens" in name:
                new = 0.5 * torch.randn(p.shape, generator=g)
            else:
                gain = 1.5 if ("o_proj" in name or "down_proj" in name) else 1.0
                new = (gain / math.sqrt(p.shape[1])) * torch.randn(p.shape, generator=g)
            p.copy_(new.to(p.dtype))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import numpy as np
    import safetensors
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models

    torch.manual_seed(SEED)
    out = args.out
    os.makedirs(out, exist_ok=True)
    work = out + ".work"
    os.makedirs(work, exist_ok=True)

    tok, eos_id = build_tokenizer(tokenizers)
    vocab = tok.get_vocab_size()
    config = transformers.Qwen3Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        hidden_act="silu",
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_bias=False,
        use_sliding_window=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )
    config._attn_implementation = "eager"
    model = transformers.Qwen3Model(config)
    init_weights(model, torch)
    model.eval()
    model.save_pretrained(work)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=EOS, model_max_length=512, padding_side="left"
    )
    fast.save_pretrained(work)

    word = st_models.Transformer(work, max_seq_length=512)
    pool = st_models.Pooling(word.get_word_embedding_dimension(), pooling_mode="lasttoken")
    st = SentenceTransformer(modules=[word, pool, st_models.Normalize()], device="cpu")
    st.save(out)

    st = SentenceTransformer(out, device="cpu")
    ids = [tok.encode(t).ids for t in TEXTS]
    one_by_one = [st.encode([t], convert_to_numpy=True)[0].astype(np.float32) for t in TEXTS]
    batched = st.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True).astype(np.float32)
    # The pooling's own check, independent of sentence-transformers: the model's last hidden state at
    # each text's last token, normalised.
    manual = []
    with torch.no_grad():
        for i in ids:
            h = model(input_ids=torch.tensor([i])).last_hidden_state[0, -1].double()
            manual.append((h / h.norm()).float().numpy())
    diff_batch = max(float(np.abs(a - b).max()) for a, b in zip(one_by_one, batched))
    diff_manual = max(float(np.abs(a - b).max()) for a, b in zip(one_by_one, manual))
    log(f"vocab {vocab}, eos {eos_id}; batched vs one by one {diff_batch:.2e}; manual {diff_manual:.2e}")

    ref = {
        "schema": "mx8-embedding-fixture-v1",
        "generated_by": "scripts/make_embedding_fixture.py",
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "safetensors": safetensors.__version__,
        },
        "pooling": "lasttoken",
        "normalized": True,
        "eos_id": eos_id,
        "texts": TEXTS,
        "ids": ids,
        "embeddings": [e.tolist() for e in one_by_one],
        "checks": {
            "batched_minus_one_by_one_max_abs": diff_batch,
            "manual_last_hidden_minus_encode_max_abs": diff_manual,
        },
    }
    with open(os.path.join(out, "embeddings.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    log("wrote", out, sorted(os.listdir(out)))


if __name__ == "__main__":
    main()

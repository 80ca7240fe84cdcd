#!/usr/bin/env python3
"""Reference fixtures for mx8's Llama-family runtime, made with Hugging Face transformers.

Builds small random-initialised Llama / Mistral / Qwen2 / Qwen3 models from configs written in
code (no network, no hub names), saves each with save_pretrained as float32 safetensors, and
writes reference.json beside it: HF's float32 eager-attention CPU logits for fixed prompts, the
per-position argmax, 16 greedy tokens per prompt, and self-checks (an independent float64
forward pass written from the safetensors file alone, HF's cached generate(), a reload of the
saved folder). docs/FIXTURES.md describes the layout and the schema.

Usage (on a machine with torch and transformers; CPU is enough):
    python3 scripts/make_hf_fixtures.py --out tests/data/hf

Everything is seeded; the output depends only on this file and the library versions recorded
in each reference.json.
"""

import argparse
import datetime
import json
import math
import os
import platform
import random
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCHEMA = "mx8-hf-fixture-v1"
N_GREEDY = 16
N_LAST_LOGITS = 4
# Prompts are re-drawn until every greedy step wins by at least this much (logit units), so a
# correct float32 implementation cannot flip a greedy token through rounding alone (HF float32
# itself differs from the float64 recomputation by ~1e-5 on these models).
MIN_GREEDY_MARGIN = 1e-3
MAX_PROMPT_TRIES = 60
MIN_DISTINCT_GREEDY = 6

# One entry per fixture model. "rope" is the RoPE spec the independent reference uses; the HF
# config is built from the same numbers (see hf_config_kwargs).
SPECS = [
    dict(
        name="llama31_gqa",
        arch="LlamaForCausalLM",
        covers="Llama-3.1 style: GQA (4 q heads, 2 kv heads), rope_theta 500000, llama3 RoPE scaling "
        "(factor 8, low 1, high 4, original_max_position_embeddings 64: with head_dim 16 the "
        "frequency bands fall in all three regimes: kept, smoothed, divided), untied lm_head. "
        "Carries layer-0 intermediates for debugging.",
        seed=1001,
        vocab=256,
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        head_dim=16,
        inter=128,
        eps=1e-5,
        tied=False,
        qkv_bias=False,
        qk_norm=False,
        max_pos=512,
        rope=dict(
            rope_type="llama3",
            rope_theta=500000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
        prompt_lens=[1, 7, 33],
        intermediates=True,
    ),
    dict(
        name="llama31_long_rope",
        arch="LlamaForCausalLM",
        covers="llama3 RoPE scaling exercised past original_max_position_embeddings (64): prompts of "
        "70 and 200 tokens, greedy to position 215; factor 32 (Llama-3.2 style), head_dim 32 with "
        "q width 128 != hidden 64, a single layer, untied lm_head.",
        seed=1002,
        vocab=256,
        hidden=64,
        layers=1,
        heads=4,
        kv_heads=2,
        head_dim=32,
        inter=128,
        eps=1e-5,
        tied=False,
        qkv_bias=False,
        qk_norm=False,
        max_pos=1024,
        rope=dict(
            rope_type="llama3",
            rope_theta=500000.0,
            factor=32.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        ),
        prompt_lens=[1, 70, 200],
        intermediates=False,
    ),
    dict(
        name="qwen2_yarn",
        arch="Qwen2ForCausalLM",
        covers="YaRN RoPE scaling (Qwen2.5 long-context style): factor 4, original_max_position_embeddings "
        "32, beta_fast 32, beta_slow 1, head_dim 32 (16 bands: with theta 10000 and 32 original positions "
        "the bands fall in all three regimes: extrapolated, ramped, interpolated), the default attention "
        "factor 0.1 ln(4) + 1 on cos and sin; prompts of 40 and 100 tokens, past the original window.",
        seed=1007,
        vocab=256,
        hidden=64,
        layers=2,
        heads=2,
        kv_heads=1,
        head_dim=32,
        inter=128,
        eps=1e-6,
        tied=True,
        qkv_bias=True,
        qk_norm=False,
        max_pos=128,  # = factor x original: transformers versions differ on which of the two they read
        rope=dict(
            rope_type="yarn",
            rope_theta=10000.0,
            factor=4.0,
            original_max_position_embeddings=32,
            beta_fast=32.0,
            beta_slow=1.0,
        ),
        prompt_lens=[1, 40, 100],
        intermediates=False,
    ),
    dict(
        name="llama2_tied",
        arch="LlamaForCausalLM",
        covers="Llama-2 style: multi-head attention (kv heads == heads), plain RoPE theta 10000, no "
        "scaling, tie_word_embeddings=true (no lm_head.weight in the file).",
        seed=1003,
        vocab=256,
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=4,
        head_dim=16,
        inter=128,
        eps=1e-5,
        tied=True,
        qkv_bias=False,
        qk_norm=False,
        max_pos=256,
        rope=dict(rope_type="default", rope_theta=10000.0),
        prompt_lens=[1, 7, 33],
        intermediates=False,
    ),
    dict(
        name="mistral_gqa",
        arch="MistralForCausalLM",
        covers="Mistral: GQA with 8 q heads of dim 8 over 2 kv heads (group 4), rope_theta 1e6, "
        "sliding_window null, intermediate 144 (not a power of two), untied lm_head.",
        seed=1004,
        vocab=256,
        hidden=64,
        layers=2,
        heads=8,
        kv_heads=2,
        head_dim=8,
        inter=144,
        eps=1e-5,
        tied=False,
        qkv_bias=False,
        qk_norm=False,
        max_pos=512,
        rope=dict(rope_type="default", rope_theta=1000000.0),
        prompt_lens=[1, 7, 33],
        intermediates=False,
    ),
    dict(
        name="qwen2_bias_tied",
        arch="Qwen2ForCausalLM",
        covers="Qwen2: biases on q/k/v projections (none on o_proj), tied embeddings, GQA 4/2, "
        "rope_theta 1e6, rms_norm_eps 1e-6, vocab 320 (not a power of two).",
        seed=1005,
        vocab=320,
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        head_dim=16,
        inter=128,
        eps=1e-6,
        tied=True,
        qkv_bias=True,
        qk_norm=False,
        max_pos=512,
        rope=dict(rope_type="default", rope_theta=1000000.0),
        prompt_lens=[1, 7, 33],
        intermediates=False,
    ),
    dict(
        name="qwen3_qknorm",
        arch="Qwen3ForCausalLM",
        covers="Qwen3: per-head RMSNorm on q and k (q_norm/k_norm, applied before RoPE), head_dim 32 "
        "with 4 heads over hidden 64 (q width 128 != hidden), GQA 4/2, tied embeddings, no biases, "
        "rope_theta 1e6, rms_norm_eps 1e-6. Carries layer-0 intermediates.",
        seed=1006,
        vocab=384,
        hidden=64,
        layers=2,
        heads=4,
        kv_heads=2,
        head_dim=32,
        inter=128,
        eps=1e-6,
        tied=True,
        qkv_bias=False,
        qk_norm=True,
        max_pos=512,
        rope=dict(rope_type="default", rope_theta=1000000.0),
        prompt_lens=[1, 7, 33],
        intermediates=True,
    ),
]


def log(*a):
    print(*a, flush=True)


# ---------------------------------------------------------------------------------------------
# Plain-Python pieces (no torch): RoPE frequencies, prompts, number formatting.


def ref_inv_freq(spec):
    """RoPE inverse frequencies in float64, written from the Llama-3.1 recipe, not from HF."""
    d = spec["head_dim"]
    r = spec["rope"]
    base = r["rope_theta"]
    inv = [1.0 / (base ** (2.0 * i / d)) for i in range(d // 2)]
    if r["rope_type"] == "default":
        return inv
    if r["rope_type"] == "yarn":
        # YaRN (Peng et al. 2023): bands that turn fewer than beta_slow times over the original window
        # are interpolated (divided by factor), more than beta_fast times kept, a linear ramp between
        # (over band indices, the correction range rounded outwards).
        factor, orig = r["factor"], r["original_max_position_embeddings"]

        def corr_dim(rotations):
            return d * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

        lo = max(math.floor(corr_dim(r["beta_fast"])), 0)
        hi = min(math.ceil(corr_dim(r["beta_slow"])), d - 1)
        if lo == hi:
            hi += 0.001
        out = []
        for i, f in enumerate(inv):
            ramp = min(max((i - lo) / (hi - lo), 0.0), 1.0)  # 0: keep (extrapolate), 1: interpolate
            out.append(f / factor * ramp + f * (1.0 - ramp))
        return out
    assert r["rope_type"] == "llama3", r
    factor, lo, hi = r["factor"], r["low_freq_factor"], r["high_freq_factor"]
    orig = r["original_max_position_embeddings"]
    low_wl, high_wl = orig / lo, orig / hi  # long wavelengths are divided, short ones kept
    out = []
    for f in inv:
        wl = 2.0 * math.pi / f
        if wl < high_wl:
            out.append(f)
        elif wl > low_wl:
            out.append(f / factor)
        else:
            s = (orig / wl - lo) / (hi - lo)
            out.append((1.0 - s) * f / factor + s * f)
    return out


def rope_regimes(spec):
    """Which llama3 regime each frequency band falls in (documentation for test writers)."""
    r = spec["rope"]
    if r["rope_type"] != "llama3":
        return None
    d = spec["head_dim"]
    orig = r["original_max_position_embeddings"]
    low_wl, high_wl = orig / r["low_freq_factor"], orig / r["high_freq_factor"]
    out = []
    for i in range(d // 2):
        wl = 2.0 * math.pi * (r["rope_theta"] ** (2.0 * i / d))
        out.append("kept" if wl < high_wl else ("divided" if wl > low_wl else "smoothed"))
    return out


def make_prompt(spec, slot, attempt):
    n = spec["prompt_lens"][slot]
    if n == 1 and attempt == 0:
        return [1]  # the BOS id of these configs
    rng = random.Random(spec["seed"] * 1000 + slot * 100 + attempt)
    return [rng.randrange(spec["vocab"]) for _ in range(n)]


def f32s(values):
    """float32 values as JSON numbers that parse back to the same float32 (9 significant digits)."""
    return [float(f"{float(v):.9g}") for v in values]


# ---------------------------------------------------------------------------------------------
# torch / transformers part.


def hf_config_kwargs(spec, legacy_rope):
    kw = dict(
        vocab_size=spec["vocab"],
        hidden_size=spec["hidden"],
        intermediate_size=spec["inter"],
        num_hidden_layers=spec["layers"],
        num_attention_heads=spec["heads"],
        num_key_value_heads=spec["kv_heads"],
        hidden_act="silu",
        max_position_embeddings=spec["max_pos"],
        rms_norm_eps=spec["eps"],
        tie_word_embeddings=spec["tied"],
        initializer_range=0.02,
        bos_token_id=1,
        eos_token_id=2,
    )
    arch = spec["arch"]
    if arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen3ForCausalLM"):
        kw["head_dim"] = spec["head_dim"]
    if arch in ("LlamaForCausalLM", "Qwen3ForCausalLM"):
        kw["attention_bias"] = False
    if arch == "LlamaForCausalLM":
        kw["mlp_bias"] = False
    if arch == "MistralForCausalLM":
        kw["sliding_window"] = None
    if arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM"):
        kw["use_sliding_window"] = False
    r = dict(spec["rope"])
    if legacy_rope:  # transformers 4.x spelling
        kw["rope_theta"] = r.pop("rope_theta")
        if r["rope_type"] != "default":
            kw["rope_scaling"] = r
    else:  # transformers 5.x spelling
        kw["rope_parameters"] = r
    return kw


def build_model(spec, torch, transformers):
    cls = getattr(transformers, spec["arch"])
    cfg_cls = cls.config_class
    notes = []
    try:
        config = cfg_cls(**hf_config_kwargs(spec, legacy_rope=False))
        notes.append("config built with rope_parameters")
    except Exception as e:  # older transformers: rope_theta + rope_scaling
        first = f"{type(e).__name__}: {e}"
        log(f"  rope_parameters refused ({first}); trying rope_theta/rope_scaling")
        notes.append(f"rope_parameters refused ({first}); used rope_theta/rope_scaling")
        config = cfg_cls(**hf_config_kwargs(spec, legacy_rope=True))
    try:
        config._attn_implementation = "eager"
    except Exception as e:
        notes.append(f"config._attn_implementation not settable: {type(e).__name__}: {e}")
    torch.manual_seed(spec["seed"])
    model = cls(config)
    if getattr(model.config, "_attn_implementation", None) != "eager":
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        else:
            model.config._attn_implementation = "eager"
        notes.append("eager attention set after construction")
    model = model.float().eval()
    notes.append(f"attn_implementation in use: {getattr(model.config, '_attn_implementation', '?')}")
    init_weights(model, spec, torch)
    emb = model.model.embed_tokens.weight
    head = model.lm_head.weight
    if spec["tied"] and head.data_ptr() != emb.data_ptr():
        raise RuntimeError("tie_word_embeddings=True but lm_head is not tied to embed_tokens")
    if not spec["tied"] and head.data_ptr() == emb.data_ptr():
        raise RuntimeError("tie_word_embeddings=False but lm_head shares embed_tokens")
    attn0 = model.model.layers[0].self_attn
    has_bias = getattr(attn0.q_proj, "bias", None) is not None
    if has_bias != spec["qkv_bias"]:
        raise RuntimeError(f"q_proj bias present={has_bias}, spec says {spec['qkv_bias']}")
    if spec["qk_norm"] != hasattr(attn0, "q_norm"):
        raise RuntimeError("q_norm presence does not match the spec")
    return model, notes


def init_weights(model, spec, torch):
    """Seeded re-initialisation with scales chosen so logits spread over a few units (HF's 0.02
    default gives logits ~0.1 and near-tied argmaxes) and every norm weight differs from 1."""
    g = torch.Generator().manual_seed(spec["seed"])
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):
                new = 0.6 + 0.8 * torch.rand(p.shape, generator=g)
            elif name.endswith(".bias"):
                new = 0.3 * torch.randn(p.shape, generator=g)
            elif "embed_tokens" in name:
                new = (0.25 if spec["tied"] else 0.5) * torch.randn(p.shape, generator=g)
            elif name.startswith("lm_head"):
                new = 0.3 * torch.randn(p.shape, generator=g)
            else:
                fan_in = p.shape[1]
                if "q_proj" in name or "k_proj" in name:
                    gain = 1.2  # attention scores with a spread of about 1.5: non-uniform softmax
                elif "o_proj" in name or "down_proj" in name:
                    gain = 1.5  # sublayer outputs outweigh the embedding: fewer repeating greedy runs
                else:
                    gain = 1.0
                new = (gain / math.sqrt(fan_in)) * torch.randn(p.shape, generator=g)
            p.copy_(new.to(p.dtype))


def hf_logits(model, ids, torch):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    return out.logits[0].float()  # [L, vocab]


def greedy(model, prompt, torch):
    ids = list(prompt)
    toks, margins, last = [], [], None
    for _ in range(N_GREEDY):
        lg = hf_logits(model, ids, torch)[-1]
        top = torch.topk(lg, 2)
        tok = int(top.indices[0])
        toks.append(tok)
        margins.append(float(top.values[0] - top.values[1]))
        last = lg
        ids.append(tok)
    return toks, margins, last


def load_safetensors_f64(path, torch):
    """All tensors of a float32 safetensors file as float64, read with no library but torch."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = bytearray(f.read())
    header.pop("__metadata__", None)
    out = {}
    for k, v in header.items():
        if v["dtype"] != "F32":
            raise ValueError(f"{path}: {k} is {v['dtype']}, expected F32")
        a, b = v["data_offsets"]
        t = torch.frombuffer(data[a:b], dtype=torch.float32) if b > a else torch.zeros(0)
        out[k] = t.reshape(v["shape"]).to(torch.float64)
    return out


def ref_forward_f64(T, spec, ids, torch):
    """Independent float64 forward pass from the saved tensors alone (what mx8 must compute)."""
    F = torch.nn.functional
    H, KV, D = spec["heads"], spec["kv_heads"], spec["head_dim"]
    eps = spec["eps"]
    L = len(ids)
    x = T["model.embed_tokens.weight"][torch.tensor(ids)]
    inv = torch.tensor(ref_inv_freq(spec), dtype=torch.float64)
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv[None, :]
    # YaRN scales cos and sin (so q . k) by its attention factor, 0.1 ln(factor) + 1 by default.
    r = spec["rope"]
    m = 0.1 * math.log(r["factor"]) + 1.0 if r["rope_type"] == "yarn" else 1.0
    cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :] * m
    sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :] * m

    def rms(v, w):
        return v / torch.sqrt((v * v).mean(-1, keepdim=True) + eps) * w

    def rope(t):  # t: [L, n, D]; rotate-half pairing (i, i + D/2), as HF's Llama code does
        t1, t2 = t[..., : D // 2], t[..., D // 2 :]
        return t * cos + torch.cat([-t2, t1], -1) * sin

    def lin(h, p):
        y = h @ T[p + ".weight"].T
        return y + T[p + ".bias"] if (p + ".bias") in T else y

    future = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
    for i in range(spec["layers"]):
        p = f"model.layers.{i}."
        h = rms(x, T[p + "input_layernorm.weight"])
        q = lin(h, p + "self_attn.q_proj").view(L, H, D)
        k = lin(h, p + "self_attn.k_proj").view(L, KV, D)
        v = lin(h, p + "self_attn.v_proj").view(L, KV, D)
        if spec["qk_norm"]:
            q = rms(q, T[p + "self_attn.q_norm.weight"])
            k = rms(k, T[p + "self_attn.k_norm.weight"])
        q, k = rope(q), rope(k)
        group = H // KV
        heads = []
        for hh in range(H):
            s = (q[:, hh] @ k[:, hh // group].T) / math.sqrt(D)
            a = torch.softmax(s.masked_fill(future, float("-inf")), -1)
            heads.append(a @ v[:, hh // group])
        x = x + lin(torch.cat(heads, -1), p + "self_attn.o_proj")
        h2 = rms(x, T[p + "post_attention_layernorm.weight"])
        x = x + lin(F.silu(lin(h2, p + "mlp.gate_proj")) * lin(h2, p + "mlp.up_proj"), p + "mlp.down_proj")
    x = rms(x, T["model.norm.weight"])
    w = T["lm_head.weight"] if "lm_head.weight" in T else T["model.embed_tokens.weight"]
    return x @ w.T


def capture_intermediates(model, ids, torch):
    """float32 outputs of layer 0's pieces for one prompt, via forward hooks."""
    got, handles = {}, []

    def keep(name, t):
        if isinstance(t, (tuple, list)):
            t = t[0]
        t = t.detach().float()
        got[name] = {"shape": list(t.shape), "data": f32s(t.reshape(-1).tolist())}

    def out_hook(name):
        return lambda m, a, o: keep(name, o)

    def in_hook(name):
        return lambda m, a: keep(name, a[0])

    inner = model.model
    l0 = inner.layers[0]
    at = l0.self_attn
    hooks = [
        ("embed_tokens", inner.embed_tokens, out_hook),
        ("layer0.input_layernorm", l0.input_layernorm, out_hook),
        ("layer0.q_proj", at.q_proj, out_hook),
        ("layer0.k_proj", at.k_proj, out_hook),
        ("layer0.v_proj", at.v_proj, out_hook),
        ("layer0.attn_context (input of o_proj)", at.o_proj, in_hook),
        ("layer0.o_proj", at.o_proj, out_hook),
        ("layer0.post_attention_layernorm", l0.post_attention_layernorm, out_hook),
        ("layer0.mlp_act (input of down_proj)", l0.mlp.down_proj, in_hook),
        ("layer0.mlp", l0.mlp, out_hook),
        ("layer0.output", l0, out_hook),
        ("final_norm", inner.norm, out_hook),
    ]
    if hasattr(at, "q_norm"):
        hooks += [("layer0.q_norm", at.q_norm, out_hook), ("layer0.k_norm", at.k_norm, out_hook)]
    for name, mod, kind in hooks:
        if kind is out_hook:
            handles.append(mod.register_forward_hook(kind(name)))
        else:
            handles.append(mod.register_forward_pre_hook(kind(name)))
    rot = getattr(inner, "rotary_emb", None)
    if rot is not None:

        def rot_hook(m, a, o):
            keep("rope_cos", o[0])
            keep("rope_sin", o[1])

        handles.append(rot.register_forward_hook(rot_hook))
    try:
        hf_logits(model, ids, torch)
    finally:
        for h in handles:
            h.remove()
    return got


def tensor_table(path):
    """Names, shapes and dtypes from the safetensors header (plain JSON after an 8-byte length)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", None)
    table = {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in sorted(header.items())}
    return table, meta


def save_model(model, out_dir):
    import inspect

    sig = inspect.signature(model.save_pretrained)
    if "safe_serialization" in sig.parameters:
        model.save_pretrained(out_dir, safe_serialization=True)
        return "save_pretrained(safe_serialization=True)"
    model.save_pretrained(out_dir)  # transformers 5 writes safetensors only
    return "save_pretrained() (no safe_serialization argument in this version)"


def make_one(spec, out_root, torch, transformers, versions):
    name = spec["name"]
    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    model, notes = build_model(spec, torch, transformers)
    ref = {
        "schema": SCHEMA,
        "name": name,
        "architecture": spec["arch"],
        "covers": spec["covers"],
        "weights_dtype": "float32",
        "dtype": "float32",
        "compute": "HF transformers forward on CPU, float32, attn_implementation=eager, "
        "use_cache=False, 1 thread",
        "seed": spec["seed"],
        **versions,
        "notes": notes,
        "spec": {k: spec[k] for k in spec if k not in ("covers", "prompt_lens", "intermediates")},
    }
    ref["spec"]["rope_regimes"] = rope_regimes(spec)

    # RoPE frequencies: HF's (float32) against the independent float64 recipe.
    inv_ref = ref_inv_freq(spec)
    rot = getattr(model.model, "rotary_emb", None) or model.model.layers[0].self_attn.rotary_emb
    inv_hf = rot.inv_freq.double().tolist()
    rel = max(abs(a - b) / abs(b) for a, b in zip(inv_hf, inv_ref))
    ref["rope"] = {
        "inv_freq_hf": inv_hf,
        "inv_freq_f64": inv_ref,
        "inv_freq_max_rel_diff": rel,
        "attention_scaling": float(getattr(rot, "attention_scaling", 1.0)),
    }
    if rel > 1e-6:
        log(f"  WARNING {name}: HF inv_freq differs from the recipe by {rel:.3g} (rope config ignored?)")

    how = save_model(model, out_dir)
    st_path = os.path.join(out_dir, "model.safetensors")
    if not os.path.exists(st_path):
        raise RuntimeError(f"{st_path} was not written; folder has {os.listdir(out_dir)}")
    ref["saved_with"] = how
    ref["files"] = sorted(os.listdir(out_dir))
    ref["tensors"], ref["safetensors_metadata"] = tensor_table(st_path)
    ref["lm_head_in_file"] = "lm_head.weight" in ref["tensors"]
    T = load_safetensors_f64(st_path, torch)

    prompts, logits, positions, argmax, argmax_margin = [], [], [], [], []
    greedy_toks, greedy_margins, greedy_last, prompt_attempts = [], [], [], []
    f64_diff, f64_scale, f64_greedy_ok, gen_tokens, gen_ok = 0.0, 0.0, True, [], []
    for slot in range(len(spec["prompt_lens"])):
        best = None
        for attempt in range(MAX_PROMPT_TRIES):
            prompt = make_prompt(spec, slot, attempt)
            toks, margins, last = greedy(model, prompt, torch)
            # Prefer safe margins first, then a continuation that does not just repeat one token
            # (a repeating one tests the decode path less).
            score = (min(margins) >= MIN_GREEDY_MARGIN, min(len(set(toks)), MIN_DISTINCT_GREEDY))
            if best is None or score > best[0]:
                best = (score, attempt, prompt, toks, margins, last)
            if score == (True, MIN_DISTINCT_GREEDY):
                break
        score, attempt, prompt, toks, margins, last = best
        if not score[0]:
            log(f"  WARNING {name}: prompt slot {slot}: no prompt with greedy margins >= {MIN_GREEDY_MARGIN}")
        prompt_attempts.append(attempt)
        prompts.append(prompt)
        greedy_toks.append(toks)
        greedy_margins.append(margins)
        greedy_last.append(f32s(last.tolist()))
        lg = hf_logits(model, prompt, torch)
        L = len(prompt)
        pos = list(range(max(0, L - N_LAST_LOGITS), L))
        positions.append(pos)
        logits.append([f32s(lg[p].tolist()) for p in pos])
        top = torch.topk(lg, 2, dim=-1)
        argmax.append([int(i) for i in top.indices[:, 0]])
        argmax_margin.append([float(a - b) for a, b in zip(top.values[:, 0], top.values[:, 1])])

        # Independent float64 pass over prompt + the first 15 greedy tokens (all positions).
        seq = prompt + toks[:-1]
        full32 = hf_logits(model, seq, torch).double()
        try:
            full64 = ref_forward_f64(T, spec, seq, torch)
            f64_diff = max(f64_diff, float((full64 - full32).abs().max()))
            f64_scale = max(f64_scale, float(full64.abs().max()))
            f64_greedy_ok &= [int(t) for t in full64[L - 1 :].argmax(-1)] == toks
        except Exception as e:  # keep the HF fixture even if the cross-check breaks
            ref["notes"].append(f"float64 reference failed: {type(e).__name__}: {e}")
            f64_diff = float("nan")

        # HF's own cached generation must agree with the uncached greedy loop.
        try:
            with torch.no_grad():
                ids = torch.tensor([prompt], dtype=torch.long)
                # An explicit all-ones mask: without one, generate() masks every prompt token equal
                # to pad_token_id (this disagreed on a prompt holding id 0 in the 2026-11-28 run).
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=N_GREEDY,
                    do_sample=False,
                    pad_token_id=0,
                )
            g = [int(t) for t in out[0, L:]]
            gen_tokens.append(g)
            gen_ok.append(g == toks[: len(g)])
        except Exception as e:
            gen_tokens.append(None)
            gen_ok.append(None)
            ref["notes"].append(f"generate() failed: {type(e).__name__}: {e}")

    ref.update(
        prompts=prompts,
        prompt_attempts=prompt_attempts,
        logits_positions=positions,
        logits=logits,
        argmax=argmax,
        argmax_margin=argmax_margin,
        greedy=greedy_toks,
        greedy_margin=greedy_margins,
        greedy_last_logits=greedy_last,
    )
    ref["checks"] = {
        "float64_reference_max_abs_diff": f64_diff,
        "float64_reference_max_abs_logit": f64_scale,
        "float64_reference_greedy_agrees": f64_greedy_ok,
        "hf_generate_tokens": gen_tokens,
        "hf_generate_agrees": gen_ok,
    }

    # Reload the saved folder and check it reproduces the logits exactly.
    try:
        cls = getattr(transformers, spec["arch"])
        try:
            re = cls.from_pretrained(out_dir, attn_implementation="eager", dtype=torch.float32)
        except TypeError:
            re = cls.from_pretrained(out_dir, attn_implementation="eager", torch_dtype=torch.float32)
        re = re.float().eval()
        d = float((hf_logits(re, prompts[-1], torch) - hf_logits(model, prompts[-1], torch)).abs().max())
        ref["checks"]["reload_max_abs_diff"] = d
    except Exception as e:
        ref["checks"]["reload_max_abs_diff"] = None
        ref["notes"].append(f"reload failed: {type(e).__name__}: {e}")

    if spec["intermediates"]:
        ref["intermediates"] = {
            "prompt_index": 1,
            "dtype": "float32",
            "layout": "each entry: shape as HF produced it (batch first), data flattened row-major",
            "values": capture_intermediates(model, prompts[1], torch),
        }

    with open(os.path.join(out_dir, "config.json")) as f:
        ref["config_json"] = json.load(f)
    path = os.path.join(out_dir, "reference.json")
    with open(path, "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    sizes = {fn: os.path.getsize(os.path.join(out_dir, fn)) for fn in sorted(os.listdir(out_dir))}
    log(
        f"  {name}: files {sizes}; f64 diff {f64_diff:.3g} (|logit| max {f64_scale:.3g}); "
        f"f64 greedy ok {f64_greedy_ok}; generate ok {gen_ok}; reload diff "
        f"{ref['checks']['reload_max_abs_diff']}; min greedy margin "
        f"{min(min(m) for m in greedy_margins):.3g}; prompt attempts {prompt_attempts}; rope rel {rel:.3g}"
    )
    return {
        "name": name,
        "architecture": spec["arch"],
        "covers": spec["covers"],
        "bytes": sizes,
        "float64_reference_max_abs_diff": f64_diff,
        "float64_reference_greedy_agrees": f64_greedy_ok,
        "hf_generate_agrees": gen_ok,
        "reload_max_abs_diff": ref["checks"]["reload_max_abs_diff"],
    }


def verify(root):
    """Re-derive every stored result from model.safetensors + reference.json with the float64
    reference (needs torch only, not transformers). Returns the number of failures."""
    import torch

    failures = 0
    names = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "reference.json")))
    for name in names:
        with open(os.path.join(root, name, "reference.json")) as f:
            ref = json.load(f)
        spec = ref["spec"]
        T = load_safetensors_f64(os.path.join(root, name, "model.safetensors"), torch)
        worst, bad = 0.0, []
        for i, prompt in enumerate(ref["prompts"]):
            L = len(prompt)
            lg = ref_forward_f64(T, spec, prompt + ref["greedy"][i][:-1], torch)
            for p, row in zip(ref["logits_positions"][i], ref["logits"][i]):
                worst = max(worst, float((lg[p] - torch.tensor(row, dtype=torch.float64)).abs().max()))
            last = torch.tensor(ref["greedy_last_logits"][i], dtype=torch.float64)
            worst = max(worst, float((lg[-1] - last).abs().max()))
            for p, (a, m) in enumerate(zip(ref["argmax"][i], ref["argmax_margin"][i])):
                if m > 1e-4 and int(lg[p].argmax()) != a:
                    bad.append(f"prompt {i} position {p} argmax")
            if [int(t) for t in lg[L - 1 :].argmax(-1)] != ref["greedy"][i]:
                bad.append(f"prompt {i} greedy")
        # float32 HF against float64 here: 1e-4 is ~10x the largest gap seen when they were made.
        ok = worst < 1e-4 and not bad
        failures += not ok
        log(f"{'ok  ' if ok else 'FAIL'} {name}: max |logit - float64 reference| {worst:.3g} {bad[:4] or ''}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="output folder (one subfolder per model)")
    ap.add_argument("--only", nargs="*", help="model names to make (default: all)")
    ap.add_argument("--verify", metavar="DIR", help="check existing fixtures against the float64 reference")
    args = ap.parse_args()
    if args.verify:
        return 1 if verify(args.verify) else 0
    if not args.out:
        ap.error("--out or --verify is required")

    import torch
    import transformers
    import safetensors

    torch.set_num_threads(1)  # one summation order, so a re-run reproduces the files
    versions = {
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "safetensors_version": getattr(safetensors, "__version__", "?"),
        "python_version": platform.python_version(),
        "created_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generated_by": "python3 scripts/make_hf_fixtures.py --out tests/data/hf",
    }
    log("versions:", json.dumps(versions))
    os.makedirs(args.out, exist_ok=True)
    index, failed = [], []
    for spec in SPECS:
        if args.only and spec["name"] not in args.only:
            continue
        log(f"model {spec['name']} ({spec['arch']})")
        try:
            index.append(make_one(spec, args.out, torch, transformers, versions))
        except Exception:
            traceback.print_exc()
            failed.append(spec["name"])
    with open(os.path.join(args.out, "index.json"), "w") as f:
        json.dump({"schema": SCHEMA, **versions, "models": index, "failed": failed}, f, indent=1)
        f.write("\n")
    total = sum(sum(m["bytes"].values()) for m in index)
    log(f"done: {len(index)} models, {total} bytes, failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

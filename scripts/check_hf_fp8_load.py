#!/usr/bin/env python3
"""Does an independent reader accept what `mx8 convert --scheme ds-fp8` writes?

Run on the GPU machine (torch + transformers + safetensors, no network):

    python3 scripts/check_hf_fp8_load.py --mx8 PATH/TO/mx8 --work /tmp/fp8check --out results.json

For each small random-initialised model (Llama, Qwen2, and a Llama whose dimensions are not
multiples of 128), it:
  1. saves the model with save_pretrained in bfloat16 (the reference safetensors writer);
  2. checks that `mx8 convert --keep '*'` (copy everything) reproduces that file byte for byte;
  3. converts it with `mx8 convert --scheme ds-fp8` (UE8M0 scales, 128x128 blocks);
  4. loads the output with transformers' fine-grained FP8 loader (FP8Linear modules, E4M3 weights
     with weight_scale_inv) and runs it on the GPU;
  5. builds the "dequantized model": the original architecture with every quantized weight replaced
     by E4M3 code x scale, computed here from the files alone (an independent dequantizer);
  6. compares logits: FP8 model vs dequantized model (differences come from transformers'
     on-the-fly 1x128 FP8 activation quantization and its FP8 GEMM), and dequantized vs original
     (the weight quantization error);
  7. converts the ds-fp8 output back with `--scheme bf16` and checks that transformers loads it and
     that its logits equal the dequantized model's in bf16 (the same weights, bit for bit).
Results go to --out as JSON and a summary to stdout.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback


def log(*a):
    print(*a, flush=True)


def make_models(torch, transformers):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(vocab_size=512, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2)
    return {
        "llama": LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, rope_theta=10000.0, **common),
        "qwen2": Qwen2Config(hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, rope_theta=1e6, **common),
        # 192 and 320 are not multiples of 128: partial scale blocks at the edges.
        "llama_ragged": LlamaConfig(hidden_size=192, intermediate_size=320, num_hidden_layers=2,
                                    num_attention_heads=3, num_key_value_heads=1, rope_theta=10000.0, **common),
    }


def init_weights(torch, model, seed):
    # Larger-than-default weights so logits spread over several units (HF's default init gives
    # near-uniform logits, where agreement would say little).
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.empty(p.shape).uniform_(0.6, 1.4, generator=g) if "norm" in name
                        else torch.randn(p.shape, generator=g) * 0.02)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / math.sqrt(p.shape[1])))


def dequantized_state(torch, folder):
    """Reads the ds-fp8 folder with safetensors only and dequantizes every weight/scale pair."""
    from safetensors.torch import load_file

    state = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            state.update(load_file(os.path.join(folder, f)))
    out, quantized = {}, 0
    for name, t in state.items():
        if name.endswith("_scale_inv"):
            continue
        s = state.get(name + "_scale_inv")
        if s is None:
            out[name] = t.float()
            continue
        assert t.dtype == torch.float8_e4m3fn, (name, t.dtype)
        assert s.dtype == torch.float32
        # Every UE8M0 scale must be a power of two.
        m, _ = torch.frexp(s)
        assert bool((m == 0.5).all()), f"{name}: scales not powers of two"
        rows, cols = t.shape
        full = s.repeat_interleave(128, 0)[:rows].repeat_interleave(128, 1)[:, :cols]
        out[name] = t.float() * full
        quantized += 1
    return out, quantized


def emulated_fp8_linear(input, weight, weight_scale_inv, block_size=None, bias=None, activation_scale=None):
    """Stands in for transformers' fine-grained FP8 GEMM, whose kernel comes from the Hugging Face
    hub through the `kernels` package (the GPU machine has no network). Same arithmetic in float32:
    activations quantized on the fly to E4M3 per 1x128 tile with power-of-two (ceil) scales, as
    DeepSeek-V3.1 does, times the E4M3 weights scaled per 128x128 block by weight_scale_inv."""
    import torch

    bn, bk = block_size if block_size else (128, 128)
    shape, K, N = input.shape, input.shape[-1], weight.shape[0]
    x = input.reshape(-1, K).float()
    M = x.shape[0]
    blocks = torch.nn.functional.pad(x, (0, (-K) % bk)).view(M, -1, bk)
    s = torch.exp2(torch.ceil(torch.log2(blocks.abs().amax(-1, keepdim=True).clamp(min=1e-4) / 448.0)))
    xd = ((blocks / s).to(torch.float8_e4m3fn).float() * s).view(M, -1)[:, :K]
    ws = weight_scale_inv.float().repeat_interleave(bn, 0)[:N].repeat_interleave(bk, 1)[:, :K]
    y = xd @ (weight.float() * ws).t()
    if bias is not None:
        y = y + bias.float()
    return y.to(input.dtype).reshape(*shape[:-1], N)


def logits_of(torch, model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def compare(torch, a, b):
    d = (a - b).flatten()
    ref = b.flatten()
    return {
        "max_abs_diff": float(d.abs().max()),
        "rel_l2": float(d.norm() / ref.norm()),
        "cosine": float(torch.nn.functional.cosine_similarity(a.flatten(), ref, dim=0)),
        "top1_agree": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
        "max_abs_logit": float(ref.abs().max()),
    }


def run_mx8(mx8, *args):
    t = time.time()
    p = subprocess.run([mx8, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"mx8 {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout, time.time() - t


def check_model(torch, transformers, mx8, work, name, config, seed):
    from transformers import AutoModelForCausalLM

    res = {"model": name, "config": {k: getattr(config, k) for k in
                                     ("hidden_size", "intermediate_size", "num_attention_heads",
                                      "num_key_value_heads", "num_hidden_layers", "vocab_size")}}
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    init_weights(torch, model, seed)
    src = os.path.join(work, name + "_bf16")
    model.save_pretrained(src)
    res["class"] = type(model).__name__

    # 2. byte compatibility with the reference writer.
    copy = os.path.join(work, name + "_copy")
    run_mx8(mx8, "convert", src, copy, "--scheme", "ds-fp8", "--keep", "*", "--force")
    with open(os.path.join(src, "model.safetensors"), "rb") as f1, open(os.path.join(copy, "model.safetensors"), "rb") as f2:
        res["copy_byte_identical"] = f1.read() == f2.read()

    # 3. convert.
    fp8 = os.path.join(work, name + "_ds_fp8")
    out, secs = run_mx8(mx8, "convert", src, fp8, "--scheme", "ds-fp8", "--force")
    res["convert_seconds"] = secs
    res["convert_stdout"] = out.strip().splitlines()[-4:]
    with open(os.path.join(fp8, "config.json")) as f:
        res["quantization_config"] = json.load(f).get("quantization_config")

    ids = torch.randint(3, config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(seed + 1)).cuda()

    # 5. dequantized reference from the files alone.
    deq_state, n_quant = dequantized_state(torch, fp8)
    res["quantized_tensors"] = n_quant
    ref = AutoModelForCausalLM.from_config(config).to(torch.float32)
    missing, unexpected = ref.load_state_dict(deq_state, strict=False)
    res["dequant_missing"] = list(missing)
    res["dequant_unexpected"] = list(unexpected)
    ref = ref.cuda().eval()
    ref_logits = logits_of(torch, ref, ids)
    orig = model.float().cuda().eval()
    res["dequantized_vs_original"] = compare(torch, ref_logits, logits_of(torch, orig, ids))

    # 4. transformers' fine-grained FP8 loader.
    q = AutoModelForCausalLM.from_pretrained(fp8, dtype=torch.bfloat16, device_map="cuda").eval()
    kinds = sorted({type(m).__name__ for m in q.modules() if "Linear" in type(m).__name__})
    res["linear_module_types"] = kinds
    fp8_params = [n for n, p in q.named_parameters() if p.dtype == torch.float8_e4m3fn]
    fp8_params += [n for n, b in q.named_buffers() if b.dtype == torch.float8_e4m3fn]
    res["fp8_weights_loaded"] = len(fp8_params)
    # What the loader put into each FP8Linear must be the file's codes and scales, bit for bit.
    from safetensors.torch import load_file
    file_state = load_file(os.path.join(fp8, "model.safetensors"))
    same = 0
    for name, sc in file_state.items():
        if not name.endswith(".weight_scale_inv"):
            continue
        mod = q.get_submodule(name[: -len(".weight_scale_inv")])
        w_ok = torch.equal(mod.weight.detach().cpu().view(torch.uint8), file_state[name[: -len("_scale_inv")]].view(torch.uint8))
        s_ok = torch.equal(mod.weight_scale_inv.detach().cpu().float(), sc)
        same += int(w_ok and s_ok)
    res["fp8_modules_matching_file"] = same
    import transformers.integrations.finegrained_fp8 as tf_fp8
    # Once patched (first model), the emulation stays in place for the following models.
    emulated = tf_fp8.finegrained_fp8_linear is emulated_fp8_linear
    try:
        q_logits = logits_of(torch, q, ids)
    except ImportError as e:
        res["fp8_kernel_error"] = str(e)[:200]
        tf_fp8.finegrained_fp8_linear = emulated_fp8_linear
        emulated = True
        q_logits = logits_of(torch, q, ids)
    res["fp8_forward"] = "emulated FP8 GEMM (see emulated_fp8_linear)" if emulated else "transformers' own kernel"
    res["fp8_vs_dequantized"] = compare(torch, q_logits, ref_logits)
    del q

    # transformers' own dequantizing loader (FineGrainedFP8Config(dequantize=True)): its BF16
    # weights must be the dequantized values, and its logits those of the dequantized model.
    try:
        from transformers import FineGrainedFP8Config
        d = AutoModelForCausalLM.from_pretrained(fp8, dtype=torch.bfloat16, device_map="cuda",
                                                 quantization_config=FineGrainedFP8Config(dequantize=True)).eval()
        ref16 = {k: v.to(torch.bfloat16) for k, v in deq_state.items()}
        dsd = d.state_dict()
        res["tf_dequantize_weights_equal"] = sum(int(k in dsd and torch.equal(dsd[k].detach().cpu(), v))
                                                 for k, v in ref16.items())
        res["tf_dequantize_weights_total"] = len(ref16)
        res["tf_dequantize_vs_dequantized"] = compare(torch, logits_of(torch, d, ids), ref_logits)
        del d
    except Exception as e:
        res["tf_dequantize_error"] = f"{type(e).__name__}: {e}"[:500]

    # 7. back to bf16 with mx8, loaded as a plain model.
    bf = os.path.join(work, name + "_back_bf16")
    run_mx8(mx8, "convert", fp8, bf, "--scheme", "bf16", "--force")
    b = AutoModelForCausalLM.from_pretrained(bf, dtype=torch.bfloat16, device_map="cuda").eval()
    # dtype= (not .to()) so that non-persistent buffers such as RoPE's inv_freq stay float32, as
    # from_pretrained keeps them; .to(bfloat16) would round them and move the logits by ~0.06.
    ref_bf16 = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    ref_bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in deq_state.items()}, strict=False)
    ref_bf16 = ref_bf16.cuda().eval()
    res["bf16_back_vs_dequantized_bf16"] = compare(torch, logits_of(torch, b, ids), logits_of(torch, ref_bf16, ids))
    weights_equal = all(torch.equal(p1.detach().cpu(), p2.detach().cpu())
                        for (n1, p1), (n2, p2) in zip(sorted(b.state_dict().items()), sorted(ref_bf16.state_dict().items())))
    res["bf16_back_weights_bit_identical"] = weights_equal
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mx8", required=True)
    ap.add_argument("--work", default="/tmp/mx8_fp8check")
    ap.add_argument("--out", default="check_hf_fp8_load.json")
    args = ap.parse_args()
    import torch
    import transformers

    os.makedirs(args.work, exist_ok=True)
    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        import safetensors, triton
        env["safetensors"], env["triton"] = safetensors.__version__, triton.__version__
    except Exception:
        pass
    log(json.dumps(env))
    results = {"env": env, "models": []}
    for i, (name, cfg) in enumerate(make_models(torch, transformers).items()):
        log(f"== {name}")
        try:
            r = check_model(torch, transformers, args.mx8, args.work, name, cfg, seed=100 + i)
        except Exception as e:
            r = {"model": name, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-3000:]}
        results["models"].append(r)
        log(json.dumps({k: v for k, v in r.items() if k not in ("trace",)}, indent=1))
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    # Pass: the FP8 loader holds exactly the file's codes and scales, and the FP8 forward (which adds
    # 1x128 activation quantization) is no further from the dequantized model than the dequantized
    # model is from the original (both are one E4M3 rounding per matmul operand). Top-1 agreement is
    # reported but not a criterion: random models have near-tied logits.
    ok = all("error" not in r and r["fp8_weights_loaded"] > 0 and r["fp8_modules_matching_file"] == r["quantized_tensors"]
             and r["fp8_vs_dequantized"]["rel_l2"] <= 2 * r["dequantized_vs_original"]["rel_l2"]
             and r["bf16_back_weights_bit_identical"] and r["copy_byte_identical"] for r in results["models"])
    log("OVERALL", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

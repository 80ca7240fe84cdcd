#!/usr/bin/env python3
"""Times torch._scaled_mm's block-scaled FP8 GEMM (cuBLASLt reached through PyTorch, the comparator
the DeepGEMM measurement of ../shared/research/deepgemm-h200.md used) on issue 4's 18 shapes, the way
`mx8 bench cuda-gemm` times its kernels, and writes PERF.md's torch-scaled-mm section beside the mx8
and direct-cuBLASLt times that `mx8 bench cuda-gemm` wrote into the same file in the same device run.

Why: mx8's ratios over cuBLASLt are taken against cuBLASLt called directly (src/backend/cuda/cublaslt),
whose algorithm choice may differ from the one PyTorch's wrapper makes. This script measures the other
path the issue names, so that the two comparators can be told apart.

Usage (on the GPU machine, after `mx8 bench cuda-gemm --perf-md PERF.md`):
    python3 scripts/peer_torch_scaled_mm.py --perf-md PERF.md
"""
import argparse
import datetime
import math
import os
import re
import statistics
import sys

SHAPES = [(2112, 7168), (24576, 1536), (32768, 512), (7168, 16384), (4096, 7168), (7168, 2048)]
MS = [64, 128, 4096]
BEGIN, END = "<!-- bench:torch-scaled-mm -->", "<!-- /bench:torch-scaled-mm -->"


def quantize(torch, m, n, k):
    """A (E4M3, 1x128 f32 scales, stride (1, M)) and B (E4M3, 128x128 f32 scales), as DeepGEMM's test
    quantizes them, plus the dequantized operands for a correctness check."""
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    ab = a.float().view(m, k // 128, 128)
    sa = ab.abs().amax(-1).clamp(min=1e-4) / 448.0  # [m, k/128]
    a8 = (ab / sa[..., None]).to(torch.float8_e4m3fn).view(m, k)
    nb = (n + 127) // 128
    bp = torch.zeros(nb * 128, k, device="cuda", dtype=torch.float32)
    bp[:n] = b.float()
    bb = bp.view(nb, 128, k // 128, 128)
    sb = bb.abs().amax(dim=(1, 3)).clamp(min=1e-4) / 448.0  # [nb, k/128]
    b8 = (bb / sb[:, None, :, None]).to(torch.float8_e4m3fn).view(nb * 128, k)[:n].contiguous()
    sfa = sa.t().contiguous().t()  # [m, k/128] with stride (1, m)
    deq_a = (a8.float().view(m, k // 128, 128) * sa[..., None]).view(m, k)
    deq_b = (b8.float().view(n, k // 128, 128) * sb.repeat_interleave(128, 0)[:n, :, None]).view(n, k)
    return a8, b8, sfa, sb, deq_a, deq_b


def time_us(torch, fn, flush, iters):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(iters):
        flush.zero_()  # 512 MB written, then 256 MB read: no dirty line of the flush is left for the timed call
        flush[: 256 << 20].view(torch.int64).sum()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1000.0)
    return statistics.median(times)


def mx8_times(perf_md):
    """(M, N, K) -> (mx8 us, direct cuBLASLt us) from the cuda-gemm section of perf_md."""
    text = open(perf_md).read()
    sec = text[text.find("<!-- bench:cuda-gemm -->") : text.find("<!-- /bench:cuda-gemm -->")]
    rows, header = {}, None
    for line in sec.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:3] == ["M", "N", "K"]:
            header = cells
        elif header and len(cells) == len(header) and cells[0].isdigit():
            r = dict(zip(header, cells))
            rows[(int(r["M"]), int(r["N"]), int(r["K"]))] = (float(r["mx8 us"]), float(r["cuBLASLt FP8 us"]))
    return rows


def write_section(perf_md, body):
    text = open(perf_md).read()
    block = BEGIN + "\n" + body + END
    if BEGIN in text and END in text:
        text = text[: text.find(BEGIN)] + block + text[text.find(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = perf_md + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, perf_md)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--perf-md", required=True, help="PERF.md that mx8 bench cuda-gemm wrote in this run")
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("peer_torch_scaled_mm: PyTorch is not installed here")
    if not torch.cuda.is_available():
        sys.exit("peer_torch_scaled_mm: no CUDA device")
    mx8 = mx8_times(args.perf_md)
    if not mx8:
        sys.exit(f"peer_torch_scaled_mm: {args.perf_md} has no cuda-gemm section to compare with")
    flush = torch.empty(512 << 20, dtype=torch.uint8, device="cuda")
    lines, ratios = [], {m: ([], []) for m in MS}
    for m in MS:
        for n, k in SHAPES:
            a8, b8, sfa, sb, deq_a, deq_b = quantize(torch, m, n, k)

            def call():
                return torch._scaled_mm(a8, b8.t(), scale_a=sfa, scale_b=sb.t(), out_dtype=torch.bfloat16)

            out = call().float()
            ref = deq_a @ deq_b.t()
            # Both sum the same exact products in f32 (in another order) and round to bf16 once: 2^-7 of
            # the largest magnitude covers the bf16 rounding; a wrong scale layout errs by O(1).
            err = (out - ref).abs().max().item() / ref.abs().max().item()
            if not err < 2**-7:
                sys.exit(f"peer_torch_scaled_mm: {m}x{n}x{k}: relative error {err:.3g} (wrong scale layout?)")
            t = time_us(torch, call, flush, args.iters)
            mine, lt = mx8.get((m, n, k), (math.nan, math.nan))
            ratios[m][0].append(t / mine)
            ratios[m][1].append(t / lt)
            lines.append(f"| {m} | {n} | {k} | {mine:.1f} | {lt:.1f} | {t:.1f} | {t / mine:.2f}x | {t / lt:.2f}x |")
            print(lines[-1], flush=True)
    gm = lambda v: math.exp(sum(math.log(x) for x in v) / len(v))
    dev = torch.cuda.get_device_name()
    today = datetime.date.today().isoformat()
    body = f"""### torch._scaled_mm (cuBLASLt through PyTorch) beside mx8 and cuBLASLt called directly

{today} - {dev}; torch {torch.__version__}, CUDA {torch.version.cuda}. Command: `mx8 bench cuda-gemm --perf-md PERF.md`, then `python3 scripts/peer_torch_scaled_mm.py --perf-md PERF.md` in the same device call.

The same timing as `mx8 bench cuda-gemm` (medians of {args.iters} CUDA-event timings of one call, L2 flushed before each by a 512 MB write and a 256 MB read). torch._scaled_mm gets E4M3 A with 1x128 f32 scales of stride (1, M) and B with 128x128 f32 scales passed transposed, as in ../shared/research/deepgemm-h200.md; each shape's result is checked against the dequantized product first. `mx8 us` and `cuBLASLt us` are the cuda-gemm section's columns from the same run.

| M | N | K | mx8 us | cuBLASLt (direct) us | torch._scaled_mm us | torch / mx8 | torch / direct |
|---|---|---|---:|---:|---:|---:|---:|
""" + "\n".join(lines) + "\n\nGeometric means:\n\n| M | torch._scaled_mm time / mx8 time | torch._scaled_mm time / direct cuBLASLt time |\n|---|---:|---:|\n"
    for m in MS:
        body += f"| {m} | {gm(ratios[m][0]):.2f}x | {gm(ratios[m][1]):.2f}x |\n"
        print(f"geomean M={m}: torch/mx8 {gm(ratios[m][0]):.2f}x, torch/direct {gm(ratios[m][1]):.2f}x")
    write_section(args.perf_md, body)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a Llama GGUF of a given shape with random weights, for speed comparisons on one file.

The tokenizer (every tokenizer.* key) is copied from a donor GGUF, so any GGUF runtime can load the
file; the weights are random bytes in the chosen ggml type (block scales fixed at a small value, so
activations stay finite). The text it generates is meaningless; only speed counts.

    python3 scripts/make_synthetic_gguf.py --donor models/stories260K.gguf --out synth4L-q8_0.gguf \
        --type q8_0 --layers 4          # Llama-3-8B's layer shapes (the defaults), vocab of the donor

docs/PERF.md (cpu-decode-same-file) runs mx8 and llama.cpp on such a file.
"""

import argparse
import os
import struct
import tempfile

# ggml type: (number, values a block, bytes a block, offset and bytes of the block's f16 scale)
TYPES = {
    "f32": (0, 1, 4, None),
    "f16": (1, 1, 2, None),
    "bf16": (30, 1, 2, None),
    "q8_0": (8, 32, 34, 0),
    "q4_0": (2, 32, 18, 0),
}
SCALE_F16 = struct.pack("<e", 2.0 ** -9)  # q8_0 weights of up to 127 * 2^-9 = 0.25


def read_donor_tokenizer(path):
    """The raw key-value records of the donor whose key starts with tokenizer., and its alignment."""
    b = open(path, "rb").read()
    if b[:4] != b"GGUF":
        raise SystemExit(f"{path}: not a GGUF file")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", b, 4)
    pos = 24
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

    def skip_value(t, pos):
        if t in sizes:
            return pos + sizes[t]
        if t == 8:
            (n,) = struct.unpack_from("<Q", b, pos)
            return pos + 8 + n
        if t == 9:
            et, n = struct.unpack_from("<IQ", b, pos)
            pos += 12
            for _ in range(n):
                pos = skip_value(et, pos)
            return pos
        raise SystemExit(f"{path}: unknown value type {t}")

    records = []
    for _ in range(n_kv):
        start = pos
        (n,) = struct.unpack_from("<Q", b, pos)
        key = b[pos + 8 : pos + 8 + n].decode()
        pos += 8 + n
        (t,) = struct.unpack_from("<I", b, pos)
        pos = skip_value(t, pos + 4)
        if key.startswith("tokenizer."):
            records.append(b[start:pos])
    return records


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv_u32(key, v):
    return gguf_str(key) + struct.pack("<II", 4, v)


def kv_f32(key, v):
    return gguf_str(key) + struct.pack("<If", 6, v)


def random_tensor(type_name, rows, cols):
    number, per_block, block_bytes, scale_at = TYPES[type_name]
    blocks = rows * cols // per_block
    if scale_at is None:
        if type_name == "f32":
            return b"".join(struct.pack("<f", (x - 128) / 2048) for x in os.urandom(rows * cols))
        # f16/bf16: random signs and mantissas under a small exponent: |w| in [2^-8, 2^-7) for f16
        # (exponent 7 of 15), in [2^-7, 2^-5) for bf16 (exponent 120 or 121 of 127: its low bit is random).
        raw = bytearray(os.urandom(2 * rows * cols))
        top = 0x1C if type_name == "f16" else 0x3C  # the high byte's exponent bits
        for i in range(1, len(raw), 2):
            raw[i] = (raw[i] & 0x80) | top | (raw[i] & 0x03 if type_name == "f16" else 0)
        return bytes(raw)
    raw = bytearray(os.urandom(blocks * block_bytes))
    for k in range(blocks):
        raw[k * block_bytes + scale_at : k * block_bytes + scale_at + 2] = SCALE_F16
    return bytes(raw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--donor", required=True, help="GGUF whose tokenizer the file takes")
    ap.add_argument("--out", required=True)
    ap.add_argument("--type", default="q8_0", choices=sorted(TYPES))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--ffn", type=int, default=14336)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    args = ap.parse_args()

    tok = read_donor_tokenizer(args.donor)
    vocab = None
    for r in tok:
        if r[8 : 8 + len(b"tokenizer.ggml.tokens")] == b"tokenizer.ggml.tokens":
            (vocab,) = struct.unpack_from("<Q", r, 8 + len(b"tokenizer.ggml.tokens") + 8)
    if vocab is None:
        raise SystemExit(f"{args.donor}: no tokenizer.ggml.tokens")
    d, f, hd = args.dim, args.ffn, args.dim // args.heads
    kv = [gguf_str("general.architecture") + struct.pack("<I", 8) + gguf_str("llama"),
          kv_u32("llama.embedding_length", d), kv_u32("llama.block_count", args.layers),
          kv_u32("llama.feed_forward_length", f), kv_u32("llama.attention.head_count", args.heads),
          kv_u32("llama.attention.head_count_kv", args.kv_heads), kv_u32("llama.context_length", 8192),
          kv_u32("llama.rope.dimension_count", hd), kv_f32("llama.rope.freq_base", 500000.0),
          kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5)] + tok

    # (name, rows, cols, type): rows x cols row-major, GGUF ne = [cols, rows].
    tensors = [("token_embd.weight", vocab, d, "f32"), ("output_norm.weight", 1, d, "f32"),
               ("output.weight", vocab, d, args.type)]
    for l in range(args.layers):
        p = f"blk.{l}."
        tensors += [(p + "attn_norm.weight", 1, d, "f32"), (p + "ffn_norm.weight", 1, d, "f32"),
                    (p + "attn_q.weight", d, d, args.type), (p + "attn_k.weight", args.kv_heads * hd, d, args.type),
                    (p + "attn_v.weight", args.kv_heads * hd, d, args.type),
                    (p + "attn_output.weight", d, d, args.type), (p + "ffn_gate.weight", f, d, args.type),
                    (p + "ffn_up.weight", f, d, args.type), (p + "ffn_down.weight", d, f, args.type)]
    header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv)
    offset, sizes = 0, []
    for name, rows, cols, t in tensors:
        number, per_block, block_bytes, _ = TYPES[t]
        size = rows * cols // per_block * block_bytes
        dims = [cols] if rows == 1 else [cols, rows]
        header += gguf_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", x) for x in dims)
        header += struct.pack("<IQ", number, offset)
        sizes.append(size)
        offset += (size + 31) // 32 * 32
    header += b"\0" * (-len(header) % 32)

    out_dir = os.path.dirname(os.path.abspath(args.out))
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(header)
            for (name, rows, cols, t), size in zip(tensors, sizes):
                data = random_tensor(t, rows, cols) if not name.endswith("norm.weight") else struct.pack("<f", 1.0) * cols
                out.write(data + b"\0" * (-size % 32))
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.out)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"{args.out}: {len(tensors)} tensors, {offset / 1e9:.2f} GB of tensor data, vocab {vocab}")


if __name__ == "__main__":
    main()

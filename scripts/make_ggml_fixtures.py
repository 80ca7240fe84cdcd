#!/usr/bin/env python3
"""Makes tests/data/ggml/dequant.bin: GGUF block data and the f32 values ggml itself decodes it to.

The reference is ggml's own code, not ours: libggml-base.so from the npm package
@node-llama-cpp/linux-x64 (a prebuilt llama.cpp), loaded with ctypes. For every tensor type mx8
reads from GGUF files, two cases:

  quantized  floats of several kinds (Gaussian, outliers, an all-zero block, values small enough
             that the f16 scales are subnormal, large values, a constant block) through ggml's
             reference quantizer (traits.from_float_ref), then its decoder (traits.to_float);
  random     uniformly random bytes, so every bit pattern a file may hold is decoded, including
             f16 scales that are NaN, Inf or subnormal and sub-scale bits no quantizer writes.

Usage (needs npm and network access to the npm registry; pure Python otherwise):

    npm pack @node-llama-cpp/linux-x64@3.22.1 && tar xzf node-llama-cpp-linux-x64-3.22.1.tgz
    python3 scripts/make_ggml_fixtures.py --lib package/bins/linux-x64/libggml-base.so \
        --out tests/data/ggml/dequant.bin

File format (little-endian): the 8 bytes "MX8GGMLD", u32 version (1), u32 record count, then per
record: u32 ggml type, u32 case (0 quantized, 1 random), u32 value count, u32 byte count, the
blocks' bytes, the values as f32. tests/io/gguf_ggml_reference_test.cpp reads it.
"""

import argparse
import ctypes
import math
import os
import random
import struct
import tempfile

# ggml type numbers (ggml.h's enum ggml_type) and the names ggml gives them.
TYPES = [
    (1, "f16"), (30, "bf16"), (2, "q4_0"), (3, "q4_1"), (6, "q5_0"), (7, "q5_1"), (8, "q8_0"),
    (10, "q2_K"), (11, "q3_K"), (12, "q4_K"), (13, "q5_K"), (14, "q6_K"), (20, "iq4_nl"),
    (23, "iq4_xs"), (39, "mxfp4"),
]


class Traits(ctypes.Structure):
    # The leading fields of ggml's struct ggml_type_traits (ggml.h), in its order.
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)
FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int64)


def quantizer_inputs(rng, n_blocks, block):
    """n_blocks blocks of `block` floats, one kind per block, cycling through the kinds."""
    kinds = [
        lambda: rng.gauss(0, 1),
        lambda: rng.gauss(0, 1) * (60 if rng.random() < 0.02 else 1),
        lambda: 0.0,
        lambda: rng.gauss(0, 1) * 1e-6,
        lambda: rng.gauss(0, 1) * 3e3,
        lambda: -0.75,
    ]
    out = []
    for b in range(n_blocks):
        kind = kinds[b % len(kinds)]
        out += [kind() for _ in range(block)]
    return out


def run_type(lib, type_id, name, rng):
    traits = lib.ggml_get_type_traits(type_id).contents
    if traits.type_name.decode() != name:
        raise SystemExit(f"ggml type {type_id} is {traits.type_name.decode()}, expected {name}")
    # 256 values a block for the K-quants; the 32-value types take as many blocks.
    block = max(int(traits.blck_size), 1)
    per = 256 if block <= 256 else block
    to_float = TO_FLOAT(traits.to_float)
    records = []
    for case in (0, 1):
        n = (6 if case == 0 else 8) * per
        nbytes = n // block * traits.type_size
        buf = (ctypes.c_uint8 * nbytes)()
        if case == 0:
            if not traits.from_float_ref:
                continue
            src = (ctypes.c_float * n)(*quantizer_inputs(rng, n // per, per))
            FROM_FLOAT(traits.from_float_ref)(src, buf, n)
        else:
            for k in range(nbytes):
                buf[k] = rng.randrange(256)
        dst = (ctypes.c_float * n)()
        to_float(buf, dst, n)
        records.append((type_id, case, n, bytes(buf), bytes(dst)))
        nan = sum(1 for v in dst if math.isnan(v))
        print(f"{name:7} {'quantized' if case == 0 else 'random':9} {n:5} values {nbytes:5} bytes {nan:4} NaN")
    return records


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True, help="path to ggml's libggml-base.so")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261205)
    args = ap.parse_args()
    lib = ctypes.CDLL(os.path.abspath(args.lib))
    lib.ggml_get_type_traits.restype = ctypes.POINTER(Traits)
    rng = random.Random(args.seed)
    records = []
    for type_id, name in TYPES:
        records += run_type(lib, type_id, name, rng)
    body = b"MX8GGMLD" + struct.pack("<II", 1, len(records))
    for type_id, case, n, blocks, values in records:
        body += struct.pack("<IIII", type_id, case, n, len(blocks)) + blocks + values
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)))
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(records)} records, {len(body)} bytes")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Fits the FP8 GEMM tile heuristic's constants to a forced-tile sweep.

    scripts/fit_gemm_heuristic.py [sweep.txt]   (default: tests/cuda/data/gemm_tile_sweep_h200.txt)

The cost model is the one in src/backend/cuda/sm90_gemm_fp8.cu (kb_seconds, estimate_seconds,
gemm_fp8_pick_config), written again here; a change there must be made here too. For the
constants in the source and for the best ones of a grid search, the script prints each shape's
pick, its measured time against the best measured tile, and the geometric mean of that ratio.
"""
import itertools
import math
import sys
from collections import defaultdict

SMS = 132
PEAK_PER_SM = 1979e12 / SMS
# (BM, BN, math warpgroups, cluster K splits)
SHAPES = [(64, 16, 1, 1), (64, 32, 1, 1), (64, 64, 1, 1), (64, 128, 1, 1), (64, 16, 2, 1), (64, 32, 2, 1),
          (64, 64, 2, 1), (64, 128, 2, 1), (64, 192, 2, 1), (128, 16, 2, 1), (128, 32, 2, 1), (128, 64, 2, 1), (128, 128, 2, 1),
          (128, 192, 2, 1), (256, 128, 2, 1), (192, 128, 3, 1)]
SHAPES += [(bm, bn, 2, c) for bm, bn in [(64, 64), (128, 128)] for c in (2, 4)]
SHAPES += [(64, 96, 2, 4)]
# The constants of sm90_gemm_fp8.cu: latencies per K block (one 64-row chain, split-K, 128-row tiles
# without and with the pipelined K loop), efficiencies (192- and 256-row, 64-row on one warpgroup,
# split-K 64-row, 128x192, other 128-row), per-SM load rate, per-tile cost, the cluster K split's
# extra per-tile cost (its exchange of partial sums, the cluster launch), the split-K tiles' extra
# per-tile cost (the warpgroups' hand-over), and the DRAM rate of the floor.
SOURCE = dict(l1=0.27e-6, l2=0.22e-6, l128=0.35e-6, l128p=0.2e-6, e256=0.62, e192=0.52, e128=0.51, e64=0.45,
              e64w2=0.38, bw=100e9, tile=1.5e-6, ck=3.0e-6, sk=1.0e-6, dram=3.6e12)


def parse_tile(text):
    """BMxBN[w2][cC] -> (BM, BN, W, C)."""
    splits = 1
    if "c" in text:
        text, c = text.split("c")
        splits = int(c)
    bm, bn = text.replace("w2", "").split("x")
    w = 3 if int(bm) == 192 else 2 if text.endswith("w2") or int(bm) > 64 else 1
    return int(bm), int(bn), w, splits


def read_sweep(path):
    times = defaultdict(dict)  # (M, N, K) -> {(BM, BN, W): us}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        tile, m, n, k, us = line.split()
        times[(int(m), int(n), int(k))][parse_tile(tile)] = float(us)
    return times


def kb_seconds(s, m, c):
    bm, bn, w, splits = s
    if bm == 64:
        latency = c["l2"] if w == 2 else c["l1"]
    elif bm == 128:  # 128-row tiles up to 128 wide without a cluster split pipeline their K loop
        whole = m <= bm or m % bm == 0  # (see sm90_gemm_fp8.cu: a partial last block of several)
        latency = c["l128p"] if bn <= 128 and splits == 1 and whole else c["l128"]
    else:
        latency = 0.0
    if bm == 64:
        eff = c["e64w2"] if w == 2 else c["e64"]
    else:
        eff = c["e256"] if bm >= 192 else c["e192"] if bn >= 192 else c["e128"]
    mma = 2.0 * bm * bn * 128 / (PEAK_PER_SM * eff)
    load = (min(m, bm) + bn) * 128 / c["bw"]
    return max(latency, mma, load)


def tile_slots(splits):
    """Tiles in progress at once: SMs, or clusters (the H200 runs 30 clusters of 4 at once)."""
    return SMS * 30 // 132 if splits == 4 else SMS // splits


def estimate_seconds(s, m, n, k, c):
    tiles = math.ceil(m / s[0]) * math.ceil(n / s[1])
    splits = s[3]
    kbs = math.ceil(k // 128 / splits)
    split_k = s[0] == 64 and s[2] == 2
    per_tile = kbs * kb_seconds(s, m, c) + c["tile"] + (c["ck"] if splits > 1 else 0.0) + (c["sk"] if split_k else 0.0)
    t_sm = math.ceil(tiles / tile_slots(splits)) * per_tile
    return max(t_sm, (m * k + n * k + 2.0 * m * n) / c["dram"])


def tie_key(s, m, n):
    """Order among estimates within 2%: no cluster split, then the least idle SM time over the
    rounds of tiles (wave efficiency, to 0.01), then fewer rounds, then the larger tile."""
    tiles = math.ceil(m / s[0]) * math.ceil(n / s[1])
    slots = tile_slots(s[3])
    rounds = math.ceil(tiles / slots)
    return (s[3], -int(100.0 * tiles / (rounds * slots) + 0.5), rounds, -s[0] * s[1])


def pick(m, n, k, c):
    best = None  # (shape, seconds)
    for s in SHAPES:
        if s[0] - 64 >= m:  # a whole empty 64-row wave (as sm90_gemm_fp8.cu skips it)
            continue
        t = estimate_seconds(s, m, n, k, c)
        if best is None:
            best = (s, t)
            continue
        bs, bt = best
        tie = bt * 0.98 <= t <= bt * 1.02
        if t < bt * 0.98 or (tie and tie_key(s, m, n) < tie_key(bs, m, n)):
            best = (s, t)
    return best[0]


def score(times, c, show=False):
    """Geometric mean and worst of (pick's time / best time); an unmeasured pick counts as 1.2."""
    logs, worst = [], 1.0
    for (m, n, k), d in sorted(times.items()):
        s = pick(m, n, k, c)
        best = min(d, key=d.get)
        ratio = d[s] / d[best] if s in d else 1.2
        logs.append(math.log(ratio))
        worst = max(worst, ratio)
        if show:
            got = f"{d[s]:.1f} us" if s in d else "not measured"
            print(f"  {m:5d} {n:6d} {k:6d}  pick {s}  {got}  best {best} {d[best]:.1f} us  x{ratio:.3f}")
    return math.exp(sum(logs) / len(logs)), worst


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/cuda/data/gemm_tile_sweep_h200.txt"
    times = read_sweep(path)
    print("constants in sm90_gemm_fp8.cu:")
    print("  geomean x%.3f, worst x%.3f" % score(times, SOURCE, show=True))
    grid = dict(l1=[0.22e-6, 0.27e-6, 0.3e-6], l128p=[0.12e-6, 0.2e-6], l2=[0.18e-6, 0.22e-6],
                bw=[70e9, 100e9], tile=[1e-6, 1.5e-6], ck=[2e-6, 3e-6], e64=[0.3, 0.45],
                dram=[3.0e12, 3.3e12, 3.6e12], sk=[0.0, 0.3e-6, 0.6e-6, 1e-6], e64w2=[0.38, 0.45])
    best = None
    for values in itertools.product(*grid.values()):
        c = dict(SOURCE, **dict(zip(grid.keys(), values)))
        sc = score(times, c)
        if best is None or sc < best[0]:
            best = (sc, c)
    print("best of the grid:", {k: v for k, v in best[1].items() if k in grid})
    print("  geomean x%.3f, worst x%.3f" % score(times, best[1], show=True))


if __name__ == "__main__":
    main()

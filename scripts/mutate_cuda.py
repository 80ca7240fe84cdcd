#!/usr/bin/env python3
"""Mutation testing of the CUDA backend, in two halves: the mutants are compiled where nvcc is (no GPU
needed), and linked and tested where the GPU is (the device machine, in one call).

    scripts/mutate_cuda.py compile --build build/cuda --out DIR [--max N] [--seed S] [--redo R] FILE...
    scripts/mutate_cuda.py test --kit DIR [--jobs J] [--wide FILTER] [--memcheck] [--retry R]
    scripts/mutate_cuda.py kit --build build/cuda --out DIR      (the kit again, after new tests)
    scripts/mutate_cuda.py link --kit DIR --out build/cuda       (the kit's binaries, unmutated)

`compile` makes the mutants of each FILE (a .cu or .cpp of src/backend/cuda; the same operators as
scripts/mutate.py) and rebuilds only that file's object for each, keeping it as DIR/objects/NNNN.o. A
mutant whose object equals the unmutated one is `equivalent`, one that does not compile `uncompilable`;
neither is tested. `--redo` an earlier results.jsonl compiles that run's survivors instead of a sample,
found again in the current source under their earlier ids (after a fix of the code they survived in,
where --retry would link objects of the old code). DIR/mutants.jsonl lists them all, and DIR/kit holds
what linking test_cuda takes (the project's archives, the test objects, the link command), since
test_cuda itself is too large to ship once per mutant. Run it in a scratch clone: the files are edited
in place and restored afterwards.

`test`, on the GPU machine from the repository root, links test_cuda once unmutated (and runs its
filters: they must pass) and once per mutant, with the mutant's object ahead of the archive that holds
the original, so the linker takes the mutant's definitions. Each mutant runs the gtest filter given for
its file (FILTERS below: the tests written for those kernels). A mutant is killed when a test fails or
runs past three times the unmutated time plus 10 s, and survives when all pass; each survivor then runs
`--wide` (default: every backend op test, the golden text, the cluster attention, its quantized output
and the decode graphs) before it is reported as a survivor; with `--memcheck`, its file's filter again
under compute-sanitizer's memcheck (out-of-bounds and misaligned accesses that leave the results
right). Results go to DIR/results.jsonl and a table on standard output; `--retry` takes an earlier
results.jsonl and runs only its survivors, against the tests of a kit made again.
"""
import argparse
import concurrent.futures
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mutate import mutants_of, object_of, run  # noqa: E402

# The tests that exercise each file's kernels (file name -> gtest filter).
FILTERS = {
    "backend_cuda_select.cu": "CudaVsCpu.Argmax*:CudaVsCpu.TopK*:CudaVsCpu.Selections*:CudaVsCpu.Penalize*:"
                              "CudaVsCpu.LogSumExp*:CudaVsCpu.Gather*:CudaStoriesGolden.BackendDraw*:"
                              "CudaVsCpu.CallsOfNoRows*",
    "backend_cuda_elementwise.cu": "CudaVsCpu.Rmsnorm*:CudaVsCpu.Rope*:CudaVsCpu.AddSilu*:CudaVsCpu.Embedding*:"
                                   "CudaVsCpu.CallsOf*:CudaVsCpu.Softmax*:CudaVsCpu.SmallOps*",
    "kv_cache.cu": "CudaVsCpu.KvWrite*:CudaVsCpu.RopeKvWrite*:ClusterAttention.FusedRopeKvWrite*:"
                   "CudaVsCpu.CallsOfNoRows*:CudaKvCache.*",
    "gemv_fp8_mma.cu": "GemvGroup.*:GemvSwiglu.*:FfnOverlap.*:CudaVsCpu.Matmul*:CudaStoriesGolden.*:"
                       "CudaDecodeGraphs.*",
    # AttentionOutput: the only tests of the kernel's quantized output (heads split over blocks).
    "attention_cluster.cu": "ClusterAttention.*:AttentionOutput.*:CudaVsCpu.*Attention*:CudaStoriesGolden.*",
}


def compile_mutants(args):
    build = os.path.abspath(args.build)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "objects"), exist_ok=True)
    build_kit(build, out, args.kit_also)
    records = []
    serial = 0
    for path in args.files:
        name = os.path.basename(path)
        if name not in FILTERS:
            sys.exit(f"mutate_cuda: no test filter for {name}; add one to FILTERS")
        obj = object_of(build, path)
        if not obj or not os.path.exists(obj):
            sys.exit(f"mutate_cuda: compile_commands.json names no object for {path}")
        target = os.path.relpath(obj, build)
        baseline, volatile = baseline_of(build, target, obj)
        with open(path) as f:
            original = f.read()
        lines = original.splitlines(keepends=True)
        mutants = mutants_of(lines)
        if args.redo:
            mutants = survivors_in(mutants, lines, path, args.redo)
        else:
            if args.max and len(mutants) > args.max:
                mutants = sorted(random.Random(f"{args.seed}:{path}").sample(mutants, args.max))
            mutants = [(None, *m) for m in mutants]  # no earlier id
        print(f"{path}: {len(mutants)} mutants", flush=True)
        try:
            for earlier_id, idx, op, new_line in mutants:
                serial += 1
                with open(path, "w") as f:
                    f.write("".join(lines[:idx] + [new_line] + lines[idx + 1:]))
                rc, _ = run(f"ninja -C {build} {target}", build, timeout=900)
                record = dict(id=earlier_id or f"{serial:04d}", file=path, line=idx + 1, op=op,
                              before=lines[idx].strip(), after=new_line.strip(),
                              archive_member=os.path.basename(obj))
                if rc != 0:
                    record["status"] = "uncompilable"
                elif same_object(open(obj, "rb").read(), baseline, volatile):
                    record["status"] = "equivalent"
                else:
                    record["status"] = "pending"
                    shutil.copyfile(obj, os.path.join(out, "objects", record["id"] + ".o"))
                records.append(record)
                print(f"  {record['status']:12} {path}:{idx + 1}: {op}", flush=True)
        finally:
            with open(path, "w") as f:
                f.write(original)
        run(f"ninja -C {build} {target}", build)  # the object matching the restored source again
    with open(os.path.join(out, "mutants.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def survivors_in(mutants, lines, path, results):
    """The survivors of an earlier run (results.jsonl) on `path`, found again in its current source: the
    mutant with the same operator, line text before and after, nearest the line it had (edits since
    may have moved it). Each keeps its earlier id; one whose line is gone is reported and dropped."""
    found = []
    for r in map(json.loads, open(results)):
        if r["file"] != path or r["status"] != "survived":
            continue
        same = [(abs(idx + 1 - r["line"]), idx, op, new) for idx, op, new in mutants
                if op == r["op"] and lines[idx].strip() == r["before"] and new.strip() == r["after"]]
        if not same:
            print(f"  gone         {path}:{r['line']}: {r['op']} (the line has changed)", flush=True)
            continue
        _, idx, op, new = min(same)
        found.append((r["id"], idx, op, new))
    return found


def baseline_of(build, target, obj):
    """The unmutated object, and the byte positions that differ between two compiles of the same source
    (nvcc names each file's anonymous namespace and module with a per-compile hash)."""
    first = open(obj, "rb").read()
    os.remove(obj)
    rc, log = run(f"ninja -C {build} {target}", build)
    if rc != 0:
        sys.exit(f"mutate_cuda: the unmutated object does not rebuild:\n{log[-3000:]}")
    second = open(obj, "rb").read()
    if len(first) != len(second):
        sys.exit(f"mutate_cuda: two compiles of {obj} differ in size; equivalence cannot be judged")
    return second, {i for i in range(len(first)) if first[i] != second[i]}


def same_object(mutant, baseline, volatile):
    """Whether the mutant's object equals the unmutated one outside the per-compile bytes."""
    if len(mutant) != len(baseline):
        return False
    return all(i in volatile for i in range(len(mutant)) if mutant[i] != baseline[i])


# Libraries every Linux machine has (glibc's, the C++ runtime): not copied along with a shared library.
BASE_LIBS = ("libc.so", "libm.so", "libdl.so", "libpthread.so", "librt.so", "libstdc++.so", "libgcc_s.so",
             "ld-linux", "linux-vdso")


def copy_system_file(path, kit):
    """Copies a system archive or shared library into kit/sys and returns its path there. A shared
    library goes with the libraries it needs beyond BASE_LIBS, under their sonames, for the binaries
    to find through their rpath (link() adds it)."""
    dest = os.path.join("sys", os.path.basename(path))
    shutil.copyfile(path, os.path.join(kit, dest))
    if ".so" in os.path.basename(path):
        rc, out = run(f"ldd {shlex.quote(path)}", kit)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "=>" and not parts[0].startswith(BASE_LIBS):
                shutil.copyfile(parts[2], os.path.join(kit, "sys", parts[0]))
        rc, out = run(f"objdump -p {shlex.quote(path)}", kit)
        soname = [line.split()[1] for line in out.splitlines() if line.strip().startswith("SONAME")]
        if soname:
            shutil.copyfile(path, os.path.join(kit, "sys", soname[0]))
    return dest


def build_kit(build, out, kit_also):
    """Builds test_cuda unmutated and makes out/kit for it and the targets in kit_also (comma-separated)."""
    rc, log = run(f"ninja -C {build} test_cuda", build)
    if rc != 0:
        sys.exit(f"mutate_cuda: the unmutated build fails:\n{log[-3000:]}")
    make_kit(build, os.path.join(out, "kit"), ["test_cuda"] + [t for t in kit_also.split(",") if t])


def make_kit(build, kit, targets):
    """Copies what the targets' link commands read into `kit` (paths under the build folder keep their
    relative place; other files, such as the system's gtest archives, go to kit/sys) and writes each
    command with those paths rewritten to kit/link.json. CUDA's own libraries stay where the toolkit
    installs them, on both machines."""
    shutil.rmtree(kit, ignore_errors=True)
    os.makedirs(os.path.join(kit, "sys"))
    commands = {}
    for target in targets:
        rc, cmds = run(f"ninja -C {build} -t commands {target}", build)
        if rc != 0:
            sys.exit(f"mutate_cuda: ninja knows no target {target}")
        line = cmds.strip().splitlines()[-1]
        # CMake wraps the link as ": && g++ ... -o target ... && :".
        words = shlex.split(next(part for part in line.split("&&") if " -o " in part))
        rewritten = ["/usr/bin/g++"]  # the system compiler driver, on both machines
        for i, w in enumerate(words[1:], 1):
            path = w if os.path.isabs(w) else os.path.join(build, w)
            if (w.startswith("-") or words[i - 1] == "-o" or not os.path.isfile(path) or
                    w.startswith("/usr/local/cuda")):
                rewritten.append(w)
            elif os.path.isabs(w):
                rewritten.append(copy_system_file(w, kit))
            else:
                os.makedirs(os.path.join(kit, os.path.dirname(w)), exist_ok=True)
                shutil.copyfile(path, os.path.join(kit, w))
                rewritten.append(w)
        commands[target] = rewritten
    with open(os.path.join(kit, "link.json"), "w") as f:
        json.dump(commands, f)


def cuda_path(word):
    """A CUDA library's path on this machine: toolkits put them in lib/, lib64/ or targets/*/lib/."""
    if not word.startswith("/usr/local/cuda/") or os.path.exists(word):
        return word
    for folder in ("lib", "lib64", "targets/x86_64-linux/lib"):
        here = os.path.join("/usr/local/cuda", folder, os.path.basename(word))
        if os.path.exists(here):
            return here
    return word


def link(kit, output, mutant_object=None, target="test_cuda"):
    """Links `target` into `output`; a mutant's object goes ahead of the archive that holds the
    original. Returns (ok, log)."""
    words = json.load(open(os.path.join(kit, "link.json")))[target]
    words = [os.path.abspath(os.path.join(kit, w)) if os.path.exists(os.path.join(kit, w)) else cuda_path(w)
             for w in words]
    at = words.index("-o")
    words[at + 1] = os.path.abspath(output)
    words.append("-Wl,-rpath," + os.path.abspath(os.path.join(kit, "sys")))
    if mutant_object:
        archive = next(i for i, w in enumerate(words) if w.endswith("libmx8_cuda.a"))
        words.insert(archive, os.path.abspath(mutant_object))
    p = subprocess.run(words, capture_output=True, text=True)
    return p.returncode == 0, p.stdout + p.stderr


def link_all(args):
    kit = os.path.join(os.path.abspath(args.kit), "kit")
    os.makedirs(args.out, exist_ok=True)
    targets = json.load(open(os.path.join(kit, "link.json")))
    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        # Each under the name its own link command gives it (mx8_cli is `mx8`).
        name = {t: os.path.basename(w[w.index("-o") + 1]) for t, w in targets.items()}
        done = pool.map(lambda t: (t, link(kit, os.path.join(args.out, name[t]), target=t)), targets)
        for target, (ok, log) in done:
            print(f"{target}: {'linked' if ok else 'link failed: ' + log[-2000:]}", flush=True)


def test_mutants(args):
    kit_dir = os.path.abspath(args.kit)
    kit = os.path.join(kit_dir, "kit")
    records = [json.loads(line) for line in open(os.path.join(kit_dir, "mutants.jsonl"))]
    work = os.path.join(kit_dir, "bin")
    os.makedirs(work, exist_ok=True)
    base = os.path.join(work, "test_cuda")
    ok, log = link(kit, base)
    if not ok:
        sys.exit(f"mutate_cuda: the unmutated link fails:\n{log[-3000:]}")
    limits = {}
    for name in sorted({os.path.basename(r["file"]) for r in records}):
        t0 = time.time()
        rc, log = run(f"{base} --gtest_brief=1 --gtest_filter='{FILTERS[name]}'", os.getcwd())
        passed = re.search(r"\[  PASSED  \] (\d+) test", log)
        if rc != 0 or not passed:
            sys.exit(f"mutate_cuda: the unmutated tests of {name} fail:\n{log[-3000:]}")
        if passed.group(1) == "0":  # every test skipped: no GPU here, and no mutant could be killed
            sys.exit(f"mutate_cuda: no test of {name} ran (no GPU?):\n{log[-1000:]}")
        limits[name] = 3 * (time.time() - t0) + 10
        print(f"{name}: unmutated tests pass, limit {limits[name]:.0f} s", flush=True)
        if args.memcheck:  # a finding here would be charged to every survivor
            rc, log = run(f"compute-sanitizer --tool memcheck --error-exitcode 9 {base} --gtest_brief=1 "
                          f"--gtest_filter='{FILTERS[name]}'", os.getcwd())
            if rc != 0:
                sys.exit(f"mutate_cuda: the unmutated tests of {name} fail under memcheck:\n{log[-3000:]}")

    pending = [r for r in records if r["status"] == "pending"]
    if args.retry:  # only the earlier survivors, after new tests (the test objects are the kit's)
        earlier = {r["id"]: r["status"] for r in map(json.loads, open(args.retry))}
        for r in pending:
            if earlier.get(r["id"], "survived") != "survived":
                r["status"] = earlier[r["id"]]
        pending = [r for r in pending if r["status"] == "pending"]

    def link_one(r):
        ok, log = link(kit, os.path.join(work, r["id"]), os.path.join(kit_dir, "objects", r["id"] + ".o"))
        return r, ok, log

    def test_one(item):
        r, ok, log = item
        binary = os.path.join(work, r["id"])
        name = os.path.basename(r["file"])
        if not ok:
            r["status"], r["log"] = "unlinkable", log[-400:]
            return r
        rc, _ = run(f"{binary} --gtest_brief=1 --gtest_filter='{FILTERS[name]}'", os.getcwd(), timeout=limits[name])
        r["status"] = "survived" if rc == 0 else "killed"
        if r["status"] == "survived":
            rc, _ = run(f"{binary} --gtest_brief=1 --gtest_filter='{args.wide}'", os.getcwd(), timeout=600)
            r["status"] = "survived" if rc == 0 else "killed by --wide"
        if r["status"] == "survived" and args.memcheck:
            rc, _ = run(f"compute-sanitizer --tool memcheck --error-exitcode 9 {binary} --gtest_brief=1 "
                        f"--gtest_filter='{FILTERS[name]}'", os.getcwd(), timeout=20 * limits[name])
            r["status"] = "survived" if rc == 0 else "killed by memcheck"
        os.remove(binary)
        print(f"  {r['status']:16} {r['file']}:{r['line']}: {r['op']}", flush=True)
        return r

    # Links on every core; tests a few at a time on the one GPU (each is small, and the time limit is
    # generous enough for the sharing).
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as links, \
            concurrent.futures.ThreadPoolExecutor(args.gpu_jobs) as tests:
        list(tests.map(test_one, links.map(link_one, pending)))
    with open(os.path.join(kit_dir, "results.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")

    print("\n| file | killed | survived | equivalent | uncompilable | score |")
    print("|---|---:|---:|---:|---:|---:|")
    for path in sorted({r["file"] for r in records}):
        mine = [r for r in records if r["file"] == path]
        count = lambda *s: sum(r["status"] in s for r in mine)  # noqa: E731
        killed, survived = count("killed", "killed by --wide", "killed by memcheck"), count("survived")
        score = f"{100 * killed / (killed + survived):.0f}%" if killed + survived else "-"
        print(f"| {path} | {killed} | {survived} | {count('equivalent')} | "
              f"{count('uncompilable', 'unlinkable')} | {score} |")
    survivors = [r for r in records if r["status"] == "survived"]
    if survivors:
        print("\nSurvivors:")
        for s in survivors:
            print(f"  {s['file']}:{s['line']}: {s['op']}: {s['before']}  ->  {s['after']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    c = sub.add_parser("compile", help="make and compile the mutants (no GPU needed)")
    c.add_argument("--build", required=True, help="a configured CUDA Ninja build folder (cmake --preset cuda)")
    c.add_argument("--out", required=True, help="folder for the objects, the list and the link kit")
    c.add_argument("--max", type=int, default=0, help="at most this many mutants per file (a seeded sample)")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--kit-also", default="", help="more targets the kit can link (mx8_cli,test_runtime)")
    c.add_argument("--redo", default="", help="an earlier results.jsonl: its survivors again, in today's source")
    c.add_argument("files", nargs="+")
    t = sub.add_parser("test", help="link and run each mutant (on the GPU machine)")
    t.add_argument("--kit", required=True, help="the folder `compile --out` filled")
    t.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="links at a time")
    t.add_argument("--gpu-jobs", type=int, default=4, help="test runs at a time")
    t.add_argument("--retry", default="", help="an earlier results.jsonl: only its survivors again")
    t.add_argument("--wide",
                   default="CudaVsCpu.*:CudaStoriesGolden.*:ClusterAttention.*:AttentionOutput.*:CudaDecodeGraphs.*",
                   help="the gtest filter a survivor of its file's filter runs next (the backend's op tests)")
    t.add_argument("--memcheck", action="store_true",
                   help="a survivor of both filters runs its file's filter again under compute-sanitizer memcheck")
    m = sub.add_parser("kit", help="(re)make DIR/kit from a build, e.g. after new tests, for --retry")
    m.add_argument("--build", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--kit-also", default="")
    k = sub.add_parser("link", help="link every target of the kit unmutated (the binaries to run beside)")
    k.add_argument("--kit", required=True)
    k.add_argument("--out", required=True, help="folder for the binaries")
    args = ap.parse_args()
    if args.verb == "compile":
        compile_mutants(args)
    elif args.verb == "kit":
        build_kit(os.path.abspath(args.build), os.path.abspath(args.out), args.kit_also)
    elif args.verb == "test":
        test_mutants(args)
    else:
        link_all(args)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Mutation testing: does some test fail when the code it covers is wrong?

    scripts/mutate.py --build DIR --tests test_a[,test_b] [--also TARGET,...] [--max N] [--seed S] [--out F.jsonl] FILE...
    scripts/mutate.py --build DIR --tests ... --retry F.jsonl FILE...   (the survivors again, after new tests)

For each FILE (a C++ source or header of the project) the script makes one small change at a time
(a comparison flipped, && for ||, + for -, a constant off by one, a condition negated, a statement
removed), rebuilds the named test executables in DIR with ninja and runs them. A mutant is

  killed        when a test fails, or the tests run past three times their unmutated time plus 10 s;
  survived      when every test passes: no test pins that line's behaviour down;
  equivalent    when the mutated source compiles to the same object file (the change cannot alter
                behaviour, so no test could catch it; checked for .cpp files only);
  uncompilable  when it does not build (not counted).

Each survivor is either a gap in the tests or a change that cannot alter behaviour in a way the
compiler could not see; the report lists them for a reader to decide which.

The files are edited in place and restored after each mutant, also on Ctrl-C: run this in a
scratch clone (git clone . /tmp/mut && cmake --preset release there), never in a tree with edits.
"""
import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

COMPARISON = {"<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
# Binary operators are surrounded by spaces in clang-format's output; template brackets, ->, << and
# >> are not matched by the single-character patterns below because of that.
BINARY = re.compile(r"(?<= )(<=|>=|==|!=|<|>|&&|\|\||\+=|-=|\+|-)(?= )")
SWAP = dict(COMPARISON, **{"&&": "||", "||": "&&", "+=": "-=", "-=": "+=", "+": "-", "-": "+"})
INTEGER = re.compile(r"(?<![\w.'])(0[xX][0-9a-fA-F]+|\d+)([uUlL]*)(?![\w.'])")
BOOL = re.compile(r"\b(true|false)\b")


def mask(line, in_block):
    """The line with string and char literals and comments blanked out (same length), so that the
    patterns see only code; and whether a /* comment is still open at its end."""
    out, i, n = [], 0, len(line)
    while i < n:
        if in_block:
            end = line.find("*/", i)
            if end < 0:
                out.append(" " * (n - i))
                return "".join(out), True
            out.append(" " * (end + 2 - i))
            i, in_block = end + 2, False
        elif line.startswith("//", i):
            out.append(" " * (n - i))
            break
        elif line.startswith("/*", i):
            in_block = True
        elif line[i] in "\"'":
            quote, j = line[i], i + 1
            if quote == '"' and i > 0 and line[i - 1] == "R":  # raw string: treat the rest as text
                out.append(" " * (n - i))
                break
            while j < n and line[j] != quote:
                j += 2 if line[j] == "\\" else 1
            out.append(quote + " " * (min(j, n) - i - 1) + (quote if j < n else ""))
            i = j + 1
        else:
            out.append(line[i])
            i += 1
    return "".join(out), in_block


def closing_paren(code, open_at):
    depth = 0
    for j in range(open_at, len(code)):
        depth += {"(": 1, ")": -1}.get(code[j], 0)
        if depth == 0:
            return j
    return -1


def mutants_of(lines):
    """(line index, operator, new line) for every mutant of the file."""
    out, in_block, prev = [], False, ";"
    for idx, line in enumerate(lines):
        code, in_block = mask(line, in_block)
        stripped = code.strip()
        skip = (not stripped or stripped.startswith("#") or "static_assert" in code or "template" in code
                or stripped.startswith("case ") or "operator" in code)
        if not skip:
            for m in BINARY.finditer(code):
                new = SWAP[m.group(1)]
                out.append((idx, f"{m.group(1)} -> {new}", line[: m.start()] + new + line[m.end():]))
            for m in INTEGER.finditer(code):
                text = m.group(1)
                value = int(text, 16) if text[:2] in ("0x", "0X") else int(text)
                for v in ([1] if value == 0 else [value + 1, value - 1] if value == 1 else [value + 1]):
                    new = hex(v) if text[:2] in ("0x", "0X") else str(v)
                    out.append((idx, f"{text} -> {new}", line[: m.start(1)] + new + line[m.end(1):]))
            for m in BOOL.finditer(code):
                new = "false" if m.group(1) == "true" else "true"
                out.append((idx, f"{m.group(1)} -> {new}", line[: m.start()] + new + line[m.end():]))
            for m in re.finditer(r"\b(if|while) \(", code):
                close = closing_paren(code, m.end() - 1)
                if close > 0:
                    inner = line[m.end(): close]
                    out.append((idx, f"{m.group(1)} negated",
                                line[: m.end()] + "!(" + inner + ")" + line[close:]))
            # A whole statement on one line (the previous line ended one), not a declaration of the
            # block's variables (those fail to compile and cost a build; most start with a type).
            if (stripped.endswith(";") and prev[-1:] in (";", "{", "}", ":") and
                    not re.match(r"(return|break|continue|const |auto |static |using |std::|[A-Z]\w* \w)",
                                 stripped)):
                out.append((idx, "statement removed", re.sub(r"\S.*", "", line) + "\n"))
        if stripped:
            prev = stripped
    return out


def run(cmd, cwd, timeout=None):
    """(exit status, output) of a shell command; (None, "") past the timeout. The command runs in a
    process group of its own, so that a mutant's test stuck in a loop dies with the shell that ran it."""
    p = subprocess.Popen(cmd, cwd=cwd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, errors="replace", start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return None, ""


def object_of(build, source):
    """The object file that compile_commands.json says `source` compiles to, or None."""
    with open(os.path.join(build, "compile_commands.json")) as f:
        for entry in json.load(f):
            if os.path.realpath(entry["file"]) == os.path.realpath(source):
                found = re.search(r"(?:^|\s)-o\s+(\S+)", entry.get("command", ""))
                return os.path.join(entry["directory"], found.group(1)) if found else None
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="a configured Ninja build folder (cmake --preset release)")
    ap.add_argument("--tests", required=True, help="comma-separated test executables to build and run")
    ap.add_argument("--also", default="",
                    help="comma-separated targets built but not run (mx8_cli: the executable the CLI tests drive)")
    ap.add_argument("--filter", default="", help="--gtest_filter for the runs (default: every test)")
    ap.add_argument("--max", type=int, default=0, help="at most this many mutants per file (a seeded sample)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lines", default="", help="only mutate lines A-B (1-based, inclusive)")
    ap.add_argument("--out", default="", help="append one JSON line per mutant here")
    ap.add_argument("--retry", default="", help="only the mutants that survived in this earlier --out file")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    tests = args.tests.split(",")
    ninja = f"ninja -C {build} " + " ".join(tests + [t for t in args.also.split(",") if t])
    gtest = f" --gtest_filter='{args.filter}'" if args.filter else ""
    test_cmd = " && ".join(f"{build}/{t} --gtest_brief=1{gtest}" for t in tests)

    rc, log = run(ninja, build)
    if rc != 0:
        sys.exit(f"mutate: the unmutated build fails:\n{log[-3000:]}")
    t0 = time.time()
    rc, log = run(test_cmd, build)
    if rc != 0:
        sys.exit(f"mutate: the unmutated tests fail (a mutant's failure would mean nothing):\n{log[-3000:]}")
    limit = 3 * (time.time() - t0) + 10

    out = open(args.out, "a") if args.out else None
    totals = {}
    survivors = []
    for path in args.files:
        with open(path) as f:
            original = f.read()
        lines = original.splitlines(keepends=True)
        mutants = mutants_of(lines)
        if args.lines:
            lo, hi = (int(x) for x in args.lines.split("-"))
            mutants = [m for m in mutants if lo <= m[0] + 1 <= hi]
        if args.retry:
            with open(args.retry) as f:
                earlier = [json.loads(line) for line in f]
            again = {(r["line"], r["after"]) for r in earlier if r["file"] == path and r["status"] == "survived"}
            mutants = [m for m in mutants if (m[0] + 1, m[2].strip()) in again]
        elif args.max and len(mutants) > args.max:
            mutants = sorted(random.Random(f"{args.seed}:{path}").sample(mutants, args.max))
        obj = object_of(build, path) if path.endswith(".cpp") else None
        baseline = open(obj, "rb").read() if obj and os.path.exists(obj) else None
        count = totals.setdefault(path, dict(killed=0, survived=0, equivalent=0, uncompilable=0))

        def restore(*_):
            with open(path, "w") as f:
                f.write(original)
            if _:
                sys.exit(130)

        signal.signal(signal.SIGINT, restore)
        signal.signal(signal.SIGTERM, restore)
        print(f"{path}: {len(mutants)} mutants, test time limit {limit:.0f} s", flush=True)
        try:
            for idx, op, new_line in mutants:
                with open(path, "w") as f:
                    f.write("".join(lines[:idx] + [new_line] + lines[idx + 1:]))
                start = time.time()
                rc, _ = run(ninja, build, timeout=600)
                if rc != 0:
                    status = "uncompilable"
                elif baseline is not None and open(obj, "rb").read() == baseline:
                    status = "equivalent"
                else:
                    rc, _ = run(test_cmd, build, timeout=limit)
                    status = "survived" if rc == 0 else "killed"
                count[status] += 1
                record = dict(file=path, line=idx + 1, op=op, before=lines[idx].strip(),
                              after=new_line.strip(), status=status, seconds=round(time.time() - start, 1))
                if status == "survived":
                    survivors.append(record)
                if out:
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                print(f"  {status:12} {path}:{idx + 1}: {op}", flush=True)
        finally:
            restore()
        run(ninja, build)  # leave the build matching the restored sources

    print("\n| file | killed | survived | equivalent | uncompilable | score |")
    print("|---|---:|---:|---:|---:|---:|")
    for path, c in totals.items():
        judged = c["killed"] + c["survived"]
        score = f"{100 * c['killed'] / judged:.0f}%" if judged else "-"
        print(f"| {path} | {c['killed']} | {c['survived']} | {c['equivalent']} | {c['uncompilable']} | {score} |")
    if survivors:
        print("\nSurvivors:")
        for s in survivors:
            print(f"  {s['file']}:{s['line']}: {s['op']}: {s['before']}  ->  {s['after']}")


if __name__ == "__main__":
    main()

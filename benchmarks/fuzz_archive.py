"""Hostile-archive fuzzing: every crafted case and many mutations, each decompressed by the real
command line in its own process, with its time and peak memory.

    python benchmarks/fuzz_archive.py --mutations 300 --header-flips 200

A case passes when bbans exits 3 or 4 with one line on stderr and writes nothing, or exits 0
with every file byte-identical to a source (a mutation of an informative field, a name included). Prints one
line per failure and a summary (the figures benchmarks/RESULTS.md records); exits 1 if any
case failed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import hostile  # noqa: E402
from bbans.archive import format as container  # noqa: E402
from bbans.archive import packed, writer  # noqa: E402

TREE = HERE.parent / "tests" / "fixtures" / "tree"
SOURCES = [TREE / "binary" / "b0.png", TREE / "binary" / "b1.pbm", TREE / "notes.txt"]


def run_case(data: bytes, work: Path, limit: float) -> dict:
    case_dir = Path(tempfile.mkdtemp(dir=work))
    bad = case_dir / "bad.bb"
    bad.write_bytes(data)
    out = case_dir / "out"
    t = time.perf_counter()
    # /usr/bin/time reports the child's peak resident memory on its own last stderr line.
    proc = subprocess.Popen(["/usr/bin/time", "-f", "BBANS_RSS_KB=%M", sys.executable, "-m", "bbans", "decompress",
                             str(bad), "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=limit)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        timed_out = True
    seconds = time.perf_counter() - t
    lines = err.splitlines()
    rss = 0.0
    if lines and lines[-1].startswith("BBANS_RSS_KB="):
        rss = int(lines.pop().split("=")[1]) / 1024
    lines = [x for x in lines if not x.startswith("Command exited with non-zero status")]
    err = "\n".join(lines) + ("\n" if lines else "")
    code = proc.returncode
    problem = ""
    if timed_out:
        problem = f"ran past {limit:.0f} s"
    elif "Traceback" in err or err.count("\n") > 1:
        problem = "more than one line on stderr"
    elif code in (3, 4):
        if sorted(p.name for p in case_dir.iterdir()) != ["bad.bb"]:
            problem = "refused but left files behind"
    elif code == 0:
        # An informative field changed: the same contents must come back. A changed name is one
        # too (the archive is re-signed, so it says so), hence contents compared, not names.
        got = sorted(p.read_bytes() for p in out.rglob("*") if p.is_file())
        if got != sorted(src.read_bytes() for src in SOURCES):
            names = sorted(p.name for p in out.rglob("*") if p.is_file())
            problem = f"exit 0 but the files differ from the sources (restored: {names})"
    else:
        problem = f"exit {code}"
    shutil.rmtree(case_dir, ignore_errors=True)
    return {"code": code, "seconds": seconds, "rss_mib": rss, "problem": problem, "err": err.strip()[:200]}


def header_flips(base: bytes, n: int, seed: int):
    """The header's stored bytes (packed, format 5) with one to four bytes changed, recompressed
    and re-signed."""
    rng = random.Random(seed)
    version, header, payload = container.unpack(base)
    raw = bytearray(packed.dumps(container._to_storage(header, version)))
    for _ in range(n):
        t = bytearray(raw)
        for _ in range(rng.randint(1, 4)):
            t[rng.randrange(len(t))] = rng.choice([rng.randrange(256), rng.randrange(0x80, 0x8C), rng.randrange(4)])
        yield "header bytes changed", hostile.resign(bytes(t), payload, version)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mutations", type=int, default=300, help="field mutations (tests/hostile.py)")
    ap.add_argument("--header-flips", type=int, default=200, help="byte changes in the header's packed bytes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=float, default=60.0, help="seconds before a case counts as hanging")
    args = ap.parse_args()

    base, _ = writer.create([str(p) for p in SOURCES], writer.Options(model="binary-mnist"))
    cases = [(name, hostile.crafted(base, m)) for name, m in hostile.CASES]
    cases.append(("header expanding to 65 MiB", hostile.lzma_bomb_header()))
    cases += list(hostile.mutations(base, args.mutations, seed=args.seed))
    cases += list(header_flips(base, args.header_flips, args.seed))
    work = Path(tempfile.mkdtemp(prefix="bbans-fuzz-"))
    results = []
    t0 = time.perf_counter()
    try:
        for i, (name, data) in enumerate(cases):
            r = run_case(data, work, args.limit)
            r["name"] = name
            results.append(r)
            if r["problem"]:
                print(f"FAIL {name}: {r['problem']} ({r['err']})", flush=True)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(cases)} cases, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    refused = sum(r["code"] in (3, 4) and not r["problem"] for r in results)
    same = sum(r["code"] == 0 and not r["problem"] for r in results)
    failed = [r for r in results if r["problem"]]
    slowest = max(results, key=lambda r: r["seconds"])
    biggest = max(results, key=lambda r: r["rss_mib"])
    print(f"cases {len(results)}: refused {refused} (exit 3: {sum(r['code'] == 3 for r in results)}, "
          f"exit 4: {sum(r['code'] == 4 for r in results)}), decoded to identical files {same}, failed {len(failed)}")
    print(f"slowest {slowest['seconds']:.2f} s ({slowest['name']}); largest peak memory {biggest['rss_mib']:.0f} MiB "
          f"({biggest['name']}); total {time.perf_counter() - t0:.0f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Translator benchmark on a real distribution kernel (Debian's vmlinux): translate() against a bare sweep.

Side by side in one run: (a) the bare sweep, a Python loop over Capstone's 64-bit `disasm_lite`, 64 KiB
at a time, across every executable section (SHF_EXECINSTR), counting instructions; (b) end-to-end
`pvtranslate.translate()` of the same file, writing the output. Each runs in its own subprocess,
alternating, median of --repeat; the times are of the loop and of the translate() call alone.
Targets (issue): translate/sweep <= 1.0; peak memory of the translation (Pss of its process tree,
polled every 20 ms) <= 4x the file size; 100% of decoded sites planned, <= 1% by trap fallback.
Figures only: nothing here asserts on wall-clock time.

Usage: tools/bench_translate.py [--vmlinux PATH] [--repeat N] [--json OUT] [--mode-map-sections]
       tools/bench_translate.py [--vmlinux PATH] [--mode-map-sections] --profile N
           (wall time of each phase of one end-to-end translate(), then cProfile of a plan-only one)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from fetch_vmlinux import FetchError, cache_dir, fetch  # noqa: E402

SHF_EXECINSTR, SHT_NOBITS = 0x4, 8
TARGETS = {"ratio": 1.0, "peak_memory_over_file": 4.0, "trap_share": 0.01}


def exec_sections(raw: bytes) -> list[tuple[str, int, bytes]]:
    """(name, address, bytes) of each SHF_EXECINSTR section with file contents, of an ELF64 file."""
    shoff, = struct.unpack_from("<Q", raw, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", raw, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", raw, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = headers[shstrndx][4]
    out = []
    for name, kind, flags, addr, off, size in headers:
        if flags & SHF_EXECINSTR and kind != SHT_NOBITS and size:
            label = raw[strtab_off + name:raw.index(b"\0", strtab_off + name)].decode()
            out.append((label, addr, raw[off:off + size]))
    return out


# ---------------------------------------------------------------- workers (each in its own process)

SWEEP_CHUNK = 1 << 16  # disasm_lite decodes its whole buffer up front: 64 KiB at a time is ~10% faster than
                      # whole sections (and takes 1/30 of the memory), so the reference is the faster form


def work_sweep(path: Path) -> dict:
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    sections = [(name, addr, bytes(data)) for name, addr, data in exec_sections(path.read_bytes())]
    n = skipped = 0
    t0 = time.perf_counter()
    for _name, addr, buf in sections:
        off = 0
        while off < len(buf):
            stop = addr + min(off + SWEEP_CHUNK, len(buf))
            nxt = off
            for a, size, _mnemonic, _op_str in md.disasm_lite(buf[off:stop - addr + 15], addr + off):
                if a >= stop:
                    break
                n += 1
                nxt = a + size - addr
            if nxt == off:                   # disasm_lite stops at undecodable bytes: skip one, go on
                nxt, skipped = off + 1, skipped + 1
            off = nxt
    return {"seconds": time.perf_counter() - t0, "instructions": n, "undecodable_bytes_skipped": skipped}


def _mode_map(path: Path):
    from pvtranslate.decode import ModeRange
    return tuple(ModeRange(a, a + len(d), 64) for _n, a, d in exec_sections(path.read_bytes()))


def work_translate(path: Path, out: Path | None, mode_map_sections: bool) -> dict:
    """End-to-end translation writing ``out``; with ``out`` None, plan only (nothing written)."""
    from pvtranslate.translate import TranslateOptions, translate
    options = TranslateOptions(output=out, plan_only=out is None,
                               mode_map=_mode_map(path) if mode_map_sections else ())
    t0 = time.perf_counter()
    tr = translate(path, options)
    seconds = time.perf_counter() - t0
    planned = {s.va: s for s in tr.plan.sites}
    decoded_sites = len(tr.decoded.sites)
    unplanned = sum(1 for s in tr.decoded.sites if planned.get(s.va) is None or planned[s.va].tactic is None)
    unclassified = Counter()
    for u in tr.decoded.unclassified:
        unclassified[u.kind] += u.end_va - u.start_va
    bits = Counter()
    for r in tr.decoded.regions:
        bits[f"{r.bits}-bit"] += r.end_va - r.start_va
    return {"seconds": seconds, "statistics": tr.statistics(), "decoded_sites": decoded_sites,
            "unplanned_sites": unplanned, "unclassified_bytes": dict(unclassified), "region_bytes": dict(bits),
            "notes": len(tr.decoded.notes), "first_notes": list(tr.decoded.notes[:5])}


# ---------------------------------------------------------------- the parent: process tree, memory

def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
    return pids


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_worker(args: list[str]) -> tuple[dict | None, int, str]:
    """Run this script as a worker: (its JSON result or None if it failed, peak Pss of its process tree
    in bytes, its stderr)."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss_kb(p) for p in _tree(proc.pid)))
        time.sleep(0.02)
    out, err = proc.communicate()
    return (json.loads(out.splitlines()[-1]) if proc.returncode == 0 else None), peak * 1024, err


# ---------------------------------------------------------------- profile (in this process)

def profile(path: Path, top: int, mode_map_sections: bool) -> None:
    """Wall time of each phase of one end-to-end translate() (its load_image, decode, plan and emit,
    wrapped where translate() looks them up), then cProfile of translate(plan_only=True)."""
    import cProfile
    import pstats
    import tempfile
    import pvtranslate.translate as tmod
    from pvtranslate import PvTranslateError
    times: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                times[name] = time.perf_counter() - t0
        return wrapper

    originals = {name: getattr(tmod, name) for name in ("load_image", "decode", "plan", "emit")}
    mode_map = _mode_map(path) if mode_map_sections else ()
    for name, fn in originals.items():
        setattr(tmod, name, timed(name, fn))
    try:
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            tr = tmod.translate(path, tmod.TranslateOptions(output=Path(tmp) / "out.pv.elf", mode_map=mode_map))
            outcome = f"{tr.statistics()['instructions']:,} instructions, {tr.statistics()['sites']:,} sites"
    except PvTranslateError as exc:
        outcome = f"FAILED in {list(times)[-1]}: {type(exc).__name__}: {exc}"
    finally:
        for name, fn in originals.items():
            setattr(tmod, name, fn)
    print("phases (s): " + ", ".join(f"{k} {v:.3f}" for k, v in times.items()) + f"; {outcome}")
    prof = cProfile.Profile()
    prof.runcall(tmod.translate, path, tmod.TranslateOptions(plan_only=True, mode_map=mode_map))
    for key in ("cumulative", "tottime"):
        print(f"\n--- cProfile of translate(plan_only=True), top {top} by {key}")
        pstats.Stats(prof).sort_stats(key).print_stats(top)


# ---------------------------------------------------------------- main

class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def _must(result: tuple[dict | None, int, str], what: str) -> tuple[dict, int, str]:
    if result[0] is None:
        raise BenchError(f"{what} failed:\n{result[2][-6000:]}")
    return result


def measure(path: Path, repeat: int, extra: list[str]) -> tuple[list, list, str | None]:
    """Alternating sweep and translation workers, `repeat` times each. If the end-to-end translation
    fails, the error is kept and the remaining figures come from plan-only translations."""
    scratch = cache_dir() / "bench-out"
    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / (path.name + ".pv.elf")
    sweeps, translations, failure = [], [], None
    try:
        for _ in range(repeat):          # alternating, so machine noise hits both alike
            sweeps.append(_must(run_worker(["--worker", "sweep", str(path)]), "the sweep"))
            if failure is None:
                result = run_worker(["--worker", "translate", str(path), str(out), *extra])
                if result[0] is None:
                    failure = result[2]
                    print(f"bench_translate: end-to-end translation FAILED; the figures below are PLAN ONLY "
                          f"(nothing written). Its error:\n{failure[-6000:]}", file=sys.stderr)
            if failure is not None:
                result = _must(run_worker(["--worker", "plan", str(path), *extra]), "plan-only translation")
            translations.append(result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return sweeps, translations, failure


def summarize(path: Path, file_size: int, code_bytes: int, args, sweeps, translations, failure) -> dict:
    sweep_s = statistics.median(r["seconds"] for r, _p, _e in sweeps)
    trans_s = statistics.median(r["seconds"] for r, _p, _e in translations)
    last, sweep = translations[-1][0], sweeps[-1][0]
    st = last["statistics"]
    peak = max(p for _r, p, _e in translations)
    return {
        "vmlinux": str(path), "file_bytes": file_size, "code_bytes": code_bytes, "repeat": args.repeat,
        "mode_map_sections": args.mode_map_sections,
        "end_to_end": failure is None, "end_to_end_error": failure and failure.strip().splitlines()[-1],
        "sweep": {"seconds": round(sweep_s, 3), "instructions": sweep["instructions"],
                  "undecodable_bytes_skipped": sweep["undecodable_bytes_skipped"],
                  "peak_pss_bytes": max(p for _r, p, _e in sweeps)},
        "translate": {"seconds": round(trans_s, 3), "instructions": st["instructions"], "peak_pss_bytes": peak,
                      "statistics": st, "decoded_sites": last["decoded_sites"],
                      "unplanned_sites": last["unplanned_sites"], "unclassified_bytes": last["unclassified_bytes"],
                      "region_bytes": last["region_bytes"], "decoder_notes": last["notes"],
                      "first_notes": last["first_notes"]},
        "ratio": round(trans_s / sweep_s, 3),
        "peak_memory_over_file": round(peak / file_size, 3),
        "instructions_over_sweep": round(st["instructions"] / sweep["instructions"], 4),
        "handled_share": (round(1 - last["unplanned_sites"] / last["decoded_sites"], 4)
                          if last["decoded_sites"] else None),   # None: no site at all, nothing proved
        "trap_share": st["trap_fallback_share"],
        "targets": TARGETS,
    }


def print_table(r: dict) -> None:
    mb, t, sw = 1 << 20, r["translate"], r["sweep"]
    st, sites = t["statistics"], t["statistics"]["sites"]
    rows = [
        (f"{'translate' if r['end_to_end'] else 'PLAN ONLY'} / sweep time",
         f"{t['seconds']:.2f} s / {sw['seconds']:.2f} s", f"{r['ratio']}", "<= 1.0"),
        ("peak memory / file size", f"{t['peak_pss_bytes'] / mb:,.0f} MiB / {r['file_bytes'] / mb:,.0f} MiB",
         f"{r['peak_memory_over_file']}", "<= 4"),
        ("instructions: translator / sweep", f"{t['instructions']:,} / {sw['instructions']:,}",
         f"{r['instructions_over_sweep']}", ""),
        ("sites decoded, planned", f"{t['decoded_sites']:,}, {sites:,}",
         f"{r['handled_share']:.2%}" if sites else "n/a", "100%"),
        ("trap fallback", f"{st['by_tactic'].get('TRAP', 0):,} of {sites:,}",
         f"{r['trap_share']:.2%}" if sites else "n/a", "<= 1%"),
    ]
    print(f"{'what':<34} {'figures':<32} {'ratio':>8}  target")
    for row in rows:
        print(f"{row[0]:<34} {row[1]:<32} {row[2]:>8}  {row[3]}")
    print(f"sites by tactic: {st['by_tactic']}; by class: {st['by_class']}")
    print(f"unclassified bytes: {t['unclassified_bytes']}; decoded bytes by mode: {t['region_bytes']}")
    print(f"sweep: {sw['undecodable_bytes_skipped']} undecodable bytes skipped, peak {sw['peak_pss_bytes'] / mb:,.0f} "
          f"MiB; decoder notes: {t['decoder_notes']} (first: {t['first_notes'][:2]})")
    if not r["end_to_end"]:
        print(f"end-to-end translation failed: {r['end_to_end_error']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmlinux", type=Path, help="the kernel ELF (default: Debian's, via tools/fetch_vmlinux.py)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--mode-map-sections", action="store_true",
                    help="pass every executable section as 64-bit code in TranslateOptions.mode_map "
                         "(also seeds the decoder at each section start)")
    ap.add_argument("--profile", type=int, metavar="N", help="print phase times and the top N of cProfile, then stop")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:                      # internal: `--worker sweep|plan PATH` / `--worker translate PATH OUT`
        kind, path = args.worker[0], Path(args.worker[1])
        result = (work_sweep(path) if kind == "sweep"
                  else work_translate(path, Path(args.worker[2]) if kind == "translate" else None,
                                      args.mode_map_sections))
        print(json.dumps(result))
        return 0
    try:
        path = args.vmlinux or fetch()
        raw = path.read_bytes()
        if raw[:4] != b"\x7fELF" or raw[4] != 2:
            raise BenchError(f"{path}: not an ELF64 file")
        if args.profile:
            profile(path, args.profile, args.mode_map_sections)
            return 0
        sections = exec_sections(raw)
        file_size, code_bytes = len(raw), sum(len(d) for _n, _a, d in sections)
        del raw
        print(f"{path}: {file_size:,} bytes, {code_bytes:,} bytes in {len(sections)} executable sections "
              f"({', '.join(n for n, _a, _d in sections)})", flush=True)
        sweeps, translations, failure = measure(path, args.repeat, ["--mode-map-sections"] * args.mode_map_sections)
    except (FetchError, BenchError, OSError) as exc:
        print(f"bench_translate: error: {exc}", file=sys.stderr)
        return 1
    report = summarize(path, file_size, code_bytes, args, sweeps, translations, failure)
    print_table(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""VMM benchmarks, measured side by side in one run (ratios, not absolute times):

1. exit cost: samples/bench/exitloop.elf (1,000,000 port writes to the COM1 scratch register) under
   the VMM, against the very same loop bytes in a bare Unicorn engine with a no-op Python OUT hook
   (target: VMM / bare <= 2);
2. whole runs: `vmm run` against QEMU TCG on the CPU-bound workload sample (target: <= 1.2), and
   the same guest on a bare engine (the VMM's loader and CPU set-up, but only no-op port hooks and
   no devices), which splits the gap into the VMM's own overhead and the engine's speed.

Usage: tools/bench_vmm.py [--repeat N] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from unicorn import UC_ARCH_X86, UC_HOOK_INSN, UC_MODE_32, UC_PROT_ALL, Uc  # noqa: E402
from unicorn import x86_const as X  # noqa: E402

import vmm  # noqa: E402
from vmm.elf import parse_elf  # noqa: E402

EXIT_GUEST = ROOT / "samples" / "bench" / "exitloop.elf"
EXITS = 1_000_000
WORKLOAD = ROOT / "samples" / "workload" / "workload_sparse.elf"
QEMU = ["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel"]


def loop_bytes() -> bytes:
    image = parse_elf(EXIT_GUEST.read_bytes(), str(EXIT_GUEST))
    syms = {s.name: s.value for s in image.symbols}
    start, end = syms["exit_loop_body"], syms["exit_loop_body_end"]
    seg = next(s for s in image.segments if s.vaddr <= start < s.vaddr + s.file_size)
    return image.data[seg.file_off + start - seg.vaddr:seg.file_off + end - seg.vaddr]


def time_bare(code: bytes) -> float:
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0x1000, 0x1000, UC_PROT_ALL)
    uc.mem_write(0x1000, code + b"\xf4")
    uc.reg_write(X.UC_X86_REG_ECX, EXITS)
    uc.reg_write(X.UC_X86_REG_EDX, 0x3FF)
    uc.reg_write(X.UC_X86_REG_EAX, 0x5A)
    uc.hook_add(UC_HOOK_INSN, lambda uc, port, size, value, ud: None, None, 1, 0, X.UC_X86_INS_OUT)
    t0 = time.perf_counter()
    uc.emu_start(0x1000, 0x1000 + len(code) + 1)
    return time.perf_counter() - t0


def time_vmm_exits() -> float:
    t0 = time.perf_counter()
    result = vmm.run(EXIT_GUEST)
    elapsed = time.perf_counter() - t0
    if not result.passed or result.exits.get("pio", 0) < EXITS:
        raise SystemExit(f"exit benchmark guest did not run correctly: {result}")
    return elapsed


def time_bare_guest(elf: Path) -> float:
    """The guest on the VMM's engine set-up with nothing but no-op port hooks (IN reads 0xff, like the
    masked PIC the workload expects); stops at the isa-debug-exit write."""
    from unicorn import UC_HOOK_INSN as HOOK_INSN
    from vmm.machine import Console, Machine, MachineConfig
    machine = Machine(MachineConfig(), Console())
    machine.boot(elf)
    bare = machine.uc                      # reuse the booted engine, but replace the VMM's hooks
    for handle in list(bare._callbacks):
        bare.hook_del(handle)
    bare.hook_add(HOOK_INSN, lambda uc, port, size, ud: 0xFF, None, 1, 0, X.UC_X86_INS_IN)
    bare.hook_add(HOOK_INSN, lambda uc, port, size, value, ud: uc.emu_stop() if port == 0xF4 else None,
                  None, 1, 0, X.UC_X86_INS_OUT)
    t0 = time.perf_counter()
    bare.emu_start(machine.record.entry_pa, 0xFFFF_FFFF_FFFF_FFF0)
    elapsed = time.perf_counter() - t0
    machine.close()
    return elapsed


def time_command(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    if not proc.stdout.rstrip().endswith(b"PASS"):
        raise SystemExit(f"{' '.join(cmd)} did not pass:\n{proc.stdout[-500:]!r}\n{proc.stderr[-2000:]!r}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    code = loop_bytes()
    bare, ours = [], []
    for _ in range(args.repeat):              # interleaved, so machine noise hits both alike
        bare.append(time_bare(code))
        ours.append(time_vmm_exits())
    bare_us = statistics.median(bare) / EXITS * 1e6
    ours_us = statistics.median(ours) / EXITS * 1e6

    qemu_t, vmm_t, bare_t = [], [], []
    for _ in range(max(1, args.repeat // 2)):
        qemu_t.append(time_command(QEMU + [str(WORKLOAD)]))
        vmm_t.append(time_command([sys.executable, "-m", "vmm", "run", str(WORKLOAD)]))
        bare_t.append(time_bare_guest(WORKLOAD))
    report = {
        "exit_cost_us": {"bare_unicorn_noop_hook": round(bare_us, 3), "vmm": round(ours_us, 3),
                         "ratio": round(ours_us / bare_us, 2), "target": 2.0},
        "workload_sparse_s": {"qemu_tcg": round(statistics.median(qemu_t), 3),
                              "vmm": round(statistics.median(vmm_t), 3),
                              "ratio": round(statistics.median(vmm_t) / statistics.median(qemu_t), 2),
                              "target": 1.2,
                              "bare_engine": round(statistics.median(bare_t), 3),
                              "vmm_over_bare_engine": round(statistics.median(vmm_t) / statistics.median(bare_t), 2),
                              "bare_engine_over_qemu": round(statistics.median(bare_t) / statistics.median(qemu_t), 2)},
        "repeat": args.repeat,
    }
    print(f"exit cost: vmm {ours_us:.3f} us, bare unicorn + no-op hook {bare_us:.3f} us, "
          f"ratio {report['exit_cost_us']['ratio']} (target <= 2)")
    w = report["workload_sparse_s"]
    print(f"workload_sparse: vmm {w['vmm']} s, qemu tcg {w['qemu_tcg']} s, ratio {w['ratio']} (target <= 1.2)")
    print(f"  of which: bare engine {w['bare_engine']} s (engine / qemu {w['bare_engine_over_qemu']}), "
          f"vmm / bare engine {w['vmm_over_bare_engine']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Builds every sample kernel from source with GNU gcc/binutils, as declared in samples/*/sample.toml.

Usage: python samples/build.py [--out DIR] [NAME ...]
Without --out, each ELF is written next to its sources (the committed prebuilt copies).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent
LIB_DIR = SAMPLES_DIR / "lib"

COMMON_CFLAGS = [
    "-std=gnu11", "-O2", "-g0", "-ffreestanding", "-fno-pic", "-fno-pie", "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables", "-fno-builtin", "-mgeneral-regs-only", "-nostdlib",
    "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-I", "lib",
]
# layout -> (gcc arch flags, boot stub, boot header, final ELF class)
LAYOUTS = {
    "pvh64": (["-m64", "-mno-red-zone", "-mcmodel=small"], "start64.S", "pvh_note.S", "elf64"),
    "mb32-long": (["-m64", "-mno-red-zone", "-mcmodel=small"], "start64.S", "mb1_header.S", "elf32"),
    "pvh32": (["-m32"], "start32.S", "pvh_note.S", "elf32"),
    "mb32": (["-m32"], "start32.S", "mb1_header.S", "elf32"),
}


@dataclass(frozen=True)
class Kernel:
    """One ELF to build: which sample directory, which boot layout, which sources and defines."""

    sample_dir: Path
    name: str
    layout: str
    sources: tuple[str, ...]
    defines: dict = field(default_factory=dict)
    disk_sectors: int = 0          # the runner attaches a samples/disk.py image of this many sectors
    role: str = "sample"           # "misbehaves": a diagnostics fixture that never passes
    append: str = ""               # kernel command line the runner passes (-append)
    modules: tuple[str, ...] = ()  # boot modules "FILE [ARGS]", FILE relative to the sample directory
    mem_mib: int = 0               # guest RAM the runner asks for (0: the default, 128 MiB)

    @property
    def elf_name(self) -> str:
        return f"{self.name}.elf"

    @property
    def elf_path(self) -> Path:
        return self.sample_dir / self.elf_name


def discover() -> list[Kernel]:
    kernels = []
    for manifest in sorted(SAMPLES_DIR.glob("*/sample.toml")):
        data = tomllib.loads(manifest.read_text())
        for k in data.get("kernel", []):
            if k["layout"] not in LAYOUTS:
                raise SystemExit(f"{manifest}: unknown layout {k['layout']!r}; use one of {sorted(LAYOUTS)}")
            kernels.append(Kernel(manifest.parent, k["name"], k["layout"], tuple(k["sources"]),
                                  dict(k.get("defines", {})), int(k.get("disk_sectors", 0)),
                                  k.get("role", "sample"), k.get("append", ""), tuple(k.get("modules", ())),
                                  int(k.get("mem_mib", 0))))
    return kernels


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=SAMPLES_DIR, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"build failed: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def build(kernel: Kernel, out_dir: Path) -> Path:
    arch, stub, header, elf_class = LAYOUTS[kernel.layout]
    rel = kernel.sample_dir.relative_to(SAMPLES_DIR)
    defines = [f"-D{k}={v}" for k, v in sorted(kernel.defines.items())]
    with tempfile.TemporaryDirectory() as tmp:
        objs = []
        srcs = [f"lib/{stub}", f"lib/{header}", "lib/kernel.c"] + [f"{rel}/{s}" for s in kernel.sources]
        for i, src in enumerate(srcs):
            obj = Path(tmp) / f"{i}.o"
            _run(["gcc", *arch, *COMMON_CFLAGS, "-I", str(rel), *defines, "-c", src, "-o", str(obj)])
            objs.append(str(obj))
        linked = Path(tmp) / "linked.elf"
        emulation = "elf_x86_64" if arch[0] == "-m64" else "elf_i386"
        _run(["ld", "-m", emulation, "-nostdlib", "-static", "--build-id=none", "-z", "max-page-size=0x1000",
              "-z", "noexecstack", "-T", "lib/kernel.ld", "-o", str(linked), *objs])
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / kernel.elf_name
        if elf_class == "elf32" and emulation == "elf_x86_64":
            # A 32-bit multiboot container around 64-bit code, as real kernels ship.
            _run(["objcopy", "-I", "elf64-x86-64", "-O", "elf32-i386", str(linked), str(target)])
        else:
            shutil.copyfile(linked, target)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write all ELFs here instead of next to their sources")
    ap.add_argument("names", nargs="*", help="build only these kernels")
    args = ap.parse_args(argv)
    for kernel in discover():
        if args.names and kernel.name not in args.names:
            continue
        target = build(kernel, args.out or kernel.sample_dir)
        print(f"built {target.relative_to(SAMPLES_DIR) if not args.out else target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

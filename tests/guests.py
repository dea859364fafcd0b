"""Test support: the sample kernels, fresh disk images for them, and running them under QEMU or `vmm run`."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
QEMU = shutil.which("qemu-system-x86_64")
QEMU_ARGS = ["-accel", "tcg", "-nodefaults", "-display", "none", "-no-reboot", "-serial", "stdio",
             "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_tool(name: str):
    """A script under tools/ as a module (tools/ is not a package)."""
    return _load(name, ROOT / "tools" / f"{name}.py")


sample_build = _load("sample_build", SAMPLES / "build.py")
sample_disk = _load("sample_disk", SAMPLES / "disk.py")
KERNELS = sample_build.discover()


@dataclass(frozen=True)
class Outcome:
    console: bytes
    status: int
    stderr: str
    disk: bytes | None


def make_disk(kernel, directory: Path, tag: str) -> Path | None:
    if not kernel.disk_sectors:
        return None
    path = directory / f"{kernel.name}.{tag}.img"
    sample_disk.make_disk_image(path, kernel.disk_sectors)
    return path


def boot_args(kernel) -> tuple[list[str], list[str]]:
    """The sample's boot inputs as QEMU options and as `vmm run` options (run both from its directory)."""
    qemu, ours = [], []
    if kernel.append:
        qemu += ["-append", kernel.append]
        ours += ["--append", kernel.append]
    if kernel.modules:
        qemu += ["-initrd", ",".join(kernel.modules)]
        ours += [arg for spec in kernel.modules for arg in ("--module", spec)]
    if kernel.mem_mib:
        qemu += ["-m", f"{kernel.mem_mib}M"]
        ours += ["--mem", f"{kernel.mem_mib}M"]
    return qemu, ours


def run_qemu(elf: Path, disk: Path | None, *extra: str, timeout: float = 120, cwd: Path | None = None) -> Outcome:
    cmd = [QEMU, *QEMU_ARGS, "-kernel", str(elf), *extra]
    if disk is not None:
        cmd += ["-drive", f"file={disk},format=raw,if=ide,index=0"]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)
    return Outcome(proc.stdout, proc.returncode, proc.stderr.decode(errors="replace"),
                   disk.read_bytes() if disk else None)


def run_vmm(elf: Path, disk: Path | None, *extra: str, timeout: float = 300, cwd: Path | None = None) -> Outcome:
    cmd = [sys.executable, "-m", "vmm", "run", str(elf), *extra]
    if disk is not None:
        cmd += ["--disk", str(disk)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env,
                          cwd=cwd or ROOT)
    return Outcome(proc.stdout, proc.returncode, proc.stderr.decode(errors="replace"),
                   disk.read_bytes() if disk else None)

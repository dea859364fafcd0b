"""Every sample kernel, under QEMU (the oracle) and under `vmm run`: same console bytes, status and disk."""
from __future__ import annotations

import os

import pytest

from guests import KERNELS, QEMU, boot_args, make_disk, run_qemu, run_vmm

LONG_RUNNING = {k.name for k in KERNELS if k.name.startswith("workload_") and not k.name.endswith("_short")}


def _params():
    for kernel in (k for k in KERNELS if k.role == "sample"):
        marks = [pytest.mark.qemu]
        if kernel.name in LONG_RUNNING:
            marks.append(pytest.mark.slow)
        yield pytest.param(kernel, id=kernel.name, marks=marks)


@pytest.fixture(scope="session", autouse=True)
def _need_qemu():
    if QEMU is None:
        if os.environ.get("CI"):
            pytest.fail("qemu-system-x86_64 is missing: .ci/run must install qemu-system-x86")
        pytest.skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")


@pytest.mark.parametrize("kernel", list(_params()))
def test_vmm_matches_qemu(kernel, tmp_path):
    elf = kernel.elf_path
    qemu_args, vmm_args = boot_args(kernel)
    reference = run_qemu(elf, make_disk(kernel, tmp_path, "qemu"), *qemu_args, cwd=kernel.sample_dir)
    ours = run_vmm(elf, make_disk(kernel, tmp_path, "vmm"), *vmm_args, cwd=kernel.sample_dir)
    assert reference.console.rstrip().endswith(b"PASS"), f"sample fails under QEMU itself:\n{reference.console!r}"
    assert ours.console == reference.console, f"console differs; vmm stderr:\n{ours.stderr}"
    assert ours.status == reference.status, f"exit status differs; vmm stderr:\n{ours.stderr}"
    assert ours.disk == reference.disk, "the disk image was written differently"

"""The committed sample ELFs are exactly what their sources build to (rebuilt here with gcc/binutils)."""
from __future__ import annotations

import os
import shutil

import pytest

from guests import KERNELS, sample_build


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    if not (shutil.which("gcc") and shutil.which("ld") and shutil.which("objcopy")):
        if os.environ.get("CI"):
            pytest.fail("gcc/binutils missing: .ci/run must install them")
        pytest.skip("gcc/binutils not installed")
    out = tmp_path_factory.mktemp("rebuilt")
    for kernel in KERNELS:
        sample_build.build(kernel, out)
    return out


@pytest.mark.toolchain
@pytest.mark.parametrize("kernel", KERNELS, ids=[k.name for k in KERNELS])
def test_prebuilt_matches_source(kernel, rebuilt):
    committed = kernel.elf_path
    assert committed.exists(), f"{committed} is missing: run python3 samples/build.py and commit it"
    assert (rebuilt / kernel.elf_name).read_bytes() == committed.read_bytes(), \
        f"{committed.name} is stale: run python3 samples/build.py {kernel.name} and commit the result"

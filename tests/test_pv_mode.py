"""pv mode: a translated guest under the VMM prints the same console bytes and exits the same as the original."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pvtranslate import abi
from pvtranslate.translate import TranslateOptions, translate
from vmm.errors import LoadError
from vmm.run import run

ROOT = Path(__file__).resolve().parents[1]

# Samples whose translation runs with identical console bytes and exit status.
SAMPLES = [
    "samples/hello/hello_pvh64.elf",
    "samples/hello/hello_mb32.elf",
    "samples/hello/hello_pvh32.elf",
    "samples/hello/hello_mb32_long.elf",
    "samples/io/io64.elf",
    "samples/io/io32.elf",
    "samples/boot_state/boot_state32.elf",
    "samples/boot_state/boot_state64.elf",
    "samples/bootinfo/bootinfo_pvh64.elf",
    "samples/cpuid/cpuid64.elf",
    "samples/double_fault/double_fault32.elf",
    "samples/double_fault/double_fault64.elf",
    "samples/irq_window/irq_window32.elf",          # virtual IF, DELIVER_PENDING
    "samples/irq/irq32.elf",                        # ring 3: faults of emulated I/O at the original site
    "samples/irq/irq64.elf",
    "samples/zoo/zoo32.elf",                        # every catalog class; popf TF, exception fixups
    "samples/zoo/zoo64.elf",
    "samples/faulty/faulty_halt.elf",               # runs that end in a guest error end the same way
    "samples/faulty/faulty_triple.elf",
    "samples/faulty/faulty_outside_ram.elf",
    "samples/workload/workload_cli_short.elf",
    "samples/workload/workload_sparse_short.elf",
    "samples/workload/workload_stringio_short.elf",  # STRING_IN / STRING_OUT
    "samples/workload/workload_medium_short.elf",
    # identical too, but 35-70 s translated (one hypercall per port access): --runslow
    pytest.param("samples/bench/exitloop.elf", marks=pytest.mark.slow),
    pytest.param("samples/workload/workload_dense_short.elf", marks=pytest.mark.slow),
    pytest.param("samples/workload/workload_pio_short.elf", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: Path(str(s)).stem)
def test_translated_guest_matches_native(sample: str, tmp_path: Path) -> None:
    out = tmp_path / (Path(sample).stem + ".pv.elf")
    translate(ROOT / sample, TranslateOptions(output=out))
    native = run(ROOT / sample)
    pv = run(out)
    assert native.mode == "native" and pv.mode == "pv"
    assert (pv.error is None) == (native.error is None)
    assert pv.console == native.console
    assert pv.exit_status == native.exit_status
    assert pv.hypercalls.get("PORT_OUT8", 0) > 0


def test_unknown_abi_version_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "hello.pv.elf"
    translate(ROOT / "samples/hello/hello_mb32.elf", TranslateOptions(output=out))
    data = out.read_bytes()
    marker = b"PVTR\0\0\0\0" + struct.pack("<I", abi.ABI_VERSION)
    assert data.count(marker) == 1
    bad = tmp_path / "hello_v99.pv.elf"
    bad.write_bytes(data.replace(marker, b"PVTR\0\0\0\0" + struct.pack("<I", 99)))
    with pytest.raises(LoadError, match=r"ABI version 99.*re-translate"):
        run(bad)

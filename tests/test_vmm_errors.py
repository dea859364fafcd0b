"""`vmm run` on bad input files and misbehaving guests: a clear message, a distinct status, no traceback."""
from __future__ import annotations

import struct

import pytest

from guests import SAMPLES, run_vmm

GOOD64 = SAMPLES / "hello" / "hello_pvh64.elf"
FAULTY = SAMPLES / "faulty"


def _patched(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _pvh_note_offset(data: bytes) -> int:
    # namesz=4, descsz=4, type=18, "Xen\0", then the 4-byte entry
    return data.index(struct.pack("<III", 4, 4, 18) + b"Xen\0")


def bad_inputs(tmp_path):
    good = GOOD64.read_bytes()
    no_x86 = bytearray(good)
    no_x86[18:20] = struct.pack("<H", 40)                         # EM_ARM
    no_note = bytearray(good)
    no_note[_pvh_note_offset(good) + 8:_pvh_note_offset(good) + 12] = struct.pack("<I", 99)
    far_entry = bytearray(good)
    far_entry[_pvh_note_offset(good) + 16:_pvh_note_offset(good) + 20] = struct.pack("<I", 0x5000000)
    return {
        "not_elf": (_patched(tmp_path, "notes.txt", b"just some text\n"), "not an ELF file"),
        "empty": (_patched(tmp_path, "empty.elf", b""), "not an ELF file"),
        "truncated_header": (_patched(tmp_path, "trunc.elf", good[:40]), "truncated"),
        "truncated_segment": (_patched(tmp_path, "trunc2.elf", good[:0x1100]), "truncated"),
        "not_x86": (_patched(tmp_path, "arm.elf", bytes(no_x86)), "not an x86 ELF"),
        "no_boot_protocol": (_patched(tmp_path, "nonote.elf", bytes(no_note)), "no boot protocol"),
        "entry_outside": (_patched(tmp_path, "entry.elf", bytes(far_entry)), "entry point 0x5000000 is outside"),
        "missing_file": (tmp_path / "does-not-exist.elf", "cannot read"),
    }


@pytest.mark.parametrize("case", ["not_elf", "empty", "truncated_header", "truncated_segment", "not_x86",
                                  "no_boot_protocol", "entry_outside", "missing_file"])
def test_bad_input_file(case, tmp_path):
    path, message = bad_inputs(tmp_path)[case]
    out = run_vmm(path, None, timeout=60)
    assert out.status == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("vmm: error: ")


@pytest.mark.parametrize("guest, args, status, message", [
    ("faulty_triple", (), 4, "triple fault"),
    ("faulty_outside_ram", (), 4, "outside RAM"),
    ("faulty_halt", (), 4, "hlt with interrupts disabled"),
    ("faulty_spin", ("--timeout", "1"), 124, "time limit of 1 s reached"),
    ("faulty_spin", ("--max-insns", "200000"), 124, "instruction limit of 200000 reached"),
])
def test_misbehaving_guest(guest, args, status, message):
    out = run_vmm(FAULTY / f"{guest}.elf", None, *args, timeout=120)
    assert out.console.startswith(b"misdeed "), out.console
    assert b"still running" not in out.console
    assert out.status == status, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_bad_memory_size():
    out = run_vmm(GOOD64, None, "--mem", "1M", timeout=60)
    assert out.status == 2 and "RAM size" in out.stderr and "Traceback" not in out.stderr


def test_console_to_a_file(tmp_path):
    out = run_vmm(GOOD64, None, "--serial", str(tmp_path / "com1.txt"), timeout=60)
    assert out.status == 1 and out.console == b""
    assert (tmp_path / "com1.txt").read_bytes().endswith(b"PASS\n")


def test_unwritable_output_is_a_clear_error(tmp_path):
    out = run_vmm(GOOD64, None, "--trace", str(tmp_path / "missing-dir" / "t.jsonl"), timeout=60)
    assert out.status == 2 and "No such file or directory" in out.stderr and "Traceback" not in out.stderr

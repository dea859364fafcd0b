"""PV ABI: note round trip and version refusal, shared-page layout, hypercall numbering, stdlib-only."""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pvtranslate import PvTranslateError, abi
from pvtranslate.abi import (
    ABI_VERSION,
    HYPERCALL_SPECS,
    SHARED_PAGE_FIELDS,
    SHARED_PAGE_SIZE,
    AbiDescriptor,
    AbiError,
    GuestVa,
    Hypercall,
    MalformedNote,
    SharedOffset,
    UnknownAbiVersion,
)

DESC = AbiDescriptor(ABI_VERSION, GuestVa(0xFFFF_FFFF_8120_0000), GuestVa(0xFFFF_FFFF_8120_1000), 1234)


def test_note_round_trip() -> None:
    note = abi.pack_note(DESC)
    assert len(note) % 4 == 0
    assert note[12:17] == b"PVTR\0"
    assert abi.unpack_note(note) == DESC
    assert abi.unpack_descriptor(abi.pack_descriptor(DESC)) == DESC


def test_note_round_trip_32bit_addresses() -> None:
    desc = AbiDescriptor(ABI_VERSION, GuestVa(0x0010_0000), GuestVa(0x0011_0000), 0, flags=0)
    assert abi.unpack_note(abi.pack_note(desc)) == desc


def _with_version(note: bytes, version: int) -> bytes:
    desc_off = 12 + 8  # header + "PVTR\0" padded to 8
    return note[:desc_off] + struct.pack("<I", version) + note[desc_off + 4 :]


def test_unknown_version_rejected_with_a_clear_message() -> None:
    bad = _with_version(abi.pack_note(DESC), 99)
    with pytest.raises(UnknownAbiVersion) as info:
        abi.unpack_note(bad)
    message = str(info.value)
    assert "ABI version 99" in message and str(ABI_VERSION) in message and "re-translate" in message
    assert isinstance(info.value, PvTranslateError)


def test_packing_an_unknown_version_is_refused() -> None:
    with pytest.raises(UnknownAbiVersion):
        abi.pack_descriptor(AbiDescriptor(7, GuestVa(0), GuestVa(0), 0))


@pytest.mark.parametrize("cut", [0, 4, 11, 12, 20, 30])
def test_truncated_note_is_malformed(cut: int) -> None:
    with pytest.raises(MalformedNote):
        abi.unpack_note(abi.pack_note(DESC)[:cut])


def test_wrong_name_or_type_is_malformed() -> None:
    note = bytearray(abi.pack_note(DESC))
    note[12:16] = b"XEN\0"
    with pytest.raises(MalformedNote, match="name"):
        abi.unpack_note(bytes(note))
    note = bytearray(abi.pack_note(DESC))
    note[8:12] = struct.pack("<I", 9)
    with pytest.raises(MalformedNote, match="type"):
        abi.unpack_note(bytes(note))


def test_out_of_range_field_is_malformed() -> None:
    with pytest.raises(MalformedNote):
        abi.pack_descriptor(AbiDescriptor(ABI_VERSION, GuestVa(1 << 64), GuestVa(0), 0))


def test_shared_page_fields_do_not_overlap_and_fit() -> None:
    spans = sorted((int(f.offset), f.end, f.name) for f in SHARED_PAGE_FIELDS)
    for (_s0, end0, n0), (start1, _e1, n1) in zip(spans, spans[1:]):
        assert end0 <= start1, f"{n0} overlaps {n1}"
    assert spans[0][0] >= 0 and spans[-1][1] <= SHARED_PAGE_SIZE == 4096
    assert {f.offset for f in SHARED_PAGE_FIELDS} == set(SharedOffset)
    assert len(SHARED_PAGE_FIELDS) == len(SharedOffset)


def test_shared_page_u64_fields_are_naturally_aligned() -> None:
    for field in SHARED_PAGE_FIELDS:
        if field.size == 8:
            assert int(field.offset) % 8 == 0, field.name


def test_sreg_shadows_inside_their_field() -> None:
    field = next(f for f in SHARED_PAGE_FIELDS if f.offset is SharedOffset.SREGS)
    for sreg in abi.SREG_SHADOW_ORDER:
        off = abi.sreg_shadow_offset(sreg)
        assert int(field.offset) <= off and off + 2 <= field.end


def test_hypercall_numbers_unique_nonzero_and_specified() -> None:
    values = [int(h) for h in Hypercall]
    assert len(values) == len(set(values))
    assert 0 not in values
    assert set(HYPERCALL_SPECS) == set(Hypercall)
    for number, spec in HYPERCALL_SPECS.items():
        assert spec.number is number
        assert len(spec.args) <= len(abi.REGISTERS_32.arg_regs)
        assert len(spec.results) <= len(abi.REGISTERS_64.result_regs)


def test_register_conventions() -> None:
    for conv in (abi.REGISTERS_32, abi.REGISTERS_64):
        regs = (conv.number_reg, *conv.arg_regs)
        assert len(set(regs)) == len(regs), "number and arguments need distinct registers"
    assert abi.REGISTERS_32.number_reg == "eax" and abi.REGISTERS_64.number_reg == "rax"
    # rdmsr-style results land where the native instruction puts them (edx:eax)
    assert abi.REGISTERS_32.result_regs[:2] == ("eax", "edx")


def test_transfer_instruction() -> None:
    assert abi.HYPERCALL_INSN == b"\xcd\x82"


def test_abi_imports_only_the_standard_library() -> None:
    code = (
        "import sys; import pvtranslate.abi; "
        "bad = [m for m in ('capstone', 'keystone', 'lief', 'unicorn', 'vmm', 'pvtranslate.catalog') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == ""


def test_site_table_round_trips_unwind_records_and_pc_map() -> None:
    """A hand-made table: what the emitter packs is what the VMM parses (no emitter code involved)."""
    site = abi.SITE_TABLE_ENTRY.pack(0x1000, 0x9000, 1, 1, 0, 0, b"\xec".ljust(16, b"\0"))
    points = [abi.HypercallPoint(0x9010, 0x1000, ("rax", "rbx")), abi.HypercallPoint(0x9040, 0x1000, ()),
              abi.HypercallPoint(0x9050, 0x1000, ("rax", "rdi"), in_save_area=True),
              abi.HypercallPoint(0x9048, 0x1000, ("rcx",), access=True)]
    pcs = [abi.PcMapEntry(0x9000, 0x1000, abi.PcKind.SITE), abi.PcMapEntry(0x9020, 0x1001, abi.PcKind.REPLAY),
           abi.PcMapEntry(0x9030, 0x1005, abi.PcKind.BACK)]
    blob = (abi.SITE_TABLE_HEADER.pack(abi.SITE_TABLE_MAGIC, 1, len(points), len(pcs)) + site
            + b"".join(p.pack() for p in points) + b"".join(e.pack() for e in reversed(pcs)))
    assert abi.site_table_size(blob) == len(blob)
    table = abi.parse_site_table(blob)
    assert table.hypercalls == {0x9010: 0x1000, 0x9040: 0x1000, 0x9050: 0x1000}   # not the access point
    assert table.unwind == {0x9010: ("rax", "rbx"), 0x9040: (), 0x9050: ()}      # what is on the stack
    assert table.points == {p.va: p for p in points}
    assert table.pc_map == tuple(pcs)                       # sorted by trampoline address
    assert abi.unwind_index("ecx") == abi.unwind_index("rcx") == 1
    with pytest.raises(AbiError):
        abi.HypercallPoint(0, 0, ("xmm0",)).pack()
    bad = bytearray(blob)
    bad[-4] = 9                                             # unknown pc-map kind
    with pytest.raises(MalformedNote):
        abi.parse_site_table(bytes(bad))


def test_string_io_flags_carry_address_size_and_segment() -> None:
    for bits in (16, 32, 64):
        for seg in abi.SREG_SHADOW_ORDER:
            assert abi.unpack_string_flags(abi.pack_string_flags(bits, seg)) == (bits, seg)
    assert abi.pack_string_flags(32, "es") == abi.STRING_ADDR32              # ins in 32-bit code
    with pytest.raises(AbiError):
        abi.pack_string_flags(8, "ds")
    for bad in (1, abi.STRING_ADDR32 | abi.STRING_ADDR16, 6 << abi.STRING_SEGMENT_SHIFT):
        with pytest.raises(AbiError):
            abi.unpack_string_flags(bad)


def test_save_area_holds_every_unwind_register() -> None:
    field = next(f for f in abi.SHARED_PAGE_FIELDS if f.offset is abi.SharedOffset.SAVE_AREA)
    assert field.size == 8 * len(abi.UNWIND_REGISTERS)

"""elfwrite: the appended segment, the moved program-header table and the untouched input bytes."""
from __future__ import annotations

import io
import struct

import lief
import pytest

from pvtranslate import elfwrite
from pvtranslate.emit import EmitError, EmitOptions, emit
from pvtranslate.image import load_image
from pvtranslate.decode import decode
from pvtranslate.plan import plan

PAGE = 4096


def _elf64(with_phdr: bool, paddr_delta: int = 0) -> bytes:
    """An ELF64 executable: header, program headers (PT_PHDR optional, one PT_LOAD over the whole file)."""
    phnum = 2 if with_phdr else 1
    code = b"\x90" * 32 + b"\xf4"
    size = 64 + 56 * phnum + len(code)
    base = 0x400000
    phdrs = b""
    if with_phdr:
        phdrs += struct.pack("<IIQQQQQQ", elfwrite.PT_PHDR, 4, 64, base + 64, base + 64, 56 * phnum, 56 * phnum, 8)
    phdrs += struct.pack("<IIQQQQQQ", elfwrite.PT_LOAD, 5, 0, base, base + paddr_delta, size, size, PAGE)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, base + 64 + 56 * phnum, 64, 0, 0, 64, 56, phnum,
                                 64, 0, 0)
    return header + phdrs + code


@pytest.mark.parametrize("with_phdr", [False, True])
def test_render_appends_segment_and_keeps_input(tmp_path, with_phdr) -> None:
    src = tmp_path / "in.elf"
    src.write_bytes(_elf64(with_phdr))
    layout = elfwrite.read_layout(src)
    code_va = 0x400000 + 64 + 56 * len(layout.headers)
    content, note = b"\xab" * 100, b"NOTE" * 5
    out = io.BytesIO()
    size = elfwrite.render(src, out, layout, [(code_va + 4, b"\xcc\xcc")], 0x401000, 0x401000, content, note)
    data = out.getvalue()
    assert len(data) == size
    original = src.read_bytes()
    expected = bytearray(original)
    expected[code_va - 0x400000 + 4:code_va - 0x400000 + 6] = b"\xcc\xcc"
    after = elfwrite.read_layout(io.BytesIO(data))
    # only e_phoff and e_phnum of the header changed; every other input byte is the input's or a patch
    for off, n in ((0x20, 8), (0x38, 2)):
        expected[off:off + n] = data[off:off + n]
    assert data[:len(original)] == bytes(expected)
    assert len(after.headers) == len(layout.headers) + 2
    seg, notes = after.headers[-2:]
    assert (seg.type, seg.vaddr, seg.paddr, seg.offset % PAGE) == (elfwrite.PT_LOAD, 0x401000, 0x401000, 0)
    assert data[seg.offset:seg.offset + len(content)] == content
    assert (notes.type, data[notes.offset:notes.offset + notes.filesz]) == (elfwrite.PT_NOTE, note)
    # the new table is mapped, and PT_PHDR (if any) points at it both in the file and in memory
    table_off = struct.unpack_from("<Q", data, 0x20)[0]
    assert seg.offset <= table_off and table_off + 56 * len(after.headers) <= seg.offset + seg.filesz
    if with_phdr:
        phdr = after.headers[0]
        assert phdr.offset == table_off and phdr.vaddr == seg.vaddr + (table_off - seg.offset)
    parsed = lief.ELF.parse(io.BytesIO(data))
    assert parsed is not None and [s.virtual_address for s in parsed.segments
                                   if s.type == lief.ELF.Segment.TYPE.LOAD] == [0x400000, 0x401000]


def test_atomic_write_matches_memory_render(tmp_path) -> None:
    src = tmp_path / "in.elf"
    src.write_bytes(_elf64(True))
    layout = elfwrite.read_layout(src)
    args = (layout, [], 0x401000, 0x401000, b"x" * 10, b"n" * 8)
    mem = io.BytesIO()
    elfwrite.render(src, mem, *args)
    elfwrite.write_atomically(tmp_path / "out.elf", lambda fh: elfwrite.render(src, fh, *args))
    assert (tmp_path / "out.elf").read_bytes() == mem.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.elf", "out.elf"]


def test_patch_outside_file_bytes_is_refused(tmp_path) -> None:
    src = tmp_path / "in.elf"
    src.write_bytes(_elf64(False))
    layout = elfwrite.read_layout(src)
    with pytest.raises(elfwrite.ElfWriteError, match="not file bytes"):
        elfwrite.render(src, io.BytesIO(), layout, [(0x500000, b"\xcc")], 0x401000, 0x401000, b"", b"")


def test_physical_address_past_the_space_is_refused(tmp_path) -> None:
    """The new segment takes the highest segment's p_paddr - p_vaddr: loaded at the top of the physical
    address space, that leaves no room for it."""
    src = tmp_path / "in.elf"
    src.write_bytes(_elf64(False, paddr_delta=(1 << 64) - PAGE - 0x400000))
    image = load_image(src)
    the_plan = plan(decode(image))
    with pytest.raises(EmitError, match="physical address"):
        emit(src, the_plan, EmitOptions(output_path=tmp_path / "out.elf"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.elf"]

"""Writes a translated ELF by appending to a copy of the input: patches in place, a new PT_LOAD and PT_NOTE.

The input is copied in chunks, never held whole in memory (a distribution kernel is tens of MB, and
the translator's peak memory must stay within a few times the file size); the patches are written
over the copy at their file offsets; the new segment's bytes, the PV note and a new program-header
table (the old entries plus the two new ones) are appended, and the ELF header is pointed at that
table. Sections and every byte outside the patches keep their offsets and contents. The result is
renamed into place only when complete.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
from dataclasses import dataclass

from pvtranslate import PvTranslateError

PT_LOAD, PT_NOTE, PT_PHDR = 1, 4, 6
PF_X, PF_W, PF_R = 1, 2, 4
PAGE = 4096
_COPY_CHUNK = 1 << 20


class ElfWriteError(PvTranslateError):
    """The input's layout does not allow the output to be written as planned."""


@dataclass(frozen=True)
class ProgramHeader:
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


@dataclass(frozen=True)
class ElfLayout:
    """What the writer needs of an ELF: its class and its program headers."""

    is64: bool
    phoff: int
    phentsize: int
    headers: tuple[ProgramHeader, ...]

    @property
    def loads(self) -> tuple[ProgramHeader, ...]:
        return tuple(h for h in self.headers if h.type == PT_LOAD)

    def file_offset(self, va: int, size: int) -> int:
        """File offset of ``size`` bytes at ``va``, all inside one PT_LOAD's file bytes."""
        for h in self.loads:
            if h.vaddr <= va and va + size <= h.vaddr + h.filesz:
                return h.offset + (va - h.vaddr)
        raise ElfWriteError(f"{size} bytes at {va:#x} are not file bytes of any PT_LOAD segment")


_PH64 = struct.Struct("<IIQQQQQQ")   # type flags offset vaddr paddr filesz memsz align
_PH32 = struct.Struct("<IIIIIIII")   # type offset vaddr paddr filesz memsz flags align


def read_layout(path: str | os.PathLike) -> ElfLayout:
    """The program headers of a little-endian ELF32/ELF64 file (already validated by image.py)."""
    with open(path, "rb") as fh:
        ident = fh.read(64)
        is64 = ident[4] == 2
        if is64:
            phoff, = struct.unpack_from("<Q", ident, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", ident, 0x36)
        else:
            phoff, = struct.unpack_from("<I", ident, 0x1C)
            phentsize, phnum = struct.unpack_from("<HH", ident, 0x2A)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    fmt = _PH64 if is64 else _PH32
    if phentsize < fmt.size or len(table) != phentsize * phnum:
        raise ElfWriteError(f"{path}: program-header table is truncated or has entries of {phentsize} bytes")
    headers = []
    for k in range(phnum):
        v = fmt.unpack_from(table, k * phentsize)
        if is64:
            headers.append(ProgramHeader(*v))
        else:
            ptype, offset, vaddr, paddr, filesz, memsz, flags, align = v
            headers.append(ProgramHeader(ptype, flags, offset, vaddr, paddr, filesz, memsz, align))
    return ElfLayout(is64, phoff, phentsize, tuple(headers))


def _pack(layout: ElfLayout, h: ProgramHeader) -> bytes:
    if layout.is64:
        raw = _PH64.pack(h.type, h.flags, h.offset, h.vaddr, h.paddr, h.filesz, h.memsz, h.align)
    else:
        raw = _PH32.pack(h.type, h.offset, h.vaddr, h.paddr, h.filesz, h.memsz, h.flags, h.align)
    return raw.ljust(layout.phentsize, b"\0")


def write_translated(src: str | os.PathLike, dst: str | os.PathLike, layout: ElfLayout,
                     patches: list[tuple[int, bytes]], segment_va: int, segment_pa: int, content: bytes,
                     note: bytes) -> int:
    """Write ``dst`` atomically: ``src`` with ``patches`` ((va, bytes)) and a new RWX PT_LOAD holding
    ``content`` at ``segment_va``/``segment_pa`` plus a PT_NOTE holding ``note``. Returns its size."""
    dst = os.fspath(dst)
    where = [(layout.file_offset(va, len(data)), data) for va, data in patches]
    fd, tmp = tempfile.mkstemp(prefix=".pvtranslate-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(dst)))
    try:
        with os.fdopen(fd, "w+b") as out:
            with open(src, "rb") as inp:
                shutil.copyfileobj(inp, out, _COPY_CHUNK)
            for off, data in where:
                out.seek(off)
                out.write(data)
            end = out.seek(0, os.SEEK_END)
            seg_off = (end + PAGE - 1) // PAGE * PAGE + segment_va % PAGE
            padded = content + bytes(-len(content) % PAGE)
            note_off = seg_off + len(padded)
            table_off = (note_off + len(note) + 7) & ~7
            new = (ProgramHeader(PT_LOAD, PF_R | PF_W | PF_X, seg_off, segment_va, segment_pa, len(padded),
                                 len(padded), PAGE),
                   ProgramHeader(PT_NOTE, PF_R, note_off, 0, 0, len(note), len(note), 4))
            headers = [h if h.type != PT_PHDR else
                       ProgramHeader(PT_PHDR, h.flags, table_off, h.vaddr, h.paddr,
                                     layout.phentsize * (len(layout.headers) + 2),
                                     layout.phentsize * (len(layout.headers) + 2), h.align)
                       for h in layout.headers]
            if len(headers) + 2 > 0xFFFF:
                raise ElfWriteError("too many program headers to add two")
            out.seek(seg_off)
            out.write(padded)
            out.write(note)
            out.write(bytes(table_off - (note_off + len(note))))
            out.write(b"".join(_pack(layout, h) for h in (*headers, *new)))
            size = out.tell()
            if layout.is64:
                out.seek(0x20)
                out.write(struct.pack("<Q", table_off))
                out.seek(0x38)
            else:
                out.seek(0x1C)
                out.write(struct.pack("<I", table_off))
                out.seek(0x2C)
            out.write(struct.pack("<H", len(headers) + 2))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, dst)
        return size
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

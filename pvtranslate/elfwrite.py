"""Writes a translated ELF by appending to a copy of the input: patches in place, a new PT_LOAD and PT_NOTE.

The input is copied in chunks, never held whole in memory (a distribution kernel is tens of MB, and
the translator's peak memory must stay within a few times the file size); the patches are written
over the copy at their file offsets; the new segment (its content, then a new program-header table:
the old entries plus the two new ones) and the PV note are appended, and the ELF header is pointed at
that table. Sections and every byte outside the patches keep their offsets and contents. The result is
renamed into place only when complete.
"""
from __future__ import annotations

import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Callable, Sequence

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


def read_layout(path: str | os.PathLike | BinaryIO) -> ElfLayout:
    """The program headers of a little-endian ELF32/ELF64 file (already validated by image.py), given
    by path or as an open binary file."""
    if not isinstance(path, (str, os.PathLike)):
        return _read_layout(path, "the output")
    with open(path, "rb") as fh:
        return _read_layout(fh, os.fspath(path))


def _read_layout(fh: BinaryIO, name: str) -> ElfLayout:
    fh.seek(0)
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
        raise ElfWriteError(f"{name}: program-header table is truncated or has entries of {phentsize} bytes")
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


def render(src: str | os.PathLike, out: BinaryIO, layout: ElfLayout, patches: Sequence[tuple[int, bytes]],
           segment_va: int, segment_pa: int, content: bytes, note: bytes) -> int:
    """Write into ``out`` (seekable, empty): ``src`` with ``patches`` ((va, bytes)) applied, a new RWX
    PT_LOAD holding ``content`` then the new program-header table at ``segment_va``/``segment_pa``, and
    a PT_NOTE holding ``note``. Returns the output's size."""
    where = [(layout.file_offset(va, len(data)), data) for va, data in patches]
    nheaders = len(layout.headers) + 2
    if nheaders > 0xFFFF:
        raise ElfWriteError("the input has too many program headers to add two")
    with open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, _COPY_CHUNK)
    for off, data in where:
        out.seek(off)
        out.write(data)
    end = out.seek(0, os.SEEK_END)
    seg_off = (end + PAGE - 1) // PAGE * PAGE + segment_va % PAGE
    table_rel = (len(content) + 7) & ~7                 # the table is loaded too, for PT_PHDR's sake
    table_size = layout.phentsize * nheaders
    seg_size = segment_size(layout, len(content))
    note_off = seg_off + seg_size
    new = (ProgramHeader(PT_LOAD, PF_R | PF_W | PF_X, seg_off, segment_va, segment_pa, seg_size, seg_size, PAGE),
           ProgramHeader(PT_NOTE, PF_R, note_off, 0, 0, len(note), len(note), 4))
    headers = [h if h.type != PT_PHDR else
               ProgramHeader(PT_PHDR, h.flags, seg_off + table_rel, segment_va + table_rel,
                             segment_pa + table_rel, table_size, table_size, h.align)
               for h in layout.headers]
    table = b"".join(_pack(layout, h) for h in (*headers, *new))
    segment = bytearray(seg_size)
    segment[:len(content)] = content
    segment[table_rel:table_rel + table_size] = table
    out.seek(seg_off)
    out.write(segment)
    out.write(note)
    size = out.tell()
    if layout.is64:
        out.seek(0x20)
        out.write(struct.pack("<Q", seg_off + table_rel))
        out.seek(0x38)
    else:
        out.seek(0x1C)
        out.write(struct.pack("<I", seg_off + table_rel))
        out.seek(0x2C)
    out.write(struct.pack("<H", nheaders))
    return size


def segment_size(layout: ElfLayout, content_size: int) -> int:
    """The size ``render`` gives the new PT_LOAD for ``content_size`` bytes of content."""
    end = ((content_size + 7) & ~7) + layout.phentsize * (len(layout.headers) + 2)
    return (end + PAGE - 1) & ~(PAGE - 1)


def write_atomically(dst: str | os.PathLike, fill: Callable[[BinaryIO], object]) -> None:
    """Create ``dst`` via a temporary file in its directory: ``fill`` writes it, then it is renamed into
    place; on any error nothing is left behind."""
    dst = os.fspath(dst)
    fd, tmp = tempfile.mkstemp(prefix=".pvtranslate-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(dst)))
    try:
        with os.fdopen(fd, "w+b") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

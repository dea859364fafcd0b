"""The loader: one guest ELF (i386 or x86-64) read with LIEF into a frozen ``Image`` record.

The header, program headers, section headers and notes are checked here with ``struct`` before LIEF
sees the file, so malformed input fails with one of this module's errors (never a LIEF exception, a
half-parsed ``None``, or a process LIEF's writer aborts later in the emitter): every offset and size
stays in the file, entry sizes are the real ones, notes end inside their segment, and code sections
are what their segment loads. Nothing downstream imports LIEF for reading: the decoder takes an ``Image``.
"""

from __future__ import annotations

import enum
import io
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from typing import NewType, Union

from pvtranslate import PvTranslateError
from pvtranslate.abi import NOTE_NAME

__all__ = [
    "ImageError",
    "NotElfError",
    "NotX86Error",
    "TruncatedError",
    "OutOfBoundsError",
    "NotExecutableError",
    "MalformedElfError",
    "NoExecutableCodeError",
    "AlreadyTranslatedError",
    "ElfClass",
    "Machine",
    "SymbolType",
    "CodeRegion",
    "DataRegion",
    "Symbol",
    "Image",
    "load_image",
]

GuestVa = NewType("GuestVa", int)

_EM_386 = 3
_EM_X86_64 = 62
_ET_EXEC = 2
_ET_DYN = 3
_PT_LOAD = 1
_PT_INTERP = 3
_PT_NOTE = 4
_PF_X = 1
_SHT_SYMTAB = 2
_SHT_NOTE = 7
_SHT_NOBITS = 8
_SHT_DYNSYM = 11
_SHF_ALLOC = 0x2
_SHF_EXECINSTR = 0x4
_XEN_ELFNOTE_PHYS32_ENTRY = 18
_MB1_MAGIC = 0x1BADB002
_MB1_SEARCH = 8192


class ImageError(PvTranslateError):
    """The input is not a guest kernel pvtranslate can read."""


class NotElfError(ImageError):
    """No ELF magic / unknown ELF class or data encoding."""


class NotX86Error(ImageError):
    """An ELF for another machine than i386 / x86-64."""


class TruncatedError(ImageError):
    """The file ends inside the ELF header or a header table."""


class OutOfBoundsError(ImageError):
    """A section or segment claims bytes past the end of the file."""


class NotExecutableError(ImageError):
    """An ELF that is no executable: a relocatable object, a core dump (e_type not EXEC or DYN)."""


class MalformedElfError(ImageError):
    """Headers that contradict themselves: entry sizes, indexes, notes, sizes past the address space."""


class NoExecutableCodeError(ImageError):
    """No executable section or segment with bytes in the file."""


class AlreadyTranslatedError(ImageError):
    """The input already carries the PVTR note: it is pvtranslate's own output."""


class ElfClass(enum.IntEnum):
    ELF32 = 32
    ELF64 = 64


class Machine(enum.IntEnum):
    I386 = _EM_386
    X86_64 = _EM_X86_64


class SymbolType(enum.Enum):
    FUNC = "func"
    OBJECT = "object"
    NOTYPE = "notype"
    OTHER = "other"


@dataclass(frozen=True)
class CodeRegion:
    """Bytes of one executable section (or PF_X segment when there are no sections)."""

    start_va: int
    data: bytes
    name: str  # section name, or "segment#N" when taken from a program header
    file_off: int

    @property
    def end_va(self) -> int:
        return self.start_va + len(self.data)

    def __repr__(self) -> str:
        return f"CodeRegion({self.name!r}, {self.start_va:#x}..{self.end_va:#x})"


@dataclass(frozen=True)
class DataRegion:
    """Bytes of one allocated, non-executable section with file contents (rodata, data)."""

    start_va: int
    data: bytes
    name: str

    def __repr__(self) -> str:
        return f"DataRegion({self.name!r}, {self.start_va:#x}..{self.start_va + len(self.data):#x})"


@dataclass(frozen=True)
class Symbol:
    name: str
    va: int
    size: int
    type: SymbolType
    section_index: int


@dataclass(frozen=True)
class Image:
    """Everything the decoder needs from a guest ELF; no LIEF objects inside."""

    elf_class: ElfClass
    machine: Machine
    entry_va: int
    code: tuple[CodeRegion, ...]
    data: tuple[DataRegion, ...]
    symbols: tuple[Symbol, ...]
    pvh_entry_va: int | None  # XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry
    multiboot: bool  # a multiboot v1 header in the first 8 KiB: e_entry is 32-bit protected mode
    has_pv_note: bool
    load_segments: tuple[tuple[int, int, int], ...] = ()  # PT_LOAD (vaddr, paddr, memsz)

    @property
    def bits(self) -> int:
        return int(self.elf_class)

    def virtual_of(self, addr: int) -> int | None:
        """The virtual address of physical ``addr`` (code running with paging off, e.g. a kernel's
        32-bit boot stub, jumps to physical addresses), or None if no segment loads it."""
        for vaddr, paddr, memsz in self.load_segments:
            if paddr <= addr < paddr + memsz:
                return vaddr + (addr - paddr)
        return None

    def read(self, va: int, size: int) -> bytes | None:
        """``size`` bytes at ``va`` from any loaded section with file contents, or None."""
        for region in (*self.code, *self.data):
            off = va - region.start_va
            if 0 <= off and off + size <= len(region.data):
                return region.data[off : off + size]
        return None


def _hint(msg: str, hint: str) -> str:
    return f"{msg}; hint: {hint}"


@dataclass(frozen=True)
class _Header:
    elf_class: ElfClass
    machine: Machine
    entry_va: int
    phoff: int
    phentsize: int
    phnum: int
    shoff: int
    shentsize: int
    shnum: int

    @property
    def bits(self) -> int:
        return int(self.elf_class)


def _parse_header(raw: bytes, where: str) -> _Header:
    if len(raw) < 4 or raw[:4] != b"\x7fELF":
        raise NotElfError(_hint(f"{where}: not an ELF file (no \\x7fELF magic)", "pass a guest kernel ELF such as vmlinux"))
    if len(raw) < 16:
        raise TruncatedError(_hint(f"{where}: file ends inside the ELF identification ({len(raw)} bytes)",
                                   "the file is truncated; copy it again"))
    ei_class, ei_data = raw[4], raw[5]
    if ei_class not in (1, 2):
        raise NotElfError(_hint(f"{where}: unknown ELF class {ei_class}", "only ELF32 and ELF64 are supported"))
    if ei_data != 1:
        raise NotX86Error(_hint(f"{where}: big-endian ELF (EI_DATA={ei_data}) cannot be x86",
                                "pvtranslate translates i386 and x86-64 kernels only"))
    is64 = ei_class == 2
    fmt = "<HHIQQQIHHHHHH" if is64 else "<HHIIIIIHHHHHH"
    ehsize = struct.calcsize(fmt) + 16
    if len(raw) < ehsize:
        raise TruncatedError(_hint(f"{where}: file ends inside the ELF header ({len(raw)} of {ehsize} bytes)",
                                   "the file is truncated; copy it again"))
    (e_type, machine, _ver, entry, phoff, shoff, _flags, _ehsize, phentsize, phnum,
     shentsize, shnum, shstrndx) = struct.unpack_from(fmt, raw, 16)
    try:
        mach = Machine(machine)
    except ValueError:
        raise NotX86Error(_hint(f"{where}: ELF machine {machine} is not x86 (EM_386=3, EM_X86_64=62)",
                                "pvtranslate translates i386 and x86-64 kernels only")) from None
    if e_type not in (_ET_EXEC, _ET_DYN):
        raise NotExecutableError(_hint(f"{where}: not an executable (e_type {e_type}; ET_EXEC=2, ET_DYN=3)",
                                       "pass the linked kernel, not an object file or a core dump"))
    if phnum == 0:
        raise MalformedElfError(_hint(f"{where}: no program headers (e_phnum 0): nothing is loadable",
                                      "pass the linked kernel image"))
    for what, num, entsize, need in (("program", phnum, phentsize, 56 if is64 else 32),
                                     ("section", shnum, shentsize, 64 if is64 else 40)):
        if num and entsize != need:           # LIEF reads them `need` bytes apart whatever the header says
            raise MalformedElfError(_hint(f"{where}: {what} header entries are {entsize} bytes, an "
                                          f"{'ELF64' if is64 else 'ELF32'} one is {need}", "the file is corrupt"))
    for what, off, entsize, num in (("program", phoff, phentsize, phnum), ("section", shoff, shentsize, shnum)):
        if num and off + entsize * num > len(raw):
            raise TruncatedError(_hint(
                f"{where}: the {what} header table ({num} x {entsize} bytes at offset {off:#x}) runs past "
                f"the end of the file ({len(raw):#x} bytes)", "the file is truncated or corrupt; copy it again"))
        if num and off < ehsize:
            raise MalformedElfError(_hint(f"{where}: the {what} header table at offset {off:#x} overlaps the ELF "
                                          "header", "the file is corrupt"))
    if shnum and shstrndx >= shnum:
        raise MalformedElfError(_hint(f"{where}: section name table index {shstrndx} is not below the section "
                                      f"count {shnum}", "the file is corrupt (or uses extended section numbering)"))
    return _Header(ElfClass.ELF64 if is64 else ElfClass.ELF32, mach, entry, phoff, phentsize, phnum,
                   shoff, shentsize, shnum)


def _check_bounds(raw: bytes, hdr: _Header, where: str) -> None:
    """Every offset and size LIEF will follow stays in the file (LIEF may abort the process otherwise)."""
    is64 = hdr.elf_class is ElfClass.ELF64
    top = 1 << hdr.bits
    loads: list[tuple[int, int, int]] = []       # physical start, end, index of each PT_LOAD with memory
    for i in range(hdr.phnum):
        base = hdr.phoff + i * hdr.phentsize
        if is64:
            p_type, _flags, off, va, pa, filesz, memsz = struct.unpack_from("<IIQQQQQ", raw, base)
        else:
            p_type, off, va, pa, filesz, memsz = struct.unpack_from("<IIIIII", raw, base)
        if off > len(raw) or off + filesz > len(raw):
            raise OutOfBoundsError(_hint(
                f"{where}: segment #{i} (type {p_type:#x}) claims file bytes {off:#x}..{off + filesz:#x} "
                f"beyond the end of the file ({len(raw):#x})", "the file is truncated or corrupt"))
        if p_type == _PT_LOAD:
            loads.append((pa, pa + memsz, i))
            if filesz > memsz:
                raise MalformedElfError(_hint(f"{where}: segment #{i} has more file bytes ({filesz:#x}) than memory "
                                              f"bytes ({memsz:#x})", "the file is corrupt"))
            if va + memsz > top or pa + memsz > top:
                raise MalformedElfError(_hint(
                    f"{where}: segment #{i} ({memsz:#x} bytes at virtual {va:#x}, physical {pa:#x}) runs past the "
                    f"end of the {hdr.bits}-bit address space", "the file is corrupt"))
        elif p_type == _PT_NOTE:
            _check_notes(raw[off:off + filesz], f"{where}: segment #{i}")
        elif p_type == _PT_INTERP:
            raise NotExecutableError(_hint(f"{where}: segment #{i} names a program interpreter (PT_INTERP): this is "
                                           "a dynamically linked program, not a kernel", "pass the kernel image"))
    if not loads:
        raise MalformedElfError(_hint(f"{where}: no loadable (PT_LOAD) segment", "pass the linked kernel image"))
    loads = sorted(load for load in loads if load[1] > load[0])
    for (start_a, end_a, a), (start_b, end_b, b) in zip(loads, loads[1:]):
        if start_b < end_a:                        # the VMM and QEMU refuse such a kernel
            raise MalformedElfError(_hint(
                f"{where}: segments #{a} and #{b} overlap in physical memory ({start_a:#x}..{end_a:#x} and "
                f"{start_b:#x}..{end_b:#x})", "the file is corrupt"))
    for i in range(hdr.shnum):
        base = hdr.shoff + i * hdr.shentsize
        if is64:
            _name, sh_type, flags, addr, off, size, link, _info, _align, entsize = \
                struct.unpack_from("<IIQQQQIIQQ", raw, base)
        else:
            _name, sh_type, flags, addr, off, size, link, _info, _align, entsize = \
                struct.unpack_from("<IIIIIIIIII", raw, base)
        if sh_type != 0 and flags & _SHF_ALLOC and addr + size > top:
            raise MalformedElfError(_hint(f"{where}: section #{i} ({size:#x} bytes at {addr:#x}) runs past the end "
                                          f"of the {hdr.bits}-bit address space", "the file is corrupt"))
        if sh_type == _SHT_NOBITS:                 # no file bytes (linkers put .bss's offset past the end)
            continue
        if off + size > len(raw):
            raise OutOfBoundsError(_hint(
                f"{where}: section #{i} claims file bytes {off:#x}..{off + size:#x} beyond the end of the "
                f"file ({len(raw):#x})", "the file is truncated or corrupt"))
        if sh_type in (_SHT_SYMTAB, _SHT_DYNSYM) and (link >= hdr.shnum or entsize != (24 if is64 else 16)):
            raise MalformedElfError(_hint(f"{where}: symbol table section #{i} has entry size {entsize} and string "
                                          f"table #{link}", "the file is corrupt; strip the symbols if need be"))
        if sh_type == _SHT_NOTE:
            _check_notes(raw[off:off + size], f"{where}: section #{i}")


def _check_notes(blob: bytes, where: str) -> None:
    """The notes of one PT_NOTE segment or SHT_NOTE section end inside it (as ``vmm.elf`` requires)."""
    off = 0
    while off + 12 <= len(blob):
        namesz, descsz, _type = struct.unpack_from("<III", blob, off)
        desc_off = off + 12 + ((namesz + 3) & ~3)
        if desc_off + descsz > len(blob):
            raise MalformedElfError(_hint(f"{where}: an ELF note (name {namesz} bytes, descriptor {descsz} bytes at "
                                          f"offset {off:#x}) runs past the end of its notes ({len(blob):#x} bytes)",
                                          "the file is corrupt"))
        off = desc_off + ((descsz + 3) & ~3)


def _find_multiboot(raw: bytes) -> bool:
    limit = min(len(raw), _MB1_SEARCH) - 12
    for off in range(0, limit + 1, 4):
        magic, flags, checksum = struct.unpack_from("<III", raw, off)
        if magic == _MB1_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return True
    return False


def _symbol_type(sym) -> SymbolType:  # LIEF symbol; an unknown st_type comes as a plain int
    name = getattr(sym.type, "name", "")
    return {"FUNC": SymbolType.FUNC, "OBJECT": SymbolType.OBJECT, "NOTYPE": SymbolType.NOTYPE}.get(name, SymbolType.OTHER)


def load_image(source: Union[str, os.PathLike, bytes, bytearray], *, allow_translated: bool = False) -> Image:
    """Read a guest ELF from a path or its bytes; raises an ``ImageError`` subclass on bad input.

    A binary carrying the PVTR note raises ``AlreadyTranslatedError`` unless ``allow_translated``
    (for tools that inspect translator output).
    """
    path: str | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw, where = bytes(source), "<bytes>"
    else:
        where = path = os.fspath(source)
        stamp = _stamp(path)
        raw = _read_file(where)
    hdr = _parse_header(raw, where)
    _check_bounds(raw, hdr, where)
    multiboot = _find_multiboot(raw)
    if path is not None:  # LIEF reads the file itself: a large kernel is not held twice while it parses
        del raw           # (a writer racing this read goes unseen until the stamp check after LIEF)

    import lief  # local: the VMM side of the project never pays for LIEF

    lief.logging.disable()
    with warnings.catch_warnings():           # LIEF warns (RuntimeWarning) about unknown enum values
        warnings.simplefilter("ignore")
        try:
            binary = lief.ELF.parse(path if path is not None else io.BytesIO(raw))
        except Exception as exc:  # LIEF raises a zoo of types on corrupt input
            raise ImageError(_hint(f"{where}: LIEF cannot parse the ELF: {exc}", "the file is corrupt")) from exc
        if binary is None:
            raise ImageError(_hint(f"{where}: LIEF cannot parse the ELF", "the file is corrupt or truncated"))

        try:
            fields, code, data = _build(hdr, binary, where, allow_translated, multiboot)
        except ImageError:
            raise
        except Exception as exc:
            raise ImageError(_hint(f"{where}: unexpected ELF structure: {exc!r}", "report this input")) from exc
    del binary  # LIEF holds a copy of the file: free it before the regions take their bytes
    if path is None:
        spans = {(off, size): raw[off:off + size] for _va, off, size, _name in (*code, *data)}
    else:                 # only the regions' bytes, read again: the whole file is not needed any more
        spans = _read_spans(path, [(off, size) for _va, off, size, _name in (*code, *data)])
        if _stamp(path) != stamp:
            raise ImageError(_hint(f"{where}: the file changed while it was being read",
                                   "translate a file nothing is writing to"))
    return Image(code=tuple(CodeRegion(va, spans[off, size], name, off) for va, off, size, name in code),
                 data=tuple(DataRegion(va, spans[off, size], name) for va, off, size, name in data), **fields)


def _stamp(path: str) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten: device, inode, size, modification time."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ImageError(_hint(f"{path}: cannot read: {exc.strerror}", "check the path")) from exc
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _read_spans(path: str, spans: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The bytes of each (file offset, size) span of the file at ``path``."""
    try:
        with open(path, "rb") as fh:
            out = {}
            for off, size in spans:
                fh.seek(off)
                out[off, size] = fh.read(size)
    except OSError as exc:
        raise ImageError(_hint(f"{path}: cannot read: {exc.strerror}", "check the path")) from exc
    if any(len(out[span]) != span[1] for span in spans):
        raise ImageError(_hint(f"{path}: the file changed while it was being read",
                               "translate a file nothing is writing to"))
    return out


def _read_file(where: str) -> bytes:
    """The file's bytes; a directory or a device (``/dev/zero`` would never end) is refused first."""
    try:
        mode = os.stat(where).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError(_hint(f"{where}: cannot read: it is a directory", "pass the kernel ELF file"))
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
            raise ImageError(_hint(f"{where}: cannot read: not a regular file", "pass the kernel ELF file"))
        with open(where, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ImageError(_hint(f"{where}: cannot read: {exc.strerror}", "check the path")) from exc


def _virtual(binary, addr: int) -> int:
    """``addr`` as a virtual address: kernels linked high give physical entry points (Linux's e_entry
    and PVH note), which lie in no segment's virtual range but in one's physical range."""
    import lief
    loads = [s for s in binary.segments if s.type == lief.ELF.Segment.TYPE.LOAD]
    if any(s.virtual_address <= addr < s.virtual_address + s.virtual_size for s in loads):
        return addr
    for s in loads:
        if s.physical_address <= addr < s.physical_address + s.virtual_size:
            return s.virtual_address + (addr - s.physical_address)
    return addr


_Span = tuple[int, int, int, str]  # (VA, file offset, size, name) of a region


def _build(hdr: _Header, binary, where: str, allow_translated: bool,
           multiboot: bool) -> tuple[dict, list[_Span], list[_Span]]:
    """The Image's fields but its regions, and the code and data regions (sorted) as file spans."""
    import lief
    has_pv_note = False
    pvh_entry: int | None = None
    for note in binary.notes:
        name = note.name.encode() if isinstance(note.name, str) else bytes(note.name)
        if name.rstrip(b"\0") == NOTE_NAME:
            has_pv_note = True
        elif name.rstrip(b"\0") == b"Xen" and int(note.original_type) == _XEN_ELFNOTE_PHYS32_ENTRY:
            desc = bytes(note.description)
            if len(desc) >= 8:
                pvh_entry = struct.unpack_from("<Q", desc)[0]
            elif len(desc) >= 4:
                pvh_entry = struct.unpack_from("<I", desc)[0]
    if has_pv_note and not allow_translated:
        raise AlreadyTranslatedError(_hint(
            f"{where}: already translated (it carries the {NOTE_NAME.decode()} PV note)",
            "translate the original kernel, not pvtranslate's output"))

    loads = [(int(s.virtual_address), int(s.file_offset), int(s.physical_size)) for s in binary.segments
             if int(s.type) == _PT_LOAD and s.physical_size]
    code: list[_Span] = []
    data: list[_Span] = []
    for section in binary.sections:
        flags = int(section.flags)
        if not flags & _SHF_ALLOC or int(section.type) == _SHT_NOBITS or section.size == 0:
            continue
        off, size, va = int(section.file_offset), int(section.size), int(section.virtual_address)
        loaded_at = next((seg_off + va - seg_va for seg_va, seg_off, seg_size in loads
                          if seg_va <= va and va + size <= seg_va + seg_size), None)
        if loaded_at is not None and loaded_at != off:
            raise MalformedElfError(_hint(
                f"{where}: section {section.name!r} at {va:#x} has its bytes at file offset {off:#x}, but the "
                f"segment that loads {va:#x} takes them from {loaded_at:#x}", "the file is corrupt"))
        if flags & _SHF_EXECINSTR:
            if loaded_at is None:          # never loaded: nothing to translate, and no segment to patch
                raise MalformedElfError(_hint(
                    f"{where}: code section {section.name!r} ({va:#x}..{va + size:#x}) lies in no loadable "
                    "segment's file bytes", "the file is corrupt"))
            code.append((va, off, size, section.name))
        elif loaded_at is not None:        # a data section the loader does not load is not in memory
            data.append((va, off, size, section.name))
    if not code and hdr.shnum == 0:  # no section headers: fall back to executable PT_LOADs
        for i, seg in enumerate(binary.segments):
            if int(seg.type) == _PT_LOAD and int(seg.flags) & _PF_X and seg.physical_size:
                code.append((int(seg.virtual_address), int(seg.file_offset), int(seg.physical_size), f"segment#{i}"))
    if not code:
        raise NoExecutableCodeError(_hint(
            f"{where}: no executable code (no SHF_EXECINSTR section, no PF_X segment with file bytes)",
            "pass a kernel image with its code, not a debug-info or data-only file"))

    symbols = tuple(sorted(
        (Symbol(s.name, int(s.value), int(s.size), _symbol_type(s), int(s.shndx))
         for s in binary.symbols if s.name and _symbol_type(s) is not SymbolType.OTHER),
        key=lambda s: (s.va, s.name)))
    entry_va = _virtual(binary, int(hdr.entry_va))
    if pvh_entry is not None:
        pvh_entry = _virtual(binary, pvh_entry)
    fields = dict(
        elf_class=hdr.elf_class,
        machine=hdr.machine,
        entry_va=entry_va,
        symbols=symbols,
        pvh_entry_va=pvh_entry,
        multiboot=multiboot,
        has_pv_note=has_pv_note,
        load_segments=tuple((int(sg.virtual_address), int(sg.physical_address), int(sg.virtual_size))
                            for sg in binary.segments if sg.type == lief.ELF.Segment.TYPE.LOAD),
    )
    return fields, sorted(code, key=lambda span: span[0]), sorted(data, key=lambda span: span[0])

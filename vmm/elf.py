"""Reads just enough of an ELF32/ELF64 x86 image to boot it, refusing malformed files with a reason."""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import LoadError

PT_LOAD = 1
PT_NOTE = 4
EM_386 = 3
EM_X86_64 = 62
ET_EXEC = 2
ET_DYN = 3
SHT_SYMTAB = 2
STT_FUNC = 2
STT_OBJECT = 1
STT_NOTYPE = 0


@dataclass(frozen=True)
class Segment:
    """A PT_LOAD program header: file bytes [file_off, file_off+file_size) go to paddr; the rest is zero."""

    paddr: int
    vaddr: int
    file_off: int
    file_size: int
    mem_size: int
    flags: int


@dataclass(frozen=True)
class Note:
    name: str
    type: int
    desc: bytes


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int


@dataclass(frozen=True)
class ElfImage:
    """A validated ELF: class, entry, loadable segments, notes and symbols (for diagnostics)."""

    path: str
    is64: bool
    machine: int
    entry_va: int
    segments: tuple[Segment, ...]
    notes: tuple[Note, ...]
    symbols: tuple[Symbol, ...]
    data: bytes

    def note(self, name: str, note_type: int) -> Note | None:
        return next((n for n in self.notes if n.name == name and n.type == note_type), None)

    def symbolize(self, va: int) -> str:
        """`name+0xoff` for the nearest preceding function or object symbol, else the hex address."""
        best = None
        for sym in self.symbols:
            if sym.value <= va and (best is None or sym.value > best.value):
                if sym.size == 0 or va < sym.value + max(sym.size, 1) or best is None:
                    best = sym
        if best is None:
            return f"{va:#x}"
        off = va - best.value
        return f"{best.name}+{off:#x}" if off else best.name


def parse_elf(data: bytes, path: str = "<memory>") -> ElfImage:
    def fail(what: str, hint: str = "") -> LoadError:
        return LoadError(f"{path}: {what}" + (f"; {hint}" if hint else ""))

    if len(data) < 16 or data[:4] != b"\x7fELF":
        raise fail("not an ELF file (bad magic)", "pass a kernel ELF image (vmlinux-style), not a bzImage or raw binary")
    ei_class, ei_data = data[4], data[5]
    if ei_class not in (1, 2):
        raise fail(f"unknown ELF class {ei_class}")
    if ei_data != 1:
        raise fail("big-endian ELF", "an x86 kernel is little-endian")
    is64 = ei_class == 2
    ehdr_fmt = "<HHIQQQIHHHHHH" if is64 else "<HHIIIIIHHHHHH"
    ehdr_size = 16 + struct.calcsize(ehdr_fmt)
    if len(data) < ehdr_size:
        raise fail(f"truncated: {len(data)} bytes is shorter than the ELF header")
    (e_type, e_machine, _ver, e_entry, e_phoff, e_shoff, _flags, _ehsize, e_phentsize, e_phnum,
     e_shentsize, e_shnum, _shstrndx) = struct.unpack_from(ehdr_fmt, data, 16)
    if e_machine not in (EM_386, EM_X86_64):
        raise fail(f"not an x86 ELF (e_machine {e_machine})", "the VMM runs i386 and x86-64 guests only")
    if e_type not in (ET_EXEC, ET_DYN):
        raise fail(f"not an executable (e_type {e_type})", "link the kernel; an object file cannot boot")
    phdr_fmt = "<IIQQQQQQ" if is64 else "<IIIIIIII"
    if e_phnum == 0:
        raise fail("no program headers", "nothing to load")
    if e_phentsize < struct.calcsize(phdr_fmt):
        raise fail(f"program header size {e_phentsize} is too small")
    if e_phoff + e_phnum * e_phentsize > len(data):
        raise fail("truncated: the program header table runs past the end of the file")

    segments, notes = [], []
    for i in range(e_phnum):
        raw = struct.unpack_from(phdr_fmt, data, e_phoff + i * e_phentsize)
        if is64:
            p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, _align = raw
        else:
            p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, _align = raw
        if p_type not in (PT_LOAD, PT_NOTE):
            continue
        if p_offset + p_filesz > len(data):
            raise fail(f"truncated: segment {i} needs file bytes up to {p_offset + p_filesz:#x}, "
                       f"the file has {len(data):#x}")
        if p_type == PT_LOAD:
            if p_filesz > p_memsz:
                raise fail(f"segment {i} has p_filesz {p_filesz:#x} > p_memsz {p_memsz:#x}")
            if p_memsz:
                segments.append(Segment(p_paddr, p_vaddr, p_offset, p_filesz, p_memsz, p_flags))
        else:
            notes.extend(_parse_notes(data[p_offset:p_offset + p_filesz], fail))
    if not segments:
        raise fail("no loadable (PT_LOAD) segment")
    symbols = _parse_symbols(data, is64, e_shoff, e_shentsize, e_shnum)
    return ElfImage(path, is64, e_machine, e_entry, tuple(segments), tuple(notes), symbols, data)


def _parse_notes(blob: bytes, fail) -> list[Note]:
    notes, off = [], 0
    while off + 12 <= len(blob):
        namesz, descsz, ntype = struct.unpack_from("<III", blob, off)
        name_end = off + 12 + namesz
        desc_off = off + 12 + ((namesz + 3) & ~3)
        desc_end = desc_off + descsz
        if desc_end > len(blob):
            raise fail("malformed ELF note (runs past its segment)")
        name = blob[off + 12:name_end].rstrip(b"\0").decode("latin-1")
        notes.append(Note(name, ntype, bytes(blob[desc_off:desc_end])))
        off = desc_off + ((descsz + 3) & ~3)
    return notes


def _parse_symbols(data: bytes, is64: bool, shoff: int, shentsize: int, shnum: int) -> tuple[Symbol, ...]:
    """Symbols are optional (diagnostics only): a damaged section table yields none, not an error."""
    shdr_fmt = "<IIQQQQIIQQ" if is64 else "<IIIIIIIIII"
    sym_fmt = "<IBBHQQ" if is64 else "<IIIBBH"
    if not shoff or shentsize < struct.calcsize(shdr_fmt) or shoff + shnum * shentsize > len(data):
        return ()
    shdrs = [struct.unpack_from(shdr_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    out = []
    for sh in shdrs:
        _name, sh_type, _fl, _addr, sh_offset, sh_size, sh_link, _info, _align, sh_entsize = sh
        if sh_type != SHT_SYMTAB or sh_link >= shnum or sh_entsize < struct.calcsize(sym_fmt):
            continue
        str_off, str_size = shdrs[sh_link][4], shdrs[sh_link][5]
        if sh_offset + sh_size > len(data) or str_off + str_size > len(data):
            continue
        strtab = data[str_off:str_off + str_size]
        for off in range(sh_offset, sh_offset + sh_size - sh_entsize + 1, sh_entsize):
            if is64:
                st_name, st_info, _other, shndx, value, size = struct.unpack_from(sym_fmt, data, off)
            else:
                st_name, value, size, st_info, _other, shndx = struct.unpack_from(sym_fmt, data, off)
            if shndx == 0 or (st_info & 0xF) not in (STT_FUNC, STT_OBJECT, STT_NOTYPE) or st_name >= len(strtab):
                continue
            name = strtab[st_name:strtab.find(b"\0", st_name)].decode("latin-1")
            if name and not name.startswith("."):
                out.append(Symbol(name, value, size))
    return tuple(sorted(out, key=lambda s: s.value))

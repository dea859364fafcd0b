#!/usr/bin/env python3
"""elf_mutants: owns the malformed-ELF corpus (seeded mutations of the samples) and its campaign through both CLIs.

The corpus: every ``samples/**/*.elf`` and a few of their translations (made in memory with
``pvtranslate.translate``) are the *bases*; case ``i`` of seed ``s`` draws one base and one
mutation from ``random.Random(f"{s}/{i}")`` alone, so any case is regenerated on its own
(``--case I``). Mutations: truncations, flipped header bits, wild header / program header / section
header fields (offsets and sizes past the file, 2^63 sizes, overlapping segments, thousands of program
headers), wrong classes,
data encodings, machines and types, bogus notes (sizes, a PVH note with a wild entry, the PVTR
descriptor), a bad site table in translated bases, multiboot headers, splices, zero-length files
and random garbage.

The campaign runs each case through ``pvtranslate`` (``pvtranslate.cli.main`` in-process) and
``vmm run`` (``vmm.cli.main`` in-process, with ``--max-insns``/``--timeout`` so accepted guests end
fast); every ``--subprocess-every``-th case also through both commands as subprocesses. A case
passes when each command either refuses it cleanly (exit 2, or 4/124 for vmm: one ``error:`` line
naming the problem, no traceback, no output file left) or produces a correct result (pvtranslate:
exit 0 and exactly the output file, itself a loadable ELF with the PV note; vmm: the guest's own
status), within the per-case time limit.

Usage: tools/elf_mutants.py [--count N] [--seed S] [--start K] [--subprocess-every M] [--json OUT]
                            [--max-insns N] [--vmm-timeout S]
       tools/elf_mutants.py --case I [--seed S] [--write FILE]      (one case: run it, or write its bytes)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLES = ROOT / "samples"
TRANSLATED_SAMPLES = ("hello/hello_pvh64.elf", "hello/hello_pvh32.elf", "hello/hello_mb32.elf", "irq/irq32.elf",
                      "io/io64.elf")
DEFAULT_SEED = 5
VMM_LIMITS = ("--max-insns", "3000", "--timeout", "0.5")
CASE_TIMEOUT_S = 60.0                    # a case that takes longer is a hang (far above the vmm limits)

PT_LOAD, PT_NOTE = 1, 4
XEN_PVH_NOTE = 18
MB1_MAGIC = 0x1BADB002


# --------------------------------------------------------------------------- the ELF layout of a base

@dataclass(frozen=True)
class Field:
    """One fixed-width little-endian field of the file: where, and its struct format."""

    name: str
    off: int
    fmt: str

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.fmt)


_EHDR = {64: (("e_type", 16, "H"), ("e_machine", 18, "H"), ("e_version", 20, "I"), ("e_entry", 24, "Q"),
              ("e_phoff", 32, "Q"), ("e_shoff", 40, "Q"), ("e_flags", 48, "I"), ("e_ehsize", 52, "H"),
              ("e_phentsize", 54, "H"), ("e_phnum", 56, "H"), ("e_shentsize", 58, "H"), ("e_shnum", 60, "H"),
              ("e_shstrndx", 62, "H")),
         32: (("e_type", 16, "H"), ("e_machine", 18, "H"), ("e_version", 20, "I"), ("e_entry", 24, "I"),
              ("e_phoff", 28, "I"), ("e_shoff", 32, "I"), ("e_flags", 36, "I"), ("e_ehsize", 40, "H"),
              ("e_phentsize", 42, "H"), ("e_phnum", 44, "H"), ("e_shentsize", 46, "H"), ("e_shnum", 48, "H"),
              ("e_shstrndx", 50, "H"))}
_PHDR = {64: (("p_type", 0, "I"), ("p_flags", 4, "I"), ("p_offset", 8, "Q"), ("p_vaddr", 16, "Q"),
              ("p_paddr", 24, "Q"), ("p_filesz", 32, "Q"), ("p_memsz", 40, "Q"), ("p_align", 48, "Q")),
         32: (("p_type", 0, "I"), ("p_offset", 4, "I"), ("p_vaddr", 8, "I"), ("p_paddr", 12, "I"),
              ("p_filesz", 16, "I"), ("p_memsz", 20, "I"), ("p_flags", 24, "I"), ("p_align", 28, "I"))}
_SHDR = {64: (("sh_name", 0, "I"), ("sh_type", 4, "I"), ("sh_flags", 8, "Q"), ("sh_addr", 16, "Q"),
              ("sh_offset", 24, "Q"), ("sh_size", 32, "Q"), ("sh_link", 40, "I"), ("sh_info", 44, "I"),
              ("sh_addralign", 48, "Q"), ("sh_entsize", 56, "Q")),
         32: (("sh_name", 0, "I"), ("sh_type", 4, "I"), ("sh_flags", 8, "I"), ("sh_addr", 12, "I"),
              ("sh_offset", 16, "I"), ("sh_size", 20, "I"), ("sh_link", 24, "I"), ("sh_info", 28, "I"),
              ("sh_addralign", 32, "I"), ("sh_entsize", 36, "I"))}


@dataclass(frozen=True)
class Note:
    off: int                  # file offset of the note header (namesz, descsz, type)
    name: bytes
    type: int
    desc_off: int
    desc_size: int


@dataclass(frozen=True)
class Layout:
    """Where a well-formed base keeps its headers, notes, multiboot header and (translated) site table."""

    bits: int
    ehdr: dict[str, Field]
    phdrs: tuple[dict[str, Field], ...]
    shdrs: tuple[dict[str, Field], ...]
    segments: tuple[dict[str, int], ...]       # field values of each program header
    notes: tuple[Note, ...]
    multiboot_off: int | None
    site_table_off: int | None                 # file offset of the PVST header (translated bases)

    @property
    def header_end(self) -> int:
        return 64 if self.bits == 64 else 52


def _get(data: bytes, f: Field) -> int:
    return struct.unpack_from("<" + f.fmt, data, f.off)[0]


def layout_of(data: bytes) -> Layout:
    """The layout of a well-formed base (the samples and their translations)."""
    bits = 64 if data[4] == 2 else 32
    ehdr = {n: Field(n, o, f) for n, o, f in _EHDR[bits]}
    phoff, phnum, phent = (_get(data, ehdr[k]) for k in ("e_phoff", "e_phnum", "e_phentsize"))
    shoff, shnum, shent = (_get(data, ehdr[k]) for k in ("e_shoff", "e_shnum", "e_shentsize"))
    phdrs = tuple({n: Field(f"phdr[{i}].{n}", phoff + i * phent + o, f) for n, o, f in _PHDR[bits]}
                  for i in range(phnum))
    shdrs = tuple({n: Field(f"shdr[{i}].{n}", shoff + i * shent + o, f) for n, o, f in _SHDR[bits]}
                  for i in range(shnum))
    segments = tuple({n: _get(data, f) for n, f in ph.items()} for ph in phdrs)
    notes = []
    for seg in segments:
        if seg["p_type"] != PT_NOTE:
            continue
        off, end = seg["p_offset"], seg["p_offset"] + seg["p_filesz"]
        while off + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", data, off)
            desc_off = off + 12 + ((namesz + 3) & ~3)
            notes.append(Note(off, data[off + 12:off + 12 + namesz].rstrip(b"\0"), ntype, desc_off, descsz))
            off = desc_off + ((descsz + 3) & ~3)
    mb = next((o for o in range(0, min(len(data), 8192) - 11, 4)
               if struct.unpack_from("<I", data, o)[0] == MB1_MAGIC
               and sum(struct.unpack_from("<III", data, o)) & 0xFFFFFFFF == 0), None)
    table_off = None
    pvtr = next((n for n in notes if n.name == b"PVTR"), None)
    if pvtr is not None and pvtr.desc_size >= 24:
        table_va = struct.unpack_from("<Q", data, pvtr.desc_off + 16)[0]
        for seg in segments:
            if seg["p_type"] == PT_LOAD and seg["p_vaddr"] <= table_va < seg["p_vaddr"] + seg["p_filesz"]:
                table_off = seg["p_offset"] + table_va - seg["p_vaddr"]
    return Layout(bits, ehdr, phdrs, shdrs, segments, tuple(notes), mb, table_off)


# --------------------------------------------------------------------------- bases and mutants

@dataclass(frozen=True)
class Base:
    name: str
    data: bytes
    translated: bool

    @property
    def layout(self) -> Layout:
        return layout_of(self.data)


def sample_bases() -> list[Base]:
    return [Base(p.relative_to(SAMPLES).as_posix(), p.read_bytes(), False) for p in sorted(SAMPLES.glob("**/*.elf"))
            if not p.name.endswith(".pv.elf")]   # a translation left by the quick start is not a sample


def translated_bases(names: Sequence[str] = TRANSLATED_SAMPLES) -> list[Base]:
    """Translations of a few samples, made with ``pvtranslate.translate`` in a scratch directory."""
    from pvtranslate.translate import TranslateOptions, translate

    out = []
    with tempfile.TemporaryDirectory(prefix="elf-mutants-") as tmp:
        for name in names:
            target = Path(tmp) / (Path(name).stem + ".pv.elf")
            translate(SAMPLES / name, TranslateOptions(output=target))
            out.append(Base(name.replace(".elf", ".pv.elf"), target.read_bytes(), True))
    return out


def all_bases() -> list[Base]:
    return sample_bases() + translated_bases()


@dataclass(frozen=True)
class Mutant:
    index: int
    base: str
    kind: str
    detail: str
    data: bytes = field(repr=False)

    @property
    def name(self) -> str:
        return f"case-{self.index:05d}"

    def describe(self) -> str:
        return f"{self.name} {self.kind} of {self.base}: {self.detail} ({len(self.data)} bytes)"


def _wild(rng: random.Random, width: int, current: int, file_len: int) -> int:
    """A value a fuzzer would put in a field ``width`` bytes wide."""
    top = (1 << 8 * width) - 1
    choices = [0, 1, 2, 3, 4, 7, 8, 0x10, 0x38, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0xFFFF, 0x10000,
               file_len - 1, file_len, file_len + 1, file_len * 2, 0x5000000, 0x8000000, 0x7FFFFFFF, 0x80000000,
               0xFEE00000, 0xFFFFFFFF, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 0xFFFFFFFF80000000,
               current + 1, current - 1, current + 0x1000, current ^ (1 << rng.randrange(8 * width)),
               current * 2, rng.getrandbits(8 * width)]
    return rng.choice(choices) & top


def _put(buf: bytearray, f: Field, value: int) -> str:
    if f.off < 0 or f.off + f.size > len(buf):
        return f"{f.name} (outside the file, unchanged)"
    value &= (1 << 8 * f.size) - 1
    struct.pack_into("<" + f.fmt, buf, f.off, value)
    return f"{f.name}={value:#x}"


def _m_truncate(rng, base, lay, buf):
    ends = [0, 1, 4, 5, 15, 16, 17, 40, 51, 52, 63, 64, lay.header_end + 1]
    for ph in lay.phdrs:
        ends += [ph["p_type"].off, ph["p_type"].off + 4, ph["p_align"].off + 1]
    for seg in lay.segments:
        ends += [seg["p_offset"], seg["p_offset"] + 1, seg["p_offset"] + seg["p_filesz"] - 1]
    for note in lay.notes:
        ends += [note.off + 6, note.desc_off, note.desc_off + 2]
    if lay.shdrs:
        ends += [lay.shdrs[0]["sh_name"].off, lay.shdrs[-1]["sh_entsize"].off]
    ends += [len(buf) - 1, len(buf) - 8, rng.randrange(len(buf))]
    if lay.site_table_off is not None:
        ends += [lay.site_table_off + 8, lay.site_table_off + 40]
    end = max(0, min(rng.choice(ends), len(buf) - 1))
    return "truncate", f"cut at {end:#x} of {len(buf):#x}", bytes(buf[:end])


def _m_flip_header(rng, base, lay, buf):
    table_end = max((ph["p_align"].off + ph["p_align"].size for ph in lay.phdrs), default=lay.header_end)
    spans = [(0, lay.header_end), (lay.header_end, table_end)]
    flips = []
    for _ in range(rng.randint(1, 4)):
        lo, hi = rng.choice(spans)
        off, bit = rng.randrange(lo, hi), rng.randrange(8)
        buf[off] ^= 1 << bit
        flips.append(f"{off:#x}.{bit}")
    return "flip-header", "bits " + ", ".join(flips), bytes(buf)


def _m_havoc(rng, base, lay, buf):
    edits = []
    for _ in range(rng.randint(1, 24)):
        off = rng.randrange(len(buf))
        if rng.random() < 0.5:
            buf[off] ^= 1 << rng.randrange(8)
        else:
            buf[off] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.getrandbits(8)))
        edits.append(f"{off:#x}")
    return "havoc", f"{len(edits)} bytes at " + ",".join(edits[:6]) + ("..." if len(edits) > 6 else ""), bytes(buf)


def _m_ident(rng, base, lay, buf):
    what = rng.choice(("class", "class", "data", "version", "other-class"))
    if what == "class":
        buf[4] = rng.choice((0, 3, 0x7F, 0xFF))
    elif what == "other-class":
        buf[4] = 3 - buf[4]                    # ELF64 read as ELF32 and back
    elif what == "data":
        buf[5] = rng.choice((0, 2, 3, 0xFF))
    else:
        buf[6] = rng.choice((0, 2, 0xFF))
    return "ident", f"EI_{what.upper()}: e_ident[4:7]={bytes(buf[4:7]).hex()}", bytes(buf)


def _m_machine(rng, base, lay, buf):
    value = rng.choice((0, 8, 40, 183, 243, 0xFFFF, 62 if lay.bits == 32 else 3))
    return "machine", _put(buf, lay.ehdr["e_machine"], value), bytes(buf)


def _m_type(rng, base, lay, buf):
    value = rng.choice((0, 1, 3, 4, 0xFE00, 0xFFFF))
    return "type", _put(buf, lay.ehdr["e_type"], value), bytes(buf)


def _m_ehdr_field(rng, base, lay, buf):
    f = lay.ehdr[rng.choice(("e_entry", "e_phoff", "e_phnum", "e_phentsize", "e_shoff", "e_shnum", "e_shentsize",
                             "e_shstrndx", "e_ehsize", "e_phoff", "e_phnum", "e_phentsize"))]
    return "ehdr-field", _put(buf, f, _wild(rng, f.size, _get(buf, f), len(buf))), bytes(buf)


def _m_phdr_field(rng, base, lay, buf):
    i = rng.randrange(len(lay.phdrs))
    name = rng.choice(("p_offset", "p_filesz", "p_memsz", "p_paddr", "p_vaddr", "p_type", "p_flags", "p_align",
                       "p_filesz", "p_memsz", "p_offset"))
    f = lay.phdrs[i][name]
    return "phdr-field", _put(buf, f, _wild(rng, f.size, _get(buf, f), len(buf))), bytes(buf)


def _m_segments(rng, base, lay, buf):
    """Two segments on top of each other, a 2^63-byte segment, a segment ending past the file."""
    loads = [i for i, s in enumerate(lay.segments) if s["p_type"] == PT_LOAD] or [0]
    i = rng.choice(loads)
    ph, seg = lay.phdrs[i], lay.segments[i]
    what = rng.choice(("overlap", "huge-memsz", "huge-filesz", "past-eof", "offset-wrap", "memsz<filesz", "dup"))
    if what == "overlap" and len(loads) > 1:
        j = rng.choice([k for k in loads if k != i])
        detail = [_put(buf, ph["p_paddr"], lay.segments[j]["p_paddr"] + rng.choice((0, 0x10, 0x800))),
                  _put(buf, ph["p_vaddr"], lay.segments[j]["p_vaddr"])]
    elif what == "huge-memsz":
        detail = [_put(buf, ph["p_memsz"], rng.choice((1 << 63, (1 << 64) - 1, 1 << 40, 0xFFFFFFFF, 0x7FFFF000)))]
    elif what == "huge-filesz":
        value = rng.choice((1 << 63, (1 << 64) - 1, 0xFFFFFFFF, 0x80000000))
        detail = [_put(buf, ph["p_filesz"], value), _put(buf, ph["p_memsz"], value)]
    elif what == "past-eof":
        detail = [_put(buf, ph["p_offset"], len(buf) - rng.choice((0, 1, 16, seg["p_filesz"] // 2)))]
    elif what == "offset-wrap":
        detail = [_put(buf, ph["p_offset"], (1 << 8 * ph["p_offset"].size) - rng.choice((1, 0x10, 0x1000)))]
    elif what == "memsz<filesz":
        detail = [_put(buf, ph["p_memsz"], max(0, seg["p_filesz"] - rng.choice((1, 0x100))))]
    else:                                      # this program header copied over another one
        j = rng.randrange(len(lay.phdrs))
        start, size = ph["p_type"].off, ph["p_align"].off + ph["p_align"].size - ph["p_type"].off
        buf[lay.phdrs[j]["p_type"].off:lay.phdrs[j]["p_type"].off + size] = buf[start:start + size]
        detail = [f"phdr[{i}] copied over phdr[{j}]"]
    return "segments", f"{what}: " + ", ".join(detail), bytes(buf)


def _m_phdr_flood(rng, base, lay, buf):
    """The program header table moved to the end of the file with up to 2,000 extra PT_LOADs over one
    region (each used to make the VMM zero-fill up to 112 MiB: a 60 kB file kept it busy for minutes)."""
    n = rng.choice((1, 50, 400, 2000))
    size = 56 if lay.bits == 64 else 32
    first = lay.phdrs[0]["p_type"].off
    table = bytes(buf[first:first + size * len(lay.phdrs)])
    at = next((s for s in lay.segments if s["p_type"] == PT_LOAD), lay.segments[0])["p_paddr"]
    memsz = rng.choice((0x1000, 0x100000, 0x7000000))
    extra = (struct.pack("<IIQQQQQQ", PT_LOAD, 6, 0, at, at, 0, memsz, 0x1000) if lay.bits == 64
             else struct.pack("<IIIIIIII", PT_LOAD, 0, at, at, 0, memsz, 6, 0x1000))
    offset = (len(buf) + 7) & ~7
    buf += bytes(offset - len(buf)) + table + extra * n
    _put(buf, lay.ehdr["e_phoff"], offset)
    detail = _put(buf, lay.ehdr["e_phnum"], len(lay.phdrs) + n)
    return "phdr-flood", f"{n} x {memsz:#x} bytes at physical {at:#x}: {detail}", bytes(buf)


def _m_note(rng, base, lay, buf):
    if not lay.notes:
        return _m_phdr_field(rng, base, lay, buf)
    note = rng.choice(lay.notes)
    what = rng.choice(("namesz", "descsz", "type", "desc", "desc", "name", "pvh-entry"))
    if what == "pvh-entry" or (what == "desc" and note.type == XEN_PVH_NOTE and note.name == b"Xen"):
        size = min(note.desc_size, 8)
        value = rng.choice((0, 0x1000, 0x6000, 0x8000, 0xA0000, 0x5000000, 0x7FFFFFF, 0xFFFFFFFF, 1 << 32,
                            (1 << 64) - 1, rng.getrandbits(8 * size)))
        detail = _put(buf, Field("desc", note.desc_off, "Q" if size == 8 else "I"), value)
    elif what == "namesz":
        detail = _put(buf, Field("n_namesz", note.off, "I"), _wild(rng, 4, len(note.name) + 1, len(buf)))
    elif what == "descsz":
        detail = _put(buf, Field("n_descsz", note.off + 4, "I"),
                      rng.choice((0, 1, 2, 3, 5, 6, 7, 9, 12, 16, 23, 25, note.desc_size + 4, 0xFFFFFFFF,
                                  _wild(rng, 4, note.desc_size, len(buf)))))
    elif what == "type":
        detail = _put(buf, Field("n_type", note.off + 8, "I"), rng.choice((0, 1, 2, 17, 18, 19, 0xFFFFFFFF)))
    elif what == "name":
        buf[note.off + 12:note.off + 12 + len(note.name)] = rng.choice((b"Xen", b"PVTR", b"XEN\x00"[:len(note.name)],
                                                                         bytes(len(note.name))))[:len(note.name)]
        detail = f"name -> {bytes(buf[note.off + 12:note.off + 12 + len(note.name)])!r}"
    else:
        span = max(1, min(note.desc_size, 24))
        for _ in range(rng.randint(1, 4)):
            buf[note.desc_off + rng.randrange(span)] = rng.getrandbits(8)
        detail = "descriptor bytes randomised"
    return "note", f"{note.name.decode(errors='replace')}/{note.type} {what}: {detail}", bytes(buf)


def _m_pvtr(rng, base, lay, buf):
    """The PVTR descriptor: u32 version, u32 flags, u64 shared_page_va, u64 site_table_va, u32 count, u32 0."""
    note = next((n for n in lay.notes if n.name == b"PVTR"), None)
    if note is None:
        return _m_note(rng, base, lay, buf)
    name, off, fmt = rng.choice((("abi_version", 0, "I"), ("flags", 4, "I"), ("shared_page_va", 8, "Q"),
                                 ("site_table_va", 16, "Q"), ("site_table_va", 16, "Q"), ("site_count", 24, "I"),
                                 ("reserved", 28, "I"), ("shared_page_va", 8, "Q")))
    f = Field(f"pvtr.{name}", note.desc_off + off, fmt)
    value = rng.choice((_wild(rng, f.size, _get(buf, f), len(buf)), _get(buf, f) + rng.choice((1, 8, 0x1000, -16)),
                        0x1000, 0x7000, 0x100000))
    return "pvtr", _put(buf, f, value), bytes(buf)


def _m_site_table(rng, base, lay, buf):
    t = lay.site_table_off
    if t is None:
        return _m_pvtr(rng, base, lay, buf)
    _magic, count, n_hc, n_pc = struct.unpack_from("<4sIII", buf, t)
    entries, hcs = t + 16, t + 16 + 40 * count
    pcs = hcs + 32 * n_hc
    what = rng.choice(("magic", "counts", "counts", "entry", "entry", "hypercall", "hypercall", "pc-map", "bytes"))
    if what == "magic":
        buf[t + rng.randrange(4)] ^= 0x20
        detail = "magic broken"
    elif what == "counts":
        f = Field(rng.choice(("count", "n_hypercalls", "n_pc_map")), t + rng.choice((4, 8, 12)), "I")
        detail = _put(buf, f, rng.choice((0, _get(buf, f) + 1, _get(buf, f) - 1, 0xFFFFFFFF, 0x10000000,
                                           _get(buf, f) * 2)))
    elif what == "entry" and count:
        e = entries + 40 * rng.randrange(count)
        name, off, fmt = rng.choice((("site_va", 0, "Q"), ("trampoline_va", 8, "Q"), ("tactic", 16, "B"),
                                     ("size", 17, "B"), ("class", 18, "H"), ("site_va", 0, "Q")))
        f = Field(f"site.{name}", e + off, fmt)
        detail = _put(buf, f, _wild(rng, f.size, _get(buf, f), len(buf)) if fmt != "B" else
                      rng.choice((0, 17, 0x7F, 0xFF)))
    elif what == "hypercall" and n_hc:
        h = hcs + 32 * rng.randrange(n_hc)
        name, off, fmt = rng.choice((("va", 0, "Q"), ("site_va", 8, "Q"), ("n_saved", 16, "B"), ("codes", 17, "B"),
                                     ("site_va", 8, "Q")))
        f = Field(f"hypercall.{name}", h + off, fmt)
        detail = _put(buf, f, rng.choice((16, 0xFF, 15)) if fmt == "B" else _wild(rng, 8, _get(buf, f), len(buf)))
    elif what == "pc-map" and n_pc:
        p = pcs + 20 * rng.randrange(n_pc)
        name, off, fmt = rng.choice((("trampoline_va", 0, "Q"), ("original_va", 8, "Q"), ("kind", 16, "I")))
        f = Field(f"pc_map.{name}", p + off, fmt)
        detail = _put(buf, f, rng.choice((3, 0xFFFFFFFF)) if name == "kind" else _wild(rng, 8, _get(buf, f), len(buf)))
    else:
        end = min(len(buf), pcs + 20 * n_pc)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(t, end)] = rng.getrandbits(8)
        detail = "random bytes in the table"
    return "site-table", f"{what}: {detail}", bytes(buf)


def _m_sections(rng, base, lay, buf):
    what = rng.choice(("ehdr", "ehdr", "field", "field", "field", "beyond", "strndx"))
    if what == "ehdr" or not lay.shdrs:
        fields = rng.sample(("e_shoff", "e_shnum", "e_shentsize", "e_shstrndx"), rng.randint(1, 3))
        detail = [_put(buf, lay.ehdr[n], _wild(rng, lay.ehdr[n].size, _get(buf, lay.ehdr[n]), len(buf)))
                  for n in fields]
    elif what == "strndx":
        detail = [_put(buf, lay.ehdr["e_shstrndx"], rng.choice((len(lay.shdrs), 0xFFFF, 0xFF00, 1)))]
    elif what == "beyond":
        sh = rng.choice(lay.shdrs[1:] or lay.shdrs)
        detail = [_put(buf, sh["sh_offset"], len(buf) + rng.choice((0, 1, 0x1000))),
                  _put(buf, sh["sh_size"], rng.choice((0x10, 0x1000, 1 << 63)))]
    else:
        sh = rng.choice(lay.shdrs)
        name = rng.choice(("sh_offset", "sh_size", "sh_type", "sh_link", "sh_name", "sh_entsize", "sh_flags",
                           "sh_addr", "sh_info", "sh_size", "sh_offset"))
        f = sh[name]
        value = rng.choice((0, 1, 2, 3, 6, 7, 8, 11, 0x70000000)) if name == "sh_type" else \
            _wild(rng, f.size, _get(buf, f), len(buf))
        detail = [_put(buf, f, value)]
    return "sections", f"{what}: " + ", ".join(detail), bytes(buf)


def _m_multiboot(rng, base, lay, buf):
    off = lay.multiboot_off
    if off is None:                             # plant one in an ELF64 (refused) or an ELF32 without one
        off = lay.segments[0]["p_offset"] if lay.segments else 0x100
        off = min(off, 8180) & ~3
        flags = rng.choice((0, 3, 1 << 16))
        buf[off:off + 12] = struct.pack("<III", MB1_MAGIC, flags, (-(MB1_MAGIC + flags)) & 0xFFFFFFFF)
        return "multiboot", f"header planted at {off:#x}, flags {flags:#x}", bytes(buf)
    what = rng.choice(("aout-kludge", "checksum", "flags", "fields"))
    if what == "aout-kludge" or what == "flags":
        flags = (1 << 16) | 3 if what == "aout-kludge" else rng.getrandbits(32)
        struct.pack_into("<II", buf, off + 4, flags, (-(MB1_MAGIC + flags)) & 0xFFFFFFFF)
        detail = f"flags {flags:#x}"
    elif what == "checksum":
        struct.pack_into("<I", buf, off + 8, rng.getrandbits(32))
        detail = "checksum broken"
    else:
        for k in range(12, 32, 4):
            struct.pack_into("<I", buf, off + k, _wild(rng, 4, 0, len(buf)))
        detail = "address fields wild"
    return "multiboot", what + ": " + detail, bytes(buf)


def _m_garbage(rng, base, lay, buf):
    what = rng.choice(("empty", "random", "magic+random", "header+random", "text", "zeros"))
    n = rng.choice((1, 3, 4, 16, 52, 63, 64, 100, 4096, 20000, rng.randrange(1, 70000)))
    if what == "empty":
        data = b""
    elif what == "random":
        data = rng.randbytes(n)
    elif what == "magic+random":
        data = b"\x7fELF" + rng.randbytes(n)
    elif what == "header+random":
        data = bytes(buf[:lay.header_end]) + rng.randbytes(n)
    elif what == "text":
        data = b"#!/bin/sh\necho this is not a kernel\n" * rng.randint(1, 100)
    else:
        data = bytes(n)
    return "garbage", f"{what}, {len(data)} bytes", data


def _m_splice(rng, base, lay, buf, bases: Sequence[Base] = ()):
    other = rng.choice(bases) if bases else base
    cut = rng.choice((lay.header_end, 0x100, 0x1000, rng.randrange(1, len(buf))))
    data = bytes(buf[:cut]) + other.data[cut:]
    return "splice", f"{base.name}[:{cut:#x}] + {other.name}[{cut:#x}:]", data


_OPERATORS: tuple[tuple[Callable, int], ...] = (
    (_m_truncate, 12), (_m_flip_header, 10), (_m_havoc, 8), (_m_ident, 4), (_m_machine, 3), (_m_type, 3),
    (_m_ehdr_field, 10), (_m_phdr_field, 12), (_m_segments, 10), (_m_note, 9), (_m_sections, 9),
    (_m_multiboot, 3), (_m_garbage, 4), (_m_splice, 3), (_m_phdr_flood, 2),
)
_TRANSLATED_OPERATORS: tuple[tuple[Callable, int], ...] = ((_m_pvtr, 12), (_m_site_table, 20))


def mutant(bases: Sequence[Base], seed: int, index: int) -> Mutant:
    """Case ``index`` of ``seed``: one base, one mutation, from its own random stream."""
    rng = random.Random(f"{seed}/{index}")
    translated = [b for b in bases if b.translated]
    if translated and rng.random() < 0.3:
        base = rng.choice(translated)
        ops = _OPERATORS + _TRANSLATED_OPERATORS
    else:
        base = rng.choice(bases)
        ops = _OPERATORS
    op = rng.choices([o for o, _w in ops], weights=[w for _o, w in ops])[0]
    buf = bytearray(base.data)
    if op is _m_splice:
        kind, detail, data = op(rng, base, base.layout, buf, bases)
    else:
        kind, detail, data = op(rng, base, base.layout, buf)
    return Mutant(index, base.name, kind, detail, data)


def corpus(bases: Sequence[Base], seed: int, count: int, start: int = 0) -> Iterator[Mutant]:
    for index in range(start, start + count):
        yield mutant(bases, seed, index)


# --------------------------------------------------------------------------- running one case

class CaseHang(BaseException):
    """Raised by the alarm when an in-process case runs past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """SIGALRM after ``seconds`` raises CaseHang in the main thread (between Unicorn hooks at the latest)."""
    def on_alarm(_sig, _frame):
        raise CaseHang(f"no answer within {seconds:g} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class _CurrentStderr:
    """A stream that writes to whatever ``sys.stderr`` is now (the vmm's logging handler binds once)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _route_logging() -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_elf_mutants", False) for h in root.handlers):
        handler = logging.StreamHandler(_CurrentStderr())
        handler._elf_mutants = True
        handler.setFormatter(logging.Formatter("vmm: %(message)s"))
        root.addHandler(handler)


@dataclass
class Result:
    """What one command did with one case, and what was wrong with it (``problems`` empty: a pass)."""

    command: str                 # pvtranslate | vmm | pvtranslate-subprocess | vmm-subprocess | vmm-output
    status: int | None
    outcome: str                 # translated | refused | guest-exit | guest-error | limit | internal | crash | hang
    message: str
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """The message with the path, numbers and hint taken out: what kind of error this was."""
        text = re.sub(r"^(pvtranslate|vmm): (error|internal error): ", "", self.message.strip().splitlines()[-1]
                      if self.message.strip() else "")
        text = re.sub(r"^\S*(\.elf|/in|case-\d+)\S*: ", "", text)
        text = text.split("; hint:")[0].split("; ")[0]
        text = re.sub(r"0x[0-9a-fA-F]+|\b\d+\b", "N", text)
        text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
        return text[:90]


def _call(main: Callable[[list[str]], int], argv: list[str], timeout: float) -> tuple[int | None, str, str, str | None]:
    """Run a CLI ``main`` in-process: (status, stdout, stderr, crash) — crash is an escaped exception."""
    out, err = io.StringIO(), io.StringIO()
    crash = None
    status: int | None = None
    try:
        with time_limit(timeout), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
    except SystemExit as exc:              # argparse
        status = exc.code if isinstance(exc.code, int) else 2
    except CaseHang as exc:
        crash = f"hang: {exc}"
    except BaseException as exc:           # noqa: BLE001 - this is what the campaign looks for
        import traceback
        crash = "".join(traceback.format_exception(exc))
    return status, out.getvalue(), err.getvalue(), crash


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _check_output(path: Path) -> str | None:
    """A translated output must be an ELF the VMM's loader reads, carrying the PVTR note."""
    from vmm.elf import parse_elf
    from vmm.errors import VmmError
    try:
        image = parse_elf(path.read_bytes(), str(path))
    except VmmError as exc:
        return f"the output does not load: {exc}"
    if image.note("PVTR", 1) is None:
        return "the output has no PVTR note"
    return None


def run_pvtranslate(guest: Path, outdir: Path, timeout: float = CASE_TIMEOUT_S, subprocess_run: bool = False,
                    then: Callable[[Path], None] | None = None) -> Result:
    """``pvtranslate GUEST -o OUTDIR/out.elf``; OUTDIR must be empty before and is emptied after
    (``then`` is called with a good output first)."""
    from pvtranslate.cli import main as pvtranslate_main

    target = outdir / "out.elf"
    argv = [str(guest), "-o", str(target)]
    started = time.perf_counter()
    if subprocess_run:
        status, stderr, crash = _subprocess(["-m", "pvtranslate", *argv], timeout)
    else:
        status, _out, stderr, crash = _call(pvtranslate_main, argv, timeout)
    seconds = time.perf_counter() - started
    command = "pvtranslate-subprocess" if subprocess_run else "pvtranslate"
    left = _listing(outdir)
    result = _classify_pvtranslate(command, status, stderr, crash, seconds)
    if status == 0:
        if left != ["out.elf"]:
            result.problems.append(f"exit 0 but the output directory holds {left}")
        elif (why := _check_output(target)) is not None:
            result.problems.append(why)
        elif then is not None:
            then(target)
    elif left:
        result.problems.append(f"partial output left: {left}")
    for name in left:
        (outdir / name).unlink()
    return result


def _classify_pvtranslate(command, status, stderr, crash, seconds) -> Result:
    if crash is not None:
        outcome = "hang" if crash.startswith("hang:") else "crash"
        return Result(command, status, outcome, crash, seconds, [f"{outcome}: {crash.strip().splitlines()[-1]}"])
    result = Result(command, status, "translated" if status == 0 else "refused" if status == 2 else "internal",
                    stderr.strip(), seconds)
    if "Traceback" in stderr:
        result.problems.append("a traceback on stderr")
    if status == 2:
        if not stderr.startswith("pvtranslate: error: ") and not stderr.startswith("usage:"):
            result.problems.append(f"exit 2 without an error line: {stderr[:200]!r}")
    elif status != 0:
        result.problems.append(f"exit {status}: {' '.join(stderr.split())[:300]}")
    return result


def run_vmm(guest: Path, timeout: float = CASE_TIMEOUT_S, subprocess_run: bool = False,
            command: str | None = None, limits: Sequence[str] = VMM_LIMITS) -> Result:
    """``vmm run GUEST`` with small limits and the console thrown away."""
    from vmm.cli import main as vmm_main

    argv = ["run", str(guest), *limits, "--serial", os.devnull]
    started = time.perf_counter()
    if subprocess_run:
        status, stderr, crash = _subprocess(["-m", "vmm", *argv], timeout)
    else:
        _route_logging()
        status, _out, stderr, crash = _call(vmm_main, argv, timeout)
    seconds = time.perf_counter() - started
    command = command or ("vmm-subprocess" if subprocess_run else "vmm")
    if crash is not None:
        outcome = "hang" if crash.startswith("hang:") else "crash"
        return Result(command, status, outcome, crash, seconds, [f"{outcome}: {crash.strip().splitlines()[-1]}"])
    outcome = {2: "refused", 4: "guest-error", 124: "limit"}.get(status, "guest-exit")
    result = Result(command, status, outcome, stderr.strip(), seconds)
    if "Traceback" in stderr:
        result.problems.append("a traceback on stderr")
    if status in (2, 4, 124):
        if "vmm: error: " not in stderr and not stderr.startswith("usage:"):
            result.problems.append(f"exit {status} without an error line: {stderr[:200]!r}")
        if "internal error" in stderr:
            result.problems.append(f"internal error: {' '.join(stderr.split())[:300]}")
    elif not (isinstance(status, int) and (status == 0 or status & 1)):
        result.problems.append(f"exit {status} is neither the guest's (odd) nor a VMM error: "
                               f"{' '.join(stderr.split())[:300]}")
    return result


def _subprocess(args: list[str], timeout: float) -> tuple[int | None, str, str | None]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run([sys.executable, *args], capture_output=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, "", f"hang: no answer within {timeout:g} s"
    return proc.returncode, proc.stderr.decode(errors="replace"), None


@dataclass
class CaseReport:
    mutant: Mutant
    results: list[Result]

    @property
    def problems(self) -> list[str]:
        return [f"{r.command}: {p}" for r in self.results for p in r.problems]


def run_case(m: Mutant, workdir: Path, subprocess_too: bool = False, timeout: float = CASE_TIMEOUT_S,
             vmm_limits: Sequence[str] = VMM_LIMITS) -> CaseReport:
    """Both commands on one mutant (and on pvtranslate's output, if it accepted the mutant)."""
    indir, outdir = workdir / "in", workdir / "out"
    indir.mkdir(parents=True, exist_ok=True)
    outdir.mkdir(parents=True, exist_ok=True)
    for stale in (*indir.iterdir(), *outdir.iterdir()):
        stale.unlink()
    guest = indir / f"{m.name}.elf"
    guest.write_bytes(m.data)
    results: list[Result] = []
    # an accepted mutant's translation is run too: it must boot, or be refused cleanly
    results.append(run_pvtranslate(guest, outdir, timeout, then=lambda out: results.append(
        run_vmm(out, timeout, command="vmm-output", limits=vmm_limits))))
    results.append(run_vmm(guest, timeout, limits=vmm_limits))
    if subprocess_too:
        results.append(run_pvtranslate(guest, outdir, timeout, subprocess_run=True))
        results.append(run_vmm(guest, timeout, subprocess_run=True, limits=vmm_limits))
    if _listing(indir) != [guest.name]:
        results[-1].problems.append(f"files appeared beside the input: {_listing(indir)}")
    guest.unlink()
    return CaseReport(m, results)


# --------------------------------------------------------------------------- the campaign

@dataclass
class Campaign:
    seed: int
    cases: list[CaseReport] = field(default_factory=list)
    seconds: float = 0.0

    def failures(self) -> list[CaseReport]:
        return [c for c in self.cases if c.problems]

    def summary(self) -> dict:
        by_command: dict[str, dict] = {}
        for case in self.cases:
            for r in case.results:
                entry = by_command.setdefault(r.command, {"runs": 0, "seconds": 0.0, "outcomes": Counter(),
                                                          "kinds": Counter(), "problems": 0, "slowest": 0.0})
                entry["runs"] += 1
                entry["seconds"] += r.seconds
                entry["slowest"] = max(entry["slowest"], r.seconds)
                entry["outcomes"][f"{r.outcome} ({r.status})"] += 1
                if r.outcome not in ("translated", "guest-exit"):
                    entry["kinds"][r.kind] += 1
                entry["problems"] += bool(r.problems)
        return {"seed": self.seed, "files": len(self.cases), "failed_cases": len(self.failures()),
                "mutations": dict(Counter(c.mutant.kind for c in self.cases).most_common()),
                "seconds": round(self.seconds, 1), "commands": by_command}

    def format(self, top: int = 12) -> str:
        s = self.summary()
        lines = [f"{s['files']} files (seed {s['seed']}), {s['failed_cases']} failing, {s['seconds']} s",
                 "mutations: " + ", ".join(f"{k} {v}" for k, v in s["mutations"].items())]
        for command, e in s["commands"].items():
            lines.append(f"{command}: {e['runs']} runs, {e['seconds']:.1f} s (slowest {e['slowest']:.2f} s), "
                         f"{e['problems']} with problems")
            lines.append("  outcomes: " + ", ".join(f"{k} {v}" for k, v in e["outcomes"].most_common()))
            for kind, n in e["kinds"].most_common(top):
                lines.append(f"  {n:5d}  {kind}")
            if len(e["kinds"]) > top:
                lines.append(f"         ... {len(e['kinds']) - top} more kinds")
        for case in self.failures()[:30]:
            lines.append(f"FAIL {case.mutant.describe()}")
            lines.extend(f"     {p}" for p in case.problems)
        return "\n".join(lines)


def run_campaign(count: int, seed: int = DEFAULT_SEED, start: int = 0, subprocess_every: int = 0,
                 bases: Sequence[Base] | None = None, workdir: Path | None = None,
                 progress: Callable[[CaseReport], None] | None = None, timeout: float = CASE_TIMEOUT_S,
                 before: Callable[[Mutant], None] | None = None, vmm_limits: Sequence[str] = VMM_LIMITS) -> Campaign:
    bases = list(bases) if bases is not None else all_bases()
    campaign = Campaign(seed)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="elf-mutants-")))
        for m in corpus(bases, seed, count, start):
            if before:
                before(m)
            report = run_case(m, workdir, bool(subprocess_every) and m.index % subprocess_every == 0, timeout,
                              vmm_limits)
            campaign.cases.append(report)
            if progress:
                progress(report)
    campaign.seconds = time.perf_counter() - started
    return campaign


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--start", type=int, default=0, help="first case index")
    ap.add_argument("--subprocess-every", type=int, default=25, help="every Mth case also via subprocesses (0: none)")
    ap.add_argument("--case", type=int, help="run (or --write) this one case")
    ap.add_argument("--write", metavar="FILE", help="with --case: write the mutant's bytes instead of running it")
    ap.add_argument("--json", metavar="OUT", help="write the campaign summary as JSON")
    ap.add_argument("--max-insns", default=VMM_LIMITS[1], help="vmm run's instruction limit per guest")
    ap.add_argument("--vmm-timeout", default=VMM_LIMITS[3], help="vmm run's time limit per guest (s)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = ap.parse_args(argv)
    limits = ("--max-insns", str(args.max_insns), "--timeout", str(args.vmm_timeout))
    bases = all_bases()
    if args.case is not None:
        m = mutant(bases, args.seed, args.case)
        print(m.describe())
        if args.write:
            Path(args.write).write_bytes(m.data)
            return 0
        with tempfile.TemporaryDirectory(prefix="elf-mutants-") as tmp:
            report = run_case(m, Path(tmp), subprocess_too=True, vmm_limits=limits)
        for r in report.results:
            print(f"  {r.command}: {r.outcome} ({r.status}) {r.seconds:.2f} s: {r.message.strip()[:400]}")
        for p in report.problems:
            print(f"  PROBLEM {p}")
        return 1 if report.problems else 0

    def before(m: Mutant) -> None:             # so that a case that kills the process is named
        if args.verbose:
            print(f"...  {m.describe()}", flush=True)

    def progress(report: CaseReport) -> None:
        if args.verbose or report.problems:
            flag = "FAIL" if report.problems else "ok  "
            print(f"{flag} {report.mutant.describe()}: "
                  + "; ".join(f"{r.command} {r.outcome}({r.status})" for r in report.results), flush=True)
            for p in report.problems:
                print(f"     {p}", flush=True)

    campaign = run_campaign(args.count, args.seed, args.start, args.subprocess_every, bases, before=before,
                            progress=progress, vmm_limits=limits)
    print(campaign.format())
    if args.json:
        Path(args.json).write_text(json.dumps(campaign.summary(), indent=2, default=dict) + "\n")
    return 1 if campaign.failures() else 0


if __name__ == "__main__":
    sys.exit(main())

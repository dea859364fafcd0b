"""The decoder: per-region code mode (16/32/64-bit) and instruction boundaries of a loaded ``Image``.

How a mode is decided, strongest first (each region records which rule decided it):

1. ``USER``: the caller's ``mode_map`` (``--mode-map``) wins wherever it applies.
2. ``ENTRY_PROTOCOL``: the PVH entry (Xen note 18) and a multiboot v1 entry run in 32-bit
   protected mode; any other ELF entry runs in the ELF class's mode.
3. ``FAR_JUMP``: a far ``ljmp``/``lcall`` (direct ``sel:off`` or through an absolute memory
   operand) switches to the mode of its selector's descriptor in the GDT last loaded by ``lgdt`` on
   the same path (L bit: 64-bit, D bit: 32-bit, else 16-bit). Code reached from there keeps it.
4. ``SYMBOL``: function symbols no traversal reached take the *bulk* mode: the mode entered by the
   last far jump into long mode if there was one (an ELF32 multiboot container around 64-bit code),
   else the ELF class.

Decoding is recursive traversal from the entries and symbols following direct jumps, calls and
conditional branches; bytes inside a function symbol that no traversal reached are then swept
linearly (jump-table targets), and their branch targets traversed in turn. Bytes nothing reaches are
never decoded as code: they are reported as ``Unclassified`` ranges (``padding`` when they decode as
nothing but nops/int3, else ``unreached``). Instructions use Capstone's ``disasm_lite``; only
candidate sites are decoded again with detail and classified by the catalog.

5. ``SWEEP``: an executable section with no symbol at all (a stripped kernel such as Debian's
   vmlinux) gives traversal too few starting points. Traversal there follows only code in a mode
   other than the bulk mode (boot stubs); everything it left is swept linearly in the bulk mode
   (``pvtranslate.sweep``: parallel, keeping no instructions). For swept code ``Decoded.insns``
   holds only the candidate sites and the instructions right after them (what the planner may
   displace); ``instruction_count`` counts all.
"""

from __future__ import annotations

import bisect
import enum
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterable, NamedTuple, Sequence

import capstone
import numpy as np

from pvtranslate import PvTranslateError
from pvtranslate.catalog import CANDIDATE_IDS, CatalogEntry, classify
from pvtranslate.image import Image, SymbolType
from pvtranslate.sweep import CS_MODE as _CS_MODE, SENSITIVE_OPERAND, sweep

__all__ = [
    "DecodeError",
    "ModeSource",
    "ModeRange",
    "Insn",
    "Region",
    "Unclassified",
    "ModeSwitch",
    "Site",
    "Decoded",
    "decode",
]


class DecodeError(PvTranslateError):
    """The mode map or the decoder's inputs are inconsistent."""


class ModeSource(enum.Enum):
    USER = "user mode map"
    ENTRY_PROTOCOL = "entry protocol (PVH/multiboot entry is 32-bit; plain ELF entry follows the ELF class)"
    FAR_JUMP = "far jump through a GDT descriptor"
    SYMBOL = "function symbol, bulk mode"
    SWEEP = "linear sweep of a section without symbols, bulk mode"


@dataclass(frozen=True)
class ModeRange:
    """One user override: code in [start_va, end_va) is ``bits``-bit."""

    start_va: int
    end_va: int
    bits: int

    def __post_init__(self) -> None:
        if self.bits not in (16, 32, 64):
            raise DecodeError(f"mode map entry {self.start_va:#x}..{self.end_va:#x}: bits must be 16, 32 or 64, "
                              f"not {self.bits}; hint: write START-END:BITS, e.g. 0x100000-0x100080:32")
        if self.end_va <= self.start_va:
            raise DecodeError(f"mode map entry {self.start_va:#x}..{self.end_va:#x} is empty; hint: end after start")


class Insn(NamedTuple):
    va: int
    size: int
    bits: int
    raw: bytes
    mnemonic: str
    op_str: str


@dataclass(frozen=True)
class Region:
    """A run of decoded code in one mode, and why that mode."""

    start_va: int
    end_va: int
    bits: int
    source: ModeSource
    section: str

    def __repr__(self) -> str:
        return f"Region({self.start_va:#x}..{self.end_va:#x} {self.bits}-bit by {self.source.name} in {self.section})"


@dataclass(frozen=True)
class Unclassified:
    start_va: int
    end_va: int
    section: str
    kind: str  # "padding" | "unreached" | "overlap" | "invalid"

    def __repr__(self) -> str:
        return f"Unclassified({self.start_va:#x}..{self.end_va:#x} {self.kind} in {self.section})"


@dataclass(frozen=True)
class ModeSwitch:
    from_va: int
    target_va: int
    selector: int | None
    bits: int
    evidence: str


@dataclass(frozen=True)
class Site:
    """A sensitive instruction: where, what, and its catalog entry."""

    va: int
    size: int
    bits: int
    raw: bytes
    text: str
    entry: CatalogEntry


@dataclass(frozen=True)
class Decoded:
    insns: tuple[Insn, ...]  # sorted by va
    branch_targets: frozenset[int]
    regions: tuple[Region, ...]
    unclassified: tuple[Unclassified, ...]
    sites: tuple[Site, ...]
    mode_switches: tuple[ModeSwitch, ...]
    notes: tuple[str, ...] = field(default=())  # things the decoder could not resolve (indirect jumps, ...)
    instruction_count: int = 0  # every instruction decoded, swept ones included (insns may be sparse)

    def bits_at(self, va: int) -> int | None:
        i = bisect.bisect_right(self.regions, va, key=lambda r: r.start_va) - 1
        if i >= 0 and va < self.regions[i].end_va:
            return self.regions[i].bits
        return None


_WINDOW = 128  # capstone decodes a whole buffer eagerly: keep each block's window small
_MAX_INSN = 15
_RE_HEX = re.compile(r"^0x[0-9a-f]+$|^[0-9]+$")
_RE_FAR_DIRECT = re.compile(r"^(0x[0-9a-f]+|[0-9]+):(0x[0-9a-f]+|[0-9]+)$")
_RE_ABS_MEM = re.compile(r"\[(0x[0-9a-f]+|[0-9]+)\]$")
_RE_RIP_REL = re.compile(r"^\[rip ([+-]) (0x[0-9a-f]+|[0-9]+)\]$")
_RE_SENSITIVE_OPERAND = re.compile(SENSITIVE_OPERAND)
_STOP = frozenset(("ret", "retf", "retfq", "iret", "iretd", "iretq", "sysret", "sysretq", "sysexit",
                   "sysexitq", "ud2", "ud1", "ud0"))
_COND = frozenset(("jo", "jno", "jb", "jae", "je", "jne", "jbe", "ja", "js", "jns", "jp", "jnp", "jl", "jge",
                   "jle", "jg", "loop", "loope", "loopne", "jcxz", "jecxz", "jrcxz"))
_PADDING = frozenset(("nop", "int3"))
_RE_LEA_NOP = re.compile(r"^([a-z]+), \[\1\]$")  # gcc's i386 multi-byte nop: lea esi, [esi + eiz*1 + 0]
_NEEDS_OPERAND_CHECK = frozenset(("mov", "push", "pop"))
_NEEDS_OPERAND_CHECK_IDS = frozenset(getattr(capstone.x86_const, f"X86_INS_{name.upper()}")
                                     for name in _NEEDS_OPERAND_CHECK)
_RE_UNOWNED = re.compile(rb"\x00+")          # owner bytes no instruction claimed
_RE_SWEPT = re.compile(rb"\x03+")            # owner bytes claimed by the linear sweep
_RE_GAP = re.compile(rb"[^\x01\x03]+")
_SPARSE_BYTES = 16  # swept instructions kept after each candidate site (a 5-byte jump displaces < 5+15)


def _candidate_mnemonics() -> frozenset[str]:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return frozenset(md.insn_name(i) for i in CANDIDATE_IDS)


_CANDIDATE_MNEMONICS = _candidate_mnemonics()


def _num(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(text)


class _Decoder:
    """Mutable state of one decode run; ``decode`` freezes it into ``Decoded``."""

    def __init__(self, image: Image, mode_map: Sequence[ModeRange], progress: Callable[[int], None] | None = None):
        self.image = image
        self.progress = progress  # called with the bytes newly decoded, after each traversal run
        self.decoded_bytes = 0
        self.mode_map = sorted(mode_map, key=lambda m: m.start_va)
        self.regions = image.code
        self.region_starts = [r.start_va for r in self.regions]
        self.lite = {b: capstone.Cs(capstone.CS_ARCH_X86, m) for b, m in _CS_MODE.items()}
        # per region: 0 unvisited, 1 instruction start, 2 instruction body
        self.owner = [bytearray(len(r.data)) for r in self.regions]
        self.found: dict[int, tuple[int, int, str, str, ModeSource]] = {}
        self.targets: set[int] = set()
        self.switches: list[ModeSwitch] = []
        self.notes: list[str] = []
        self.bad: list[tuple[int, int, str]] = []
        self.work: list[tuple[int, int, ModeSource, int | None]] = []
        self.bulk_bits = int(image.elf_class)
        self.last_gdt: int | None = None  # the most recent lgdt seen on any path
        self.swept = 0  # instructions found by linear sweep inside function symbols
        # sections without any symbol: swept in the bulk mode after traversal (see SWEEP)
        named = {self.region_of(sym.va) for sym in image.symbols}
        self.sweep_regions = frozenset(ri for ri in range(len(self.regions)) if ri not in named)
        self.sweep_bits_fixed = image.elf_class == 64  # an ELF32 may switch its bulk mode to 64 later
        self.swept_ranges: list[tuple[int, int, int, int]] = []  # (region, lo off, hi off, bits)
        self.sparse: dict[int, Insn] = {}  # swept instructions kept for the planner
        self.sweep_count = 0

    # ---- lookups
    def region_of(self, va: int) -> int | None:
        i = bisect.bisect_right(self.region_starts, va) - 1
        if i >= 0 and va < self.regions[i].end_va:
            return i
        return None

    def user_bits(self, va: int) -> int | None:
        for m in self.mode_map:
            if m.start_va <= va < m.end_va:
                return m.bits
        return None

    def push(self, va: int, bits: int, source: ModeSource, gdt: int | None = None) -> None:
        if self.region_of(va) is None and (virt := self.image.virtual_of(va)) is not None \
                and self.region_of(virt) is not None:
            self.notes.append(f"{va:#x}: physical branch target (paging off), decoded at {virt:#x}")
            self.targets.add(virt)
            va = virt
        ub = self.user_bits(va)
        if ub is not None:
            bits, source = ub, ModeSource.USER
        elif bits == self.bulk_bits and (self.sweep_bits_fixed or self.bulk_bits != int(self.image.elf_class)):
            ri = self.region_of(va)
            if ri is not None and ri in self.sweep_regions:
                return  # bulk-mode code in a section without symbols: the sweep decodes it
        self.work.append((va, bits, source, gdt))

    # ---- far jumps
    def descriptor_bits(self, gdt_base: int | None, selector: int) -> tuple[int | None, str]:
        if gdt_base is None:
            return None, "no lgdt seen on this path"
        if selector & 4:
            return None, f"selector {selector:#x} is in the LDT"
        raw = self.image.read(gdt_base + (selector & ~7), 8)
        if raw is None:
            return None, f"GDT entry {selector:#x} at {gdt_base + (selector & ~7):#x} is not in the file"
        (desc,) = struct.unpack("<Q", raw)
        if not (desc >> 44) & 1 or not (desc >> 43) & 1:
            return None, f"GDT entry {selector:#x} ({desc:#018x}) is not a code segment"
        if (desc >> 53) & 1:
            return 64, f"GDT entry {selector:#x} = {desc:#018x}: L=1"
        if (desc >> 54) & 1:
            return 32, f"GDT entry {selector:#x} = {desc:#018x}: D=1"
        return 16, f"GDT entry {selector:#x} = {desc:#018x}: L=0 D=0"

    def gdt_base_of(self, op_str: str, bits: int) -> int | None:
        m = _RE_ABS_MEM.search(op_str)
        if not m or "+" in op_str or "-" in op_str:
            return None
        raw = self.image.read(_num(m.group(1)), 10 if bits == 64 else 6)
        if raw is None:
            return None
        return struct.unpack_from("<Q" if bits == 64 else "<I", raw, 2)[0]

    def far_jump(self, va: int, bits: int, mnemonic: str, op_str: str, gdt: int | None) -> None:
        m = _RE_FAR_DIRECT.match(op_str)
        if m:
            selector, target = _num(m.group(1)), _num(m.group(2))
        else:
            mm = _RE_ABS_MEM.search(op_str)
            raw = self.image.read(_num(mm.group(1)), 6 if bits != 16 else 4) if mm and "+" not in op_str else None
            if raw is None:
                self.notes.append(f"{va:#x}: {mnemonic} {op_str}: indirect far transfer not followed")
                return
            if bits == 16:
                target, selector = struct.unpack("<HH", raw)
            else:
                target, selector = struct.unpack("<IH", raw)
        self.far_target(va, bits, selector, target, gdt)

    def far_return(self, va: int, bits: int, recent: list[tuple[int, int, str, str]], gdt: int | None) -> None:
        """A far return of the idiom ``push SEL; lea reg, [rip + d]`` (or ``mov reg, IMM``); ``push reg;
        retf``: the way kernels reload CS (Linux's ``lretq`` after a GDT switch). Its target is code."""
        if len(recent) < 3:
            return
        (_a0, _s0, n0, op0), (a1, s1, n1, op1), (_a2, _s2, n2, op2) = recent[-3:]
        if n0 != "push" or not _RE_HEX.match(op0) or n2 != "push" or n1 not in ("lea", "mov"):
            return
        reg, _, source = op1.partition(", ")
        if reg != op2:
            return
        m = _RE_RIP_REL.match(source)
        if n1 == "lea" and m:
            target = a1 + s1 + (_num(m.group(2)) if m.group(1) == "+" else -_num(m.group(2)))
        elif n1 == "mov" and _RE_HEX.match(source):
            target = _num(source)
        else:
            return
        self.far_target(va, bits, _num(op0) & 0xFFFF, target & ((1 << bits) - 1), gdt)

    def far_target(self, va: int, bits: int, selector: int, target: int, gdt: int | None) -> None:
        new_bits, evidence = self.descriptor_bits(gdt, selector)
        if new_bits is None and gdt is None and self.last_gdt is not None:
            new_bits, evidence = self.descriptor_bits(self.last_gdt, selector)
            evidence = f"no lgdt on this path, used the last one seen ({self.last_gdt:#x}): {evidence}"
        if new_bits is None:
            new_bits = bits
            evidence += f"; kept {bits}-bit"
        self.targets.add(target)
        self.switches.append(ModeSwitch(va, target, selector, new_bits, evidence))
        if new_bits == 64 and bits != 64:
            self.bulk_bits = 64
        source = ModeSource.FAR_JUMP if new_bits != bits else None
        self.push(target, new_bits, source or self._source, gdt)

    # ---- traversal
    def run(self, va: int, bits: int, source: ModeSource, gdt: int | None) -> None:
        self._source = source
        md = self.lite[bits]
        recent: list[tuple[int, int, str, str]] = []     # the last instructions, for far_return
        while True:
            ri = self.region_of(va)
            if ri is None:
                self.notes.append(f"{va:#x}: branch target outside executable sections")
                return
            region, owner = self.regions[ri], self.owner[ri]
            off = va - region.start_va
            if owner[off]:
                if owner[off] == 2:
                    self.bad.append((va, va + 1, "overlap"))
                return
            window = region.data[off : off + _WINDOW]
            end_of_region = off + len(window) >= len(region.data)
            nxt = va
            for a, size, mnemonic, op_str in md.disasm_lite(window, va):
                o = a - region.start_va
                if owner[o]:
                    if owner[o] == 2:
                        self.bad.append((a, a + 1, "overlap"))
                    return
                if any(owner[o + 1 : o + size]):
                    self.bad.append((a, a + size, "overlap"))
                    return
                if self.mode_map and (ub := self.user_bits(a)) is not None and ub != bits:
                    self.push(a, ub, ModeSource.USER, gdt)
                    return
                owner[o] = 1
                owner[o + 1 : o + size] = b"\x02" * (size - 1)
                self.decoded_bytes += size
                self.found[a] = (size, bits, mnemonic, op_str, self._source)
                nxt = a + size
                name = mnemonic.rsplit(" ", 1)[-1]
                if name == "jmp":
                    if _RE_HEX.match(op_str):
                        t = _num(op_str)
                        self.targets.add(t)
                        self.push(t, bits, self._source, gdt)
                    else:
                        self.notes.append(f"{a:#x}: indirect jmp {op_str}")
                    return
                if name in _COND or name == "call":
                    if _RE_HEX.match(op_str):
                        t = _num(op_str)
                        self.targets.add(t)
                        self.push(t, bits, self._source, gdt)
                    continue
                if name in ("ljmp", "lcall"):
                    self.far_jump(a, bits, name, op_str, gdt)
                    if name == "ljmp":
                        return
                    continue
                if name == "lgdt":
                    gdt = self.gdt_base_of(op_str, bits)
                    if gdt is not None:
                        self.last_gdt = gdt
                    continue
                if name in ("retf", "retfq") and not op_str:
                    self.far_return(a, bits, recent, gdt)
                if name in _STOP:
                    return
                recent.append((a, size, name, op_str))
                if len(recent) > 3:
                    del recent[0]
            if nxt == va:  # nothing decoded: invalid bytes
                self.bad.append((va, va + 1, "invalid"))
                return
            if nxt >= region.end_va:
                return
            if end_of_region or nxt - va < len(window) - _MAX_INSN:
                self.bad.append((nxt, nxt + 1, "invalid"))  # capstone stopped on bytes it cannot decode
                return
            va = nxt

    def drain(self) -> None:
        while self.work:
            va, bits, source, gdt = self.work.pop()
            before = self.decoded_bytes
            self.run(va, bits, source, gdt)
            if self.progress is not None and self.decoded_bytes != before:
                self.progress(self.decoded_bytes - before)

    def is_decoded(self, va: int) -> bool:
        ri = self.region_of(va)
        return ri is not None and self.owner[ri][va - self.regions[ri].start_va] != 0

    def mode_before(self, va: int, default: tuple[int, ModeSource]) -> tuple[int, ModeSource]:
        for back in range(1, 16):
            hit = self.found.get(va - back)
            if hit is not None:
                return hit[1], hit[4]
        return default

    def sweep_functions(self) -> bool:
        """Linear sweep of the unreached bytes inside function symbols; True if anything was added."""
        added = False
        for sym in self.image.symbols:
            if sym.type is not SymbolType.FUNC or sym.size == 0:
                continue
            ri = self.region_of(sym.va)
            if ri is None:
                continue
            region, owner = self.regions[ri], self.owner[ri]
            start = sym.va - region.start_va
            end = min(start + sym.size, len(region.data))
            hit = self.found.get(sym.va)
            sym_mode = (hit[1], hit[4]) if hit else (self.bulk_bits, ModeSource.SYMBOL)
            o = start
            while o < end:
                if owner[o]:
                    o += 1
                    continue
                gap_va = region.start_va + o
                bits, source = self.mode_before(gap_va, sym_mode)
                if (ub := self.user_bits(gap_va)) is not None:
                    bits, source = ub, ModeSource.USER
                before = len(self.found)
                self.linear(ri, o, end, bits, source)
                if len(self.found) == before:
                    o += 1
                else:
                    added = True
                    while o < end and owner[o]:
                        o += 1
        return added

    def linear(self, ri: int, off: int, end: int, bits: int, source: ModeSource) -> None:
        before = self.decoded_bytes
        self._linear(ri, off, end, bits, source)
        if self.progress is not None and self.decoded_bytes != before:
            self.progress(self.decoded_bytes - before)

    def _linear(self, ri: int, off: int, end: int, bits: int, source: ModeSource) -> None:
        region, owner = self.regions[ri], self.owner[ri]
        va = region.start_va + off
        nxt = va
        for a, size, mnemonic, op_str in self.lite[bits].disasm_lite(region.data[off:end], va):
            o = a - region.start_va
            if any(owner[o : o + size]):
                return
            nxt = a + size
            owner[o] = 1
            owner[o + 1 : o + size] = b"\x02" * (size - 1)
            self.found[a] = (size, bits, mnemonic, op_str, source)
            self.swept += 1
            self.decoded_bytes += size
            name = mnemonic.rsplit(" ", 1)[-1]
            if (name in _COND or name in ("jmp", "call")) and _RE_HEX.match(op_str):
                t = _num(op_str)
                self.targets.add(t)
                self.push(t, bits, source)
        if nxt < region.start_va + end:
            self.bad.append((nxt, nxt + 1, "invalid"))


    def sweep_stripped(self) -> None:
        """Sweep what traversal left in sections without symbols, in the bulk mode (``SWEEP``)."""
        if not self.sweep_regions:
            return
        ranges, where = [], []
        for ri in sorted(self.sweep_regions):
            region = self.regions[ri]
            for m in _RE_UNOWNED.finditer(self.owner[ri]):
                bits = self.user_bits(region.start_va + m.start()) or self.bulk_bits
                ranges.append((region.start_va, region.data, region.start_va + m.start(), region.start_va + m.end(),
                               bits))
                where.append((ri, m.start(), m.end(), bits))
        if not ranges:
            return
        results = sweep(ranges, CANDIDATE_IDS, _NEEDS_OPERAND_CHECK_IDS)
        looked_at: list[tuple[int, int]] = []   # VA spans around candidates, where the planner looks
        swept_targets = []
        for (ri, lo, hi, bits), res in zip(where, results):
            region, owner = self.regions[ri], self.owner[ri]
            base = region.start_va
            end = min(res.end - base, hi)
            owner[lo:end] = b"\x03" * (end - lo)
            for va in res.invalid:
                owner[va - base] = 0
                self.bad.append((va, va + 1, "invalid"))
            self.swept_ranges.append((ri, lo, end, bits))
            self.sweep_count += res.instructions
            md = self.lite[bits]
            for va, back in zip(res.candidates, res.windows):  # a site and what the planner may displace
                o, w = va - base, max(back - base, lo)
                looked_at.append((base + w, base + min(o + _SPARSE_BYTES, len(region.data))))
                for a, size, mnemonic, op_str in md.disasm_lite(region.data[w:min(o + 2 * _SPARSE_BYTES, hi)],
                                                                base + w):
                    if a >= va + _SPARSE_BYTES:
                        break
                    self.sparse[a] = Insn(a, size, bits, region.data[a - base:a - base + size], mnemonic, op_str)
            swept_targets.append(res.targets)
            if self.progress is not None:
                self.progress(end - lo)
        # only targets that fall where the planner looks (around a candidate) are kept
        starts, ends = [], []
        for lo, hi in sorted(looked_at):
            if ends and lo <= ends[-1]:
                ends[-1] = max(ends[-1], hi)
            else:
                starts.append(lo)
                ends.append(hi)
        if not starts:
            return
        span_starts, span_ends = np.array(starts, np.uint64), np.array(ends, np.uint64)
        for found in swept_targets:        # uint64 throughout: a Python int would compare as a float
            targets = np.frombuffer(found, np.uint64)
            span = np.searchsorted(span_starts, targets, side="right").astype(np.intp) - 1
            self.targets.update(targets[(span >= 0) & (targets < span_ends[span])].tolist())


def _is_padding(md: capstone.Cs, data: bytes, va: int) -> bool:
    if not data.strip(b"\x00\x90\xcc"):
        return True
    total = 0
    for _a, size, mnemonic, _op in md.disasm_lite(data, va):
        if mnemonic not in _PADDING and not (mnemonic == "lea" and _RE_LEA_NOP.match(_op)):
            return False
        total += size
    return total == len(data)


def decode(image: Image, mode_map: Iterable[ModeRange] = (),
           progress: Callable[[int], None] | None = None) -> Decoded:
    """Decode every reachable instruction of ``image`` in its mode; see the module docstring.

    ``progress``, if given, is called with the number of code bytes each step newly decoded."""
    dec = _Decoder(image, tuple(mode_map), progress)
    elf_bits = int(image.elf_class)
    # seeds, pushed in reverse priority (the work list is a stack)
    for m in dec.mode_map:
        if dec.region_of(m.start_va) is not None:
            dec.push(m.start_va, m.bits, ModeSource.USER)
    if image.multiboot or image.entry_va == image.pvh_entry_va:
        dec.push(image.entry_va, 32, ModeSource.ENTRY_PROTOCOL)
    else:
        dec.push(image.entry_va, elf_bits, ModeSource.ENTRY_PROTOCOL)
    if image.pvh_entry_va is not None:
        dec.push(image.pvh_entry_va, 32, ModeSource.ENTRY_PROTOCOL)
    dec.targets.update(va for va, *_ in dec.work)
    dec.drain()
    # then every symbol in an executable section that nothing reached, in the bulk mode
    for sym in image.symbols:
        if sym.type in (SymbolType.FUNC, SymbolType.NOTYPE) and dec.region_of(sym.va) is not None:
            dec.targets.add(sym.va) if sym.type is SymbolType.FUNC else None
            if not dec.is_decoded(sym.va):
                dec.push(sym.va, dec.bulk_bits, ModeSource.SYMBOL)
                dec.drain()
    for _round in range(8):
        if not dec.sweep_functions():
            break
        dec.drain()
    dec.sweep_stripped()
    return _freeze(dec)


def _freeze(dec: _Decoder) -> Decoded:
    insns: list[Insn] = []
    regions: list[Region] = []
    unclassified: list[Unclassified] = []
    bad = {kind: sorted(a for a, _e, k in dec.bad if k == kind) for kind in ("invalid", "overlap")}
    swept_bits = {(ri, lo): bits for ri, lo, _hi, bits in dec.swept_ranges}

    def any_bad(kind: str, lo: int, hi: int) -> bool:
        i = bisect.bisect_left(bad[kind], lo)
        return i < len(bad[kind]) and bad[kind][i] < hi

    for ri, region in enumerate(dec.regions):
        owner = dec.owner[ri]
        base = region.start_va
        data = region.data
        cur: list | None = None  # [start, end, bits, source]

        def extend(va: int, end: int, bits: int, source: ModeSource) -> None:
            nonlocal cur
            if cur is not None and cur[2] == bits and cur[3] is source and cur[1] == va:
                cur[1] = end
                return
            if cur is not None:
                regions.append(Region(cur[0], cur[1], cur[2], cur[3], region.name))
            cur = [va, end, bits, source]

        o = 0
        n = len(data)
        while o < n:
            if owner[o] == 1:
                va = base + o
                size, bits, mnemonic, op_str, source = dec.found[va]
                insns.append(Insn(va, size, bits, data[o : o + size], mnemonic, op_str))
                extend(va, va + size, bits, source)
                o += size
                continue
            if owner[o] == 3:
                e = _RE_SWEPT.match(owner, o).end()
                bits = swept_bits.get((ri, o)) or (cur[2] if cur else dec.bulk_bits)
                extend(base + o, base + e, bits, ModeSource.SWEEP)
                o = e
                continue
            g = o
            o = _RE_GAP.match(owner, o).end()
            gap_va = base + g
            gap_bits = cur[2] if cur else int(dec.image.elf_class)
            if any_bad("invalid", gap_va, base + o):
                kind = "invalid"
            elif any_bad("overlap", gap_va, base + o):
                kind = "overlap"
            elif _is_padding(dec.lite[gap_bits], data[g:o], gap_va):
                kind = "padding"
            else:
                kind = "unreached"
            unclassified.append(Unclassified(gap_va, base + o, region.name, kind))
            if kind == "padding" and cur is not None:
                cur[1] = base + o  # a region runs on over padding; it merges if the same mode resumes
                continue
            if cur is not None:
                regions.append(Region(cur[0], cur[1], cur[2], cur[3], region.name))
                cur = None
        if cur is not None:
            regions.append(Region(cur[0], cur[1], cur[2], cur[3], region.name))
    if dec.sparse:
        insns = sorted([*insns, *dec.sparse.values()], key=lambda i: i.va)
    sites = _sites(insns)
    return Decoded(
        insns=tuple(insns),
        branch_targets=frozenset(dec.targets),
        regions=tuple(regions),
        unclassified=tuple(unclassified),
        sites=tuple(sites),
        mode_switches=tuple(dec.switches),
        notes=tuple(dec.notes),
        instruction_count=len(dec.found) + dec.sweep_count,
    )


def _sites(insns: Sequence[Insn]) -> list[Site]:
    detail = {}
    for bits, mode in _CS_MODE.items():
        md = capstone.Cs(capstone.CS_ARCH_X86, mode)
        md.detail = True
        detail[bits] = md
    sites: list[Site] = []
    for insn in insns:
        name = insn.mnemonic.rsplit(" ", 1)[-1]
        if name not in _CANDIDATE_MNEMONICS:
            continue
        if name in _NEEDS_OPERAND_CHECK and not _RE_SENSITIVE_OPERAND.search(insn.op_str):
            continue
        full = next(detail[insn.bits].disasm(insn.raw, insn.va, 1), None)
        if full is None:
            continue
        entry = classify(full)
        if entry is not None:
            sites.append(Site(insn.va, insn.size, insn.bits, insn.raw, f"{full.mnemonic} {full.op_str}".strip(), entry))
    return sites

"""The emitter: turns a ``Plan`` into machine code, patches the input ELF and writes the output atomically.

The only module that writes files (through ``elfwrite``, which appends to a copy of the input: no
ELF library rebuilds the file, so sections and every unpatched byte stay where they were, and a
kernel of tens of MB is streamed, not held in memory). It never decides tactics: each
``PlannedSite`` is emitted as planned (TRAMPOLINE_JUMP, TRAP; IN_PLACE and PUNNED_JUMP are not
planned for the samples and are refused with ``EmitError``).

Layout of the one new PT_LOAD (RWX, page aligned, placed after every existing loaded segment,
``p_paddr`` = ``p_vaddr`` + the offset the existing loaded segments use)::

    +0x0000  shared page (4 KiB, zero; the VMM writes magic/version when it maps it)
    +0x1000  IF-bit clear table (256 bytes: b -> b & ~2), used flag-free by pushf lowerings
    +0x1100  trampolines, 16-byte aligned, in plan order
    ...      site table (``SITE_TABLE_*`` layout below), then the hypercall-address table
    ...      the output's program-header table (mapped, so a PT_PHDR entry stays true)

A PT_NOTE with the PV note follows the segment in the file.

Patches: ``jmp rel32`` (e9) to the trampoline; the remaining bytes of the patch range are ``int3``
(cc), not ``nop``: nothing may jump into the range (the planner checked), so a stray jump there is a
translation bug and should trap loudly rather than slide into the next instruction. TRAP sites:
``int 0x82`` (cd 82) followed by ``int3`` padding, or a lone ``int3`` for a 1-byte site.

Every ``int 0x82`` the emitter writes (trampolines and traps) is listed in the unwind records so
the VMM can tell recorded hypercalls from the guest's own ``int 0x82``, with the registers set aside
there; so is every instruction of a lowering that accesses guest memory (an access point), so that
a fault it raises is delivered at the site with the guest's registers. Hypercall lowerings use no
stack: they store the registers they clobber in the shared page's save area, and the VMM puts them
back as part of the hypercall.

Flags are never changed by a lowering except where the original instruction changes them
(``popf``): IF is merged into a pushed flags image with a lookup table and ``lea`` (flag-free);
``popf`` rebuilds arithmetic flags with ``sahf`` and OF with ``add al, 0x7f``, DF with cld/std.
"""

from __future__ import annotations

import enum
import io
import os
import re
import struct
from dataclasses import dataclass
from typing import Sequence

import capstone
import keystone
from capstone import x86_const as X

from pvtranslate import PvTranslateError, elfwrite
from pvtranslate.abi import (
    ABI_VERSION,
    HYPERCALL_INSN,
    SHARED_PAGE_SIZE,
    AbiDescriptor,
    DescriptorQuery,
    SITE_TABLE_ENTRY,
    SITE_TABLE_HEADER,
    SITE_TABLE_MAGIC,
    GuestVa,
    Hypercall,
    HypercallPoint,
    PcKind,
    PcMapEntry,
    SharedOffset,
    pack_note,
    unwind_index,
    pack_string_flags,
)
from pvtranslate.plan import Plan, PlannedSite, Step, StepOp, Tactic, TrapKind

__all__ = [
    "EmitError",
    "EmitOptions",
    "EmitResult",
    "SiteRecord",
    "TrampolineArea",
    "SITE_TABLE_HEADER",
    "SITE_TABLE_ENTRY",
    "emit",
    "encode_site",
]

PAGE = 0x1000
JMP_REL32 = 0xE9
INT3 = b"\xcc"
_REACH = 1 << 31
_IF_TABLE_OFF = SHARED_PAGE_SIZE
_TRAMPOLINES_OFF = 0x1100

# Site table format (SITE_TABLE_HEADER / SITE_TABLE_ENTRY / HYPERCALL_ENTRY): see pvtranslate.abi.
_TACTICS = tuple(Tactic)


class EmitError(PvTranslateError):
    """A plan could not be encoded, placed or written; no output file exists."""


@dataclass(frozen=True)
class EmitOptions:
    """Policy of the emitter."""

    output_path: str | os.PathLike | None = None  # None: do not write, only return the bytes
    trampoline_align: int = 16


class Where(enum.Enum):
    NEW_SEGMENT = "new PT_LOAD after the highest loaded segment"


@dataclass(frozen=True)
class TrampolineArea:
    va: int
    size: int
    where: Where
    seg_paddr: int


@dataclass(frozen=True)
class SiteRecord:
    va: int
    raw: bytes
    lowering: str
    tactic: Tactic
    trampoline_va: int | None
    patch_bytes: bytes  # what the patch range now holds ("" for a site inside another's trampoline)
    patch_range: tuple[int, int] | None
    trampoline_range: tuple[int, int] | None
    hypercalls: tuple[HypercallPoint, ...] = ()  # unwind records: every int 0x82 (or the trap), access points
    pc_map: tuple[PcMapEntry, ...] = ()           # the trampoline's guest-instruction boundaries

    @property
    def hypercall_vas(self) -> tuple[int, ...]:
        return tuple(h.va for h in self.hypercalls if not h.access)


@dataclass(frozen=True)
class EmitResult:
    area: TrampolineArea
    shared_page_va: int
    site_table_va: int
    site_table_size: int
    note: bytes
    sites: tuple[SiteRecord, ...]
    input_size: int
    output_path: str | os.PathLike | None = None  # where the output was written, if it was
    kept: bytes | None = None                     # the output, when it was not written

    @property
    def output(self) -> bytes:
        """The translated ELF's bytes (read back from ``output_path`` when it was written)."""
        if self.kept is not None:
            return self.kept
        with open(self.output_path, "rb") as fh:
            return fh.read()

    @property
    def output_size(self) -> int:
        return len(self.kept) if self.kept is not None else os.path.getsize(self.output_path)

    @property
    def growth(self) -> int:
        return self.output_size - self.input_size


# --------------------------------------------------------------------------- encoding

_KS: dict[int, keystone.Ks] = {}
_CS: dict[int, capstone.Cs] = {}


def _ks(bits: int) -> keystone.Ks:
    if bits not in _KS:
        _KS[bits] = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64 if bits == 64 else keystone.KS_MODE_32)
    return _KS[bits]


# Keystone costs ~25 µs a call and a large kernel asks for tens of thousands of encodings of a few
# hundred texts: a text that names no address relative to the pc encodes the same anywhere.
_ENCODED: dict[tuple[int, str], bytes] = {}
_ENCODED_MAX = 1 << 14
_BRANCH_OR_LABEL = re.compile(r"\b(j[a-z]+|call|loop[a-z]*)\b|\w\s*:(?!\s*\[)|\n", re.IGNORECASE)
_BRACKETS = re.compile(r"\[([^\]]*)\]")
_GPR = re.compile(r"\b([re]?[abcd]x|[re]?[sd]i|[re]?[sb]p|r(8|9|1[0-5])[dwb]?)\b", re.IGNORECASE)
_RIP_FORMS: dict[str, tuple[bytes, int]] = {}  # 64-bit template -> (encoding, offset of its disp32)


def _pc_independent(bits: int, text: str) -> bool:
    """True if Keystone encodes ``text`` the same at every address: no branch, no label, and in 64-bit
    every memory operand has a base or index register (Keystone makes [absolute] RIP-relative)."""
    if _BRANCH_OR_LABEL.search(text):
        return False
    return bits != 64 or all(_GPR.search(inside) and "rip" not in inside.lower()
                             for inside in _BRACKETS.findall(text))


def _assemble(bits: int, text: str, pc: int) -> bytes:
    """Keystone's encoding of ``text`` at ``pc`` (raises keystone.KsError)."""
    key = (bits, text)
    enc = _ENCODED.get(key)
    if enc is None:
        enc = bytes(_ks(bits).asm(text, pc)[0] or b"")
        if not _pc_independent(bits, text):
            return enc
        if len(_ENCODED) >= _ENCODED_MAX:   # texts with site-specific immediates: keep it bounded
            _ENCODED.clear()
        _ENCODED[key] = enc
    return enc


def _rip_form(template: str) -> tuple[bytes, int]:
    """64-bit encoding of ``template`` with ``{m}`` a RIP-relative operand, and where its disp32 sits."""
    form = _RIP_FORMS.get(template)
    if form is None:
        a = bytes(_ks(64).asm(template.format(m="[rip + 0x7fffffff]"), 0)[0] or b"")
        b = bytes(_ks(64).asm(template.format(m="[rip + 0x12345678]"), 0)[0] or b"")
        differ = [i for i in range(min(len(a), len(b))) if a[i] != b[i]]
        if len(a) != len(b) or len(differ) != 4 or differ[3] - differ[0] != 3 or \
                a[differ[0]:differ[0] + 4] != b"\xff\xff\xff\x7f":
            raise ValueError(f"Keystone's RIP-relative encoding of {template!r} has no plain disp32")
        form = _RIP_FORMS[template] = (a, differ[0])
    return form


def _cs(bits: int) -> capstone.Cs:
    if bits not in _CS:
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64 if bits == 64 else capstone.CS_MODE_32)
        md.detail = True
        _CS[bits] = md
    return _CS[bits]


def _decode_one(raw: bytes, va: int, bits: int):
    insns = list(_cs(bits).disasm(raw, va))
    if not insns or insns[0].size != len(raw):
        raise EmitError(f"cannot re-decode {raw.hex()} at {va:#x}")
    return insns[0]


_GPR64 = {
    **{n: "r" + n[1:] for n in ("eax", "ebx", "ecx", "edx", "esi", "edi", "esp", "ebp")},
    **{n: "r" + n for n in ("ax", "bx", "cx", "dx", "si", "di", "sp", "bp")},
    **{"al": "rax", "ah": "rax", "bl": "rbx", "bh": "rbx", "cl": "rcx", "ch": "rcx", "dl": "rdx", "dh": "rdx",
       "sil": "rsi", "dil": "rdi", "spl": "rsp", "bpl": "rbp"},
    **{f"r{i}{s}": f"r{i}" for i in range(8, 16) for s in ("d", "w", "b")},
}


def _full(reg: str, bits: int) -> str:
    r64 = _GPR64.get(reg, reg)
    return r64 if bits == 64 else ("e" + r64[1:] if r64.startswith("r") and r64[1:] in {
        "ax", "bx", "cx", "dx", "si", "di", "sp", "bp"} else r64)


def _reg_width(reg: str) -> int:
    """Width in bytes of a GPR name."""
    if reg in _GPR64.values() or reg in ("rip",):
        return 8
    if reg.startswith("e") or reg.endswith("d"):
        return 4
    if reg.endswith("l") or reg.endswith("h") or reg.endswith("b"):
        return 1
    return 2


def _sized(reg: str, width: int, bits: int) -> str:
    """``reg``'s sub-register of ``width`` bytes (reg may be any width)."""
    base = _GPR64.get(reg, reg)
    if base.startswith("r") and base[1:].isdigit():
        return {8: base, 4: base + "d", 2: base + "w", 1: base + "b"}[width]
    core = base[1:]
    return {8: "r" + core, 4: "e" + core, 2: core,
            1: {"ax": "al", "bx": "bl", "cx": "cl", "dx": "dl", "si": "sil", "di": "dil", "bp": "bpl",
                "sp": "spl"}[core]}[width]


class _Unsupported(EmitError):
    pass


@dataclass
class _Mem:
    """A memory operand of an original instruction, re-expressible at a new address and stack depth."""

    base: str | None
    index: str | None
    scale: int
    disp: int
    seg: str | None
    abs_target: int | None  # RIP-relative: the absolute address it refers to


def _mem_of(insn, op) -> _Mem:
    m = op.mem
    base = insn.reg_name(m.base) if m.base else None
    index = insn.reg_name(m.index) if m.index else None
    seg = insn.reg_name(m.segment) if m.segment else None
    if base == "rip":
        return _Mem(None, None, 1, 0, seg, insn.address + insn.size + m.disp)
    return _Mem(base, index, m.scale, m.disp, seg, None)


class _Asm:
    """One trampoline under construction: text lines assembled piecewise at known addresses."""

    def __init__(self, start_va: int, bits: int, site_va: int, shared_va: int, if_table_va: int):
        self.start = start_va
        self.bits = bits
        self.word = 8 if bits == 64 else 4
        self.code = bytearray()
        self.site_va = site_va
        self.shared_va = shared_va
        self.if_table_va = if_table_va
        self.depth = 0  # bytes pushed by this trampoline, relative to the original rsp
        self.hypercalls: list[HypercallPoint] = []  # unwind records: int 0x82s and access points
        self.pc_map: list[PcMapEntry] = []  # guest-instruction boundaries (pvtranslate.abi.PcKind)
        self.saved: list[str] = []  # register names pushed by SAVE, bottom first
        self.area_saved: list[str] = []  # register names stored in the save area by SAVE_AREA
        self.deferred_discard = 0

    @property
    def pc(self) -> int:
        return self.start + len(self.code)

    def raw(self, data: bytes) -> None:
        self.code += data

    def asm(self, text: str) -> None:
        try:
            enc = _assemble(self.bits, text, self.pc)
        except keystone.KsError as exc:
            raise EmitError(f"site {self.site_va:#x}: Keystone cannot assemble {text!r} at {self.pc:#x}: {exc}; "
                            "hint: report this instruction form") from exc
        if not enc:
            raise EmitError(f"site {self.site_va:#x}: Keystone produced nothing for {text!r}")
        self.code += bytes(enc)

    def mem_ref(self, template: str, target: int) -> None:
        """Assemble ``template`` whose ``{m}`` is a reference to absolute ``target`` (RIP-relative in 64-bit)."""
        if self.bits == 32:
            self.asm(template.format(m=f"[{target:#x}]"))
            return
        try:
            enc, disp_at = _rip_form(template)
        except (keystone.KsError, ValueError) as exc:
            raise EmitError(f"site {self.site_va:#x}: Keystone cannot assemble {template!r} RIP-relatively: "
                            f"{exc}; hint: report this instruction form") from exc
        rel = target - (self.pc + len(enc))
        if not -_REACH <= rel < _REACH:
            raise EmitError(f"site {self.site_va:#x}: {target:#x} is beyond rel32 reach of {self.pc:#x}")
        code = bytearray(enc)
        struct.pack_into("<i", code, disp_at, rel)
        self.code += code

    def shared(self, off: int) -> int:
        return self.shared_va + off

    def mem_text(self, mem: _Mem, extra_depth: int = 0) -> tuple[str, int | None]:
        """``[...]`` text for an original memory operand at the current depth; (text, abs target for RIP)."""
        if mem.abs_target is not None:
            return "{m}", mem.abs_target
        if self.bits == 64 and not mem.base and not mem.index:
            # Keystone 0.9.2 turns "[0x1234]" into a RIP-relative operand in 64-bit mode (sometimes
            # with the literal as the displacement): re-express the absolute address RIP-relatively.
            if mem.seg:
                raise _Unsupported(f"segment-relative absolute operand {mem.seg}:[{mem.disp:#x}]")
            return "{m}", mem.disp & ((1 << 64) - 1)
        parts = []
        disp = mem.disp
        if mem.base:
            parts.append(mem.base)
            if mem.base in ("rsp", "esp", "sp"):
                disp += self.depth + extra_depth
        if mem.index:
            parts.append(f"{mem.index}*{mem.scale}")
        text = " + ".join(parts) if parts else ""
        if disp or not parts:
            text = f"{text} {'+' if disp >= 0 else '-'} {abs(disp):#x}" if parts else f"{disp & ((1 << self.bits) - 1):#x}"
        seg = f"{mem.seg}:" if mem.seg else ""
        return f"{seg}[{text}]", None

    def with_mem(self, template: str, mem: _Mem, extra_depth: int = 0) -> None:
        text, target = self.mem_text(mem, extra_depth)
        if target is None:
            self.asm(template.format(m=text))
        else:
            self.mem_ref(template, target)

    def push(self, what: str) -> None:
        self.asm(f"push {what}")
        self.depth += self.word

    def pop(self, what: str) -> None:
        self.asm(f"pop {what}")
        self.depth -= self.word

    def mark(self, original_va: int, kind: PcKind) -> None:
        self.pc_map.append(PcMapEntry(self.pc, original_va, kind))

    def jmp_rel32(self, target: int) -> None:
        rel = target - (self.pc + 5)
        if not -_REACH <= rel < _REACH:
            raise EmitError(f"site {self.site_va:#x}: jump target {target:#x} beyond rel32 reach of {self.pc:#x}")
        self.raw(bytes([JMP_REL32]) + struct.pack("<i", rel))

    def area_slot(self, reg: str) -> int:
        """Address of ``reg``'s slot in the shared page's save area."""
        return self.shared(SharedOffset.SAVE_AREA + 8 * unwind_index(reg))

    def save_area(self, reg: str) -> None:
        """Store ``reg`` in its save-area slot (the VMM puts it back at the hypercall)."""
        self.mem_ref(f"mov {'qword' if self.bits == 64 else 'dword'} ptr {{m}}, {reg}", self.area_slot(reg))
        self.area_saved.append(reg)

    def _unwind_point(self, what: str, access: bool) -> HypercallPoint:
        if self.area_saved and (self.saved or self.depth):
            raise EmitError(f"site {self.site_va:#x}: registers both pushed and in the save area at {what}")
        if self.depth != len(self.saved) * self.word:
            raise EmitError(f"site {self.site_va:#x}: {self.depth} bytes pushed at {what}, but "
                            f"{len(self.saved)} saved registers: a fault there could not be unwound")
        return HypercallPoint(self.pc, self.site_va, tuple(self.area_saved or self.saved),
                              bool(self.area_saved), access)

    def access_point(self) -> None:
        """The next instruction accesses guest memory: record how to unwind a fault it raises."""
        self.hypercalls.append(self._unwind_point("a guest-memory access", access=True))

    def hypercall(self, number: int, reg: str) -> None:
        self.asm(f"mov {_sized(reg, 4, self.bits)}, {number:#x}")
        self.hypercalls.append(self._unwind_point("a hypercall", access=False))
        self.raw(HYPERCALL_INSN)


# --- argument sources --------------------------------------------------------------------------------


@dataclass
class _Src:
    kind: str  # "imm" | "reg" | "lea" | "memval"
    value: object


def _ops(insn) -> list:
    return list(insn.operands)


def _operand_src(insn, op, bits: int) -> _Src:
    if op.type == X.X86_OP_REG:
        return _Src("reg", _full(insn.reg_name(op.reg), bits))
    if op.type == X.X86_OP_IMM:
        return _Src("imm", op.imm)
    return _Src("memval", _mem_of(insn, op))


def _mem_op(insn):
    for op in insn.operands:
        if op.type == X.X86_OP_MEM:
            return op
    raise _Unsupported(f"{insn.mnemonic} {insn.op_str}: no memory operand")


def _operand_size(insn, bits: int) -> int:
    if 0x66 in insn.prefix:
        return 2
    return 8 if bits == 64 else 4


def _arg_source(site: PlannedSite, insn, arg: str) -> _Src:
    h, bits = site.hypercall, site.bits
    mn = insn.mnemonic
    ops = _ops(insn)
    w = lambda r: _Src("reg", _full(r, bits))  # noqa: E731
    if h in (Hypercall.PORT_IN8, Hypercall.PORT_IN16, Hypercall.PORT_IN32,
             Hypercall.PORT_OUT8, Hypercall.PORT_OUT16, Hypercall.PORT_OUT32):
        if arg == "port":
            imm = [o for o in ops if o.type == X.X86_OP_IMM]
            return _Src("imm", imm[0].imm & 0xFF) if imm else w("dx")
        if arg == "value":
            return w("ax")
    if h in (Hypercall.STRING_IN, Hypercall.STRING_OUT):
        name = mn.split()[-1]
        if arg == "port":
            return w("dx")
        if arg == "element_size":
            return _Src("imm", {"b": 1, "w": 2, "d": 4}[name[-1]])
        if arg == "count":
            return w("cx") if mn.startswith(("rep", "repne")) else _Src("imm", 1)
        if arg == "buffer_va":
            return w("di" if h is Hypercall.STRING_IN else "si")
        if arg == "flags":  # address size and the buffer's segment; the VMM reads DF from the guest's flags
            address_bits = {64: 32, 32: 16}[bits] if 0x67 in insn.prefix else bits
            seg = "es" if h is Hypercall.STRING_IN else _mem_of(insn, _mem_op(insn)).seg or "ds"
            return _Src("imm", pack_string_flags(address_bits, seg))
    if h in (Hypercall.LOAD_GDT, Hypercall.LOAD_IDT):
        if arg == "pseudo_descriptor_va":
            return _Src("lea", _mem_of(insn, _mem_op(insn)))
        if arg == "operand_size":  # 64-bit mode always loads a 10-byte descriptor (66 is ignored)
            return _Src("imm", 8 if bits == 64 else _operand_size(insn, bits))
    if h in (Hypercall.LOAD_LDT, Hypercall.LOAD_TR, Hypercall.LMSW) and arg in ("selector", "value"):
        return _operand_src(insn, ops[0], bits)
    if h in (Hypercall.WRITE_CR, Hypercall.WRITE_DR):
        if arg in ("cr_index", "dr_index"):
            return _Src("imm", int(insn.reg_name(ops[0].reg)[2:]))
        if arg == "value":
            return _operand_src(insn, ops[1], bits)
    simple = {
        (Hypercall.RDMSR, "msr"): "cx", (Hypercall.WRMSR, "msr"): "cx", (Hypercall.WRMSR, "low"): "ax",
        (Hypercall.WRMSR, "high"): "dx", (Hypercall.XSETBV, "xcr"): "cx", (Hypercall.XSETBV, "low"): "ax",
        (Hypercall.XSETBV, "high"): "dx", (Hypercall.XGETBV, "xcr"): "cx", (Hypercall.RDPMC, "counter"): "cx",
        (Hypercall.CPUID, "leaf"): "ax", (Hypercall.CPUID, "subleaf"): "cx", (Hypercall.MONITOR, "va"): "ax",
        (Hypercall.MONITOR, "extensions"): "cx", (Hypercall.MONITOR, "hints"): "dx",
        (Hypercall.MWAIT, "hints"): "ax", (Hypercall.MWAIT, "extensions"): "cx",
    }
    if (h, arg) in simple:
        return w(simple[(h, arg)])
    if h is Hypercall.INVLPG and arg == "va":
        return _Src("lea", _mem_of(insn, _mem_op(insn)))
    if h is Hypercall.INVPCID:
        if arg == "type":
            return _operand_src(insn, ops[0], bits)
        if arg == "descriptor_va":
            return _Src("lea", _mem_of(insn, _mem_op(insn)))
    if h is Hypercall.LOAD_SEGMENT:
        if arg == "selector" and site.entry_name.startswith("pop."):
            return _Src("memval", _Mem("rsp" if bits == 64 else "esp", None, 1, 0, None, None))
        if arg == "sreg_index":
            from pvtranslate.abi import SREG_SHADOW_ORDER
            return _Src("imm", SREG_SHADOW_ORDER.index(insn.reg_name(ops[0].reg)))
        if arg == "selector":
            return _operand_src(insn, ops[1], bits)
    if h is Hypercall.DESCRIPTOR_QUERY:
        if arg == "query":
            return _Src("imm", int(DescriptorQuery[mn.split()[-1].upper()]))
        if arg == "selector":
            return _operand_src(insn, ops[-1], bits)
    if h is Hypercall.IRET:
        if arg == "frame_va":
            return _Src("lea", _Mem("rsp" if bits == 64 else "esp", None, 1, 0, None, None))
        if arg == "operand_size":
            return _Src("imm", {"iretq": 8, "iretd": 4, "iret": 2}[mn])
    if h in (Hypercall.SYSRET, Hypercall.SYSEXIT) and arg == "operand_size":
        return _Src("imm", 8 if mn.endswith("q") else 4)
    if h is Hypercall.SET_AC and arg == "ac":
        return _Src("imm", 1 if mn == "stac" else 0)
    raise _Unsupported(f"no source for argument {arg!r} of {h.name if h else None} ({site.text})")


def _load_args(a: _Asm, site: PlannedSite, insn, group: Sequence[Step]) -> None:
    """Load every argument register without the stack: the memory operand first (its base and index
    registers are still the guest's), then the others; a source register an earlier load overwrote
    is read back from its save-area slot."""
    sources = [(st.args[0], _arg_source(site, insn, st.args[1])) for st in group]
    sources.sort(key=lambda rs: rs[1].kind not in ("lea", "memval"))
    overwritten: set[str] = set()
    for reg, src in sources:
        if src.kind == "imm":
            v = int(src.value)
            if not -(1 << 31) <= v < (1 << 31):
                raise _Unsupported(f"immediate {v:#x} too wide")
            a.asm(f"mov {reg}, {v:#x}")
        elif src.kind == "reg":
            if src.value in overwritten:
                if src.value not in a.area_saved:
                    raise EmitError(f"site {site.va:#x}: argument source {src.value} overwritten and not saved")
                a.mem_ref(f"mov {reg}, {{m}}", a.area_slot(src.value))
            elif src.value != reg:
                a.asm(f"mov {reg}, {src.value}")
        elif src.kind == "lea":
            a.with_mem(f"lea {reg}, {{m}}", src.value)
        else:  # memval: a 16-bit operand (a selector, the MSW), read as the instruction reads it
            a.access_point()
            a.with_mem(f"movzx {_sized(reg, 4, a.bits)}, word ptr {{m}}", src.value)
        overwritten.add(reg)


def _read_shared(a: _Asm, site: PlannedSite, insn, step: Step) -> None:
    fld, dest_text = step.args
    target = a.shared(int(fld))
    fsize = {SharedOffset.GDTR: 10, SharedOffset.IDTR: 10, SharedOffset.LDTR: 2, SharedOffset.TR: 2}.get(fld, 8)
    if "[" not in dest_text:
        reg = dest_text
        rw = _reg_width(reg)
        if fsize >= rw:
            a.mem_ref(f"mov {reg}, {{m}}", target)
        else:
            a.mem_ref(f"movzx {_sized(reg, 4, a.bits)}, word ptr {{m}}", target)
        return
    # memory destination: copy through a scratch register the plan saved for us
    scratch = a.saved[-1] if a.saved else None
    if scratch is None:
        raise _Unsupported("memory destination without a saved scratch register")
    mem = _mem_of(insn, _mem_op(insn))
    zeros: list[tuple[int, int]] = []
    if fld in (SharedOffset.GDTR, SharedOffset.IDTR) and 0x66 in insn.prefix:
        # 16-bit operand size: a 24-bit base is stored, the bytes above it are zero (as QEMU does)
        chunks = [(0, 4), (4, 1)]
        zeros = [(5, 1), (6, 4)] if a.bits == 64 else [(5, 1)]
    elif fld in (SharedOffset.GDTR, SharedOffset.IDTR):
        chunks = [(0, 8), (8, 2)] if a.bits == 64 else [(0, 4), (4, 2)]
    else:
        chunks = [(0, 2)]
    ptrs = {8: "qword", 4: "dword", 2: "word", 1: "byte"}
    for o, sz in zeros:
        m2 = _Mem(mem.base, mem.index, mem.scale, mem.disp + o, mem.seg,
                  None if mem.abs_target is None else mem.abs_target + o)
        a.access_point()
        a.with_mem(f"mov {ptrs[sz]} ptr {{m}}, 0", m2)
    for o, sz in chunks:
        r = _sized(scratch, sz, a.bits)
        ptr = ptrs[sz]
        a.mem_ref(f"mov {r}, {ptr} ptr {{m}}", target + o)
        m2 = _Mem(mem.base, mem.index, mem.scale, mem.disp + o, mem.seg,
                  None if mem.abs_target is None else mem.abs_target + o)
        a.access_point()
        a.with_mem(f"mov {ptr} ptr {{m}}, {r}", m2)


def _push_flags(a: _Asm, step: Step) -> None:
    _fld, width = step.args
    sp = "rsp" if a.bits == 64 else "esp"
    a.access_point()  # the guest's own push (the image is no saved register: depth counts none of it)
    a.raw(b"\x66\x9c" if width == 2 else b"\x9c")  # raw: Keystone emits the 16-bit form for "pushf"
    rc, rd = ("rcx", "rdx") if a.bits == 64 else ("ecx", "edx")
    a.push(rc)
    a.push(rd)
    a.asm(f"movzx ecx, byte ptr [{sp} + {2 * a.word + 1:#x}]")
    if a.bits == 64:
        a.mem_ref("lea rdx, {m}", a.if_table_va)
        a.asm("movzx ecx, byte ptr [rdx + rcx]")
    else:
        a.asm(f"movzx ecx, byte ptr [ecx + {a.if_table_va:#x}]")
    a.mem_ref("movzx edx, byte ptr {m}", a.shared(SharedOffset.VIRTUAL_IF))
    a.asm(f"lea ecx, [{rc} + {rd}*2]")
    a.asm(f"mov byte ptr [{sp} + {2 * a.word + 1:#x}], cl")
    a.pop(rd)
    a.pop(rc)


def _pop_flags(a: _Asm, step: Step) -> None:
    """popf: the image's IF into the virtual IF, then a native popf of the image on top of the stack.

    The native popf sets every other flag as the original does (IOPL, NT, AC, ID, TF, DF and the
    arithmetic flags); the real IF it also sets means nothing in pv mode, where only the virtual IF
    gates interrupts. The pending-event check comes after, with the flags final.
    """
    _fld, width = step.args
    if a.saved:
        raise _Unsupported("popf lowering inside saves")
    sp = "rsp" if a.bits == 64 else "esp"
    ra = "rax" if a.bits == 64 else "eax"
    a.push(ra)
    a.saved.append(ra)
    a.access_point()  # reads the guest's image
    a.asm(f"movzx eax, byte ptr [{sp} + {a.word + 1:#x}]")  # flags bits 8-15: IF is bit 1
    a.asm("shr eax, 1")
    a.asm("and eax, 1")
    a.mem_ref("mov byte ptr {m}, al", a.shared(SharedOffset.VIRTUAL_IF))
    a.pop(a.saved.pop())
    a.access_point()
    a.raw(b"\x66\x9d" if width == 2 else b"\x9d")  # raw: Keystone emits the 16-bit form for "popf"


def _deliver(a: _Asm, step: Step) -> None:
    fld, number, scratch = step.args
    a.mem_ref(f"movzx {_sized(scratch, 4, a.bits)}, byte ptr {{m}}", a.shared(int(fld)))
    # jrcxz/jecxz over the hypercall (mov eax, imm32 = 5 bytes; int 0x82 = 2 bytes)
    a.raw(b"\xe3\x07" if a.bits == 64 else b"\xe3\x07")
    start = len(a.code)
    a.hypercall(int(number), "eax")
    if len(a.code) - start != 7:
        raise EmitError("deliver_if_pending: unexpected hypercall size")


def _push_return_address(a: _Asm, ret_va: int, bits: int) -> None:
    """Push ``ret_va`` without touching flags or registers (a displaced call's return address)."""
    signed = ret_va - (1 << 64) if ret_va >= 1 << 63 else ret_va
    if bits == 32 or -(1 << 31) <= signed < (1 << 31):
        a.raw(b"\x68" + struct.pack("<I", ret_va & 0xFFFFFFFF))  # push imm32 (sign-extended in 64-bit)
    else:  # push rax; mov rax, imm64; xchg [rsp], rax
        a.raw(b"\x50\x48\xb8" + struct.pack("<Q", ret_va) + b"\x48\x87\x04\x24")


def _indirect_call_as_jmp(a: _Asm, insn, raw: bytes, va: int, bits: int) -> bytes:
    """``call r/m`` (ff /2) re-encoded as ``jmp r/m`` (ff /4) at the current address, RIP operand kept."""
    k = 1 if bits == 64 and 0x40 <= raw[0] <= 0x4F else 0
    out = bytearray(raw)
    out[k + 1] = (raw[k + 1] & ~0x38) | (4 << 3)
    if bits == 64 and raw[k + 1] & 0xC7 == 0x05:  # [rip + disp32]
        target = va + len(raw) + struct.unpack_from("<i", raw, insn.disp_offset)[0]
        rel = target - (a.pc + len(out))
        if not -_REACH <= rel < _REACH:
            raise EmitError(f"replay of {raw.hex()} at {va:#x}: RIP target {target:#x} beyond rel32 reach")
        struct.pack_into("<i", out, insn.disp_offset, rel)
    return bytes(out)


def _replay(a: _Asm, step: Step, bits: int) -> None:
    va, raw, rip, branch = step.args
    if branch:
        insn = _decode_one(raw, va, bits)
        target = insn.operands[0].imm & ((1 << bits) - 1)  # Capstone gives high targets signed (unused for ff /2)
        if insn.mnemonic == "jmp":
            a.jmp_rel32(target)
        elif insn.mnemonic == "call":  # the callee must return to the original code after the call
            _push_return_address(a, va + len(raw), bits)
            if raw[0] == 0xE8:
                a.jmp_rel32(target)
            else:
                a.raw(_indirect_call_as_jmp(a, insn, raw, va, bits))
        else:
            cc = (raw[1] if raw[0] == 0x0F else raw[0]) & 0x0F
            rel = target - (a.pc + 6)
            if not -_REACH <= rel < _REACH:
                raise EmitError(f"replay of {raw.hex()} at {va:#x}: target beyond rel32 reach")
            a.raw(bytes([0x0F, 0x80 | cc]) + struct.pack("<i", rel))
        return
    if rip:
        insn = _decode_one(raw, va, bits)
        target = va + len(raw) + struct.unpack_from("<i", raw, insn.disp_offset)[0]
        rel = target - (a.pc + len(raw))
        if not -_REACH <= rel < _REACH:
            raise EmitError(f"replay of {raw.hex()} at {va:#x}: RIP target {target:#x} beyond rel32 reach")
        out = bytearray(raw)
        struct.pack_into("<i", out, insn.disp_offset, rel)
        a.raw(bytes(out))
        return
    a.raw(raw)


def _site_steps(a: _Asm, site: PlannedSite, steps: Sequence[Step]) -> None:
    insn = _decode_one(site.raw, site.va, site.bits)
    i = 0
    a.saved = []
    a.area_saved = []
    a.deferred_discard = 0
    if site.entry_name.startswith("pop."):  # pop sreg: the popped slot goes after the hypercall
        a.deferred_discard = _operand_size(insn, site.bits)
    while i < len(steps):
        st = steps[i]
        op = st.op
        if op is StepOp.SAVE:
            a.push(st.args[0])
            a.saved.append(st.args[0])
        elif op is StepOp.SAVE_AREA:
            a.save_area(st.args[0])
        elif op is StepOp.RESTORE:
            if not a.saved or a.saved[-1] != st.args[0]:
                raise EmitError(f"site {site.va:#x}: restore({st.args[0]}) out of order")
            a.pop(a.saved.pop())
        elif op is StepOp.LOAD_ARG:
            j = i
            while j < len(steps) and steps[j].op is StepOp.LOAD_ARG:
                j += 1
            _load_args(a, site, insn, steps[i:j])
            i = j
            continue
        elif op is StepOp.HYPERCALL:
            a.hypercall(int(st.args[0]), st.args[1])
        elif op is StepOp.STORE_SHARED:
            fld, value = st.args
            a.mem_ref(f"mov byte ptr {{m}}, {int(value)}", a.shared(int(fld)))
        elif op is StepOp.READ_SHARED:
            _read_shared(a, site, insn, st)
        elif op is StepOp.PUSH_FLAGS_VIRTUAL_IF:
            if a.saved:
                raise _Unsupported("pushf lowering inside saves")
            _push_flags(a, st)
        elif op is StepOp.POP_FLAGS_VIRTUAL_IF:
            _pop_flags(a, st)
        elif op is StepOp.DELIVER_IF_PENDING:
            _deliver(a, st)
        elif op is StepOp.REPLAY:   # the site itself runs here (a selector read)
            a.access_point()
            _replay(a, st, site.bits)
        else:
            raise _Unsupported(f"step {op.name} cannot be encoded in a site's own lowering")
        i += 1
    if a.saved:
        raise EmitError(f"site {site.va:#x}: saves without restores")
    a.area_saved = []   # the hypercall has put them back
    if a.deferred_discard:
        sp = "rsp" if a.bits == 64 else "esp"
        a.asm(f"lea {sp}, [{sp} + {a.deferred_discard:#x}]")
        a.deferred_discard = 0


def encode_site(site: PlannedSite, plan_sites: dict[int, PlannedSite], start_va: int, shared_va: int,
                if_table_va: int) -> tuple[bytes, tuple[HypercallPoint, ...], tuple[PcMapEntry, ...]]:
    """Machine code of ``site``'s trampoline at ``start_va``, its unwind records (every ``int 0x82``
    and access point) and its pc map."""
    a = _Asm(start_va, site.bits, site.va, shared_va, if_table_va)
    for d in site.displaced_before:  # the patch starts before the site: those run first
        a.mark(d.va, PcKind.REPLAY)
        _replay(a, Step(StepOp.REPLAY, (d.va, d.raw, d.needs_rip_relocation, d.needs_branch_relocation)),
                site.bits)
    a.mark(site.va, PcKind.SITE)
    _site_steps(a, site, site.steps)
    for d in site.displaced:
        if d.is_site:
            other = plan_sites[d.va]
            a.site_va = other.va
            a.mark(other.va, PcKind.SITE)
            _site_steps(a, other, other.steps)
            a.site_va = site.va
        else:
            a.mark(d.va, PcKind.REPLAY)
            _replay(a, Step(StepOp.REPLAY, (d.va, d.raw, d.needs_rip_relocation, d.needs_branch_relocation)),
                    site.bits)
    back = [s for s in site.sequence if s.op is StepOp.JUMP_BACK]
    if back:
        a.mark(back[-1].args[0], PcKind.BACK)
        a.jmp_rel32(back[-1].args[0])
    if a.depth:
        raise EmitError(f"site {site.va:#x}: trampoline leaves {a.depth} bytes on the stack")
    return bytes(a.code), tuple(a.hypercalls), tuple(a.pc_map)


# --------------------------------------------------------------------------- placement and writing


def _page_up(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


def _build_trampolines(plan: Plan, base_va: int, align: int):
    by_va = {s.va: s for s in plan.sites}
    shared_va = base_va
    if_table_va = base_va + _IF_TABLE_OFF
    blob = bytearray()
    placed: dict[int, tuple[int, bytes, tuple[int, ...]]] = {}
    for s in plan.sites:
        if s.tactic is not Tactic.TRAMPOLINE_JUMP or s.joined_to is not None:
            if s.tactic in (Tactic.IN_PLACE, Tactic.PUNNED_JUMP):
                raise EmitError(f"site {s.va:#x}: tactic {s.tactic.name} is not emitted yet; "
                                "hint: plan with allow_punned=False")
            continue
        while len(blob) % align:
            blob += INT3
        va = base_va + _TRAMPOLINES_OFF + len(blob)
        try:
            code, hcs, pc_map = encode_site(s, by_va, va, shared_va, if_table_va)
        except _Unsupported as exc:
            raise EmitError(f"site {s.va:#x} ({s.text}): cannot encode: {exc}") from exc
        placed[s.va] = (va, code, hcs, pc_map)
        blob += code
    return bytes(blob), placed


def _patch_bytes(s: PlannedSite, tramp_va: int | None) -> bytes:
    n = len(s.patch)
    if s.tactic is Tactic.TRAP:
        if s.trap is TrapKind.INT3:
            return INT3 * n
        return HYPERCALL_INSN + INT3 * (n - 2)
    rel = tramp_va - (s.patch.start_va + 5)
    if not -_REACH <= rel < _REACH:
        raise EmitError(f"site {s.va:#x}: trampoline {tramp_va:#x} beyond rel32 reach (±2 GiB); "
                        "hint: the new segment is too far from the code")
    return bytes([JMP_REL32]) + struct.pack("<i", rel) + INT3 * (n - 5)


def _site_table(records: Sequence[SiteRecord], plan: Plan) -> bytes:
    by_va = {s.va: s for s in plan.sites}
    hcs = [h for r in records for h in r.hypercalls]
    pcs = [e for r in records for e in r.pc_map]
    out = bytearray(SITE_TABLE_HEADER.pack(SITE_TABLE_MAGIC, len(records), len(hcs), len(pcs)))
    classes = list(type(plan.sites[0].cls)) if plan.sites else []
    for r in records:
        s = by_va[r.va]
        out += SITE_TABLE_ENTRY.pack(r.va, r.trampoline_va or 0, _TACTICS.index(r.tactic), len(r.raw),
                                     classes.index(s.cls), 0, r.raw[:16].ljust(16, b"\0"))
    for h in hcs:
        out += h.pack()
    for e in pcs:
        out += e.pack()
    return bytes(out)


def emit(image_path: str | os.PathLike, plan: Plan, options: EmitOptions = EmitOptions()) -> EmitResult:
    """Encode ``plan`` into ``image_path``'s bytes; write ``options.output_path`` atomically if given."""
    try:
        layout = elfwrite.read_layout(image_path)
    except elfwrite.ElfWriteError as exc:
        raise EmitError(str(exc)) from exc
    loads = layout.loads
    if not loads:
        raise EmitError(f"{image_path}: no PT_LOAD segment")
    # The new segment follows the highest loaded one, so it takes that one's vaddr->paddr offset
    # (a kernel may link one segment elsewhere, e.g. Linux's per-CPU data at virtual address 0).
    last = max(loads, key=lambda h: h.vaddr + h.memsz)
    pv_off = last.paddr - last.vaddr
    base_va = _page_up(max(h.vaddr + h.memsz for h in loads))

    tramp_blob, placed = _build_trampolines(plan, base_va, options.trampoline_align)
    records: list[SiteRecord] = []
    patches: list[tuple[int, bytes]] = []
    for s in plan.sites:
        tramp = placed.get(s.va)
        if s.patch is not None:
            pb = _patch_bytes(s, tramp[0] if tramp else None)
            patches.append((s.patch.start_va, pb))
        else:
            pb = b""
        hcs = tramp[2] if tramp else ((HypercallPoint(s.va, s.va),)
                                      if s.tactic is Tactic.TRAP and s.trap is TrapKind.INT_0X82 else ())
        records.append(SiteRecord(
            va=s.va, raw=s.raw, lowering=s.lowering.name, tactic=s.tactic,
            trampoline_va=tramp[0] if tramp else (placed[s.joined_to][0] if s.joined_to in placed else None),
            patch_bytes=pb, patch_range=(s.patch.start_va, s.patch.end_va) if s.patch else None,
            trampoline_range=(tramp[0], tramp[0] + len(tramp[1])) if tramp else None, hypercalls=hcs,
            pc_map=tramp[3] if tramp else ()))
    table_off = (_TRAMPOLINES_OFF + len(tramp_blob) + 15) & ~15
    site_table = _site_table(records, plan)
    site_table_va = base_va + table_off
    content = bytearray(_TRAMPOLINES_OFF + len(tramp_blob))
    content[_IF_TABLE_OFF:_IF_TABLE_OFF + 256] = bytes(b & ~2 for b in range(256))
    content[_TRAMPOLINES_OFF:] = tramp_blob
    content = bytes(content.ljust(table_off, b"\0") + site_table)
    note = pack_note(AbiDescriptor(ABI_VERSION, GuestVa(base_va), GuestVa(site_table_va), len(records)))
    _check_placement(layout, base_va, pv_off, elfwrite.segment_size(layout, len(content)))

    def fill(out) -> None:
        try:
            size = elfwrite.render(image_path, out, layout, patches, base_va, base_va + pv_off, content, note)
        except elfwrite.ElfWriteError as exc:
            raise EmitError(str(exc)) from exc
        _verify(out, image_path, layout, patches, base_va, pv_off, size)

    output = None
    if options.output_path is not None:
        elfwrite.write_atomically(options.output_path, fill)
    else:
        buf = io.BytesIO()
        fill(buf)
        output = buf.getvalue()
    area = TrampolineArea(base_va + _TRAMPOLINES_OFF, len(tramp_blob), Where.NEW_SEGMENT, base_va + pv_off)
    return EmitResult(area=area, shared_page_va=base_va, site_table_va=site_table_va,
                      site_table_size=len(site_table), note=note, sites=tuple(records),
                      input_size=os.path.getsize(image_path), output_path=options.output_path, kept=output)


def _check_placement(layout: elfwrite.ElfLayout, base_va: int, pv_off: int, size: int) -> None:
    """The new segment's virtual and physical ranges exist in the ELF's class."""
    bits = 64 if layout.is64 else 32
    if base_va + size > 1 << bits:
        raise EmitError(f"no room for the new segment: the highest segment ends at {base_va:#x}, and "
                        f"{size:#x} more bytes pass the {bits}-bit address space; hint: link the kernel lower")
    if not 0 <= base_va + pv_off <= (1 << bits) - size:
        raise EmitError(f"the new segment at {base_va:#x} would get physical address {base_va + pv_off:#x}, "
                        f"outside the {bits}-bit address space (it follows the highest segment's offset "
                        f"p_paddr - p_vaddr = {pv_off:#x}); hint: check that segment's p_paddr")


_CHUNK = 1 << 20


def _verify(out, src: str | os.PathLike, layout: elfwrite.ElfLayout, patches, base_va: int, pv_off: int,
            size: int) -> None:
    """The written output keeps every input byte outside the patches and the two header fields the
    writer owns, keeps the input's program headers, and maps the new segment where planned."""
    after = elfwrite.read_layout(out)
    old = [h for h in layout.headers if h.type != elfwrite.PT_PHDR]
    kept = [h for h in after.headers[:len(layout.headers)] if h.type != elfwrite.PT_PHDR]
    new = after.headers[len(layout.headers):]
    if kept != old:
        raise EmitError("the output's program headers do not start with the input's")
    if (len(new) != 2 or new[0].type != elfwrite.PT_LOAD or new[0].vaddr != base_va
            or new[0].paddr != base_va + pv_off or new[1].type != elfwrite.PT_NOTE):
        raise EmitError("the new segment is missing or has a wrong address")
    owned = [(0x20, 8), (0x38, 2)] if layout.is64 else [(0x1C, 4), (0x2C, 2)]   # e_phoff, e_phnum
    edits = sorted([(off, off + n) for off, n in owned]
                   + [(off, off + len(pb)) for off, pb in
                      ((layout.file_offset(va, len(pb)), pb) for va, pb in patches)])
    input_size = os.path.getsize(src)
    out.seek(0)
    with open(src, "rb") as fh:
        pos, k = 0, 0
        while pos < input_size:
            a = fh.read(_CHUNK)
            b = out.read(len(a))
            if len(b) != len(a):
                raise EmitError("the output is shorter than the input")
            if a != b:
                b = bytearray(b)
                while k < len(edits) and edits[k][1] <= pos:
                    k += 1
                j = k
                while j < len(edits) and edits[j][0] < pos + len(a):
                    lo, hi = max(edits[j][0], pos) - pos, min(edits[j][1], pos + len(a)) - pos
                    b[lo:hi] = a[lo:hi]
                    j += 1
                if a != b:
                    first = pos + next(i for i in range(len(a)) if a[i] != b[i])
                    raise EmitError(f"the output differs from the input at file offset {first:#x}, "
                                    "outside the patches")
            pos += len(a)
    if out.seek(0, os.SEEK_END) != size:
        raise EmitError("the output's size is not what was written")

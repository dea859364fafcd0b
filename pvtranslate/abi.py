"""The PV ABI between a translated guest and the VMM: version, hypercalls, registers, shared page, ELF note.

Standard library only. The VMM imports this module; this module imports nothing from the VMM,
Capstone, Keystone, LIEF or Unicorn. Everything here is versioned by ``ABI_VERSION``: a change to
any number, offset or layout below is a new version, and ``unpack_note`` refuses versions it does
not know.

Contract summary (see ../shared/DESIGN.md, "Contracts"):

- Transfer: ``int 0x82`` (``cd 82``), and only at an address the translator recorded in the site
  table; any other ``int n`` is the guest's own and goes through its IDT.
- Hypercall number in eax/rax, arguments and results in the registers of ``REGISTERS_32`` /
  ``REGISTERS_64``; every other register and every flag is preserved unless the hypercall's
  ``HypercallSpec.results`` names it. A trampoline that keeps the guest's registers in the shared
  page's save area (``SharedOffset.SAVE_AREA``, recorded per ``int 0x82``) has them put back by
  the VMM as part of the hypercall: the guest's own values, with the instruction's results (a
  narrow one, in al/ax, merged into the register) in the registers the original writes.
- Shared page (one 4 KiB page, guest-physical and guest-virtual address given by the note): the
  virtual CPU state the guest reads or writes without an exit. Layout: ``SHARED_PAGE_FIELDS``.
- ELF note: name ``"PVTR"``, type ``NoteType.ABI``, descriptor ``AbiDescriptor``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, NewType

from pvtranslate import PvTranslateError

__all__ = [
    "ABI_VERSION",
    "SUPPORTED_ABI_VERSIONS",
    "HYPERCALL_VECTOR",
    "HYPERCALL_INSN",
    "AbiError",
    "UnknownAbiVersion",
    "MalformedNote",
    "Hypercall",
    "HypercallSpec",
    "HYPERCALL_SPECS",
    "RegisterConvention",
    "REGISTERS_32",
    "REGISTERS_64",
    "SHARED_PAGE_SIZE",
    "SharedField",
    "SharedOffset",
    "SHARED_PAGE_FIELDS",
    "SHARED_PAGE_MAGIC",
    "SREG_SHADOW_ORDER",
    "pack_string_flags",
    "unpack_string_flags",
    "STRING_ADDR32",
    "STRING_ADDR16",
    "STRING_SEGMENT_SHIFT",
    "MSW_OFFSET",
    "sreg_shadow_offset",
    "DescriptorQuery",
    "GuestVa",
    "NOTE_NAME",
    "NoteType",
    "AbiDescriptor",
    "pack_descriptor",
    "unpack_descriptor",
    "pack_note",
    "unpack_note",
    "SITE_TABLE_MAGIC",
    "SITE_TABLE_HEADER",
    "SITE_TABLE_ENTRY",
    "HYPERCALL_ENTRY",
    "HypercallPoint",
    "PC_MAP_ENTRY",
    "PcKind",
    "PcMapEntry",
    "UNWIND_REGISTERS",
    "UNWIND_ACCESS",
    "UNWIND_SAVE_AREA",
    "unwind_index",
    "SiteEntry",
    "SiteTable",
    "site_table_size",
    "parse_site_table",
]

GuestVa = NewType("GuestVa", int)
"""A guest-virtual address (as the translated kernel sees it)."""

ABI_VERSION = 2  # 2: unwind records (saved registers at each int 0x82 and guest-memory access), pc map
SUPPORTED_ABI_VERSIONS: tuple[int, ...] = (2,)


class AbiError(PvTranslateError):
    """Root of ABI errors (bad note, unknown version)."""


class UnknownAbiVersion(AbiError):
    """A PV note declares an ABI version this build does not implement."""


class MalformedNote(AbiError):
    """A PV note or descriptor is truncated or inconsistent."""


# --------------------------------------------------------------------------- transfer

HYPERCALL_VECTOR = 0x82
"""``int 0x82``: Xen's 32-bit PV vector; Unicorn delivers it to UC_HOOK_INTR (~0.5 us)."""

HYPERCALL_INSN = bytes((0xCD, HYPERCALL_VECTOR))
"""The 2-byte transfer instruction. Only at a recorded site is it a hypercall."""


# --------------------------------------------------------------------------- hypercalls


class Hypercall(enum.IntEnum):
    """Hypercall numbers (value in eax/rax). One per privileged operation family.

    Numbers are ABI: never renumber within a version; 0 is reserved so a zeroed eax is no call.
    """

    # port I/O (class "port I/O, halt")
    PORT_IN8 = 1
    PORT_IN16 = 2
    PORT_IN32 = 3
    PORT_OUT8 = 4
    PORT_OUT16 = 5
    PORT_OUT32 = 6
    # string I/O: one call for a whole rep ins/outs (or a single element without rep)
    STRING_IN = 7
    STRING_OUT = 8
    HALT = 9
    # interrupt flag: sti / popf / iret that enabled IF while events_pending was set
    DELIVER_PENDING = 10
    # descriptor tables and task register
    LOAD_GDT = 11
    LOAD_IDT = 12
    LOAD_LDT = 13
    LOAD_TR = 14
    # control and debug registers
    WRITE_CR = 15
    LMSW = 16
    CLTS = 17
    WRITE_DR = 18
    # model-specific and extended registers
    RDMSR = 19
    WRMSR = 20
    XSETBV = 21
    XGETBV = 22
    RDPMC = 23
    # TLB and caches
    INVLPG = 24
    INVPCID = 25
    WBINVD = 26
    INVD = 27
    # segments
    SWAPGS = 28
    LOAD_SEGMENT = 29
    DESCRIPTOR_QUERY = 30  # lar / lsl / verr / verw
    # identification and time
    CPUID = 31
    RDTSC = 32
    RDTSCP = 33
    # idle
    MONITOR = 34
    MWAIT = 35
    # returns that change privilege or IF
    IRET = 36
    SYSRET = 37
    SYSEXIT = 38
    # EFLAGS.AC (SMAP)
    SET_AC = 39
    # rare forms whose faults depend on state no inline lowering sees (mov from dr4/dr5): the VMM
    # runs the original instruction on the guest's own registers, at the site's address
    EMULATE = 40


class DescriptorQuery(enum.IntEnum):
    """First argument of ``Hypercall.DESCRIPTOR_QUERY``."""

    LAR = 0
    LSL = 1
    VERR = 2
    VERW = 3


@dataclass(frozen=True)
class HypercallSpec:
    """What a hypercall takes and gives, by meaning; registers come from the RegisterConvention.

    ``args[i]`` travels in ``arg_regs[i]``; ``results[i]`` comes back in ``result_regs[i]``.
    ``sets_zf``: the VMM sets ZF in the guest's flags (lar/lsl/verr/verw); no other flag changes.
    """

    number: Hypercall
    args: tuple[str, ...]
    results: tuple[str, ...]
    sets_zf: bool = False


_H = Hypercall
_SPECS: tuple[HypercallSpec, ...] = (
    HypercallSpec(_H.PORT_IN8, ("port",), ("value",)),
    HypercallSpec(_H.PORT_IN16, ("port",), ("value",)),
    HypercallSpec(_H.PORT_IN32, ("port",), ("value",)),
    HypercallSpec(_H.PORT_OUT8, ("port", "value"), ()),
    HypercallSpec(_H.PORT_OUT16, ("port", "value"), ()),
    HypercallSpec(_H.PORT_OUT32, ("port", "value"), ()),
    # element_size 1/2/4; count: the full (e/r)cx for a rep form, 1 without; buffer_va: the full
    # (e/r)di for ins, (e/r)si for outs, an offset in the segment ``flags`` names; flags: address
    # size and that segment (``pack_string_flags``); DF is read from the guest's flags. The VMM
    # advances the index and count registers itself, exactly as the instruction would (only their
    # low 16 or 32 bits under a smaller address size).
    HypercallSpec(_H.STRING_IN, ("port", "element_size", "count", "buffer_va", "flags"), ()),
    HypercallSpec(_H.STRING_OUT, ("port", "element_size", "count", "buffer_va", "flags"), ()),
    HypercallSpec(_H.HALT, (), ()),
    HypercallSpec(_H.DELIVER_PENDING, (), ()),
    # operand_size 2/4/8: a 16-bit lgdt/lidt loads a 24-bit base
    HypercallSpec(_H.LOAD_GDT, ("pseudo_descriptor_va", "operand_size"), ()),
    HypercallSpec(_H.LOAD_IDT, ("pseudo_descriptor_va", "operand_size"), ()),
    HypercallSpec(_H.LOAD_LDT, ("selector",), ()),
    HypercallSpec(_H.LOAD_TR, ("selector",), ()),
    HypercallSpec(_H.WRITE_CR, ("cr_index", "value"), ()),
    HypercallSpec(_H.LMSW, ("value",), ()),
    HypercallSpec(_H.CLTS, (), ()),
    HypercallSpec(_H.WRITE_DR, ("dr_index", "value"), ()),
    HypercallSpec(_H.RDMSR, ("msr",), ("low", "high")),
    HypercallSpec(_H.WRMSR, ("msr", "low", "high"), ()),
    HypercallSpec(_H.XSETBV, ("xcr", "low", "high"), ()),
    HypercallSpec(_H.XGETBV, ("xcr",), ("low", "high")),
    HypercallSpec(_H.RDPMC, ("counter",), ("low", "high")),
    HypercallSpec(_H.INVLPG, ("va",), ()),
    HypercallSpec(_H.INVPCID, ("type", "descriptor_va"), ()),
    HypercallSpec(_H.WBINVD, (), ()),
    HypercallSpec(_H.INVD, (), ()),
    HypercallSpec(_H.SWAPGS, (), ()),
    # sreg_index in SREG_SHADOW_ORDER
    HypercallSpec(_H.LOAD_SEGMENT, ("sreg_index", "selector"), ()),
    HypercallSpec(_H.DESCRIPTOR_QUERY, ("query", "selector"), ("value", "valid"), sets_zf=True),
    HypercallSpec(_H.CPUID, ("leaf", "subleaf"), ("eax", "edx", "ebx", "ecx")),
    HypercallSpec(_H.RDTSC, (), ("low", "high")),
    HypercallSpec(_H.RDTSCP, (), ("low", "high", "aux")),
    HypercallSpec(_H.MONITOR, ("va", "extensions", "hints"), ()),
    HypercallSpec(_H.MWAIT, ("hints", "extensions"), ()),
    # frame_va: the guest's stack pointer at the iret; operand_size 2/4/8
    HypercallSpec(_H.IRET, ("frame_va", "operand_size"), ()),
    HypercallSpec(_H.SYSRET, ("operand_size",), ()),
    HypercallSpec(_H.SYSEXIT, ("operand_size",), ()),
    HypercallSpec(_H.SET_AC, ("ac",), ()),
    HypercallSpec(_H.EMULATE, (), ()),
)


SREG_SHADOW_ORDER: tuple[str, ...] = ("es", "cs", "ss", "ds", "fs", "gs")
"""Segment registers in hardware encoding order (the ModRM ``sreg`` field): index for LOAD_SEGMENT."""

STRING_ADDR32 = 1 << 1
STRING_ADDR16 = 1 << 2
STRING_SEGMENT_SHIFT = 3  # bits 3-5: index in SREG_SHADOW_ORDER (ins: es; outs: ds or its override)


def pack_string_flags(address_bits: int, segment: str) -> int:
    """The ``flags`` argument of STRING_IN / STRING_OUT: address size (16/32/64) and buffer segment."""
    size = {64: 0, 32: STRING_ADDR32, 16: STRING_ADDR16}.get(address_bits)
    if size is None or segment not in SREG_SHADOW_ORDER:
        raise AbiError(f"string I/O: no flags for {address_bits}-bit addressing through {segment!r}")
    return size | SREG_SHADOW_ORDER.index(segment) << STRING_SEGMENT_SHIFT


def unpack_string_flags(flags: int) -> tuple[int, str]:
    """Inverse of ``pack_string_flags``: (address bits, segment name); AbiError for a bad value."""
    index = flags >> STRING_SEGMENT_SHIFT
    if flags & 1 or flags & STRING_ADDR32 and flags & STRING_ADDR16 or index >= len(SREG_SHADOW_ORDER):
        raise AbiError(f"string I/O flags {flags:#x} are not a valid pack_string_flags value")
    bits = 16 if flags & STRING_ADDR16 else 32 if flags & STRING_ADDR32 else 64
    return bits, SREG_SHADOW_ORDER[index]


def _index_specs(specs: tuple[HypercallSpec, ...]) -> Mapping[Hypercall, HypercallSpec]:
    table: dict[Hypercall, HypercallSpec] = {}
    for spec in specs:
        if spec.number in table:
            raise AbiError(f"hypercall {spec.number.name} specified twice")
        table[spec.number] = spec
    missing = [h.name for h in Hypercall if h not in table]
    if missing:
        raise AbiError(f"hypercalls without a spec: {', '.join(missing)}")
    return MappingProxyType(table)


HYPERCALL_SPECS: Mapping[Hypercall, HypercallSpec] = _index_specs(_SPECS)


@dataclass(frozen=True)
class RegisterConvention:
    """Which registers carry the number, the arguments and the results, for one guest mode."""

    mode_bits: int
    number_reg: str
    arg_regs: tuple[str, ...]
    result_regs: tuple[str, ...]


# Xen's argument registers (x86_32: ebx ecx edx esi edi; x86_64: rdi rsi rdx r10 r8). Results
# eax, edx, ebx, ecx: that order makes rdmsr/rdtsc/rdpmc/xgetbv (edx:eax) and cpuid land in the
# registers the native instruction writes.
REGISTERS_32 = RegisterConvention(
    mode_bits=32,
    number_reg="eax",
    arg_regs=("ebx", "ecx", "edx", "esi", "edi"),
    result_regs=("eax", "edx", "ebx", "ecx"),
)
REGISTERS_64 = RegisterConvention(
    mode_bits=64,
    number_reg="rax",
    arg_regs=("rdi", "rsi", "rdx", "r10", "r8"),
    result_regs=("rax", "rdx", "rbx", "rcx"),
)

for _spec in _SPECS:
    for _conv in (REGISTERS_32, REGISTERS_64):
        if len(_spec.args) > len(_conv.arg_regs) or len(_spec.results) > len(_conv.result_regs):
            raise AbiError(f"hypercall {_spec.number.name} does not fit the {_conv.mode_bits}-bit convention")


# --------------------------------------------------------------------------- shared page

SHARED_PAGE_SIZE = 4096
SHARED_PAGE_MAGIC = b"PVSP"


class SharedOffset(enum.IntEnum):
    """Byte offsets of shared-page fields (little-endian). Sizes are in ``SHARED_PAGE_FIELDS``."""

    MAGIC = 0x000  # b"PVSP", written by the VMM when it maps the page
    ABI_VERSION = 0x004  # u32, written by the VMM
    VIRTUAL_IF = 0x008  # u8: 1 = virtual interrupts enabled; cli/sti/popf write it inline
    EVENTS_PENDING = 0x009  # u8: 1 = the VMM holds an interrupt for the guest
    EVENT_COUNTER = 0x010  # u64: sensitive operations done inline (virtual time advances on it)
    VIRTUAL_TIME = 0x018  # u64: VMM virtual time, ns
    GDTR = 0x020  # 10 bytes as sgdt stores them: limit u16 then base u64 (32-bit reads 6)
    IDTR = 0x030  # 10 bytes, same layout
    LDTR = 0x040  # u16 selector
    TR = 0x042  # u16 selector
    SREGS = 0x044  # 6 x u16 selectors in SREG_SHADOW_ORDER
    CR0 = 0x058  # u64; smsw reads its low 16 bits (the MSW), so there is no separate MSW field
    CR2 = 0x060
    CR3 = 0x068
    CR4 = 0x070
    CR8 = 0x078
    DR0 = 0x080  # DR0..DR7, u64 each
    DR1 = 0x088
    DR2 = 0x090
    DR3 = 0x098
    DR4 = 0x0A0
    DR5 = 0x0A8
    DR6 = 0x0B0
    DR7 = 0x0B8
    SAVE_AREA = 0x100  # 16 x u64 in UNWIND_REGISTERS order: registers a trampoline set aside (no stack)


MSW_OFFSET = SharedOffset.CR0
"""smsw reads 16 bits (or the low 32/64 with a register destination) at the CR0 shadow."""


@dataclass(frozen=True)
class SharedField:
    """One named field of the shared page."""

    offset: SharedOffset
    size: int

    @property
    def name(self) -> str:
        return self.offset.name

    @property
    def end(self) -> int:
        return int(self.offset) + self.size


_S = SharedOffset
SHARED_PAGE_FIELDS: tuple[SharedField, ...] = (
    SharedField(_S.MAGIC, 4),
    SharedField(_S.ABI_VERSION, 4),
    SharedField(_S.VIRTUAL_IF, 1),
    SharedField(_S.EVENTS_PENDING, 1),
    SharedField(_S.EVENT_COUNTER, 8),
    SharedField(_S.VIRTUAL_TIME, 8),
    SharedField(_S.GDTR, 10),
    SharedField(_S.IDTR, 10),
    SharedField(_S.LDTR, 2),
    SharedField(_S.TR, 2),
    SharedField(_S.SREGS, 2 * len(SREG_SHADOW_ORDER)),
    SharedField(_S.CR0, 8),
    SharedField(_S.CR2, 8),
    SharedField(_S.CR3, 8),
    SharedField(_S.CR4, 8),
    SharedField(_S.CR8, 8),
    *(SharedField(SharedOffset[f"DR{n}"], 8) for n in range(8)),
    SharedField(_S.SAVE_AREA, 8 * 16),
)


def _check_layout(fields: tuple[SharedField, ...]) -> None:
    if {f.offset for f in fields} != set(SharedOffset):
        raise AbiError("every SharedOffset needs exactly one SharedField")
    ordered = sorted(fields, key=lambda f: int(f.offset))
    for before, after in zip(ordered, ordered[1:]):
        if before.end > int(after.offset):
            raise AbiError(f"shared-page fields {before.name} and {after.name} overlap")
    if ordered[-1].end > SHARED_PAGE_SIZE:
        raise AbiError(f"shared-page field {ordered[-1].name} runs past the page")


_check_layout(SHARED_PAGE_FIELDS)


def sreg_shadow_offset(sreg: str) -> int:
    """Offset of a segment selector shadow, e.g. ``sreg_shadow_offset("ds")``."""
    return int(SharedOffset.SREGS) + 2 * SREG_SHADOW_ORDER.index(sreg)


# --------------------------------------------------------------------------- ELF note

NOTE_NAME = b"PVTR"


class NoteType(enum.IntEnum):
    """ELF note types under the name "PVTR"."""

    ABI = 1  # descriptor: AbiDescriptor


@dataclass(frozen=True)
class AbiDescriptor:
    """Descriptor of the PVTR/ABI note: what the VMM needs to run a translated guest."""

    abi_version: int
    shared_page_va: GuestVa
    site_table_va: GuestVa
    site_count: int
    flags: int = 0


# Version 2 (as 1): u32 abi_version, u32 flags, u64 shared_page_va, u64 site_table_va, u32 site_count,
# u32 reserved (0). Every layout starts with the u32 version so any version can be recognised.
_VERSION_PREFIX = struct.Struct("<I")
_DESCRIPTOR_LAYOUTS: Mapping[int, struct.Struct] = MappingProxyType({2: struct.Struct("<IIQQII")})
if set(_DESCRIPTOR_LAYOUTS) != set(SUPPORTED_ABI_VERSIONS):
    raise AbiError("every supported ABI version needs a descriptor layout")

_NOTE_HEADER = struct.Struct("<III")  # namesz, descsz, type (same in ELF32 and ELF64)


def _unknown_version(version: int) -> UnknownAbiVersion:
    known = ", ".join(str(v) for v in SUPPORTED_ABI_VERSIONS)
    return UnknownAbiVersion(
        f"PV note declares ABI version {version}, but this build understands only version(s) {known}; "
        f"hint: re-translate the guest with a pvtranslate of the same release as this VMM"
    )


def pack_descriptor(desc: AbiDescriptor) -> bytes:
    """Bytes of the PVTR/ABI note descriptor for ``desc.abi_version``."""
    layout = _DESCRIPTOR_LAYOUTS.get(desc.abi_version)
    if layout is None:
        raise _unknown_version(desc.abi_version)
    try:
        return layout.pack(desc.abi_version, desc.flags, desc.shared_page_va, desc.site_table_va, desc.site_count, 0)
    except struct.error as exc:
        raise MalformedNote(f"descriptor field out of range: {desc}") from exc


def unpack_descriptor(data: bytes) -> AbiDescriptor:
    """Inverse of ``pack_descriptor``; raises UnknownAbiVersion or MalformedNote."""
    if len(data) < _VERSION_PREFIX.size:
        raise MalformedNote(f"PV note descriptor is {len(data)} bytes, too short to hold an ABI version")
    (version,) = _VERSION_PREFIX.unpack_from(data)
    layout = _DESCRIPTOR_LAYOUTS.get(version)
    if layout is None:
        raise _unknown_version(version)
    if len(data) != layout.size:
        raise MalformedNote(f"PV note descriptor for ABI version {version} is {len(data)} bytes, expected {layout.size}")
    version, flags, shared_page_va, site_table_va, site_count, _reserved = layout.unpack(data)
    return AbiDescriptor(version, GuestVa(shared_page_va), GuestVa(site_table_va), site_count, flags)


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def pack_note(desc: AbiDescriptor) -> bytes:
    """One complete ELF note record (header, "PVTR\\0", descriptor), 4-byte aligned."""
    name = NOTE_NAME + b"\0"
    body = pack_descriptor(desc)
    return (
        _NOTE_HEADER.pack(len(name), len(body), NoteType.ABI)
        + name.ljust(_pad4(len(name)), b"\0")
        + body.ljust(_pad4(len(body)), b"\0")
    )


def unpack_note(data: bytes) -> AbiDescriptor:
    """Parse one ELF note record produced by ``pack_note``; raises MalformedNote or UnknownAbiVersion."""
    if len(data) < _NOTE_HEADER.size:
        raise MalformedNote(f"PV note is {len(data)} bytes, shorter than a note header")
    namesz, descsz, note_type = _NOTE_HEADER.unpack_from(data)
    name_off = _NOTE_HEADER.size
    desc_off = name_off + _pad4(namesz)
    if desc_off + descsz > len(data):
        raise MalformedNote(f"PV note claims name {namesz} and descriptor {descsz} bytes but has {len(data)}")
    name = data[name_off : name_off + namesz].rstrip(b"\0")
    if name != NOTE_NAME:
        raise MalformedNote(f"note name is {name!r}, expected {NOTE_NAME!r}")
    if note_type != NoteType.ABI:
        raise MalformedNote(f"PVTR note type {note_type} is not the ABI note ({int(NoteType.ABI)})")
    return unpack_descriptor(data[desc_off : desc_off + descsz])


# --------------------------------------------------------------------------- site table

SITE_TABLE_MAGIC = b"PVST"

# Site table (little-endian), at the note's ``site_table_va``: header magic "PVST", u32 entry
# count, u32 unwind-record count, u32 pc-map count; entries: u64 site_va, u64 trampoline_va (0 for
# traps), u8 tactic index (in pvtranslate.plan.Tactic order), u8 original size, u16 lowering class
# index, u32 reserved, 16 bytes original bytes; then the unwind records, one per ``int 0x82`` and
# one per instruction of a lowering that accesses guest memory (an *access point*): u64 address,
# u64 owning site_va, u8 ``n | UNWIND_ACCESS | UNWIND_SAVE_AREA`` and n (<= 15) ``UNWIND_REGISTERS``
# indexes (15 bytes): the registers the trampoline has set aside there, pushed on the stack in
# that order (nothing else is on the stack there) or, with UNWIND_SAVE_AREA, stored in the shared
# page's save area. A fault raised there (by the hypercall, or by the access) is delivered at the
# site after popping or reloading them (``HypercallPoint``). Then the pc map: per
# guest-instruction boundary inside a trampoline, u64 trampoline address, u64 original address,
# u32 ``PcKind``: where each lowered site and each displaced instruction starts, and the final jump
# back. A fault inside a REPLAY range is the displaced instruction's own, at its original address.
SITE_TABLE_HEADER = struct.Struct("<4sIII")
SITE_TABLE_ENTRY = struct.Struct("<QQBBHI16s")
HYPERCALL_ENTRY = struct.Struct("<QQB15s")
PC_MAP_ENTRY = struct.Struct("<QQI")


class PcKind(enum.IntEnum):
    """What starts at a pc-map boundary of a trampoline."""

    SITE = 0     # the lowering of the site at the original address
    REPLAY = 1   # a displaced instruction, replayed
    BACK = 2     # the jump back to the original code


@dataclass(frozen=True)
class PcMapEntry:
    trampoline_va: int
    original_va: int
    kind: PcKind

    def pack(self) -> bytes:
        return PC_MAP_ENTRY.pack(self.trampoline_va, self.original_va, int(self.kind))
UNWIND_REGISTERS: tuple[str, ...] = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
"""Register indexes of the unwind records, hardware order (a 32-bit ``eax`` is ``rax``)."""


def unwind_index(reg: str) -> int:
    """Index in ``UNWIND_REGISTERS`` of a full-width register name (rax or eax, r8 ...)."""
    name = "r" + reg[1:] if reg.startswith("e") else reg
    try:
        return UNWIND_REGISTERS.index(name)
    except ValueError:
        raise AbiError(f"{reg!r} is not a general register an unwind record can name") from None


UNWIND_ACCESS = 0x40     # the record is an access point, not an ``int 0x82``
UNWIND_SAVE_AREA = 0x80  # the registers are in the shared page's save area, not on the stack
_UNWIND_COUNT = 0x0F


@dataclass(frozen=True)
class HypercallPoint:
    """One unwind record: a recorded ``int 0x82`` (or, ``access``, a lowering's guest-memory access),
    its owning site, and the registers the trampoline has set aside there."""

    va: int
    site_va: int
    saved: tuple[str, ...] = ()  # ``UNWIND_REGISTERS`` names; on the stack: push order (the last on top)
    in_save_area: bool = False   # saved in ``SharedOffset.SAVE_AREA``, not pushed
    access: bool = False         # an access point: no hypercall

    def pack(self) -> bytes:
        if len(self.saved) > _UNWIND_COUNT:
            raise AbiError(f"unwind record at {self.va:#x}: {len(self.saved)} saved registers, at most 15 fit")
        codes = bytes(unwind_index(r) for r in self.saved)
        flags = (UNWIND_ACCESS if self.access else 0) | (UNWIND_SAVE_AREA if self.in_save_area else 0)
        return HYPERCALL_ENTRY.pack(self.va, self.site_va, len(codes) | flags, codes.ljust(15, b"\0"))

    @property
    def pushed(self) -> tuple[str, ...]:
        """The registers on the stack above the site's stack pointer (push order)."""
        return () if self.in_save_area else self.saved


@dataclass(frozen=True)
class SiteEntry:
    """One translated site: where it is, where its trampoline is (0: a trap), its original bytes."""

    site_va: int
    trampoline_va: int
    tactic_index: int
    class_index: int
    original: bytes

    @property
    def is_trap(self) -> bool:
        return self.trampoline_va == 0


@dataclass(frozen=True)
class SiteTable:
    """The parsed site table: sites by address and every recorded ``int 0x82`` address -> owning site."""

    sites: Mapping[int, SiteEntry]
    hypercalls: Mapping[int, int]
    unwind: Mapping[int, tuple[str, ...]]  # int 0x82 address -> registers pushed there, push order
    pc_map: tuple[PcMapEntry, ...] = ()     # sorted by trampoline address
    points: Mapping[int, HypercallPoint] = field(default_factory=lambda: MappingProxyType({}))  # by address


def site_table_size(header: bytes) -> int:
    """Total size in bytes of a site table, from its first ``SITE_TABLE_HEADER.size`` bytes."""
    if len(header) < SITE_TABLE_HEADER.size:
        raise MalformedNote(f"site table header is {len(header)} bytes, expected {SITE_TABLE_HEADER.size}")
    magic, count, n_hc, n_pc = SITE_TABLE_HEADER.unpack_from(header)
    if magic != SITE_TABLE_MAGIC:
        raise MalformedNote(f"site table magic is {magic!r}, expected {SITE_TABLE_MAGIC!r}")
    return (SITE_TABLE_HEADER.size + count * SITE_TABLE_ENTRY.size + n_hc * HYPERCALL_ENTRY.size
            + n_pc * PC_MAP_ENTRY.size)


def parse_site_table(data: bytes) -> SiteTable:
    """Parse a whole site table (``site_table_size`` bytes or more); raises MalformedNote."""
    size = site_table_size(data[:SITE_TABLE_HEADER.size])
    if len(data) < size:
        raise MalformedNote(f"site table is {len(data)} bytes, its header claims {size}")
    _magic, count, n_hc, n_pc = SITE_TABLE_HEADER.unpack_from(data)
    off = SITE_TABLE_HEADER.size
    sites: dict[int, SiteEntry] = {}
    for _ in range(count):
        va, tramp, tactic, n, cls, _r, raw = SITE_TABLE_ENTRY.unpack_from(data, off)
        sites[va] = SiteEntry(va, tramp, tactic, cls, raw[:n])
        off += SITE_TABLE_ENTRY.size
    hypercalls: dict[int, int] = {}
    unwind: dict[int, tuple[str, ...]] = {}
    points: dict[int, HypercallPoint] = {}
    for _ in range(n_hc):
        va, site_va, flags, codes = HYPERCALL_ENTRY.unpack_from(data, off)
        n_saved = flags & _UNWIND_COUNT
        if flags & 0x30 or any(c >= len(UNWIND_REGISTERS) for c in codes[:n_saved]) or va in points:
            raise MalformedNote(f"unwind record at {va:#x}: bad unwind data")
        point = HypercallPoint(va, site_va, tuple(UNWIND_REGISTERS[c] for c in codes[:n_saved]),
                               bool(flags & UNWIND_SAVE_AREA), bool(flags & UNWIND_ACCESS))
        points[va] = point
        if not point.access:
            hypercalls[va] = site_va
            unwind[va] = point.pushed
        off += HYPERCALL_ENTRY.size
    pc_map = []
    for _ in range(n_pc):
        tramp, orig, kind = PC_MAP_ENTRY.unpack_from(data, off)
        if kind not in PcKind._value2member_map_:
            raise MalformedNote(f"pc map entry at {tramp:#x}: unknown kind {kind}")
        pc_map.append(PcMapEntry(tramp, orig, PcKind(kind)))
        off += PC_MAP_ENTRY.size
    return SiteTable(MappingProxyType(sites), MappingProxyType(hypercalls), MappingProxyType(unwind),
                     tuple(sorted(pc_map, key=lambda e: e.trampoline_va)), MappingProxyType(points))

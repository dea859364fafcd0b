"""The catalog: one data table of every sensitive x86 instruction, its class, privilege and PV lowering.

Identity is the Capstone instruction id (``capstone.x86_const.X86_INS_*``) plus, where the lowering
differs between operand forms, a ``Form`` and an ``operand`` selector (port width, control/debug
register, segment register). ``classify`` takes an instruction decoded *with detail* and looks it up.

Privilege is the catalog's own judgement, never Capstone's ``privilege`` group (which misses
rdmsr, in, out, cpuid, rdtsc, pushf, sgdt, ...). ``Privilege.PRIVILEGED`` means the instruction
faults (or is refused) at CPL > 0 in a normally configured kernel; ``SENSITIVE_UNPRIVILEGED`` means
it runs at CPL > 0 without a trap yet reads or changes state the VMM owns (Popek-Goldberg).

Decisions recorded here (see the report of issue 3 for the reasoning):

- ``iret``/``iretd``/``iretq`` ARE in the catalog (sensitive-unprivileged, EXCEPTION_RETURN): at
  CPL > 0 with IOPL < CPL an iret silently keeps IF, exactly the popf problem; and in PV the
  interrupt frame's IF must land in the *virtual* IF with pending events delivered. Xen PV makes
  iret a hypercall for the same reason.
- ``sysret``/``sysexit`` ARE in the catalog (privileged: #GP at CPL > 0): a kernel returning to
  user mode changes CS/SS/CPL, which the VMM owns. ``syscall``/``sysenter`` are NOT: they are how
  user code enters the kernel, not kernel instructions touching VMM state.
- ``mov cs, r/m`` is #UD on hardware (Capstone decodes it anyway); it is not an entry.
- ``clac``/``stac`` are privileged (#UD at CPL > 0) and change EFLAGS.AC; hypercall for now.
- ``xgetbv`` is unprivileged but reads XCR0, which ``xsetbv`` (privileged) virtualizes.
- ``rep``/``repne`` with ins/outs both repeat on hardware; both map to the STRING_REP form.
- ``smsw``/``sgdt``/``sidt``/``sldt``/``str`` fault at CPL > 0 only with CR4.UMIP, which a
  PV guest cannot rely on: sensitive-unprivileged. ``rdtsc``/``rdtscp`` likewise (CR4.TSD);
  ``rdpmc`` is privileged unless CR4.PCE is set, and kernels run with it clear.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, Protocol, Sequence

from capstone import x86_const as X

from pvtranslate import PvTranslateError
from pvtranslate.abi import Hypercall, SharedOffset

__all__ = [
    "CatalogError",
    "LoweringClass",
    "Privilege",
    "Lowering",
    "Form",
    "CatalogEntry",
    "ENTRIES",
    "classify",
    "entry_by_name",
]


class CatalogError(PvTranslateError):
    """The catalog table is inconsistent, or an instruction was decoded without detail."""


class LoweringClass(enum.Enum):
    """DESIGN.md's lowering classes, plus the ones this table needs."""

    INTERRUPT_FLAG = "interrupt flag"  # cli, sti
    FLAGS = "flags"  # pushf, popf
    PRIVILEGED_READ = "reads of privileged state"  # sgdt ... smsw, mov from cr/dr
    STRING_IO = "string I/O"  # ins, outs (rep or not)
    PRIVILEGED_WRITE = "privileged writes"  # lgdt, mov to cr/dr, wrmsr, invlpg, ...
    PORT_IO_HALT = "port I/O, halt"  # in, out, hlt, monitor/mwait
    PRIVILEGED_READ_HYPERCALL = "privileged reads without a shadow"  # rdmsr, rdpmc
    UNPRIVILEGED_SENSITIVE_OTHER = "other sensitive-unprivileged"  # lar, lsl, verr, verw, sreg moves, cpuid, rdtsc
    EXCEPTION_RETURN = "returns that change privilege or IF"  # iret, sysret, sysexit


class Privilege(enum.Enum):
    PRIVILEGED = "faults at CPL>0"
    SENSITIVE_UNPRIVILEGED = "runs at CPL>0 without a trap (Popek-Goldberg)"


class Lowering(enum.Enum):
    SHARED_PAGE_INLINE = "read or write the shared page inline, no exit"
    HYPERCALL = "one hypercall per execution"
    STRING_HYPERCALL = "one hypercall for the whole string"
    # A selector read (mov r/m, sreg; push sreg) is sensitive because RPL(cs/ss) shows the CPL. This
    # ABI keeps the guest at its own privilege level (the VMM virtualizes IF, tables and CRs, not
    # rings), so the virtual selector is the real one: the trampoline runs the read itself. A
    # shared-page shadow would go stale, as lds/lfs/lgs/lss, far transfers and iret change selectors
    # without an exit.
    SELECTOR_READ_INLINE = "the trampoline reads the selector itself (virtual CPL = real CPL), no exit"


class Form(enum.Enum):
    """Operand forms whose lowering differs; ``CatalogEntry.operand`` says which one exactly."""

    PLAIN = "plain"  # operand = 0
    PORT_IMM8 = "port imm8"  # in/out, operand = data width in bytes
    PORT_DX = "port dx"  # in/out, operand = data width in bytes
    STRING_ONCE = "one element"  # ins/outs without a rep prefix, operand = 0
    STRING_REP = "rep"  # ins/outs with rep/repne, operand = 0
    CTRL_READ = "mov from cr/dr"  # operand = X86_REG_CRn / X86_REG_DRn
    CTRL_WRITE = "mov to cr/dr"  # operand = X86_REG_CRn / X86_REG_DRn
    SREG_READ = "mov from sreg"  # operand = X86_REG_<sreg>
    SREG_WRITE = "mov to sreg"  # operand = X86_REG_<sreg>
    SREG_PUSH = "push sreg"  # operand = X86_REG_<sreg>
    SREG_POP = "pop sreg"  # operand = X86_REG_<sreg>


@dataclass(frozen=True)
class CatalogEntry:
    """One sensitive instruction form and how PV lowers it."""

    name: str
    insn_id: int
    form: Form
    operand: int
    cls: LoweringClass
    privilege: Privilege
    lowering: Lowering
    hypercall: Hypercall | None = None  # for SHARED_PAGE_INLINE: only the conditional DELIVER_PENDING
    shared_field: SharedOffset | None = None
    can_enable_interrupts: bool = False  # may set IF: deliver pending events right after

    @property
    def key(self) -> tuple[int, Form, int]:
        return (self.insn_id, self.form, self.operand)

    @property
    def privileged(self) -> bool:
        return self.privilege is Privilege.PRIVILEGED


_C = LoweringClass
_P = Privilege.PRIVILEGED
_U = Privilege.SENSITIVE_UNPRIVILEGED
_L = Lowering
_H = Hypercall
_S = SharedOffset
E = CatalogEntry

_WIDTHS = (1, 2, 4)
_WIDTH_SUFFIX = {1: "8", 2: "16", 4: "32"}
_PORT_IN = {1: _H.PORT_IN8, 2: _H.PORT_IN16, 4: _H.PORT_IN32}
_PORT_OUT = {1: _H.PORT_OUT8, 2: _H.PORT_OUT16, 4: _H.PORT_OUT32}
_INS = (("insb", X.X86_INS_INSB), ("insw", X.X86_INS_INSW), ("insd", X.X86_INS_INSD))
_OUTS = (("outsb", X.X86_INS_OUTSB), ("outsw", X.X86_INS_OUTSW), ("outsd", X.X86_INS_OUTSD))
_CRS = (("cr0", X.X86_REG_CR0, _S.CR0), ("cr2", X.X86_REG_CR2, _S.CR2), ("cr3", X.X86_REG_CR3, _S.CR3),
        ("cr4", X.X86_REG_CR4, _S.CR4), ("cr8", X.X86_REG_CR8, _S.CR8))
_DRS = tuple((f"dr{n}", getattr(X, f"X86_REG_DR{n}"), SharedOffset[f"DR{n}"]) for n in range(8))
_SREGS = (("es", X.X86_REG_ES), ("cs", X.X86_REG_CS), ("ss", X.X86_REG_SS),
          ("ds", X.X86_REG_DS), ("fs", X.X86_REG_FS), ("gs", X.X86_REG_GS))
_SREG_WRITABLE = tuple(s for s in _SREGS if s[0] != "cs")  # mov cs / pop cs are #UD

ENTRIES: tuple[CatalogEntry, ...] = (
    # ---- interrupt flag
    E("cli", X.X86_INS_CLI, Form.PLAIN, 0, _C.INTERRUPT_FLAG, _P, _L.SHARED_PAGE_INLINE, shared_field=_S.VIRTUAL_IF),
    E("sti", X.X86_INS_STI, Form.PLAIN, 0, _C.INTERRUPT_FLAG, _P, _L.SHARED_PAGE_INLINE, _H.DELIVER_PENDING,
      _S.VIRTUAL_IF, can_enable_interrupts=True),
    # ---- flags: pushf merges virtual IF into the pushed image; popf writes it back
    E("pushf16", X.X86_INS_PUSHF, Form.PLAIN, 0, _C.FLAGS, _U, _L.SHARED_PAGE_INLINE, shared_field=_S.VIRTUAL_IF),
    E("pushfd", X.X86_INS_PUSHFD, Form.PLAIN, 0, _C.FLAGS, _U, _L.SHARED_PAGE_INLINE, shared_field=_S.VIRTUAL_IF),
    E("pushfq", X.X86_INS_PUSHFQ, Form.PLAIN, 0, _C.FLAGS, _U, _L.SHARED_PAGE_INLINE, shared_field=_S.VIRTUAL_IF),
    E("popf16", X.X86_INS_POPF, Form.PLAIN, 0, _C.FLAGS, _U, _L.SHARED_PAGE_INLINE, _H.DELIVER_PENDING,
      _S.VIRTUAL_IF, can_enable_interrupts=True),
    E("popfd", X.X86_INS_POPFD, Form.PLAIN, 0, _C.FLAGS, _U, _L.SHARED_PAGE_INLINE, _H.DELIVER_PENDING,
      _S.VIRTUAL_IF, can_enable_interrupts=True),
    E("popfq", X.X86_INS_POPFQ, Form.PLAIN, 0, _C.FLAGS, _U, _L.SHARED_PAGE_INLINE, _H.DELIVER_PENDING,
      _S.VIRTUAL_IF, can_enable_interrupts=True),
    # ---- port I/O and halt
    *(E(f"in{_WIDTH_SUFFIX[w]}.imm8", X.X86_INS_IN, Form.PORT_IMM8, w, _C.PORT_IO_HALT, _P, _L.HYPERCALL, _PORT_IN[w])
      for w in _WIDTHS),
    *(E(f"in{_WIDTH_SUFFIX[w]}.dx", X.X86_INS_IN, Form.PORT_DX, w, _C.PORT_IO_HALT, _P, _L.HYPERCALL, _PORT_IN[w])
      for w in _WIDTHS),
    *(E(f"out{_WIDTH_SUFFIX[w]}.imm8", X.X86_INS_OUT, Form.PORT_IMM8, w, _C.PORT_IO_HALT, _P, _L.HYPERCALL, _PORT_OUT[w])
      for w in _WIDTHS),
    *(E(f"out{_WIDTH_SUFFIX[w]}.dx", X.X86_INS_OUT, Form.PORT_DX, w, _C.PORT_IO_HALT, _P, _L.HYPERCALL, _PORT_OUT[w])
      for w in _WIDTHS),
    E("hlt", X.X86_INS_HLT, Form.PLAIN, 0, _C.PORT_IO_HALT, _P, _L.HYPERCALL, _H.HALT),
    E("monitor", X.X86_INS_MONITOR, Form.PLAIN, 0, _C.PORT_IO_HALT, _P, _L.HYPERCALL, _H.MONITOR),
    E("mwait", X.X86_INS_MWAIT, Form.PLAIN, 0, _C.PORT_IO_HALT, _P, _L.HYPERCALL, _H.MWAIT),
    # ---- string I/O (a non-rep element is the same hypercall with count 1)
    *(E(f"{n}", i, Form.STRING_ONCE, 0, _C.STRING_IO, _P, _L.STRING_HYPERCALL, _H.STRING_IN) for n, i in _INS),
    *(E(f"rep.{n}", i, Form.STRING_REP, 0, _C.STRING_IO, _P, _L.STRING_HYPERCALL, _H.STRING_IN) for n, i in _INS),
    *(E(f"{n}", i, Form.STRING_ONCE, 0, _C.STRING_IO, _P, _L.STRING_HYPERCALL, _H.STRING_OUT) for n, i in _OUTS),
    *(E(f"rep.{n}", i, Form.STRING_REP, 0, _C.STRING_IO, _P, _L.STRING_HYPERCALL, _H.STRING_OUT) for n, i in _OUTS),
    # ---- reads of privileged state: from the shadow on the shared page
    E("sgdt", X.X86_INS_SGDT, Form.PLAIN, 0, _C.PRIVILEGED_READ, _U, _L.SHARED_PAGE_INLINE, shared_field=_S.GDTR),
    E("sidt", X.X86_INS_SIDT, Form.PLAIN, 0, _C.PRIVILEGED_READ, _U, _L.SHARED_PAGE_INLINE, shared_field=_S.IDTR),
    E("sldt", X.X86_INS_SLDT, Form.PLAIN, 0, _C.PRIVILEGED_READ, _U, _L.SHARED_PAGE_INLINE, shared_field=_S.LDTR),
    E("str", X.X86_INS_STR, Form.PLAIN, 0, _C.PRIVILEGED_READ, _U, _L.SHARED_PAGE_INLINE, shared_field=_S.TR),
    E("smsw", X.X86_INS_SMSW, Form.PLAIN, 0, _C.PRIVILEGED_READ, _U, _L.SHARED_PAGE_INLINE, shared_field=_S.CR0),
    *(E(f"mov.from.{n}", X.X86_INS_MOV, Form.CTRL_READ, r, _C.PRIVILEGED_READ, _P, _L.SHARED_PAGE_INLINE,
        shared_field=f) for n, r, f in _CRS + _DRS if n not in ("dr4", "dr5")),
    # dr4/dr5 alias dr6/dr7 only while CR4.DE is clear (else #UD): the original runs in the VMM
    *(E(f"mov.from.{n}", X.X86_INS_MOV, Form.CTRL_READ, r, _C.PRIVILEGED_READ, _P, _L.HYPERCALL, _H.EMULATE)
      for n, r, _f in _DRS if n in ("dr4", "dr5")),
    # ---- privileged writes: hypercall
    *(E(f"mov.to.{n}", X.X86_INS_MOV, Form.CTRL_WRITE, r, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.WRITE_CR)
      for n, r, _f in _CRS),
    *(E(f"mov.to.{n}", X.X86_INS_MOV, Form.CTRL_WRITE, r, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.WRITE_DR)
      for n, r, _f in _DRS),
    E("lgdt", X.X86_INS_LGDT, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.LOAD_GDT),
    E("lidt", X.X86_INS_LIDT, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.LOAD_IDT),
    E("lldt", X.X86_INS_LLDT, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.LOAD_LDT),
    E("ltr", X.X86_INS_LTR, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.LOAD_TR),
    E("lmsw", X.X86_INS_LMSW, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.LMSW),
    E("clts", X.X86_INS_CLTS, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.CLTS),
    E("wrmsr", X.X86_INS_WRMSR, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.WRMSR),
    E("xsetbv", X.X86_INS_XSETBV, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.XSETBV),
    E("invlpg", X.X86_INS_INVLPG, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.INVLPG),
    E("invpcid", X.X86_INS_INVPCID, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.INVPCID),
    E("wbinvd", X.X86_INS_WBINVD, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.WBINVD),
    E("invd", X.X86_INS_INVD, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.INVD),
    E("swapgs", X.X86_INS_SWAPGS, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.SWAPGS),
    E("clac", X.X86_INS_CLAC, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.SET_AC),
    E("stac", X.X86_INS_STAC, Form.PLAIN, 0, _C.PRIVILEGED_WRITE, _P, _L.HYPERCALL, _H.SET_AC),
    # ---- privileged reads with no shadow (arbitrary MSR / counter): hypercall
    E("rdmsr", X.X86_INS_RDMSR, Form.PLAIN, 0, _C.PRIVILEGED_READ_HYPERCALL, _P, _L.HYPERCALL, _H.RDMSR),
    E("rdpmc", X.X86_INS_RDPMC, Form.PLAIN, 0, _C.PRIVILEGED_READ_HYPERCALL, _P, _L.HYPERCALL, _H.RDPMC),
    # ---- other sensitive-unprivileged
    E("lar", X.X86_INS_LAR, Form.PLAIN, 0, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U, _L.HYPERCALL, _H.DESCRIPTOR_QUERY),
    E("lsl", X.X86_INS_LSL, Form.PLAIN, 0, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U, _L.HYPERCALL, _H.DESCRIPTOR_QUERY),
    E("verr", X.X86_INS_VERR, Form.PLAIN, 0, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U, _L.HYPERCALL, _H.DESCRIPTOR_QUERY),
    E("verw", X.X86_INS_VERW, Form.PLAIN, 0, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U, _L.HYPERCALL, _H.DESCRIPTOR_QUERY),
    E("cpuid", X.X86_INS_CPUID, Form.PLAIN, 0, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U, _L.HYPERCALL, _H.CPUID),
    E("rdtsc", X.X86_INS_RDTSC, Form.PLAIN, 0, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U, _L.HYPERCALL, _H.RDTSC),
    E("rdtscp", X.X86_INS_RDTSCP, Form.PLAIN, 0, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U, _L.HYPERCALL, _H.RDTSCP),
    E("xgetbv", X.X86_INS_XGETBV, Form.PLAIN, 0, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U, _L.HYPERCALL, _H.XGETBV),
    # segment registers: reads from the selector shadows, loads through the VMM (descriptor checks)
    *(E(f"mov.from.{n}", X.X86_INS_MOV, Form.SREG_READ, r, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U,
        _L.SELECTOR_READ_INLINE) for n, r in _SREGS),
    *(E(f"push.{n}", X.X86_INS_PUSH, Form.SREG_PUSH, r, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U,
        _L.SELECTOR_READ_INLINE) for n, r in _SREGS),
    *(E(f"mov.to.{n}", X.X86_INS_MOV, Form.SREG_WRITE, r, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U,
        _L.HYPERCALL, _H.LOAD_SEGMENT) for n, r in _SREG_WRITABLE),
    *(E(f"pop.{n}", X.X86_INS_POP, Form.SREG_POP, r, _C.UNPRIVILEGED_SENSITIVE_OTHER, _U,
        _L.HYPERCALL, _H.LOAD_SEGMENT) for n, r in _SREG_WRITABLE),
    # ---- returns that change privilege or IF
    E("iret16", X.X86_INS_IRET, Form.PLAIN, 0, _C.EXCEPTION_RETURN, _U, _L.HYPERCALL, _H.IRET,
      can_enable_interrupts=True),
    E("iretd", X.X86_INS_IRETD, Form.PLAIN, 0, _C.EXCEPTION_RETURN, _U, _L.HYPERCALL, _H.IRET,
      can_enable_interrupts=True),
    E("iretq", X.X86_INS_IRETQ, Form.PLAIN, 0, _C.EXCEPTION_RETURN, _U, _L.HYPERCALL, _H.IRET,
      can_enable_interrupts=True),
    E("sysret", X.X86_INS_SYSRET, Form.PLAIN, 0, _C.EXCEPTION_RETURN, _P, _L.HYPERCALL, _H.SYSRET,
      can_enable_interrupts=True),
    E("sysretq", X.X86_INS_SYSRETQ, Form.PLAIN, 0, _C.EXCEPTION_RETURN, _P, _L.HYPERCALL, _H.SYSRET,
      can_enable_interrupts=True),
    E("sysexit", X.X86_INS_SYSEXIT, Form.PLAIN, 0, _C.EXCEPTION_RETURN, _P, _L.HYPERCALL, _H.SYSEXIT,
      can_enable_interrupts=True),
    E("sysexitq", X.X86_INS_SYSEXITQ, Form.PLAIN, 0, _C.EXCEPTION_RETURN, _P, _L.HYPERCALL, _H.SYSEXIT,
      can_enable_interrupts=True),
)
del E


def _check_entry(entry: CatalogEntry) -> None:
    where = f"catalog entry {entry.name!r}"
    if entry.lowering is Lowering.SHARED_PAGE_INLINE:
        if entry.shared_field is None:
            raise CatalogError(f"{where}: a shared-page lowering needs a shared_field")
        if entry.hypercall not in (None, Hypercall.DELIVER_PENDING):
            raise CatalogError(f"{where}: an inline lowering may only call DELIVER_PENDING")
        if (entry.hypercall is Hypercall.DELIVER_PENDING) != entry.can_enable_interrupts:
            raise CatalogError(f"{where}: DELIVER_PENDING goes with can_enable_interrupts")
    elif entry.lowering is Lowering.SELECTOR_READ_INLINE:
        if entry.form not in (Form.SREG_READ, Form.SREG_PUSH) or entry.hypercall is not None:
            raise CatalogError(f"{where}: SELECTOR_READ_INLINE is for selector reads, without a hypercall")
    elif entry.hypercall is None:
        raise CatalogError(f"{where}: lowering {entry.lowering.name} needs a hypercall")
    if (entry.lowering is Lowering.STRING_HYPERCALL) != (entry.cls is LoweringClass.STRING_IO):
        raise CatalogError(f"{where}: STRING_HYPERCALL is the lowering of STRING_IO, and only of it")


def _index(entries: Sequence[CatalogEntry]) -> tuple[Mapping[tuple[int, Form, int], CatalogEntry], Mapping[str, CatalogEntry]]:
    by_key: dict[tuple[int, Form, int], CatalogEntry] = {}
    by_name: dict[str, CatalogEntry] = {}
    for entry in entries:
        _check_entry(entry)
        if entry.key in by_key:
            raise CatalogError(f"catalog entries {by_key[entry.key].name!r} and {entry.name!r} share the key {entry.key}")
        if entry.name in by_name:
            raise CatalogError(f"two catalog entries are named {entry.name!r}")
        by_key[entry.key] = entry
        by_name[entry.name] = entry
    return MappingProxyType(by_key), MappingProxyType(by_name)


_BY_KEY, _BY_NAME = _index(ENTRIES)
_CANDIDATE_IDS = frozenset(e.insn_id for e in ENTRIES)
CANDIDATE_IDS: frozenset[int] = _CANDIDATE_IDS
"""Capstone ids that may be sensitive; anything else classifies as None without reading operands."""

_CTRL_REGS = frozenset(r for _n, r, _f in _CRS + _DRS)
_SREG_IDS = frozenset(r for _n, r in _SREGS)
_STRING_IDS = frozenset(i for _n, i in _INS + _OUTS)
_REPEAT_PREFIXES = frozenset((X.X86_PREFIX_REP, X.X86_PREFIX_REPNE))


class DecodedInsn(Protocol):
    """What classify reads from a Capstone ``CsInsn`` decoded with ``detail = True``."""

    id: int
    operands: Sequence
    prefix: Sequence[int]


def _form_of(insn: DecodedInsn) -> tuple[Form, int]:
    ident = insn.id
    if ident == X.X86_INS_IN:  # in acc, imm8|dx
        acc, port = insn.operands
        return (Form.PORT_IMM8 if port.type == X.X86_OP_IMM else Form.PORT_DX), acc.size
    if ident == X.X86_INS_OUT:  # out imm8|dx, acc
        port, acc = insn.operands
        return (Form.PORT_IMM8 if port.type == X.X86_OP_IMM else Form.PORT_DX), acc.size
    if ident in _STRING_IDS:
        return (Form.STRING_REP if insn.prefix[0] in _REPEAT_PREFIXES else Form.STRING_ONCE), 0
    if ident == X.X86_INS_MOV:
        dst, src = insn.operands
        if dst.type == X.X86_OP_REG and dst.reg in _CTRL_REGS:
            return Form.CTRL_WRITE, dst.reg
        if src.type == X.X86_OP_REG and src.reg in _CTRL_REGS:
            return Form.CTRL_READ, src.reg
        if dst.type == X.X86_OP_REG and dst.reg in _SREG_IDS:
            return Form.SREG_WRITE, dst.reg
        if src.type == X.X86_OP_REG and src.reg in _SREG_IDS:
            return Form.SREG_READ, src.reg
        return Form.PLAIN, -1  # an ordinary mov: no entry has operand -1
    if ident in (X.X86_INS_PUSH, X.X86_INS_POP):
        ops = insn.operands
        if len(ops) == 1 and ops[0].type == X.X86_OP_REG and ops[0].reg in _SREG_IDS:
            return (Form.SREG_PUSH if ident == X.X86_INS_PUSH else Form.SREG_POP), ops[0].reg
        return Form.PLAIN, -1
    return Form.PLAIN, 0


def classify(insn: DecodedInsn) -> CatalogEntry | None:
    """The catalog entry for a Capstone x86 instruction decoded with detail, or None if not sensitive."""
    if insn.id not in _CANDIDATE_IDS:
        return None
    try:
        form, operand = _form_of(insn)
    except Exception as exc:  # capstone.CsError when detail is off
        raise CatalogError(
            f"cannot read the operands of {getattr(insn, 'mnemonic', insn.id)!s}: "
            "hint: decode candidate sites with Cs.detail = True"
        ) from exc
    return _BY_KEY.get((insn.id, form, operand))


def entry_by_name(name: str) -> CatalogEntry:
    """The entry called ``name`` (e.g. ``"rep.insw"``, ``"mov.to.cr3"``); KeyError if none."""
    return _BY_NAME[name]

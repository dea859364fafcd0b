"""The planner: per decoded site, a lowering (as abstract steps) and a patch tactic, as frozen data.

Pure and deterministic: ``plan(decoded, options)`` reads a ``Decoded`` and returns a ``Plan``; it
writes nothing and needs neither LIEF nor Keystone nor Unicorn. The emitter turns each
``PlannedSite``'s steps into machine code later; it never decides tactics.

The ladder (DESIGN.md, "Patching x86 in place"), tried in ``Tactic`` order:

``IN_PLACE``
    The lowering's code fits in the site's own bytes. Decided by ``_in_place_fits``: the sum of
    the *worst-case* encoded sizes of the steps (``_STEP_MAX_BYTES``) must be <= the site's size.
    With this ABI no catalog entry can ever be in place: the smallest hypercall sequence is
    ``mov eax, imm32; int 0x82`` (7 bytes, before any argument or save), the smallest shared-page
    access is ``mov byte [abs32|rip+rel32], imm8`` (7 bytes), and every lowering of the catalog
    needs at least one of them while the sites are 1-4 bytes (a memory-operand ``lgdt``/``sgdt``
    of up to 9 bytes needs an address computation, arguments and saves on top). The rung stays
    so that a cheaper ABI (e.g. site-table-numbered hypercalls) can use it without a new ladder.
``TRAMPOLINE_JUMP``
    A ``jmp rel32`` (5 bytes) at the site start into a trampoline that runs the lowering, then the
    displaced following instructions, then jumps back. Displaced instructions are the ones that
    start before ``site + 5``. Allowed only when: trampolines are allowed; the displaced
    instructions are contiguous, in the same region and mode; none is a control transfer but a
    direct jmp/jcc (re-encoded), a near ret, or — as the last one — a call the trampoline replays as
    a push of its original return address and a jmp (``_replayable_call``); none
    crosses a symbol boundary (``boundaries``: where a symbol starts, or a sized function ends —
    code may be entered or left there); no branch target lies strictly inside the patch range (the
    site's own start may be one); and a displaced instruction that is itself a site is lowered in
    the same trampoline (it is then planned ``TRAMPOLINE_JUMP`` with ``joined_to`` = the leader
    and no patch range of its own). RIP-relative displaced instructions are flagged.
``PUNNED_JUMP``
    E9Patch's B2 (punned jump), for a site of 1-4 bytes: ``e9`` at the site start, the rel32's low
    ``size - 1`` bytes free (overwriting the rest of the site), its high ``5 - size`` bytes being
    the *unchanged* bytes that follow. Precise condition, all required: ``options.punned_free_ranges``
    is not empty; the 5 - size following bytes are decoded code in the same region and no other
    site starts among them (every site gets patched, which would change the rel32); and some
    target ``site + 5 + rel32`` reachable by choosing the free bytes leaves room for
    ``options.punned_trampoline_bytes`` inside a free range, not used by another punned trampoline.
    Without free ranges (the default: the planner cannot know which addresses the emitter may
    map), this rung is never taken. T1 (prefix padding) and T2/T3 (evictions) are not planned.
``TRAP``
    ``int 0x82`` over a site of >= 2 bytes, ``int3`` over a 1-byte site; the VMM looks the address
    up in the site table. Only if ``options.allow_trap_fallback``; else ``PlanError``.

Lowerings preserve every register and flag the original instruction does not change. A hypercall
lowering uses no stack (an instruction may run before the guest has one, as Linux's
``pvh_start_xen`` starts with ``lgdt``): ``SAVE_AREA`` stores the number and argument registers in
the shared page's save area, and the VMM puts them back as part of the hypercall, results (merged
when narrow) in the registers the original writes; if the instruction faults, it puts them all
back and delivers the fault at the site. Inline lowerings ``SAVE``/``RESTORE`` a scratch register
on the stack. Steps never change flags (the conditional delivery after
``sti``/``popf`` is flag-free: the emitter uses ``jrcxz`` on a scratch ``rcx``).
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from pvtranslate import PvTranslateError
from pvtranslate.abi import (
    HYPERCALL_SPECS,
    REGISTERS_32,
    REGISTERS_64,
    Hypercall,
    RegisterConvention,
    SharedOffset,
)
from pvtranslate.catalog import Lowering, LoweringClass
from pvtranslate.decode import Decoded, Insn, Site

__all__ = [
    "JMP_REL32_SIZE",
    "LADDER",
    "Displaced",
    "PatchRange",
    "Plan",
    "PlanError",
    "PlanOptions",
    "PlannedSite",
    "Step",
    "StepOp",
    "Tactic",
    "TrapKind",
    "symbol_boundaries_of",
    "lower",
    "plan",
]

JMP_REL32_SIZE = 5


class PlanError(PvTranslateError):
    """A site cannot be planned under the given options."""


@dataclass(frozen=True)
class PlanOptions:
    """Policy of the planner. ``punned_free_ranges``: [start, end) VAs the emitter may map trampolines at."""

    allow_trampolines: bool = True
    allow_punned: bool = True
    allow_trap_fallback: bool = True
    punned_free_ranges: tuple[tuple[int, int], ...] = ()
    punned_trampoline_bytes: int = 64


class Tactic(enum.Enum):
    """The ladder, cheapest first; ``LADDER`` is the order tried."""

    IN_PLACE = "lowering fits in the site's bytes"
    TRAMPOLINE_JUMP = "jmp rel32 to a trampoline that also runs the displaced instructions"
    PUNNED_JUMP = "E9Patch B2 punned jmp rel32 whose high bytes are the following instruction bytes"
    TRAP = "in-place int 0x82 / int3, looked up in the site table"


LADDER: tuple[Tactic, ...] = tuple(Tactic)


class TrapKind(enum.Enum):
    INT_0X82 = "int 0x82 (cd 82), sites of >= 2 bytes"
    INT3 = "int3 (cc), 1-byte sites"


class StepOp(enum.Enum):
    """Abstract lowering steps; operands per op are documented here and built only by ``lower``."""

    SAVE = "save (reg)"  # push
    RESTORE = "restore (reg)"  # pop, reverse order of SAVE
    SAVE_AREA = "save_area (reg)"  # store in the shared page's save area; the hypercall puts it back
    STORE_SHARED = "store_shared (field, value)"
    READ_SHARED = "read_shared (field, size, destination operand)"
    PUSH_FLAGS_VIRTUAL_IF = "push flags with IF from field (field, width)"
    POP_FLAGS_VIRTUAL_IF = "pop flags, IF into field (field, width)"
    LOAD_ARG = "load_arg (reg, argument name)"  # value per HypercallSpec arg name, from the original operands
    HYPERCALL = "hypercall (number, number reg)"  # mov number reg, imm32; int 0x82
    DELIVER_IF_PENDING = "deliver_if_pending (field, number, scratch reg)"  # flag-free jrcxz test
    REPLAY = "replay (va, raw, needs_rip_relocation, needs_branch_relocation)"
    JUMP_BACK = "jump_back (va)"  # jmp rel32 to the first byte after the patch range


@dataclass(frozen=True)
class Step:
    op: StepOp
    args: tuple = ()

    def __str__(self) -> str:
        def show(a: object) -> str:
            if isinstance(a, enum.Enum):
                return a.name
            if isinstance(a, bytes):
                return a.hex()
            if isinstance(a, int) and not isinstance(a, bool) and a > 9:
                return hex(a)
            return str(a)

        return f"{self.op.name.lower()}({', '.join(show(a) for a in self.args)})"


# Worst-case encoded bytes of each step, used only to decide IN_PLACE (see module docstring).
_STEP_MAX_BYTES: Mapping[StepOp, int] = MappingProxyType({
    StepOp.SAVE: 2, StepOp.RESTORE: 2, StepOp.SAVE_AREA: 8, StepOp.STORE_SHARED: 11, StepOp.READ_SHARED: 16,
StepOp.PUSH_FLAGS_VIRTUAL_IF: 24, StepOp.POP_FLAGS_VIRTUAL_IF: 32,
    StepOp.LOAD_ARG: 10, StepOp.HYPERCALL: 7, StepOp.DELIVER_IF_PENDING: 20,
    StepOp.REPLAY: 15, StepOp.JUMP_BACK: 5,
})
if set(_STEP_MAX_BYTES) != set(StepOp):
    raise PlanError("every StepOp needs a worst-case size")
_STEP_MIN_BYTES = 7  # see the module docstring: nothing useful is shorter


@dataclass(frozen=True)
class PatchRange:
    start_va: int
    end_va: int

    def __len__(self) -> int:
        return self.end_va - self.start_va

    def overlaps(self, other: PatchRange) -> bool:
        return self.start_va < other.end_va and other.start_va < self.end_va


@dataclass(frozen=True)
class Displaced:
    va: int
    raw: bytes
    text: str
    needs_rip_relocation: bool
    is_site: bool = False  # lowered (planned together), not replayed
    needs_branch_relocation: bool = False  # direct jmp/jcc: re-encode rel32 to the same target


@dataclass(frozen=True)
class PlannedSite:
    va: int
    raw: bytes
    bits: int
    text: str
    entry_name: str
    cls: LoweringClass
    lowering: Lowering
    tactic: Tactic
    patch: PatchRange | None  # None only for a site lowered inside another site's trampoline
    hypercall: Hypercall | None
    steps: tuple[Step, ...]  # this site's own lowering
    sequence: tuple[Step, ...] = ()  # TRAMPOLINE_JUMP / PUNNED_JUMP leader: the whole trampoline body
    displaced: tuple[Displaced, ...] = ()
    displaced_before: tuple[Displaced, ...] = ()  # instructions before the site the patch starts at
    joined: tuple[int, ...] = ()  # sites lowered in this trampoline too (by va)
    joined_to: int | None = None  # leader's va when this site is lowered in another's trampoline
    site_rip_relative: bool = False  # the site's own memory operand is RIP-relative: the emitter relocates it
    trap: TrapKind | None = None
    punned_target_va: int | None = None
    reason: str = ""  # why the rungs above were not taken


@dataclass(frozen=True)
class Plan:
    sites: tuple[PlannedSite, ...]  # by va
    by_tactic: Mapping[Tactic, int]
    by_class: Mapping[LoweringClass, int]
    options: PlanOptions = field(default_factory=PlanOptions)

    @property
    def trap_share(self) -> float:
        return self.by_tactic.get(Tactic.TRAP, 0) / len(self.sites) if self.sites else 0.0

    def format(self) -> str:
        lines = [f"{'site':>18}  {'bytes':<16} {'entry':<14} {'class':<28} {'tactic':<15} {'patch':<22} notes"]
        for s in self.sites:
            patch = f"{s.patch.start_va:#x}..{s.patch.end_va:#x}" if s.patch else "-"
            notes = []
            if s.joined_to is not None:
                notes.append(f"in trampoline of {s.joined_to:#x}")
            if s.displaced_before:
                notes.append("displaces before it " + "; ".join(d.text for d in s.displaced_before))
            if s.displaced:
                notes.append("displaces " + "; ".join(
                    f"{d.text}{' (rip-rel)' if d.needs_rip_relocation else ''}{' (site)' if d.is_site else ''}"
                    f"{' (branch)' if d.needs_branch_relocation else ''}"
                    for d in s.displaced))
            if s.trap is not None:
                notes.append(s.trap.name.lower())
            if s.punned_target_va is not None:
                notes.append(f"target {s.punned_target_va:#x}")
            if s.reason:
                notes.append(s.reason)
            lines.append(f"{s.va:#18x}  {s.raw.hex():<16} {s.entry_name:<14} {s.cls.name:<28} "
                         f"{s.tactic.name:<15} {patch:<22} {'; '.join(notes)}")
        n = len(self.sites)
        lines.append(f"{n} sites")
        for t in LADDER:
            c = self.by_tactic.get(t, 0)
            lines.append(f"  {t.name:<16} {c:6d}  {100 * c / n if n else 0:5.1f}%")
        for c, k in sorted(self.by_class.items(), key=lambda kv: kv[0].name):
            lines.append(f"  {c.name:<28} {k:6d}")
        lines.append(f"trap fallback share: {100 * self.trap_share:.1f}%")
        return "\n".join(lines)


# --------------------------------------------------------------------------- lowering


def _convention(bits: int) -> RegisterConvention:
    return REGISTERS_64 if bits == 64 else REGISTERS_32


def _reg(name32: str, bits: int) -> str:
    return "r" + name32[1:] if bits == 64 else name32


def _wrap_saves(body: list[Step], clobbered: Sequence[str]) -> tuple[Step, ...]:
    saved = list(dict.fromkeys(clobbered))
    return (*(Step(StepOp.SAVE, (r,)) for r in saved), *body,
            *(Step(StepOp.RESTORE, (r,)) for r in reversed(saved)))


def _scratch(text: str, bits: int) -> str:
    for r in ("ecx", "edx", "ebx", "esi", "edi"):
        if r[1:] not in text:  # "cx" also catches ecx/rcx/cx
            return _reg(r, bits)
    raise PlanError(f"no scratch register free in {text!r}; hint: report this instruction form")


def _deliver(bits: int) -> tuple[list[Step], list[str]]:
    conv = _convention(bits)
    scratch = _reg("ecx", bits)
    return ([Step(StepOp.DELIVER_IF_PENDING, (SharedOffset.EVENTS_PENDING, Hypercall.DELIVER_PENDING, scratch))],
            [scratch, conv.number_reg])


def lower(site: Site) -> tuple[Step, ...]:
    """The abstract lowering of one site (no tactic involved)."""
    entry, bits = site.entry, site.bits
    conv = _convention(bits)
    if entry.lowering is Lowering.SELECTOR_READ_INLINE:
        return (Step(StepOp.REPLAY, (site.va, site.raw, bits == 64 and "rip" in site.text, False)),)
    if entry.lowering is Lowering.SHARED_PAGE_INLINE:
        fld = entry.shared_field
        body: list[Step]
        clobbered: list[str] = []
        if entry.cls is LoweringClass.INTERRUPT_FLAG:
            body = [Step(StepOp.STORE_SHARED, (fld, 1 if entry.can_enable_interrupts else 0))]
        elif entry.cls is LoweringClass.FLAGS:
            width = {"pushf16": 2, "popf16": 2, "pushfd": 4, "popfd": 4}.get(entry.name, 8)
            op = StepOp.POP_FLAGS_VIRTUAL_IF if entry.can_enable_interrupts else StepOp.PUSH_FLAGS_VIRTUAL_IF
            body = [Step(op, (fld, width))]
        else:
            dest = site.text.split(" ", 1)[1].split(",")[0].strip() if " " in site.text else ""
            if "[" in dest:  # memory destination: copy through a scratch register the operand does not use
                clobbered.append(_scratch(site.text, bits))
            body = [Step(StepOp.READ_SHARED, (fld, dest))]
        if entry.cls is LoweringClass.FLAGS and entry.can_enable_interrupts:
            # popf: its own lowering pops the guest's image, so nothing may be saved above it
            more, regs = _deliver(bits)
            return (*body, *_wrap_saves(more, regs))
        if entry.can_enable_interrupts:
            more, regs = _deliver(bits)
            body += more
            clobbered += regs
        return _wrap_saves(body, clobbered)
    number = entry.hypercall
    spec = HYPERCALL_SPECS[number]
    arg_regs = conv.arg_regs[: len(spec.args)]
    if entry.can_enable_interrupts and number not in (Hypercall.IRET, Hypercall.SYSRET, Hypercall.SYSEXIT):
        raise PlanError(f"{entry.name}: a hypercall lowering that enables interrupts needs a delivery step")
    # no stack: the registers go to the save area, and the VMM puts them back (results in place)
    saved = dict.fromkeys((conv.number_reg, *arg_regs))
    return (*(Step(StepOp.SAVE_AREA, (r,)) for r in saved),
            *(Step(StepOp.LOAD_ARG, (r, a)) for r, a in zip(arg_regs, spec.args)),
            Step(StepOp.HYPERCALL, (number, conv.number_reg)))


def _in_place_fits(steps: Sequence[Step], size: int) -> bool:
    if size < _STEP_MIN_BYTES:
        return False
    return sum(_STEP_MAX_BYTES[s.op] for s in steps) <= size


# --------------------------------------------------------------------------- tactics

_JCC = frozenset(("jo", "jno", "jb", "jae", "je", "jne", "jbe", "ja", "js", "jns", "jp", "jnp", "jl", "jge",
                  "jle", "jg"))
_CONTROL = frozenset((
    "jmp", "ljmp", "call", "lcall", "ret", "retf", "retfq", "iret", "iretd", "iretq", "sysret", "sysretq",
    "sysexit", "sysexitq", "syscall", "sysenter", "int", "int3", "into", "int1", "ud2", "ud1", "ud0",
    "loop", "loope", "loopne", "jcxz", "jecxz", "jrcxz", "hlt", "xbegin", "xabort", "xend", *_JCC,
))


def _name(insn: Insn) -> str:
    return insn.mnemonic.rsplit(" ", 1)[-1]


def _is_control(insn: Insn) -> bool:
    return _name(insn) in _CONTROL or insn.mnemonic.startswith("bnd ")


def _relocatable_branch(insn: Insn) -> bool:
    """A direct jmp/jcc (re-encoded rel32 to the same absolute target), a direct call (replayed as a
    push of its original return address and a jmp: the callee returns to the original code), or a
    near ret (runs as is)."""
    name = _name(insn)
    if insn.mnemonic != name:  # prefixed (bnd, notrack, ...)
        return False
    if name in ("ret",):
        return True
    if name == "call":
        return _replayable_call(insn)
    return name in _JCC | {"jmp"} and insn.op_str.startswith("0x") and " " not in insn.op_str


def _replayable_call(insn: Insn) -> bool:
    """call rel32, or an indirect call (ff /2) whose operand does not use the stack pointer: replayed
    as a push of the original return address and a jmp with the same operand."""
    raw = insn.raw
    if raw[:1] == b"\xe8":
        return insn.op_str.startswith("0x") and " " not in insn.op_str
    k = 1 if insn.bits == 64 and 0x40 <= raw[0] <= 0x4F else 0
    return (len(raw) > k + 1 and raw[k] == 0xFF and (raw[k + 1] >> 3) & 7 == 2
            and not any(r in insn.op_str for r in ("rsp", "esp", "sp]", "sp +", "sp -")))


def _ends_flow(insn: Insn) -> bool:
    """Control does not come back to the trampoline after it (a displaced call returns to the original)."""
    return _name(insn) in ("jmp", "ret", "call")


def _needs_rip(insn: Insn) -> bool:
    return insn.bits == 64 and "rip" in insn.op_str


class _Ctx:
    def __init__(self, decoded: Decoded, options: PlanOptions, boundaries: frozenset[int]):
        self.decoded = decoded
        self.options = options
        self.insns = decoded.insns
        self.insn_vas = [i.va for i in decoded.insns]
        self.targets = sorted(decoded.branch_targets)
        self.boundaries = sorted(boundaries)
        self.site_by_va = {s.va: s for s in decoded.sites}
        self.site_vas = sorted(self.site_by_va)
        self.used_punned: list[tuple[int, int]] = []
        self.patched_until = 0  # end of the highest patch planned so far (sites go in address order)

    def insn_index(self, va: int) -> int | None:
        i = bisect.bisect_left(self.insn_vas, va)
        return i if i < len(self.insn_vas) and self.insn_vas[i] == va else None

    def region_of(self, va: int):
        regs = self.decoded.regions
        i = bisect.bisect_right(regs, va, key=lambda r: r.start_va) - 1
        return regs[i] if i >= 0 and va < regs[i].end_va else None

    def any_in(self, sorted_vas: Sequence[int], lo: int, hi: int) -> bool:
        """Any value v with lo < v < hi."""
        i = bisect.bisect_right(sorted_vas, lo)
        return i < len(sorted_vas) and sorted_vas[i] < hi

    def sites_in(self, lo: int, hi: int) -> list[int]:
        i = bisect.bisect_left(self.site_vas, lo)
        out = []
        while i < len(self.site_vas) and self.site_vas[i] < hi:
            out.append(self.site_vas[i])
            i += 1
        return out


def _try_trampoline(ctx: _Ctx, site: Site, through: int = 0) -> tuple[tuple[Insn, ...], str]:
    """The displaced instructions (possibly none), or ((), reason) when not possible (reason non-empty).
    ``through``: displace at least up to this address (the end of a later site joined on purpose)."""
    if not ctx.options.allow_trampolines:
        return (), "trampolines disabled"
    if site.bits == 16:
        return (), "16-bit code: a near jmp is rel16 within the segment; not planned"
    if site.size >= JMP_REL32_SIZE:
        return (), ""
    if site.entry.cls is LoweringClass.EXCEPTION_RETURN:
        return (), "the site ends the flow: what follows is not its fall-through"
    i = ctx.insn_index(site.va)
    if i is None:
        return (), "site is not a decoded instruction"
    region = ctx.region_of(site.va)
    displaced: list[Insn] = []
    end = site.va + site.size
    while end < max(site.va + JMP_REL32_SIZE, through):
        i += 1
        if i >= len(ctx.insns) or ctx.insns[i].va != end:
            return (), "function or region end within 5 bytes (no contiguous instruction)"
        nxt = ctx.insns[i]
        if nxt.bits != site.bits or region is None or nxt.va + nxt.size > region.end_va:
            return (), "region or mode change within 5 bytes"
        if displaced and _ends_flow(displaced[-1]):
            if _name(displaced[-1]) != "call" and _padding_until(ctx, i, site.va + JMP_REL32_SIZE):
                end = site.va + JMP_REL32_SIZE  # int3 padding after a jmp/ret: never run, overwritten
                break
            return (), f"flow ends ({displaced[-1].mnemonic}) before 5 bytes"
        joinable = nxt.va in ctx.site_by_va and (ctx.site_by_va[nxt.va].entry.cls is not LoweringClass.EXCEPTION_RETURN
                                                 or nxt.va + nxt.size == through)  # it ends the trampoline
        if _is_control(nxt) and not _relocatable_branch(nxt) and not joinable:
            return (), f"control transfer {nxt.mnemonic} within 5 bytes"
        displaced.append(nxt)
        end = nxt.va + nxt.size
    if ctx.any_in(ctx.targets, site.va, end):
        return (), "branch target inside the displaced bytes"
    if ctx.any_in(ctx.boundaries, site.va, end):
        return (), "symbol boundary inside the displaced bytes"
    return tuple(displaced), ""


def _padding_until(ctx: _Ctx, i: int, stop: int) -> bool:
    """Whether the decoded instructions from index ``i`` up to ``stop`` are alignment padding after
    an unconditional jmp/ret: contiguous int3 or nop instructions, with no 16-byte boundary (where
    an aligned function could start) before ``stop``. Nothing falls into padding; a direct jump
    into it would be a known branch target, which the caller refuses."""
    va = ctx.insns[i].va
    if (va + 15) // 16 * 16 < stop:
        return False
    while va < stop:
        if i >= len(ctx.insns) or ctx.insns[i].va != va:
            return False
        insn = ctx.insns[i]
        if insn.raw != b"\xcc" and not insn.mnemonic.startswith("nop"):
            return False
        va += insn.size
        i += 1
    return True


def _try_backward(ctx: _Ctx, site: Site) -> tuple[tuple[Insn, ...], str]:
    """The instructions just before the site that a patch ending at the site's end would displace.

    For a site whose next instruction is a branch target or follows no fall-through (a loop head, a
    jmp): the jump to the trampoline starts at an earlier instruction P instead, so the patch is
    [P, site end). Allowed when P..site are contiguous plain instructions of the same region and mode,
    none but P is a branch target or a symbol boundary, and the site itself is not a branch target.
    The trampoline replays them, then lowers the site, then jumps back to the site's end."""
    if not ctx.options.allow_trampolines or site.bits == 16:
        return (), "no backward displacement"
    i = ctx.insn_index(site.va)
    if i is None:
        return (), "site is not a decoded instruction"
    region = ctx.region_of(site.va)
    end = site.va + site.size
    if ctx.any_in(ctx.targets, site.va - 1, site.va + 1) or ctx.any_in(ctx.boundaries, site.va - 1, site.va + 1):
        return (), "the site itself is a branch target or symbol boundary"
    before: list[Insn] = []
    start = site.va
    while end - start < JMP_REL32_SIZE:
        i -= 1
        if i < 0 or ctx.insns[i].va + ctx.insns[i].size != start:
            return (), "no contiguous instruction before the site"
        prev = ctx.insns[i]
        if prev.bits != site.bits or region is None or prev.va < region.start_va:
            return (), "region or mode change before the site"
        if (_is_control(prev) and _name(prev) not in _JCC) or prev.va in ctx.site_by_va:
            return (), f"{prev.mnemonic} before the site"  # a jcc is re-encoded rel32 in the trampoline
        if before and (ctx.any_in(ctx.targets, start - 1, start + 1) or ctx.any_in(ctx.boundaries, start - 1, start + 1)):
            return (), "branch target before the site"
        before.insert(0, prev)
        start = prev.va
    if start < ctx.patched_until:
        return (), "an earlier patch covers the bytes before the site"
    if ctx.any_in(ctx.targets, start, end) or ctx.any_in(ctx.boundaries, start, end):
        return (), "branch target or symbol boundary inside the bytes before the site"
    return tuple(before), ""


def _try_punned(ctx: _Ctx, site: Site) -> tuple[int | None, str]:
    opts = ctx.options
    if not opts.allow_punned or not opts.punned_free_ranges:
        return None, "no free ranges for punned jumps"
    if site.bits == 16:
        return None, "16-bit code: no punned jumps"
    if site.size >= JMP_REL32_SIZE:
        return None, ""
    tail_lo, tail_hi = site.va + site.size, site.va + JMP_REL32_SIZE
    region = ctx.region_of(site.va)
    if region is None or tail_hi > region.end_va:
        return None, "punned bytes run past the region"
    if ctx.sites_in(tail_lo, tail_hi):
        return None, "another site inside the punned bytes"
    i = ctx.insn_index(site.va)
    tail = b""
    j = i + 1 if i is not None else len(ctx.insns)
    while len(tail) < tail_hi - tail_lo and j < len(ctx.insns):
        tail += ctx.insns[j].raw
        j += 1
    tail = tail[: tail_hi - tail_lo]
    if len(tail) != tail_hi - tail_lo:
        return None, "punned bytes are not decoded code"
    free = site.size - 1
    base = int.from_bytes(bytes(free) + tail, "little", signed=True)
    lo_rel, hi_rel = base, base + (1 << (8 * free)) - 1
    mask = (1 << site.bits) - 1 if site.bits < 64 else (1 << 64) - 1
    need = opts.punned_trampoline_bytes
    for start, stop in sorted(opts.punned_free_ranges):
        lo_t = (site.va + JMP_REL32_SIZE + lo_rel) & mask
        hi_t = (site.va + JMP_REL32_SIZE + hi_rel) & mask
        if hi_t < lo_t:
            continue  # wraps: skip rather than reason about it
        cand = max(lo_t, start)
        for u0, u1 in sorted(ctx.used_punned):
            if cand < u1 and u0 < cand + need:
                cand = max(cand, u1)
        if cand <= hi_t and cand + need <= stop:
            ctx.used_punned.append((cand, cand + need))
            return cand, ""
    return None, "no free range reachable by the punned rel32"


def _stranded_after(ctx: _Ctx, end: int) -> int:
    """The end of a short site just after a patch ending at ``end`` that no tactic could take once that
    patch is planned (its own displacement fails, and backward it would need the patch's bytes), so
    that the patch should run on through it; else 0."""
    after = ctx.sites_in(end, end + JMP_REL32_SIZE)
    if not after:
        return 0
    nxt = ctx.site_by_va[after[0]]
    nxt_end = nxt.va + nxt.size
    if nxt_end - end >= JMP_REL32_SIZE or _in_place_fits(lower(nxt), nxt.size):
        return 0
    _, why = _try_trampoline(ctx, nxt)
    return nxt_end if why else 0


def _group_sites(ctx: _Ctx, displaced: Sequence[Insn]) -> tuple[int, ...]:
    return tuple(d.va for d in displaced if d.va in ctx.site_by_va)


def plan(decoded: Decoded, options: PlanOptions = PlanOptions(),
         boundaries: Iterable[int] = ()) -> Plan:
    """Plan every site of ``decoded``: deterministic, pure. ``boundaries``: ``symbol_boundaries_of``."""
    ctx = _Ctx(decoded, options, frozenset(boundaries))
    out: dict[int, PlannedSite] = {}
    prev: int | None = None
    for site in sorted(decoded.sites, key=lambda s: s.va):
        if prev is not None and out[prev].patch is not None:
            ctx.patched_until = max(ctx.patched_until, out[prev].patch.end_va)
        if site.va in out:
            continue  # already lowered inside an earlier site's trampoline
        prev = site.va
        steps = lower(site)
        common = dict(va=site.va, raw=site.raw, bits=site.bits, text=site.text, entry_name=site.entry.name,
                      cls=site.entry.cls, lowering=site.entry.lowering, site_rip_relative=site.bits == 64
                      and "rip" in site.text, hypercall=site.entry.hypercall
                      if site.entry.hypercall is not None and site.entry.lowering in (Lowering.HYPERCALL, Lowering.STRING_HYPERCALL)
                      else None, steps=steps)
        reasons: list[str] = []
        if _in_place_fits(steps, site.size):
            out[site.va] = PlannedSite(**common, tactic=Tactic.IN_PLACE,
                                       patch=PatchRange(site.va, site.va + site.size))
            continue
        reasons.append("lowering longer than the site")
        displaced, why = _try_trampoline(ctx, site)
        if not why and displaced and not _ends_flow(displaced[-1]):
            through = _stranded_after(ctx, displaced[-1].va + displaced[-1].size)
            longer, why_longer = _try_trampoline(ctx, site, through) if through else ((), "no")
            if not why_longer:
                displaced = longer
        if not why:
            end = displaced[-1].va + displaced[-1].size if displaced else site.va + site.size
            if displaced and _ends_flow(displaced[-1]) and end < site.va + JMP_REL32_SIZE:
                end = site.va + JMP_REL32_SIZE  # the patch runs on over int3 padding (_padding_until)
            joined = _group_sites(ctx, displaced)
            disp = tuple(Displaced(d.va, d.raw, f"{d.mnemonic} {d.op_str}".strip(), _needs_rip(d), d.va in joined,
                                   _relocatable_branch(d) and _name(d) != "ret")
                         for d in displaced)
            seq = list(steps)
            for d in disp:
                seq.extend(lower(ctx.site_by_va[d.va]) if d.is_site
                           else (Step(StepOp.REPLAY, (d.va, d.raw, d.needs_rip_relocation,
                                                      d.needs_branch_relocation)),))
            if not (displaced and _ends_flow(displaced[-1])):
                seq.append(Step(StepOp.JUMP_BACK, (end,)))
            out[site.va] = PlannedSite(**common, tactic=Tactic.TRAMPOLINE_JUMP, patch=PatchRange(site.va, end),
                                       displaced=disp, joined=joined, sequence=tuple(seq))
            for va in joined:
                other = ctx.site_by_va[va]
                out[va] = PlannedSite(va=va, raw=other.raw, bits=other.bits, text=other.text,
                                      entry_name=other.entry.name, cls=other.entry.cls,
                                      lowering=other.entry.lowering,
                                      hypercall=other.entry.hypercall
                                      if other.entry.lowering in (Lowering.HYPERCALL, Lowering.STRING_HYPERCALL)
                                      else None,
                                      steps=lower(other), tactic=Tactic.TRAMPOLINE_JUMP, patch=None,
                                      site_rip_relative=other.bits == 64 and "rip" in other.text,
                                      joined_to=site.va)
            continue
        reasons.append(why)
        before, why_back = _try_backward(ctx, site) if site.size < JMP_REL32_SIZE else ((), "fits")
        if before:
            disp_before = tuple(Displaced(d.va, d.raw, f"{d.mnemonic} {d.op_str}".strip(), _needs_rip(d),
                                          needs_branch_relocation=_name(d) in _JCC) for d in before)
            seq = [Step(StepOp.REPLAY, (d.va, d.raw, d.needs_rip_relocation, d.needs_branch_relocation))
                   for d in disp_before]
            seq += [*steps, Step(StepOp.JUMP_BACK, (site.va + site.size,))]
            out[site.va] = PlannedSite(**common, tactic=Tactic.TRAMPOLINE_JUMP,
                                       patch=PatchRange(before[0].va, site.va + site.size),
                                       displaced_before=disp_before, sequence=tuple(seq),
                                       reason="; ".join(reasons))
            continue
        reasons.append(f"backward: {why_back}")
        target, why = _try_punned(ctx, site)
        if target is not None:
            out[site.va] = PlannedSite(**common, tactic=Tactic.PUNNED_JUMP,
                                       patch=PatchRange(site.va, site.va + site.size),
                                       punned_target_va=target, reason="; ".join(reasons),
                                       sequence=(*steps, Step(StepOp.JUMP_BACK, (site.va + site.size,))))
            continue
        reasons.append(why)
        if not options.allow_trap_fallback:
            raise PlanError(f"site {site.va:#x} ({site.text}) has no tactic: {'; '.join(reasons)}; "
                            "hint: allow trap fallback or trampolines")
        out[site.va] = PlannedSite(**common, tactic=Tactic.TRAP, patch=PatchRange(site.va, site.va + site.size),
                                   trap=TrapKind.INT3 if site.size == 1 else TrapKind.INT_0X82,
                                   reason="; ".join(reasons))
    sites = tuple(out[va] for va in sorted(out))
    by_tactic = Counter(s.tactic for s in sites)
    by_class = Counter(s.cls for s in sites)
    return Plan(sites=sites,
                by_tactic=MappingProxyType({t: by_tactic[t] for t in LADDER if by_tactic[t]}),
                by_class=MappingProxyType({c: by_class[c] for c in LoweringClass if by_class[c]}),
                options=options)


def symbol_boundaries_of(symbols: Iterable) -> frozenset[int]:
    """Where code may be entered or left by name (``image.symbols``): the start of every function or
    label symbol (a label may be an exception handler's resume point) and the end of every sized
    function. A trampoline never displaces across one."""
    out = set()
    for s in symbols:
        kind = getattr(s.type, "name", "")
        if kind in ("FUNC", "NOTYPE"):
            out.add(s.va)
        if kind == "FUNC" and s.size:
            out.add(s.va + s.size)
    return frozenset(out)

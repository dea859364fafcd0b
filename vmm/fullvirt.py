"""fullvirt and trap modes: owns the exit taken at every sensitive instruction discovery finds, and its counts.

Each site found (`vmm.discover`) gets a UC_HOOK_CODE ranged to its own address (which costs nothing
elsewhere); its handler runs before the instruction, with the guest state at it. How each catalog
entry is handled is a table checked against the catalog at import:

- EXECUTE (fullvirt: every entry; trap: the privileged ones): the exit is taken and counted, then
  the engine carries out exactly this instruction on the vCPU state, as pv mode single-steps a
  privileged instruction, but without leaving the slice; its side effects go through the VMM's own
  handlers (port bus, CPUID model, cpufix's MSRs and CR8). Faults are raised at the instruction, as
  natively. Emulating in the hook and skipping by a RIP write was measured and not kept: Unicorn
  then leaves the block and re-enters its loop (+0.65 us per exit), and an EFLAGS write from a
  hook costs another 0.9 us, against 0.18 us for the exit itself, with the same guest-visible result.
- DEPRIVILEGED (trap mode, the catalog's sensitive-unprivileged entries): no exit; the instruction
  runs as at the guest kernel's deprivileged ring (`vmm.deprivileged`), counted apart.

Exits are counted per execution: one per instruction, one per element of a string I/O instruction
(Unicorn re-enters a rep instruction once per iteration, and once more when the count is 0).

A code hook costs the guest its arithmetic flags in two places (Unicorn 2.1.4: the lazily computed
flags are not brought up to date around the hook's call): an exception the instruction raises from
a helper (#UD of ``mov dr4``, #PF of ``smsw m16``, ...) is taken with stale flags, and a ``rep``
string instruction loses AF after its first element. The hook reads EFLAGS, still right there, so
that the vCPU puts them back before it delivers the instruction's fault (``flags_before_fault``),
and writes them back itself at the last entry of a ``rep`` it has seen run from its first. The read
costs ~0.6 us, twice the exit itself, so it is skipped at ring 0 for the register forms that cannot
fault there (``QUIET_AT_RING0``: cli, sti, port in/out, pushf/popf, ...; the CPL from the vCPU's
``CpuView``).
"""
from __future__ import annotations

import bisect
import enum
from collections import Counter
from types import MappingProxyType
from typing import Callable

from capstone.x86_const import X86_OP_MEM
from unicorn import UC_HOOK_CODE
from unicorn import x86_const as X

from pvtranslate.catalog import ENTRIES, Form, Privilege

from . import deprivileged
from .cpu import Cpu, CpuView
from .discover import SensitiveSite
from .memory import GuestRam
from .rawhooks import CODE_CFUNC, add_raw_hook


class Handling(enum.Enum):
    EXECUTE = "the exit is taken, then the engine carries out this one instruction"
    DEPRIVILEGED = "trap mode: no exit; runs as at the guest kernel's deprivileged ring"


FULLVIRT: MappingProxyType = MappingProxyType({e.name: Handling.EXECUTE for e in ENTRIES})
TRAP: MappingProxyType = MappingProxyType(
    {e.name: Handling.DEPRIVILEGED if e.privilege is Privilege.SENSITIVE_UNPRIVILEGED else Handling.EXECUTE
     for e in ENTRIES})
if not deprivileged.covers(n for n, h in TRAP.items() if h is Handling.DEPRIVILEGED):
    raise ImportError("vmm.fullvirt: a sensitive-unprivileged catalog entry has no deprivileged handling")
_MISSING = object()
# entries that raise no exception at CPL 0 in their register forms (no memory operand); and pushf/popf,
# whose only one there, a #PF on the kernel's own stack, is fatal to it (so their frame keeps Unicorn's flags)
QUIET_AT_RING0 = frozenset({
    "pushf16", "pushfd", "pushfq", "popf16", "popfd", "popfq",
    "cli", "sti", "hlt", "clts", "cpuid", "rdtsc", "wbinvd", "invd", "lmsw", "smsw", "str", "sldt",
    "lar", "lsl", "verr", "verw", "mov.from.cr0", "mov.from.cr2", "mov.from.cr3", "mov.from.cr4", "mov.from.cr8",
    "mov.from.dr0", "mov.from.dr1", "mov.from.dr2", "mov.from.dr3", "mov.from.dr6", "mov.from.dr7",
    "mov.from.cs", "mov.from.ds", "mov.from.es", "mov.from.fs", "mov.from.gs", "mov.from.ss",
    *(f"{d}{w}.{p}" for d in ("in", "out") for w in (8, 16, 32) for p in ("dx", "imm8"))})


class _Armed:
    """One hooked site in one code mode: how it is handled and how often it ran."""

    __slots__ = ("site", "handling", "run", "count_mask", "hits", "quiet")

    def __init__(self, site: SensitiveSite, handling: Handling, run: Callable[[], None] | None) -> None:
        self.site = site
        self.handling = handling
        self.run = run                      # None: the engine runs the instruction as it is
        # rep ins/outs: the count register's width; an entry with it at 0 moves no element, no exit
        self.count_mask = (1 << 8 * site.insn.addr_size) - 1 if site.entry.form is Form.STRING_REP else 0
        self.hits = 0
        # cannot fault at CPL 0: no need to keep the flags for a fault's frame
        self.quiet = site.entry.name in QUIET_AT_RING0 and not any(
            op.type == X86_OP_MEM for op in (site.insn.operands if site.insn is not None else ()))


class SiteHooks:
    """The per-site code hooks of fullvirt or trap mode (a discovery listener) and the exit counts."""

    def __init__(self, trap: bool, cpu: Cpu, ram: GuestRam, fail: Callable[[BaseException], None],
                 view: CpuView | None = None) -> None:
        self.table = TRAP if trap else FULLVIRT
        # the live hidden flags (CPL in bits 0-1), or None: then every site keeps its flags
        self._hflags = view.hflags_cell if view is not None and view.live else None
        self.cpu = cpu
        self.uc = cpu.uc
        self.ram = ram
        self.fail = fail
        self._slots: dict[int, dict[int, _Armed]] = {}      # va -> code bits -> armed site
        self._vas: list[int] = []                            # the keys of _slots, sorted
        self._dispatch: dict[int, _Armed | None] = {}        # va -> its only site; None: ask the code mode
        self._mixed: set[int] = set()                        # vas also scanned in another code mode
        self._hooks: dict[int, int] = {}                     # va -> hook handle
        self._retired: list[_Armed] = []                     # replaced sites keep their counts
        self._code_cb = CODE_CFUNC(self._on_code)
        self._flags_at: tuple[int, int] | None = None        # (site va, EFLAGS before it) of the last exit
        self._rep_next: tuple[int, int] | None = None        # (rep site va, count its next entry will have)

    # --- discovery listener ----------------------------------------------------------------------------
    def block_scanned(self, lo: int, hi: int, bits: int, sites: list[SensitiveSite]) -> bool:
        found = {s.va: s for s in sites}
        changed = False
        start = bisect.bisect_left(self._vas, lo)
        for va in self._vas[start:bisect.bisect_left(self._vas, hi, start)]:
            variants = self._slots[va]
            old = variants.get(bits)
            if old is None:
                self._mixed.add(va)
            elif found.get(va) is None or found[va].code != old.site.code:
                self._retired.append(variants.pop(bits))
                changed = True
        for va, site in found.items():
            variants = self._slots.get(va)
            if variants is not None and bits in variants:
                continue
            if variants is None:
                variants = self._slots[va] = {}
                bisect.insort(self._vas, va)
            elif variants:
                self._mixed.add(va)
            handling = self.table[site.entry.name]
            run = deprivileged.handler(site, self.cpu, self.ram) if handling is Handling.DEPRIVILEGED else None
            variants[bits] = _Armed(site, handling, run)
            changed = True
        for va in self._vas[bisect.bisect_left(self._vas, lo):bisect.bisect_left(self._vas, hi)]:
            self._rehook(va)
        return changed

    def _rehook(self, va: int) -> None:
        variants = self._slots[va]
        if not variants:
            del self._slots[va]
            self._vas.remove(va)
            self._dispatch.pop(va, None)
            self.uc.hook_del(self._hooks.pop(va))
            return
        self._dispatch[va] = None if va in self._mixed or len(variants) > 1 else next(iter(variants.values()))
        if va not in self._hooks:
            self._hooks[va] = add_raw_hook(self.uc, UC_HOOK_CODE, self._code_cb, va, va)

    # --- the exit ----------------------------------------------------------------------------------------
    def _on_code(self, _handle, address: int, _size: int, _ud) -> None:
        try:
            armed = self._dispatch.get(address, _MISSING)
            if armed is None:
                armed = self._slots[address].get(self.cpu.code_bits())
            if armed is None or armed is _MISSING:
                self._flags_at = None
                return
            if not armed.count_mask:
                armed.hits += 1
                self._rep_next = None
                hflags = self._hflags
                if armed.quiet and hflags is not None and not hflags.value & 3:
                    self._flags_at = None
                else:
                    self._flags_at = (address, self.cpu._fast_read(X.UC_X86_REG_EFLAGS))
            else:
                self._rep_entry(armed, address)
            if armed.run is not None:
                armed.run()
        except BaseException as exc:          # noqa: BLE001 - never unwind through the C engine
            self.fail(exc)

    def _rep_entry(self, armed: _Armed, address: int) -> None:
        """A rep string site, entered once per element and once more with the count at 0."""
        read = self.cpu._fast_read
        count = read(X.UC_X86_REG_RCX) & armed.count_mask
        if count:
            armed.hits += 1
        before = self._flags_at
        again = self._rep_next == (address, count) and before is not None   # after the first: flags stale
        flags = before[1] if again else read(X.UC_X86_REG_EFLAGS)
        self._rep_next = (address, count - 1) if count else None
        if again and not count:
            self.cpu._fast_write(X.UC_X86_REG_EFLAGS, flags)
        self._flags_at = (address, flags)

    def flags_before_fault(self, pc: int) -> int | None:
        """EFLAGS before the site at ``pc``, if an exception the vCPU is taking there was raised by it."""
        at = self._flags_at
        return at[1] if at is not None and at[0] == pc else None

    # --- counts --------------------------------------------------------------------------------------------
    def _all(self):
        yield from self._retired
        for variants in self._slots.values():
            yield from variants.values()

    def exits_by_class(self) -> dict[str, int]:
        return _count((a.site.entry.cls.name, a.hits) for a in self._all() if a.handling is not Handling.DEPRIVILEGED)

    def exits_by_name(self) -> dict[str, int]:
        return _count((a.site.entry.name, a.hits) for a in self._all() if a.handling is not Handling.DEPRIVILEGED)

    def deprivileged_by_class(self) -> dict[str, int]:
        return _count((a.site.entry.cls.name, a.hits) for a in self._all() if a.handling is Handling.DEPRIVILEGED)

    def sites(self) -> list[SensitiveSite]:
        return [a.site for a in self._all()]


def _count(pairs) -> dict[str, int]:
    total: Counter[str] = Counter()
    for key, n in pairs:
        if n:
            total[key] += n
    return dict(sorted(total.items()))

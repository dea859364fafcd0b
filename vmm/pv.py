"""pv mode: owns running a translated guest — its PVTR note, site table, shared page and hypercall handler.

Boot (``attach``): a kernel ELF with a ``PVTR`` note (``pvtranslate.abi``, the only pvtranslate
module the VMM imports) is a translated guest. The site table is read from guest RAM after loading,
the shared page gets its magic and ABI version, and the vCPU is switched to pv mode:

- External interrupts are taken only while the shared page's virtual IF is 1 (not EFLAGS.IF), and
  not while a trampoline keeps guest registers in the save area (before its ``int 0x82``).
  Around every delivery into the guest the real EFLAGS.IF is set from the virtual IF (so the
  frame carries it) and the virtual IF is then taken back from EFLAGS (an interrupt gate clears it).
- ``int 0x82`` at an address in the site table's hypercall list is a hypercall; any other
  ``int 0x82`` (or ``int3``) is the guest's own and goes through its IDT.
- Hypercalls: port and string I/O at CPL 0 are carried out inside the engine's interrupt hook, on the
  registers in place (``_make_in_hook``), so they do not end the emulation slice; every other one
  ends it and is handled from the vCPU loop (``deliver``). Port I/O goes through the vCPU's own IN/OUT
  exit handlers (same port bus, same clock charge). String I/O moves at most STRING_CHUNK elements
  per round and then goes on at its ``int 0x82`` with the registers advanced, as an interrupted
  ``rep`` would: the run's limits are checked between rounds, and an interrupt is taken after the
  last one, as the native machine takes it (vmm/vcpu.py: never inside a string instruction). HALT is
  the native ``hlt`` path. Privileged operations are carried out by Unicorn
  itself: the VMM writes a native instruction (e.g. ``mov cr0, rsi``, ``mov ds, esi``, ``rdmsr``)
  over the 2-byte ``int 0x82`` it stopped at, single-steps it with the argument registers in
  place, and puts the ``int 0x82`` back; rdmsr/wrmsr first get vmm/cpufix.py's corrections.
  Descriptor-table loads are register writes. Others run the original instruction at the site
  (``_by_original``). Then the registers the trampoline set aside in the save area are put back,
  but for those the instruction writes (its results; string I/O's index and count).
- Faults: one an emulated instruction raises, or a trampoline's own guest-memory access (an access
  point), is delivered at the site with the guest's registers and stack (the unwind records); one
  inside a replayed displaced instruction at that instruction's original address.
- TRAP sites (``int3`` or ``int 0x82`` in place of the instruction): cli/sti/hlt are emulated on
  the virtual IF; port in/out at CPL 0 is carried out in the interrupt hook, like a port hypercall
  (a slice end and a single step cost ~150 us, against ~2 us there); any other instruction runs as natively (vmm/cpufix.py's corrections, else a
  single step of its original bytes, written back at the site for that one step, with the virtual
  IF as EFLAGS.IF), and execution resumes after it.
"""
from __future__ import annotations

import bisect
import ctypes
import functools
import struct
from typing import Callable

from unicorn import UC_HOOK_CODE
from unicorn import x86_const as X

from pvtranslate import abi
from pvtranslate.abi import (HYPERCALL_SPECS, REGISTERS_32, REGISTERS_64, SREG_SHADOW_ORDER, Hypercall,
                             SharedOffset)

from .cpu import HF_CPL_MASK, HF_CS32, HF_CS64, CpuView
from .errors import GuestError, LoadError, OutsideRam
from .interrupts import DB, GP, PF, UD, Event, EventKind
from .memory import PAGE, LinearMemory, PageFault, translate

CR4_DE = 1 << 3
WRITABLE_CRS = frozenset({0, 2, 3, 4, 8})    # mov to crN; others are #UD, checked after CPL as QEMU does
LOADABLE_SREGS = frozenset({0, 2, 3, 4, 5})   # es, ss, ds, fs, gs: mov to cs and sreg 6-7 are #UD
EFLAGS_TF = 1 << 8
EFLAGS_IF = 1 << 9
EFLAGS_DF = 1 << 10
EFLAGS_AC = 1 << 18
CPUID_7_EBX_SMAP = 1 << 20
NARROW_RESULTS = {Hypercall.PORT_IN8: 0xFF, Hypercall.PORT_IN16: 0xFFFF}   # merged into rax / eax
PORT_HYPERCALLS = {Hypercall.PORT_IN8: 1, Hypercall.PORT_IN16: 2, Hypercall.PORT_IN32: 4,
                   Hypercall.PORT_OUT8: 1, Hypercall.PORT_OUT16: 2, Hypercall.PORT_OUT32: 4}
_RM = {"eax": 0, "ecx": 1, "edx": 2, "ebx": 3, "esp": 4, "ebp": 5, "esi": 6, "edi": 7,
       "rax": 0, "rcx": 1, "rdx": 2, "rbx": 3, "rsp": 4, "rbp": 5, "rsi": 6, "rdi": 7}
STRING_CHUNK = 4096         # string I/O elements per hypercall round; the engine checks its limits between rounds
_PORT_IN, _PORT_OUT, _STRING_IN, _STRING_OUT = range(4)
# the hypercalls pv mode carries out in the interrupt hook: number -> (kind, port access size, name, the
# bits of rax an `in` keeps)
_FAST_CALLS = {int(h): (_PORT_IN if h.name.startswith("PORT_IN") else _PORT_OUT, size, h.name,
                        ~NARROW_RESULTS.get(h, ~0) & ((1 << 64) - 1))
               for h, size in PORT_HYPERCALLS.items()} | {
    int(Hypercall.STRING_IN): (_STRING_IN, 0, Hypercall.STRING_IN.name, 0),
    int(Hypercall.STRING_OUT): (_STRING_OUT, 0, Hypercall.STRING_OUT.name, 0)}
# GPR indexes (hardware order, as a context blob and the unwind records have them) of each convention's arguments
_ARG_INDEX = {bits: tuple(abi.unwind_index(r) for r in conv.arg_regs)
              for bits, conv in ((64, REGISTERS_64), (32, REGISTERS_32))}
_PREFIXES = frozenset((0x66, 0x67, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0xF0))


@functools.cache
def _reg(name: str) -> int:
    return getattr(X, "UC_X86_REG_" + name.upper())


def _merge(old: int, value: int, bits: int) -> int:
    """A register written by ``bits``-bit code: 32-bit code leaves the upper half as it was."""
    return value & ((1 << 64) - 1) if bits == 64 else (old & ~0xFFFFFFFF) | (value & 0xFFFFFFFF)


def _port_form(raw: bytes) -> tuple[bool, int, int | None, int] | None:
    """(in?, access size in 32/64-bit code, immediate port or None for dx, length) of a port in/out
    instruction (an optional 0x66, an optional REX, then e4-e7 or ec-ef), else None."""
    k = 1 if raw[:1] == b"\x66" else 0
    if k < len(raw) and 0x40 <= raw[k] <= 0x4F:
        k += 1
    if k >= len(raw):
        return None
    op = raw[k]
    imm = op in (0xE4, 0xE5, 0xE6, 0xE7)
    if not imm and op not in (0xEC, 0xED, 0xEE, 0xEF) or len(raw) != k + 1 + imm:
        return None
    rex_w = k > (raw[:1] == b"\x66") and raw[k - 1] & 8          # REX.W overrides 0x66: 32-bit
    size = 1 if not op & 1 else 2 if raw[:1] == b"\x66" and not rex_w else 4
    return not op & 2, size, raw[k + 1] if imm else None, len(raw)


def descriptor(image) -> abi.AbiDescriptor | None:
    """The PVTR/ABI note of a loaded kernel image, or None for an untranslated guest."""
    note = image.note(abi.NOTE_NAME.decode(), abi.NoteType.ABI)
    if note is None:
        return None
    name = abi.NOTE_NAME + b"\0"
    record = (struct.pack("<III", len(name), len(note.desc), abi.NoteType.ABI) + name.ljust(8, b"\0")
              + note.desc.ljust((len(note.desc) + 3) & ~3, b"\0"))
    try:
        return abi.unpack_note(record)
    except abi.UnknownAbiVersion as exc:
        raise LoadError(f"{image.path}: cannot run this translated guest: {exc}") from None
    except abi.AbiError as exc:
        raise LoadError(f"{image.path}: malformed PVTR note: {exc}; re-translate the guest") from None


def _image_pa(image, va: int, size: int = 1, what: str = "PV address") -> int:
    """The guest-physical address of ``size`` bytes at ``va``, which must lie inside one loaded segment."""
    for seg in image.segments:
        if seg.vaddr <= va < seg.vaddr + seg.mem_size:
            if va + size > seg.vaddr + seg.mem_size:
                raise LoadError(f"{image.path}: cannot boot: the {what} at {va:#x} ({size} bytes) runs past the end "
                                f"of its segment ({seg.vaddr + seg.mem_size:#x}); re-translate the guest")
            return seg.paddr + (va - seg.vaddr)
    raise LoadError(f"{image.path}: cannot boot: {what} {va:#x} is in no loaded segment; re-translate the guest")


class PvMode:
    """The pv-mode state of one machine: site table, shared page and the hypercall handler."""

    def __init__(self, machine, desc: abi.AbiDescriptor) -> None:
        self.machine = machine
        self.vcpu = machine.vcpu
        self.cpu = machine.cpu
        self.uc = machine.uc
        self.ram = machine.ram
        image = machine.record.image
        # the note's pointers and the table's own counts are the file's: checked against the segments
        # before anything is read (a read outside RAM would look like a guest crash)
        table_pa = _image_pa(image, desc.site_table_va, abi.SITE_TABLE_HEADER.size, "PV site table")
        try:
            size = abi.site_table_size(self.ram.read(table_pa, abi.SITE_TABLE_HEADER.size))
            _image_pa(image, desc.site_table_va, size, "PV site table")
            self.table = abi.parse_site_table(self.ram.read(table_pa, size))
        except abi.AbiError as exc:
            raise LoadError(f"{image.path}: bad PV site table at {desc.site_table_va:#x}: {exc}") from None
        except OutsideRam as exc:
            raise LoadError(f"{image.path}: cannot boot: the PV site table at {desc.site_table_va:#x} is outside "
                            f"guest RAM ({exc}); re-translate the guest") from None
        if len(self.table.sites) != desc.site_count:
            raise LoadError(f"{image.path}: PV site table holds {len(self.table.sites)} sites, the note "
                            f"says {desc.site_count}; re-translate the guest")
        self.desc = desc
        self.shared_pa = _image_pa(image, desc.shared_page_va, abi.SHARED_PAGE_SIZE, "PV shared page")
        if self.shared_pa + abi.SHARED_PAGE_SIZE > self.ram.size:
            raise LoadError(f"{image.path}: cannot boot: the PV shared page at {desc.shared_page_va:#x} is outside "
                            "guest RAM; re-translate the guest")
        # pc map: trampoline boundaries, and the original addresses strictly inside a patch (a guest
        # handed one of them in a fault frame resumes at the matching point of the trampoline)
        self._boundaries = {e.trampoline_va: e for e in self.table.pc_map}
        self._boundary_vas = [e.trampoline_va for e in self.table.pc_map]
        self.resume_in = {e.original_va: e.trampoline_va for e in self.table.pc_map
                          if e.kind is not abi.PcKind.BACK and not (
                              e.original_va in self.table.sites
                              and self.table.sites[e.original_va].trampoline_va == e.trampoline_va)}
        self._step_from: int | None = None
        self._stepping = False
        own = next(seg for seg in image.segments if seg.vaddr <= desc.shared_page_va < seg.vaddr + seg.mem_size)
        self.own_range = (own.vaddr, own.vaddr + own.mem_size)  # shared page, trampolines, site table
        self._vif_pa = self.shared_pa + SharedOffset.VIRTUAL_IF
        self._pending_pa = self.shared_pa + SharedOffset.EVENTS_PENDING
        self._events_pending = None
        self._save_area_pa = self.shared_pa + SharedOffset.SAVE_AREA
        self.resuming: int | None = None        # a string I/O hypercall's int 0x82, to go on there
        self._resumed = False
        self._ctx = None
        self._unwound = False                    # the current hypercall's trampoline has been undone
        page = bytearray(abi.SHARED_PAGE_SIZE)
        page[SharedOffset.MAGIC:SharedOffset.MAGIC + 4] = abi.SHARED_PAGE_MAGIC
        struct.pack_into("<I", page, SharedOffset.ABI_VERSION, desc.abi_version)
        page[SharedOffset.VIRTUAL_IF] = 1 if self.cpu.interrupts_enabled() else 0
        self.ram.write(self.shared_pa, bytes(page))
        self.sync_shadows()
        self._install_resume_hooks()
        self.vcpu.pv = self
        # save-area windows: from the start of a lowering that sets registers aside there to its int 0x82
        windows = sorted((self._boundary_vas[bisect.bisect_right(self._boundary_vas, p.va) - 1], p.va + 2)
                         for p in self.table.points.values()
                         if p.in_save_area and not p.access and self._boundary_vas and p.va >= self._boundary_vas[0])
        self._window_starts = [start for start, _end in windows]
        self._window_ends = [end for _start, end in windows]
        self.vcpu.interrupts_enabled = self.accepts_interrupts
        # the int 0x82 of every lowering (not trap sites): the hypercalls in_hook may carry out
        # (save-area points only: a lowering that pushed registers pops them itself after its int 0x82)
        self._fast_points = {va: p for va, p in self.table.points.items()
                             if not p.access and p.in_save_area and va in self.table.hypercalls
                             and (site := self.table.sites.get(self.table.hypercalls[va])) is not None
                             and not (site.is_trap and site.site_va == va)}
        self.vcpu.software_interrupt = self._make_in_hook()

    # --- shared page ---------------------------------------------------------------------------------
    def virtual_if(self) -> bool:
        return bool(self.ram.read(self._vif_pa, 1)[0] & 1)

    def set_virtual_if(self, on: bool) -> None:
        self.ram.write(self._vif_pa, b"\x01" if on else b"\x00")

    def set_events_pending(self, pending: bool) -> None:
        if pending != self._events_pending:
            self._events_pending = pending
            self.ram.write(self._pending_pa, b"\x01" if pending else b"\x00")

    def sync_shadows(self) -> None:
        """Copy the CPU state the guest reads inline (CRs, DRs, table registers, selectors) to the page."""
        r = self.uc.reg_read
        base = self.shared_pa
        w = lambda off, fmt, *v: self.ram.write(base + off, struct.pack(fmt, *v))  # noqa: E731
        for name in ("CR0", "CR2", "CR3", "CR4"):
            w(SharedOffset[name], "<Q", r(_reg(name)))
        w(SharedOffset.CR8, "<Q", (self.machine.lapic.read(0x80, 4) >> 4) & 0xF)
        for n in range(8):
            alias = n + 2 if n in (4, 5) and not r(X.UC_X86_REG_CR4) & CR4_DE else n
            w(SharedOffset[f"DR{n}"], "<Q", r(_reg(f"DR{alias}")))
        for name, off in (("GDTR", SharedOffset.GDTR), ("IDTR", SharedOffset.IDTR)):
            _sel, tbase, limit, _flags = r(_reg(name))
            w(off, "<HQ", limit & 0xFFFF, tbase)
        w(SharedOffset.LDTR, "<H", r(X.UC_X86_REG_LDTR)[0] & 0xFFFF)
        w(SharedOffset.TR, "<H", r(X.UC_X86_REG_TR)[0] & 0xFFFF)
        w(SharedOffset.SREGS, "<6H", *(r(_reg(s)) & 0xFFFF for s in SREG_SHADOW_ORDER))

    # --- events ----------------------------------------------------------------------------------------
    def deliver(self, event: Event) -> None:
        """The vCPU's delivery path in pv mode: hypercalls, trap sites, else the guest's own event."""
        if event.kind is EventKind.SOFTWARE:
            pc = self.cpu.pc
            if event.vector == abi.HYPERCALL_VECTOR and event.insn_len == 2 and pc - 2 in self.table.hypercalls:
                site = self.table.sites.get(self.table.hypercalls[pc - 2])
                if site is not None and site.is_trap and site.site_va == pc - 2:
                    self._trap(site)
                else:
                    self._hypercall(pc - 2)
                return
            if event.vector == 3 and event.insn_len == 1:
                site = self.table.sites.get(pc - 1)
                if site is not None and site.is_trap:
                    self._trap(site)
                    return
        elif event.vector == DB and self.cpu.eflags & EFLAGS_TF and self.own_range[0] <= self.cpu.pc < self.own_range[1]:
            if not self._single_step_in_trampoline():
                return
        elif event.kind is EventKind.EXCEPTION and self.own_range[0] <= self.cpu.pc < self.own_range[1]:
            self._fault_in_trampoline()
        self._deliver_guest(event)

    def _single_step_in_trampoline(self) -> bool:
        """A single-step #DB inside a trampoline: True to deliver it now (at the original address).

        The trampoline's own instructions are not the guest's: stepping goes on until a guest
        instruction (a lowered site or a replayed one) that began with TF set has completed, that is
        until a pc-map boundary whose preceding range started at or after the first step seen."""
        pc = self.cpu.pc
        if self._step_from is None:
            self._step_from = pc
        entry = self._boundaries.get(pc)
        if entry is None:
            return False
        k = bisect.bisect_left(self._boundary_vas, pc)
        if k == 0 or self._boundary_vas[k - 1] < self._step_from:
            return False
        self.cpu.pc = entry.original_va
        return True

    def _install_resume_hooks(self) -> None:
        """A code hook on every original address strictly inside a patch (where a displaced
        instruction or a joined site began): a guest that gets there — a fault frame's return
        address, an exception-table fixup the translator could not see — continues at the matching
        point of the trampoline. Nothing else reaches these addresses, so the hooks cost nothing."""
        def redirect(uc, address, _size, targets):
            target = targets.get(address)
            if target is not None and not self._stepping:   # _step_at runs an original instruction there
                uc.reg_write(X.UC_X86_REG_RIP, target)
        for va in self.resume_in:
            self.uc.hook_add(UC_HOOK_CODE, redirect, self.resume_in, begin=va, end=va)

    def _deliver_guest(self, event: Event) -> None:
        self._step_from = None
        flags = self.cpu.eflags
        self.cpu.eflags = (flags | EFLAGS_IF) if self.virtual_if() else (flags & ~EFLAGS_IF)
        self.vcpu.deliver_native(event)
        self.set_virtual_if(self.cpu.interrupts_enabled())
        self.sync_shadows()

    def _after_step(self, unwind: bool = False) -> bool:
        """After a single step: deliver the fault it raised (True), or nothing happened (False).

        ``unwind``: the step ran for the current hypercall; its fault is the original instruction's."""
        event = self.vcpu._event
        if event is None:
            return False
        self.vcpu._event = None
        if unwind:
            self._unwind()
        self._deliver_guest(event)
        return True

    def _step_at(self, va: int, code: bytes, target: int | None = None, unwind: bool = False) -> bool:
        """Write ``code`` at ``va``, run exactly one instruction there, put the old bytes back.

        ``target``: where the instruction transfers control (iret). Unicorn honours the one-instruction
        count only in blocks translated under it, so the block there is dropped first; otherwise the
        engine would run on into the guest. Returns False if the instruction faulted (the fault has
        been delivered to the guest; with ``unwind``, at the current hypercall's site)."""
        pa = translate(self.ram, self.cpu.paging(), va)
        saved = self.ram.read(pa, len(code))
        self.ram.write(pa, code)
        self.uc.ctl_remove_cache(va, va + 16)
        if target is not None:
            self.uc.ctl_remove_cache(target, target + 16)
        self.cpu.pc = va
        self._stepping = True
        try:
            self.vcpu._slice(count=1)
        finally:
            self._stepping = False
            self.ram.write(pa, saved)
            self.uc.ctl_remove_cache(va, va + 16)
        return not self._after_step(unwind)

    def _unwind(self) -> None:
        """Undo the current hypercall's trampoline: put back the registers it set aside, point at the site.

        A fault raised by an emulated instruction is then delivered as if the original instruction
        at its own address had raised it, with the registers and stack it had there."""
        point = self.table.points[self._ctx[0]]
        self._restore_saved(point, self._ctx[1])
        self.cpu.pc = point.site_va
        self._unwound = True

    def _restore_saved(self, point: abi.HypercallPoint, bits: int, keep: frozenset[str] = frozenset()) -> None:
        """Give the guest back the registers a trampoline (``bits``-bit code) set aside at ``point``, but
        those in ``keep``: from the shared page's save area, or popped off the stack."""
        read, write = self.cpu._fast_read, self.cpu._fast_write     # hot: after every hypercall
        word = 8 if bits == 64 else 4
        if point.in_save_area:
            area = self.ram.read(self.shared_pa + SharedOffset.SAVE_AREA, 8 * len(abi.UNWIND_REGISTERS))
            values = [(name, area[8 * abi.unwind_index(name):][:word]) for name in point.saved if name not in keep]
        else:
            mem = LinearMemory(self.ram, self.cpu.paging())
            sp = self.cpu.sp
            values = [(name, mem.read(sp + word * k, word)) for k, name in enumerate(reversed(point.saved))]
            write(X.UC_X86_REG_RSP, sp + word * len(point.saved))
        for name, raw in values:
            value = int.from_bytes(raw, "little")
            if word == 4:                        # 32-bit code: the upper halves are not the trampoline's
                value |= read(_reg(name)) & ~0xFFFFFFFF
            write(_reg(name), value)

    def _fault_in_trampoline(self) -> None:
        """A fault raised by a trampoline's own instruction becomes the original instruction's: at an
        access point the registers set aside are put back and the site faults; inside a replayed
        instruction (which runs on the guest's own registers) its original address faults."""
        pc = self.cpu.pc
        point = self.table.points.get(pc)
        if point is not None and point.access:
            self._restore_saved(point, self.cpu.code_bits())
            self.cpu.pc = point.site_va
            return
        k = bisect.bisect_right(self._boundary_vas, pc) - 1
        if k >= 0 and self._boundaries[self._boundary_vas[k]].kind is abi.PcKind.REPLAY:
            self.cpu.pc = self._boundaries[self._boundary_vas[k]].original_va

    def accepts_interrupts(self) -> bool:
        """Whether an external interrupt may be taken now: virtual IF, and not while a trampoline keeps
        registers in the save area (after its first instruction, up to its ``int 0x82``). At a window's
        start nothing is saved yet: that is where a lowering joined after a HALT resumes, interruptible."""
        if not self.virtual_if():
            return False
        if self._window_starts:
            pc = self.cpu.pc
            k = bisect.bisect_left(self._window_starts, pc) - 1
            if k >= 0 and pc < self._window_ends[k]:
                return False
        return True

    # --- trap sites ------------------------------------------------------------------------------------
    def _trap(self, site: abi.SiteEntry) -> None:
        raw = site.original
        self.vcpu.hypercalls["TRAP"] += 1
        va = site.site_va
        cpl = self.cpu.cpl()
        if (raw in (b"\xfa", b"\xfb") and cpl > (self.cpu.eflags >> 12) & 3) or (raw == b"\xf4" and cpl):
            self.cpu.pc = va                     # cli/sti above IOPL, hlt outside ring 0: #GP(0) at the site
            self._deliver_guest(Event(GP, EventKind.EXCEPTION, 0))
        elif raw == b"\xfa":                     # cli
            self.set_virtual_if(False)
            self.cpu.pc = va + 1
        elif raw == b"\xfb":                     # sti
            self.set_virtual_if(True)
            self.cpu.pc = va + 1
        elif raw == b"\xf4":                     # hlt
            self.cpu.pc = va + 1
            self.vcpu._halt()
        else:
            self._run_original(va, raw, self._transfer_target(raw))
            self.sync_shadows()

    def _run_original(self, va: int, raw: bytes, target: int | None = None) -> bool:
        """Run the original instruction ``raw`` at ``va`` on the guest's state, as the native machine would:
        with vmm/cpufix.py's corrections, else single-stepped. False if it faulted (delivered at ``va``)."""
        self.cpu.pc = va
        fix = self.machine.fixups.correct(raw, va)
        if fix is None:
            # the step sees the virtual IF as EFLAGS.IF (pushf, sysexit keep it), and what it leaves
            # there (popf, iret, sysret load it) is the virtual IF after it
            flags = self.cpu.eflags
            self.cpu.eflags = (flags | EFLAGS_IF) if self.virtual_if() else (flags & ~EFLAGS_IF)
            if not self._step_at(va, raw, target):
                return False
            self.set_virtual_if(self.cpu.interrupts_enabled())
            return True
        if fix.fault is not None:
            self._deliver_guest(fix.fault)
            return False
        self.cpu.pc = va + fix.size
        return True

    def _iret_target(self, raw: bytes) -> int | None:
        """The return address an iret at the current stack would jump to."""
        size = 8 if any(0x48 <= b <= 0x4F and b & 8 for b in raw) else 2 if 0x66 in raw else 4
        try:
            data = LinearMemory(self.ram, self.cpu.paging()).read(self.cpu.sp, size)
        except Exception:
            return None
        return int.from_bytes(data, "little")

    def _transfer_target(self, raw: bytes) -> int | None:
        """Where the original instruction ``raw`` transfers control (iret, sysret, sysexit), else None."""
        k = next((i for i, b in enumerate(raw) if b not in _PREFIXES and not 0x40 <= b <= 0x4F), len(raw))
        opcode = raw[k:k + 2]
        if opcode[:1] == b"\xcf":
            return self._iret_target(raw)
        if opcode in (b"\x0f\x07", b"\x0f\x35"):   # sysret: rcx; sysexit: rdx (32-bit forms: the low half)
            value = self.uc.reg_read(X.UC_X86_REG_RCX if opcode == b"\x0f\x07" else X.UC_X86_REG_RDX)
            return value if any(0x48 <= b <= 0x4F for b in raw[:k]) else value & 0xFFFFFFFF
        return None

    # --- hypercalls inside the engine's interrupt hook -------------------------------------------------
    def _make_in_hook(self) -> Callable[[int, CpuView], bool]:
        """The hot hypercalls, carried out in the engine's interrupt hook without ending the slice.

        The returned ``in_hook(intno, view)`` (the vCPU's ``software_interrupt``) carries out port and
        string I/O at CPL 0 on the registers of the vCPU's ``CpuView`` (the CPU as the hook found it),
        and returns True. Anything else — another hypercall, a trap site, ring 3 (the I/O
        permission check may fault), a string element that faults before any moved — returns False
        before any side effect: the slice ends and ``deliver`` takes the full path. A closure over
        what it touches: it runs once per port access of the guest."""
        points = self._fast_points
        hypercall_vas = self.table.hypercalls
        # int 0x82 address -> (GPR indexes of the registers set aside in the save area, the point)
        plans = {va: (tuple(abi.unwind_index(n) for n in p.saved), p) for va, p in points.items()}
        area = (ctypes.c_uint64 * len(abi.UNWIND_REGISTERS)).from_address(self.ram.host_address + self._save_area_pa)
        vcpu = self.vcpu
        counts = vcpu.hypercalls
        arg_index = _ARG_INDEX
        vector = abi.HYPERCALL_VECTOR
        calls = _FAST_CALLS
        low32 = ~0xFFFFFFFF

        view = vcpu.cpu_view
        gpr, rip_cell, hflags_cell, store = view.gpr, view.rip_cell, view.hflags_cell, view.store
        trap_ports = {site.site_va: form for site in self.table.sites.values()
                      if site.is_trap and (form := _port_form(site.original)) is not None}
        read = self.cpu._fast_read

        def trap_port(va: int) -> bool:
            """A port in/out trap site, carried out as its original instruction (ring 0, no TF)."""
            form = trap_ports.get(va)
            hflags = hflags_cell.value
            if form is None or hflags & HF_CPL_MASK or not hflags & (HF_CS32 | HF_CS64):
                return False
            if read(X.UC_X86_REG_EFLAGS) & EFLAGS_TF:
                return False                      # the full path raises the single-step trap after it
            inbound, size, port, length = form
            port = gpr[2] & 0xFFFF if port is None else port
            mask = (1 << 8 * size) - 1
            counts["TRAP"] += 1
            rip_cell.value = va                   # the access is the instruction's at its own address (traces)
            if store is not None:
                store()
            if inbound:
                value = vcpu.port_in(None, port, size, None) & mask
                # in al / ax keep the rest of rax; in eax zero-extends in 64-bit code
                gpr[0] = value if size == 4 and hflags & HF_CS64 else (gpr[0] & ~mask) | value
            else:
                vcpu.port_out(None, port, size, gpr[0] & mask, None)
            rip_cell.value = va + length
            if store is not None:
                store()
            return True

        def in_hook(intno: int, _view: CpuView) -> bool:
            if intno != vector:
                return intno == 3 and trap_port(rip_cell.value - 1)
            hc_va = rip_cell.value - 2
            plan = plans.get(hc_va)
            hflags = hflags_cell.value
            if plan is None:
                return hc_va in trap_ports and hc_va in hypercall_vas and trap_port(hc_va)
            if hflags & HF_CPL_MASK:
                return False
            call = calls.get(gpr[0] & 0xFFFFFFFF)
            bits = 64 if hflags & HF_CS64 else 32 if hflags & HF_CS32 else 16
            if call is None or bits == 16:
                return False
            kind, size, name, keep = call
            if kind >= _STRING_IN:
                return self._string_in_hook(kind == _STRING_IN, name, hc_va, plan[1], view, bits)
            counts[name] += 1
            args = arg_index[bits]
            if kind == _PORT_IN:
                value = vcpu.port_in(None, gpr[args[0]] & 0xFFFF, size, None) & ((1 << 8 * size) - 1)
            else:
                vcpu.port_out(None, gpr[args[0]] & 0xFFFF, size, gpr[args[1]] & ((1 << 8 * size) - 1), None)
            saved = plan[0]
            if bits == 64:
                for i in saved:
                    gpr[i] = area[i]
            else:
                for i in saved:
                    gpr[i] = (gpr[i] & low32) | (area[i] & 0xFFFFFFFF)
            if kind == _PORT_IN:              # in al / ax: the low bytes; in eax: zero-extends in 64-bit code
                gpr[0] = (gpr[0] & (keep if keep or bits == 64 else low32)) | value
            if store is not None:
                store()
            return True
        return in_hook

    def _string_in_hook(self, inbound: bool, name: str, hc_va: int, point: abi.HypercallPoint, view: CpuView,
                        bits: int) -> bool:
        """STRING_IN / STRING_OUT in the interrupt hook (``_make_in_hook``): one round of elements."""
        gpr = view.gpr
        args = _ARG_INDEX[bits]
        mask = (1 << bits) - 1
        a = [gpr[i] & mask for i in args]             # port, element_size, count, buffer_va, flags
        index, rcx, left, moved, fault = self._string_chunk(hc_va, bits, inbound, a[0], a[1], a[2], a[3], a[4],
                                                            self.cpu.segment_base)
        self.resuming = None
        if fault is not None and not moved:
            return False                              # the full path delivers the fault at the site
        self.vcpu.hypercalls[name] += 1
        vcpu = self.vcpu
        if left and vcpu.exit_status is None and vcpu._hook_error is None:
            # more to move (or a fault after some elements): the hypercall goes on at its int 0x82 with
            # the progress made; the engine checks its stop requests (limits) before it runs again
            gpr[args[3]] = _merge(gpr[args[3]], index, bits)
            if rcx is not None:
                gpr[args[2]] = _merge(gpr[args[2]], rcx, bits)
            view.rip_cell.value = hc_va
            self.resuming = hc_va
        else:
            outputs = {"rdi" if inbound else "rsi": index} | ({"rcx": rcx} if rcx is not None else {})
            self._restore_in_view(point, view, bits, tuple(outputs))
            for reg, value in outputs.items():
                gpr[abi.unwind_index(reg)] = value
        if view.store is not None:
            view.store()
        return True

    def _restore_in_view(self, point: abi.HypercallPoint, view: CpuView, bits: int, keep: tuple[str, ...]) -> None:
        """``_restore_saved`` on the registers of ``view`` (a save-area point: ``_fast_points``)."""
        gpr = view.gpr
        word = 8 if bits == 64 else 4
        area = self.ram.view[self._save_area_pa:self._save_area_pa + 8 * len(abi.UNWIND_REGISTERS)]
        for name in point.saved:
            if name not in keep:
                i = abi.unwind_index(name)
                gpr[i] = _merge(gpr[i], int.from_bytes(area[8 * i:8 * i + word], "little"), bits)

    # --- hypercalls ------------------------------------------------------------------------------------
    def _hypercall(self, hc_va: int) -> None:
        bits = self.cpu.code_bits()
        conv = REGISTERS_64 if bits == 64 else REGISTERS_32
        r = self.cpu._fast_read
        number = r(_reg(conv.number_reg)) & 0xFFFFFFFF
        try:
            h = Hypercall(number)
        except ValueError:
            raise GuestError(f"unknown hypercall number {number} at {hc_va:#x}") from None
        spec = HYPERCALL_SPECS[h]
        mask = (1 << bits) - 1
        args = {name: r(_reg(reg)) & mask for name, reg in zip(spec.args, conv.arg_regs)}
        self.vcpu.hypercalls[h.name] += 1
        self._ctx = (hc_va, bits, conv)
        self._unwound = False
        self._resumed = False                   # the hypercall goes on at its int 0x82 (string I/O)
        self.resuming = None
        self._outputs: dict[str, int] = {}      # registers the instruction writes -> their values
        self._borrowed: dict[str, int] = {}     # registers a handler used -> the guest's values
        if h in PORT_HYPERCALLS:
            results = self._port(h, args)
        else:
            handler = getattr(self, "_hc_" + h.name.lower(), self._by_original)
            results = handler(**args)
            self.sync_shadows()
        if not self._resumed:
            self._finish(h, conv, results or ())
        if self.vcpu._hook_error is not None:
            exc, self.vcpu._hook_error = self.vcpu._hook_error, None
            raise exc

    def _finish(self, h: Hypercall, conv, results: tuple[int, ...]) -> None:
        """The guest's registers after the hypercall: its own, but for what the instruction writes."""
        point = self.table.points[self._ctx[0]]
        write = self.cpu._fast_write
        narrow = NARROW_RESULTS.get(h, 0)
        if not self._unwound:
            for k, (value, reg) in enumerate(zip(results, conv.result_regs)):
                if not (k == 0 and narrow):
                    self._outputs[reg] = value
            if point.in_save_area:
                self._restore_saved(point, self._ctx[1], keep=frozenset(self._outputs))
            for reg, value in self._outputs.items():
                write(_reg(reg), value)
            if narrow and results:               # in al / in ax: only the low bytes of rax change
                rax = self.cpu._fast_read(_reg(conv.result_regs[0]))
                write(_reg(conv.result_regs[0]), rax & ~narrow | results[0] & narrow)
        for reg, value in self._borrowed.items():
            if not (point.in_save_area and reg in point.saved) and reg not in self._outputs:
                write(_reg(reg), value)

    def _borrow(self, regs: dict[str, int]) -> None:
        """Set registers for a native step; ``_finish`` gives the guest its own values back."""
        for name, value in regs.items():
            self._borrowed.setdefault(name, self.uc.reg_read(_reg(name)))
            self.uc.reg_write(_reg(name), value)

    def _port(self, h: Hypercall, args: dict) -> tuple[int, ...] | None:
        size = PORT_HYPERCALLS[h]
        port = args["port"] & 0xFFFF
        if self.vcpu._user_mode_seen and not self.vcpu._io_permitted(port, size):
            self._fault(Event(GP, EventKind.EXCEPTION, 0))   # denied by IOPL / the TSS bitmap
            return None
        if h.name.startswith("PORT_IN"):
            return (self.vcpu.port_in(None, port, size, None) & ((1 << 8 * size) - 1),)
        self.vcpu.port_out(None, port, size, args["value"] & ((1 << 8 * size) - 1), None)
        return None

    def _string_chunk(self, hc_va: int, bits: int, inbound: bool, port: int, element_size: int, count: int,
                      buffer_va: int, flags: int, segment_base) -> tuple[int, int | None, int, int, PageFault | None]:
        """Move up to STRING_CHUNK elements of a string I/O hypercall, page by page.

        Returns the index register (rdi for ins, rsi for outs) and, for a rep form, the count register
        after them, the elements left and moved, and the page fault that stopped the transfer (None).
        An element faults before its port access (as QEMU's ``ins`` probes its destination first);
        nothing here touches the CPU, so the caller decides how the registers are written."""
        site = self.table.sites[self.table.hypercalls[hc_va]]
        rep = any(b in (0xF2, 0xF3) for b in site.original[:4])
        try:
            address_bits, segment = abi.unpack_string_flags(flags)
        except abi.AbiError as exc:
            raise GuestError(f"string I/O hypercall at {hc_va:#x}: {exc}; re-translate the guest") from None
        if element_size not in (1, 2, 4):
            raise GuestError(f"string I/O hypercall at {hc_va:#x}: element size {element_size}; re-translate the guest")
        addr_mask = (1 << address_bits) - 1
        # 64-bit code adds only an fs/gs base; the linear address wraps at the mode's width
        base = segment_base(segment) if bits != 64 or segment in ("fs", "gs") else 0
        linear_mask = (1 << 64) - 1 if bits == 64 else 0xFFFFFFFF
        down = bool(self.cpu._fast_read(X.UC_X86_REG_EFLAGS) & EFLAGS_DF)
        step = -element_size if down else element_size
        addr = buffer_va & addr_mask
        left = count & addr_mask if rep else 1
        port &= 0xFFFF
        vcpu, ram, view = self.vcpu, self.ram, self.ram.view
        port_in, port_out = vcpu.port_in, vcpu.port_out
        value_mask = (1 << 8 * element_size) - 1
        paging = self.cpu.paging()
        budget = min(left, STRING_CHUNK)
        moved = 0
        fault = None
        while budget:
            linear = (base + addr) & linear_mask
            offset = linear & (PAGE - 1)
            try:
                pa = translate(ram, paging, linear, write=inbound)
                if offset + element_size > PAGE:         # an element across two pages: alone, by LinearMemory
                    translate(ram, paging, (linear + element_size - 1) & linear_mask, write=inbound)
                    run = 0
                else:                                    # a run of elements inside this page and the address size
                    run = min(budget, (PAGE - offset) // element_size if not down else offset // element_size + 1,
                              (addr_mask + 1 - addr) // element_size if not down else addr // element_size + 1)
            except PageFault as exc:
                fault = exc
                break
            done = 0
            if run == 0:
                mem = LinearMemory(ram, paging)
                if inbound:
                    value = port_in(None, port, element_size, None) & value_mask
                    mem.write(linear, value.to_bytes(element_size, "little"))
                else:
                    port_out(None, port, element_size, int.from_bytes(mem.read(linear, element_size), "little"), None)
                done = 1
            else:
                last = pa + step * (run - 1)
                if min(pa, last) < 0 or max(pa, last) + element_size > ram.size:
                    raise OutsideRam(f"string I/O at {hc_va:#x}: guest-physical {pa:#x} is outside RAM")
                while done < run:
                    p = pa + step * done
                    if inbound:
                        value = port_in(None, port, element_size, None) & value_mask
                        view[p:p + element_size] = value.to_bytes(element_size, "little")
                    else:
                        port_out(None, port, element_size, int.from_bytes(view[p:p + element_size], "little"), None)
                    done += 1
                    if vcpu.exit_status is not None or vcpu._hook_error is not None:
                        break
            addr = (addr + step * done) & addr_mask
            left -= done
            budget -= done
            moved += done
            if vcpu.exit_status is not None or vcpu._hook_error is not None:
                budget = 0
        # only the address-size part of the index and count registers changes (a 32-bit one zero-extends)
        keep = ~addr_mask if address_bits == 16 else 0
        return (buffer_va & keep) | addr, ((count & keep) | left) if rep else None, left, moved, fault

    def _string(self, inbound: bool, port: int, element_size: int, count: int, buffer_va: int, flags: int):
        hc_va, bits, conv = self._ctx
        if self.vcpu._user_mode_seen and not self.vcpu._io_permitted(port & 0xFFFF, element_size):
            self._fault(Event(GP, EventKind.EXCEPTION, 0))   # denied by IOPL / the TSS bitmap, before any element
            return
        index, rcx, left, _moved, fault = self._string_chunk(hc_va, bits, inbound, port, element_size, count,
                                                             buffer_va, flags, self.cpu.segment_base)
        if left and fault is None and self.vcpu.exit_status is None and self.vcpu._hook_error is None:
            # more to move: the hypercall goes on at its int 0x82 with the progress made, once the loop
            # has checked the run's limits (an interrupt waits for the end, as natively: vmm/vcpu.py)
            spec = HYPERCALL_SPECS[Hypercall.STRING_IN if inbound else Hypercall.STRING_OUT]
            regs = dict(zip(spec.args, conv.arg_regs))
            self.uc.reg_write(_reg(regs["buffer_va"]), index)
            self.uc.reg_write(_reg(regs["count"]), rcx if rcx is not None else count)
            self.cpu.pc = hc_va
            self._resumed = True
            self.resuming = hc_va
            return
        self._outputs["rdi" if inbound else "rsi"] = index
        if rcx is not None:
            self._outputs["rcx"] = rcx
        if fault is not None:
            self._unwind()                       # the guest's registers, then the progress made so far
            for reg, value in self._outputs.items():
                self.uc.reg_write(_reg(reg), value)
            self._deliver_guest(self._page_fault(fault))

    def _hc_string_in(self, **a):
        self._string(True, **a)

    def _hc_string_out(self, **a):
        self._string(False, **a)

    def _hc_halt(self):
        self.vcpu._halt()

    def _hc_deliver_pending(self):
        pass                                     # the loop takes the interrupt next, virtual IF permitting

    def _native(self, code: bytes, regs: dict[str, int], outputs: tuple[str, ...] = ()) -> tuple[int, ...] | None:
        """Run one native instruction at the hypercall with ``regs`` set (borrowed); read ``outputs``."""
        hc_va = self._ctx[0]
        self._borrow(regs)
        if not self._step_at(hc_va, code, unwind=True):
            return None
        out = tuple(self.uc.reg_read(_reg(name)) & 0xFFFFFFFF for name in outputs)
        self.cpu.pc = hc_va + 2
        return out

    def _rm(self, arg_index: int) -> int:
        return _RM[self._ctx[2].arg_regs[arg_index]]

    def _hc_write_cr(self, cr_index: int, value: int):
        if not self._privileged():
            return
        if cr_index not in WRITABLE_CRS:         # cr1, cr5-7, cr9-15 (and what no instruction encodes)
            self._fault(Event(UD, EventKind.EXCEPTION))
            return
        if cr_index == 8:
            self.machine.lapic.write(0x80, 4, (value << 4) & 0xFF)
            self.machine.interrupts.changed()
            return
        if cr_index == 2:                        # only stored: mov to cr2 has no other effect
            self.uc.reg_write(X.UC_X86_REG_CR2, value if self.cpu.long_mode() else value & 0xFFFFFFFF)
            return
        self._native(bytes((0x0F, 0x22, 0xC0 | (cr_index << 3) | self._rm(1))), {})
        self.uc.ctl_flush_tb()

    def _hc_clts(self):
        self._native(b"\x0f\x06", {})

    def _hc_lmsw(self, value: int):
        self._native(bytes((0x0F, 0x01, 0xF0 | self._rm(0))), {})

    def _hc_write_dr(self, dr_index: int, value: int):
        if not self._privileged():
            return
        if dr_index > 7:                         # dr8-15 (and what no instruction encodes)
            self._fault(Event(UD, EventKind.EXCEPTION))
            return
        if dr_index in (4, 5):
            if self.uc.reg_read(X.UC_X86_REG_CR4) & CR4_DE:
                self._fault(Event(UD, EventKind.EXCEPTION))
                return
            dr_index += 2                        # dr4/dr5 alias dr6/dr7 while CR4.DE is clear
        if not self.cpu.long_mode():
            value &= 0xFFFFFFFF
        elif dr_index in (6, 7) and value >> 32:
            self._fault(Event(GP, EventKind.EXCEPTION, 0))   # reserved upper half: #GP(0), as QEMU
            return
        if dr_index == 6:
            self._native(bytes((0x0F, 0x23, 0xC0 | (6 << 3) | self._rm(1))), {})  # the CPU keeps its fixed ones
            return
        self.uc.reg_write(_reg(f"DR{dr_index}"), value | 0x400 if dr_index == 7 else value)
        self.vcpu.watchpoints.rearm()

    def _fault(self, event: Event) -> None:
        """The current hypercall's instruction faults: deliver ``event`` at the site."""
        self._unwind()
        self._deliver_guest(event)

    def _msr(self, code: bytes, regs: dict[str, int], outputs: tuple[str, ...] = ()) -> tuple[int, ...] | None:
        """rdmsr / wrmsr on ``regs`` (borrowed), with vmm/cpufix.py's corrections as natively."""
        self._borrow(regs)
        fix = self.machine.fixups.correct(code, self._ctx[0])
        if fix is None:
            return self._native(code, {}, outputs)
        if fix.fault is not None:
            self._fault(fix.fault)
            return None
        return tuple(self.uc.reg_read(_reg(name)) & 0xFFFFFFFF for name in outputs)

    def _hc_rdmsr(self, msr: int):
        return self._msr(b"\x0f\x32", {"rcx": msr & 0xFFFFFFFF}, ("eax", "edx"))

    def _hc_wrmsr(self, msr: int, low: int, high: int):
        self._msr(b"\x0f\x30", {"rcx": msr & 0xFFFFFFFF, "rax": low & 0xFFFFFFFF, "rdx": high & 0xFFFFFFFF})
        self.uc.ctl_flush_tb()

    def _page_fault(self, exc: PageFault) -> Event:
        """The #PF a guest access the VMM made for the current instruction raises: CR2 and error code
        as the CPU sets them (not present; W for a write; U/S at CPL 3)."""
        self.uc.reg_write(X.UC_X86_REG_CR2, exc.va if self.cpu.long_mode() else exc.va & 0xFFFFFFFF)
        return Event(PF, EventKind.EXCEPTION, (2 if exc.write else 0) | (4 if self.cpu.cpl() == 3 else 0))

    def _privileged(self) -> bool:
        """Whether the current instruction may run (CPL 0); else its #GP(0) is delivered at the site."""
        if self.cpu.cpl():
            self._fault(Event(GP, EventKind.EXCEPTION, 0))
            return False
        return True

    def _load_table(self, reg: int, pseudo_descriptor_va: int, operand_size: int) -> None:
        if not self._privileged():
            return
        mem = LinearMemory(self.ram, self.cpu.paging())
        try:
            raw = mem.read(pseudo_descriptor_va, 10 if operand_size == 8 else 6)
        except PageFault as exc:
            self._fault(self._page_fault(exc))
            return
        limit = struct.unpack_from("<H", raw)[0]
        base = int.from_bytes(raw[2:], "little")
        if operand_size == 2:
            base &= 0xFFFFFF
        self.uc.reg_write(reg, (0, base, limit, 0))

    def _hc_load_gdt(self, pseudo_descriptor_va: int, operand_size: int):
        self._load_table(X.UC_X86_REG_GDTR, pseudo_descriptor_va, operand_size)

    def _hc_load_idt(self, pseudo_descriptor_va: int, operand_size: int):
        self._load_table(X.UC_X86_REG_IDTR, pseudo_descriptor_va, operand_size)

    def _hc_load_segment(self, sreg_index: int, selector: int):
        if sreg_index not in LOADABLE_SREGS:     # mov to cs, and sreg 6-7 (and what no instruction encodes)
            self._fault(Event(UD, EventKind.EXCEPTION))
            return
        self._native(bytes((0x8E, 0xC0 | (sreg_index << 3) | self._rm(1))), {})

    def _hc_load_ldt(self, selector: int):
        self._native(bytes((0x0F, 0x00, 0xD0 | self._rm(0))), {})

    def _hc_load_tr(self, selector: int):
        self._native(bytes((0x0F, 0x00, 0xD8 | self._rm(0))), {})

    def _hc_cpuid(self, leaf: int, subleaf: int):
        regs = self.vcpu.cpuid(leaf & 0xFFFFFFFF, subleaf & 0xFFFFFFFF) if self.vcpu.cpuid else None
        if regs is not None:
            eax, ebx, ecx, edx = regs
            return (eax, edx, ebx, ecx)
        return self._native(b"\x0f\xa2", {"rax": leaf, "rcx": subleaf}, ("eax", "edx", "ebx", "ecx"))

    def _hc_rdtsc(self):
        return self._native(b"\x0f\x31", {}, ("eax", "edx"))

    def _by_original(self, **_args) -> None:
        """Any other hypercall: the original instruction runs once, on the guest's own state.

        The trampoline is unwound to the site, the original bytes are stepped at the site's address
        (so it raises exactly what this CPU raises there: #UD for monitor/mwait/xsetbv on qemu64,
        #GP for a bad value), and execution resumes in the trampoline after the site's lowering —
        or wherever the instruction transferred control (iret, sysret, sysexit: with the guest's
        own registers, and the virtual IF they load)."""
        site_va = self.table.hypercalls[self._ctx[0]]
        site = self.table.sites[site_va]
        self._unwind()
        if not self._run_original(site_va, site.original, self._transfer_target(site.original)):
            return                               # faulted: delivered at the site
        if self.cpu.pc == site_va + len(site.original):
            k = bisect.bisect_left(self._boundary_vas, self._site_entry(site_va))
            self.cpu.pc = self._boundary_vas[k + 1]

    def _site_entry(self, site_va: int) -> int:
        """The trampoline address where the lowering of the site at ``site_va`` starts."""
        hc_va = self._ctx[0]
        k = bisect.bisect_right(self._boundary_vas, hc_va) - 1
        while k >= 0 and self._boundaries[self._boundary_vas[k]].original_va != site_va:
            k -= 1
        if k < 0:
            raise GuestError(f"site {site_va:#x}: no pc-map entry before its hypercall at {hc_va:#x}")
        return self._boundary_vas[k]

    def _hc_wbinvd(self):
        self._privileged()                       # no caches to write back

    def _hc_invd(self):
        self._privileged()

    def _hc_swapgs(self):
        self._native(b"\x0f\x01\xf8", {})

    def _hc_set_ac(self, ac: int):
        """clac/stac: #UD at CPL > 0 or on a CPU model without SMAP (qemu64 has none), as natively."""
        if self.vcpu.cpuid is None:
            return self._by_original()           # no CPU model: the engine's own answers
        if self.cpu.cpl() or not self.vcpu.cpuid(7, 0)[1] & CPUID_7_EBX_SMAP:
            self._fault(Event(UD, EventKind.EXCEPTION))
            return
        flags = self.cpu.eflags
        self.cpu.eflags = (flags | EFLAGS_AC) if ac else (flags & ~EFLAGS_AC)


def attach(machine) -> PvMode | None:
    """pv mode for ``machine`` if its loaded kernel is a translated guest (call after loading)."""
    desc = descriptor(machine.record.image)
    if desc is None:
        return None
    return PvMode(machine, desc)

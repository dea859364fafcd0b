"""trap mode's deprivileged semantics: owns what a sensitive-unprivileged instruction shows a deprivileged guest kernel.

A trap-and-emulate hypervisor on a pre-VT x86 runs the guest kernel deprivileged: at ring 1 if the
guest is 32-bit (Xen x86_32), at ring 3 if it is 64-bit (Xen x86_64; long mode has no usable ring 1).
The catalog's sensitive-unprivileged instructions then do not trap: they run on the real CPU and
reveal the hypervisor's state (Popek and Goldberg). The VMM models that machine:

| instruction | what the deprivileged guest sees |
|---|---|
| pushf | the real flags: IF = 1 (the hypervisor keeps interrupts on), IOPL = 0 |
| popf, iret | cannot change IF or IOPL (CPL > 0 and CPL > IOPL): both keep their values; for iret the frame's flags slot is given the current IF and IOPL and the engine then executes it |
| sgdt, sidt, sldt, str, smsw | the hypervisor's own GDTR, IDTR, LDTR, TR and CR0 (`HOST`) |
| mov from sreg, push sreg | CS and SS with RPL = the ring (they hold the CPL); other selectors as loaded |
| lar, lsl, verr, verw | the hypervisor's descriptor view: checked at CPL = the ring, with code/data descriptors of DPL below the ring shown at the ring (the hypervisor gives the guest kernel segments it can load, as Xen and VMware do) |
| mov to sreg, pop sreg | run by the engine: with descriptors so adjusted the load succeeds as at ring 0 |
| iret, pop ss (selectors handed back) | the guest kernel's own CS/SS as a read showed them (RPL = the ring) are its selectors: the frame or stack slot gets the real RPL before the engine runs the instruction |
| cpuid, rdtsc, rdtscp, xgetbv | run by the engine: the host CPU's answers (cpuid without the VMM's CPU model) |

The seam of this model: segment loads run at the real ring 0, so `mov ss, r/m` (or a far transfer)
with a value read as RPL = the ring faults where the deprivileged CPU would accept it.

Memory operands are reached through the guest's page tables (segment bases included outside 64-bit
mode; limits and write protection are not checked). If a page is not present the instruction is
left to the engine, which raises the page fault at it as the real CPU would. Stacks are taken as
32-bit outside 64-bit mode.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterable

from capstone import x86_const as C
from unicorn import x86_const as X

from .cpu import Cpu
from .cpufix import R32_TO_R64
from .discover import SensitiveSite
from .errors import OutsideRam
from .memory import PAGE, GuestRam, LinearMemory, PageFault, translate

CF, PF_, AF, ZF, SF, TF, IF, DF, OF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x100, 0x200, 0x400, 0x800
IOPL, NT, RF, VM, AC, ID = 0x3000, 0x4000, 0x10000, 0x20000, 0x40000, 0x200000
POPF_CHANGES = CF | PF_ | AF | ZF | SF | TF | DF | OF | NT | AC | ID     # above ring 0 with IOPL 0
OPSIZE_PREFIX = 0x66
CPL_SELECTORS = ("cs", "ss")          # their RPL is the CPL: a deprivileged guest reads its ring there


@dataclass(frozen=True)
class HostView:
    """The hypervisor's own CPU state as a deprivileged guest reads it (fixed values, Xen-like layout)."""

    gdt_limit: int = 0x0FFF
    gdt_base_64: int = 0xFFFF_8300_0010_0000
    gdt_base_32: int = 0xFC10_0000
    idt_limit: int = 0x0FFF
    idt_base_64: int = 0xFFFF_8300_0010_1000
    idt_base_32: int = 0xFC10_1000
    ldtr: int = 0x0000
    tr: int = 0xE040
    cr0: int = 0x8005_003B              # PG AM WP NE ET TS MP PE: TS set, the FPU is switched lazily

    def table(self, name: str, bits: int) -> tuple[int, int]:
        if name == "sgdt":
            return self.gdt_limit, self.gdt_base_64 if bits == 64 else self.gdt_base_32
        return self.idt_limit, self.idt_base_64 if bits == 64 else self.idt_base_32


HOST = HostView()


def ring_of(bits: int) -> int:
    """The ring the hypervisor runs a guest kernel of this code mode in."""
    return 3 if bits == 64 else 1


def selector_view(selector: int, ring: int) -> int:
    """A CS/SS selector as the deprivileged guest reads it: RPL raised to its ring (null ones as they are)."""
    if not selector & 0xFFFC:
        return selector
    return (selector & ~3) | max(selector & 3, ring)


def _full(name: str) -> str:
    """The 64-bit register that holds a named register (eax, ax, r8d -> rax, rax, r8)."""
    if name in R32_TO_R64:
        return R32_TO_R64[name]
    if name in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp"):
        return "r" + name
    if name.startswith("r") and name.endswith("w") and name[1:-1].isdigit():
        return name[:-1]
    return name


class _Guest:
    """Operands of one instruction on the live vCPU: registers, memory, stack, flags and the skip."""

    def __init__(self, cpu: Cpu, ram: GuestRam, site: SensitiveSite) -> None:
        self.cpu = cpu
        self.ram = ram
        self.site = site
        self.insn = site.insn
        self.read = cpu._fast_read
        self.write = cpu._fast_write

    def mem(self) -> LinearMemory:
        return LinearMemory(self.ram, self.cpu.paging())

    def present(self, va: int, size: int) -> bool:
        """Whether [va, va+size) is mapped to RAM (else the engine runs the instruction and faults)."""
        paging = self.cpu.paging()
        try:
            while size > 0:
                n = min(size, PAGE - (va & (PAGE - 1)))
                if translate(self.ram, paging, va) + n > self.ram.size:
                    return False
                va, size = va + n, size - n
        except (PageFault, OutsideRam):
            return False
        return True

    def reg(self, name: str) -> int:
        return self.read(getattr(X, "UC_X86_REG_" + _full(name).upper()))

    def flags(self) -> int:
        return self.read(X.UC_X86_REG_EFLAGS) & 0xFFFFFFFF

    def set_reg(self, capstone_reg: int, value: int, size: int) -> None:
        """Write a register operand: 8/16-bit forms keep the rest, 32-bit ones zero-extend (as the engine)."""
        name = self.insn.reg_name(capstone_reg)
        if size >= 4:
            self.write(getattr(X, "UC_X86_REG_" + _full(name).upper()), value & ((1 << 8 * size) - 1))
        else:
            self.write(getattr(X, "UC_X86_REG_" + name.upper()), value & ((1 << 8 * size) - 1))

    def address(self, op) -> int:
        """The linear address of a memory operand."""
        m = op.mem
        insn = self.insn
        offset = m.disp
        if m.base:
            base = insn.reg_name(m.base)
            offset += self.site.next_va if base in ("rip", "eip") else self.reg(base)
        if m.index:
            offset += self.reg(insn.reg_name(m.index)) * m.scale
        offset &= (1 << 8 * insn.addr_size) - 1
        segment = insn.reg_name(m.segment) if m.segment else None
        if self.site.bits == 64:
            if segment in ("fs", "gs"):
                offset += self.read(X.UC_X86_REG_FS_BASE if segment == "fs" else X.UC_X86_REG_GS_BASE)
            return offset & ((1 << 64) - 1)
        if segment is None:
            segment = "ss" if m.base and insn.reg_name(m.base) in ("esp", "ebp", "sp", "bp") else "ds"
        return (self.cpu.segment_base(segment) + offset) & 0xFFFFFFFF

    def stack(self, sp: int) -> int:
        if self.site.bits == 64:
            return sp
        return (self.cpu.segment_base("ss") + (sp & 0xFFFFFFFF)) & 0xFFFFFFFF

    def sp(self) -> int:
        sp = self.read(X.UC_X86_REG_RSP)
        return sp if self.site.bits == 64 else sp & 0xFFFFFFFF

    def set_sp(self, sp: int) -> None:
        self.write(X.UC_X86_REG_RSP, sp)          # a 32-bit stack pointer zero-extends, as in the engine

    def opsize(self, natural: int) -> int:
        """Operand size of a push/pop-like instruction whose size without prefix is `natural`."""
        if self.insn.prefix[2] == OPSIZE_PREFIX:
            return 4 if natural == 2 else 2
        return natural

    def store(self, op, value: int, size: int) -> bool:
        """Write a register or memory operand; False if its page is not present (leave it to the engine)."""
        if op.type == C.X86_OP_REG:
            self.set_reg(op.reg, value, size)
            return True
        va = self.address(op)
        if not self.present(va, size):
            return False
        self.mem().write(va, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
        return True

    def load16(self, op) -> int | None:
        if op.type == C.X86_OP_REG:
            return self.reg(self.insn.reg_name(op.reg)) & 0xFFFF
        va = self.address(op)
        if not self.present(va, 2):
            return None
        return int.from_bytes(self.mem().read(va, 2), "little")

    def skip(self) -> None:
        self.write(X.UC_X86_REG_RIP, self.site.next_va)


def _natural(bits: int) -> int:
    return {16: 2, 32: 4, 64: 8}[bits]


_FLAG_SIZES = {"pushf16": 2, "pushfd": 4, "pushfq": 8, "popf16": 2, "popfd": 4, "popfq": 8}


# --- handlers: each builds the per-execution function for one site ---------------------------------------
def _pushf(g: _Guest) -> Callable[[], None]:
    size = _FLAG_SIZES[g.site.entry.name]

    def pushf() -> None:
        image = ((g.flags() & ~(VM | RF)) | IF) & ~IOPL
        sp = (g.sp() - size) & ((1 << 8 * _natural(g.site.bits)) - 1)
        va = g.stack(sp)
        if not g.present(va, size):
            return
        g.mem().write(va, (image & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
        g.set_sp(sp)
        g.skip()
    return pushf


def _popf(g: _Guest) -> Callable[[], None]:
    size = _FLAG_SIZES[g.site.entry.name]
    changes = POPF_CHANGES & ((1 << 8 * size) - 1)

    def popf() -> None:
        sp = g.sp()
        va = g.stack(sp)
        if not g.present(va, size):
            return
        popped = int.from_bytes(g.mem().read(va, size), "little")
        flags = g.flags()
        g.write(X.UC_X86_REG_EFLAGS, ((flags & ~changes & ~RF) | (popped & changes)) | 2)
        g.set_sp(sp + size)
        g.skip()
    return popf


def _own_selector(g: _Guest, selector: int, reg: int) -> int:
    """Hand a selector back to the real ring-0 CPU: the current CS/SS as a deprivileged read showed it
    (RPL = the ring) is the guest kernel's own selector, with the real RPL."""
    real = g.read(reg) & 0xFFFF
    ring = ring_of(g.site.bits)
    if selector & 3 == ring != real & 3 and selector & ~3 == real & ~3:
        return real
    return selector


def _iret(g: _Guest) -> Callable[[], None]:
    size = {"iret16": 2, "iretd": 4, "iretq": 8}[g.site.entry.name]
    slots = 5 if g.site.bits == 64 else 3          # RIP, CS, RFLAGS (, RSP, SS: always popped in 64-bit mode)

    def iret() -> None:
        va = g.stack(g.sp())
        if not g.present(va, slots * size):
            return
        mem = g.mem()
        frame = [int.from_bytes(mem.read(va + i * size, size), "little") for i in range(slots)]
        new = list(frame)
        new[1] = _own_selector(g, frame[1], X.UC_X86_REG_CS)
        new[2] = (frame[2] & ~(IF | IOPL)) | (g.flags() & (IF | IOPL))
        if slots == 5:
            new[4] = _own_selector(g, frame[4], X.UC_X86_REG_SS)
        if new != frame:                           # the popped slots; the engine then executes the iret
            mem.write(va, b"".join(v.to_bytes(size, "little") for v in new))
    return iret


def _pop_ss(g: _Guest) -> Callable[[], None]:
    def pop_ss() -> None:
        va = g.stack(g.sp())
        if not g.present(va, 2):
            return
        mem = g.mem()
        slot = int.from_bytes(mem.read(va, 2), "little")
        own = _own_selector(g, slot, X.UC_X86_REG_SS)
        if own != slot:                            # the popped slot; the engine then loads SS
            mem.write(va, own.to_bytes(2, "little"))
    return pop_ss


def _store_table(g: _Guest) -> Callable[[], None]:
    limit, base = HOST.table(g.site.entry.name, g.site.bits)
    if g.site.bits == 64:
        image = struct.pack("<HQ", limit, base)
    else:
        image = struct.pack("<HI", limit, base & (0xFFFFFF if g.insn.prefix[2] == OPSIZE_PREFIX else 0xFFFFFFFF))
    op = g.insn.operands[0]

    def store_table() -> None:
        va = g.address(op)
        if not g.present(va, len(image)):
            return
        g.mem().write(va, image)
        g.skip()
    return store_table


def _store_host(g: _Guest) -> Callable[[], None]:
    value = {"sldt": HOST.ldtr, "str": HOST.tr, "smsw": HOST.cr0}[g.site.entry.name]
    op = g.insn.operands[0]
    size = op.size if op.type == C.X86_OP_REG else 2

    def store_host() -> None:
        if g.store(op, value, size):
            g.skip()
    return store_host


def _read_sreg(g: _Guest) -> Callable[[], None]:
    dst, src = g.insn.operands
    sreg = getattr(X, "UC_X86_REG_" + g.insn.reg_name(src.reg).upper())
    size = dst.size if dst.type == C.X86_OP_REG else 2
    ring = ring_of(g.site.bits) if g.insn.reg_name(src.reg) in CPL_SELECTORS else 0

    def read_sreg() -> None:
        if g.store(dst, selector_view(g.read(sreg) & 0xFFFF, ring), size):
            g.skip()
    return read_sreg


def _push_sreg(g: _Guest) -> Callable[[], None]:
    name = g.insn.reg_name(g.insn.operands[0].reg)
    sreg = getattr(X, "UC_X86_REG_" + name.upper())
    size = g.opsize(_natural(g.site.bits))
    ring = ring_of(g.site.bits) if name in CPL_SELECTORS else 0

    def push_sreg() -> None:
        sp = (g.sp() - size) & ((1 << 8 * _natural(g.site.bits)) - 1)
        va = g.stack(sp)
        if not g.present(va, size):
            return
        g.mem().write(va, selector_view(g.read(sreg) & 0xFFFF, ring).to_bytes(size, "little"))
        g.set_sp(sp)
        g.skip()
    return push_sreg


_LAR_SYSTEM = {False: frozenset({1, 2, 3, 4, 5, 9, 0xB, 0xC}), True: frozenset({2, 9, 0xB, 0xC})}
_LSL_SYSTEM = {False: frozenset({1, 2, 3, 9, 0xB}), True: frozenset({2, 9, 0xB})}


def _descriptor_query(g: _Guest) -> Callable[[], None]:
    name = g.site.entry.name
    ops = g.insn.operands
    src = ops[-1]
    dst = ops[0] if name in ("lar", "lsl") else None
    ring = ring_of(g.site.bits)

    def query() -> None:
        selector = g.load16(src)
        if selector is None:
            return
        found = _descriptor(g, selector)
        if found is None:
            return                                     # a not-present table page: the engine faults
        ok, high, low = False, 0, 0
        if found is not False:
            low, high = found
            if high & (1 << 12) and (high >> 13) & 3 < ring:
                high = (high & ~(3 << 13)) | (ring << 13)          # the hypervisor's copy of the descriptor
            ok = _permitted(name, low, high, selector & 3, max(g.cpu.cpl(), ring), g.cpu.long_mode())
        if ok and dst is not None:
            if name == "lar":
                value = high & (0x00F0FF00 if dst.size >= 4 else 0xFF00)
            else:
                value = (low & 0xFFFF) | (high & 0xF0000)
                value = (value << 12) | 0xFFF if high & (1 << 23) else value
            g.set_reg(dst.reg, value, dst.size)
        flags = g.flags()
        g.write(X.UC_X86_REG_EFLAGS, flags | ZF if ok else flags & ~ZF)
        g.skip()
    return query


def _descriptor(g: _Guest, selector: int):
    """(low, high) of the descriptor `selector` names; False if none is there; None if its page is absent."""
    if not selector & 0xFFFC:
        return False
    if selector & 4:
        if not g.cpu.uc.reg_read(X.UC_X86_REG_LDTR)[0] & 0xFFFC:
            return False
        base, limit = g.cpu.table_register(X.UC_X86_REG_LDTR)
    else:
        base, limit = g.cpu.table_register(X.UC_X86_REG_GDTR)
    index = selector & ~7
    if index + 7 > limit:
        return False
    if not g.present(base + index, 8):
        return None
    return struct.unpack("<II", g.mem().read(base + index, 8))


def _permitted(name: str, low: int, high: int, rpl: int, cpl: int, long_mode: bool) -> bool:
    """lar/lsl/verr/verw's type and privilege checks (Intel SDM) on one descriptor."""
    kind = (high >> 8) & 0xF
    dpl = (high >> 13) & 3
    privileged_ok = dpl >= cpl and dpl >= rpl
    if not high & (1 << 12):                           # system descriptor
        valid = _LAR_SYSTEM if name == "lar" else _LSL_SYSTEM if name == "lsl" else None
        return valid is not None and kind in valid[long_mode] and privileged_ok
    code, conforming = bool(kind & 8), kind & 0xC == 0xC
    if name in ("lar", "lsl"):
        return conforming or privileged_ok
    if name == "verr":
        if code and not kind & 2:
            return False
        return conforming or privileged_ok
    return not code and bool(kind & 2) and privileged_ok       # verw: writable data


_HANDLERS: dict[str, Callable[[_Guest], Callable[[], None]] | None] = {
    **{n: _pushf for n in ("pushf16", "pushfd", "pushfq")},
    **{n: _popf for n in ("popf16", "popfd", "popfq")},
    **{n: _iret for n in ("iret16", "iretd", "iretq")},
    "sgdt": _store_table, "sidt": _store_table,
    "sldt": _store_host, "str": _store_host, "smsw": _store_host,
    **{f"mov.from.{s}": _read_sreg for s in ("es", "cs", "ss", "ds", "fs", "gs")},
    **{f"push.{s}": _push_sreg for s in ("es", "cs", "ss", "ds", "fs", "gs")},
    **{n: _descriptor_query for n in ("lar", "lsl", "verr", "verw")},
    # run by the engine: the load succeeds as at ring 0; the host CPU answers
    **{f"mov.to.{s}": None for s in ("es", "ss", "ds", "fs", "gs")},
    **{f"pop.{s}": None for s in ("es", "ds", "fs", "gs")},
    "pop.ss": _pop_ss,
    "cpuid": None, "rdtsc": None, "rdtscp": None, "xgetbv": None,
}


def covers(names: Iterable[str]) -> bool:
    """Whether every named catalog entry has a deprivileged handling here."""
    return all(n in _HANDLERS for n in names)


def handler(site: SensitiveSite, cpu: Cpu, ram: GuestRam) -> Callable[[], None] | None:
    """The function that runs `site` deprivileged on each execution; None: the engine runs it as it is."""
    make = _HANDLERS[site.entry.name]
    return None if make is None else make(_Guest(cpu, ram, site))

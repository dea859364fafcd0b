"""Instructions whose Unicorn 2.1.4 semantics differ from QEMU 7.2's, corrected site by site.

Unicorn is QEMU 5's CPU without a local APIC: `rdmsr`/`wrmsr` of IA32_APIC_BASE and
IA32_MISC_ENABLE read 0 and are dropped, CR8 is not the APIC's TPR, `mov dr6/dr7` (and their
dr4/dr5 aliases while CR4.DE is clear) accepts values with bits 63:32 set (QEMU raises #GP),
`smsw r32` writes only 16 bits, and DR0-DR3/DR7 arm no breakpoints (writes to them re-arm the
VMM's watchpoints). At load the VMM finds every place such an instruction may start in the
kernel's executable segments and puts a code hook on exactly that address (a hook ranged to one
address costs nothing elsewhere); the hook decodes the instruction and either emulates it and
skips it, raises the fault QEMU raises, or lets Unicorn run it. pv mode runs the same
corrections (``correct``) for the instructions it executes on the guest's behalf: trap sites and
hypercalls that run the original instruction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from capstone import CS_ARCH_X86, CS_MODE_32, CS_MODE_64, Cs
from capstone import x86_const as C
from unicorn import UC_HOOK_CODE
from unicorn import x86_const as X

from .cpu import Cpu
from .elf import ElfImage
from .interrupts import GP, UD, Event, EventKind
from .memory import GuestRam, LinearMemory, PageFault

PF_X = 1
MSR_APIC_BASE = 0x1B
MSR_MISC_ENABLE = 0x1A0
MISC_ENABLE_FAST_STRINGS = 1          # what QEMU reports
LAPIC_TPR = 0x80
DR7_FIXED_ONES = 0x400
CR4_DE = 1 << 3


def candidate_sites(image: ElfImage) -> list[int]:
    """Addresses where one of the corrected instructions may start (prefix bytes included)."""
    sites: set[int] = set()
    for seg in image.segments:
        if not seg.flags & PF_X:
            continue
        code = image.data[seg.file_off:seg.file_off + seg.file_size]
        start = code.find(b"\x0f")
        while start != -1 and start + 2 < len(code):
            op, modrm = code[start + 1], code[start + 2]
            hit = (op in (0x30, 0x32)                                      # wrmsr, rdmsr
                   or (op in (0x20, 0x22) and (modrm >> 3) & 7 == 0)       # mov to/from cr0/cr8 (REX.R)
                   or op == 0x23                                           # mov to dr0-7
                   or (op == 0x01 and modrm >> 6 == 3 and (modrm >> 3) & 7 == 4))   # smsw reg
            if hit:
                sites.update(seg.vaddr + start - back for back in (0, 1, 2) if start - back >= 0)
            start = code.find(b"\x0f", start + 1)
    return sorted(sites)


@dataclass(frozen=True)
class Correction:
    """How an instruction was corrected: emulated (the caller skips ``size`` bytes) or, with ``fault``,
    refused before it changed anything (the caller raises the fault at the instruction)."""

    size: int
    fault: Event | None = None


class CpuFixups:
    """The code hooks that make Unicorn's CPU answer as QEMU's does for the instructions above."""

    def __init__(self, cpu: Cpu, ram: GuestRam, lapic, raise_fault: Callable[[Event], None],
                 watchpoints, interrupts_changed: Callable[[], None]) -> None:
        self.cpu = cpu
        self.interrupts_changed = interrupts_changed   # a TPR or APIC-base write may change what is pending
        self.watchpoints = watchpoints
        self.ram = ram
        self.lapic = lapic
        self.raise_fault = raise_fault
        self.misc_enable = MISC_ENABLE_FAST_STRINGS
        self._decoders = {32: Cs(CS_ARCH_X86, CS_MODE_32), 64: Cs(CS_ARCH_X86, CS_MODE_64)}
        for decoder in self._decoders.values():
            decoder.detail = True

    def install(self, sites: list[int]) -> None:
        for va in sites:
            self.cpu.uc.hook_add(UC_HOOK_CODE, self._on_site, None, va, va)

    def _on_site(self, uc, address: int, size: int, _ud) -> None:
        try:
            code = LinearMemory(self.ram, self.cpu.paging()).read(address, 15)
        except PageFault:
            return
        fix = self.correct(code, address)
        if fix is None:
            return
        if fix.fault is not None:
            self.raise_fault(fix.fault)
            uc.emu_stop()                             # stops before the instruction runs
        else:
            self.cpu.pc = address + fix.size          # emulated: continue after it

    def correct(self, code: bytes, address: int) -> Correction | None:
        """Correct the instruction starting in ``code`` (at ``address``) against the current CPU state.

        None: Unicorn's own execution is right (or the instruction is not one of the corrected)."""
        bits = self.cpu.code_bits()
        if bits == 16:
            return None
        insn = next(self._decoders[bits].disasm(code, address, 1), None)
        if insn is None:
            return None
        handler = {C.X86_INS_RDMSR: self._rdmsr, C.X86_INS_WRMSR: self._wrmsr, C.X86_INS_MOV: self._mov_special,
                   C.X86_INS_SMSW: self._smsw}.get(insn.id)
        outcome = handler(insn) if handler is not None else False
        if isinstance(outcome, Event):
            return Correction(insn.size, outcome)
        return Correction(insn.size) if outcome else None

    def _reg(self, insn, op) -> int:
        return getattr(X, "UC_X86_REG_" + insn.reg_name(op.reg).upper())

    def _rdmsr(self, insn) -> bool:
        if self.cpu.cpl():
            return False                              # Unicorn raises the #GP itself
        msr = self.cpu.uc.reg_read(X.UC_X86_REG_ECX) & 0xFFFFFFFF
        if msr == MSR_APIC_BASE:
            value = self.lapic.apic_base_msr
        elif msr == MSR_MISC_ENABLE:
            value = self.misc_enable
        else:
            return False
        self.cpu.uc.reg_write(X.UC_X86_REG_RAX, value & 0xFFFFFFFF)
        self.cpu.uc.reg_write(X.UC_X86_REG_RDX, value >> 32)
        return True

    def _wrmsr(self, insn) -> bool:
        if self.cpu.cpl():
            return False
        uc = self.cpu.uc
        msr = uc.reg_read(X.UC_X86_REG_ECX) & 0xFFFFFFFF
        value = (uc.reg_read(X.UC_X86_REG_EDX) & 0xFFFFFFFF) << 32 | (uc.reg_read(X.UC_X86_REG_EAX) & 0xFFFFFFFF)
        if msr == MSR_APIC_BASE:
            self.lapic.write_apic_base_msr(value)
            self.interrupts_changed()
        elif msr == MSR_MISC_ENABLE:
            self.misc_enable = value
        else:
            return False
        return True

    def _mov_special(self, insn) -> bool | Event:
        if len(insn.operands) != 2 or self.cpu.cpl():
            return False
        dst, src = insn.operands
        names = insn.reg_name(dst.reg), insn.reg_name(src.reg)
        uc = self.cpu.uc
        if names[1] == "cr8":                        # mov reg, cr8: the APIC's task priority
            uc.reg_write(self._reg(insn, dst), (self.lapic.read(LAPIC_TPR, 4) >> 4) & 0xF)
            return True
        if names[0] == "cr8":
            self.lapic.write(LAPIC_TPR, 4, (uc.reg_read(self._reg(insn, src)) << 4) & 0xFF)
            self.interrupts_changed()
            return True
        target = names[0]
        if target in ("dr4", "dr5"):
            if uc.reg_read(X.UC_X86_REG_CR4) & CR4_DE:
                return Event(UD, EventKind.EXCEPTION)
            target = "dr6" if target == "dr4" else "dr7"   # aliases while CR4.DE is clear
        if target in ("dr6", "dr7") and uc.reg_read(self._reg(insn, src)) >> 32:
            return Event(GP, EventKind.EXCEPTION, 0)
        if target in ("dr0", "dr1", "dr2", "dr3", "dr7"):
            value = uc.reg_read(self._reg(insn, src))
            if not self.cpu.long_mode():
                value &= 0xFFFFFFFF
            uc.reg_write(getattr(X, "UC_X86_REG_" + target.upper()), value | DR7_FIXED_ONES if target == "dr7"
                         else value)
            self.watchpoints.rearm()
            return True
        return False

    def _smsw(self, insn) -> bool:
        op = insn.operands[0]
        if op.type != C.X86_OP_REG or op.size != 4:
            return False
        name = insn.reg_name(op.reg)
        if self.cpu.long_mode():                     # a 32-bit write zero-extends into the 64-bit register
            name = R32_TO_R64.get(name, name)
        self.cpu.uc.reg_write(getattr(X, "UC_X86_REG_" + name.upper()), self.cpu.uc.reg_read(X.UC_X86_REG_CR0) & 0xFFFFFFFF)
        return True


R32_TO_R64 = {f"e{r}": f"r{r}" for r in ("ax", "bx", "cx", "dx", "si", "di", "bp", "sp")} | \
    {f"r{n}d": f"r{n}" for n in range(8, 16)}

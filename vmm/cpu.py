"""The Unicorn engine as an x86 CPU: creation in 32-bit protected mode, register state, fault bookkeeping."""
from __future__ import annotations

import ctypes
import functools
import struct
from dataclasses import dataclass

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, UC_MODE_64, Uc, UcError
from unicorn import x86_const as X

from .errors import VmmError
from .memory import PagingState

CR0_PE = 1 << 0
EFLAGS_IF = 1 << 9
EFLAGS_TF = 1 << 8
EFLAGS_NT = 1 << 14
EFLAGS_RF = 1 << 16
EFLAGS_VM = 1 << 17
EFER_LMA = 1 << 10

SEGMENT_REGS = {"cs": X.UC_X86_REG_CS, "ds": X.UC_X86_REG_DS, "es": X.UC_X86_REG_ES,
                "fs": X.UC_X86_REG_FS, "gs": X.UC_X86_REG_GS, "ss": X.UC_X86_REG_SS}


@dataclass(frozen=True)
class ExceptionFields:
    """Byte offsets, inside a Unicorn x86 context blob, of the CPU's pending-exception bookkeeping."""

    error_code: int
    is_int: int
    old_exception: int


@functools.cache
def exception_fields() -> ExceptionFields:
    """Find the fields by experiment: raise #GP(0x28), then `int 0x0d`, and see which words changed.

    Unicorn hands exceptions to a hook without the error code, and never marks a hooked fault as
    delivered, so the next contributory fault would turn into #DF (unicorn issue #1883). The VMM reads
    the error code and clears the stale fault from the context instead.
    """
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x2000)
    uc.mem_write(0x500, bytes(8) + bytes.fromhex("ffff0000009acf00ffff00000092cf00"))
    uc.reg_write(X.UC_X86_REG_GDTR, (0, 0x500, 0x17, 0))
    uc.mem_write(0x1000, bytes.fromhex("66b828008ed8cd0df4"))   # mov ax,0x28; mov ds,ax; int 0x0d; hlt
    uc.hook_add(UC_HOOK_INTR, lambda u, n, d: u.emu_stop())
    snaps = [_context_bytes(uc)]
    uc.emu_start(0x1000, 0x1009)
    snaps.append(_context_bytes(uc))
    uc.emu_start(0x1006, 0x1009)
    snaps.append(_context_bytes(uc))

    def find(expect: tuple[int, int, int]) -> int:
        hits = [off for off in range(0, len(snaps[0]) - 3, 4)
                if tuple(struct.unpack_from("<i", s, off)[0] for s in snaps) == expect]
        if len(hits) != 1:
            raise VmmError("this Unicorn build's exception bookkeeping is not recognised "
                           "(install unicorn==2.1.4, the version the VMM is tested with)")
        return hits[0]

    return ExceptionFields(error_code=find((0, 0x28, 0)), is_int=find((0, 0, 1)), old_exception=find((-1, 13, 13)))


def _context_bytes(uc: Uc) -> bytes:
    ctx = uc.context_save()
    return ctypes.string_at(ctx.context, ctx.size)


def open_engine() -> Uc:
    """A 64-bit-capable engine whose CPU starts in flat 32-bit protected mode, CPL 0, paging off.

    Opened as UC_MODE_64 so that 64-bit registers stay readable after the guest enters long mode;
    the 32-bit starting state comes from a UC_MODE_32 engine's context (see FIELD-NOTES).
    """
    seed = Uc(UC_ARCH_X86, UC_MODE_32)
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    uc.context_restore(seed.context_save())
    return uc


class Cpu:
    """Register-level access to the vCPU that the loop, the interrupt logic and the devices share."""

    def __init__(self, uc: Uc) -> None:
        self.uc = uc
        self._fields = exception_fields()

    # --- state queries -------------------------------------------------------------------------
    def paging(self) -> PagingState:
        r = self.uc.reg_read
        return PagingState(r(X.UC_X86_REG_CR0), r(X.UC_X86_REG_CR3), r(X.UC_X86_REG_CR4), self.efer())

    def efer(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_MSR, 0xC0000080)

    def long_mode(self) -> bool:
        return bool(self.efer() & EFER_LMA)

    def protected_mode(self) -> bool:
        return bool(self.uc.reg_read(X.UC_X86_REG_CR0) & CR0_PE)

    def cpl(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_CS) & 3

    @property
    def pc(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_RIP)

    @pc.setter
    def pc(self, value: int) -> None:
        self.uc.reg_write(X.UC_X86_REG_RIP, value)

    @property
    def sp(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_RSP)

    @sp.setter
    def sp(self, value: int) -> None:
        self.uc.reg_write(X.UC_X86_REG_RSP, value)

    @property
    def eflags(self) -> int:
        return self.uc.reg_read(X.UC_X86_REG_EFLAGS)

    @eflags.setter
    def eflags(self, value: int) -> None:
        self.uc.reg_write(X.UC_X86_REG_EFLAGS, value)

    def interrupts_enabled(self) -> bool:
        return bool(self.eflags & EFLAGS_IF)

    def table_register(self, reg: int) -> tuple[int, int]:
        """(base, limit) of GDTR/IDTR, or of the descriptor cache of TR/LDTR."""
        _sel, base, limit, _flags = self.uc.reg_read(reg)
        return base, limit

    # --- exception bookkeeping -------------------------------------------------------------------
    def pending_exception(self) -> tuple[int, bool]:
        """(error code, raised by an INT n instruction) of the exception the hook is reporting."""
        blob = _context_bytes(self.uc)
        code = struct.unpack_from("<i", blob, self._fields.error_code)[0]
        is_int = struct.unpack_from("<i", blob, self._fields.is_int)[0]
        return code & 0xFFFFFFFF, bool(is_int)

    def clear_fault_history(self) -> None:
        """Mark the last hooked fault as delivered so the next one is not escalated to #DF."""
        ctx = self.uc.context_save()
        ctypes.memmove(ctx.context + self._fields.old_exception, struct.pack("<i", -1), 4)
        self.uc.context_restore(ctx)

    # --- segment loads on behalf of the CPU ----------------------------------------------------------
    def load_segment(self, name: str, selector: int) -> None:
        """Load a segment register from the guest's GDT/LDT as the CPU would during a transfer.

        Unicorn checks host-side loads against the current CPL, which an interrupt from ring 3 to
        ring 0 must change first: for that case the CPL is reset to 0 through a real-mode load of SS
        (CR0.PE briefly clear, paging untouched) before the protected-mode loads.
        """
        try:
            self.uc.reg_write(SEGMENT_REGS[name], selector)
        except UcError as exc:
            raise VmmError(f"cannot load {name} with selector {selector:#x}: {exc}") from exc

    def enter_cpl0(self) -> None:
        cr0 = self.uc.reg_read(X.UC_X86_REG_CR0)
        self.uc.reg_write(X.UC_X86_REG_CR0, cr0 & ~CR0_PE)
        self.uc.reg_write(X.UC_X86_REG_SS, 0)
        self.uc.reg_write(X.UC_X86_REG_CR0, cr0)

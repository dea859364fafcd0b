"""Data breakpoints (DR0-DR3 with DR7), which Unicorn lacks: write watches trapped by page protection.

A write watch write-protects the physical page under it, so the writing instruction stops *before*
it runs; the VMM then lets that one instruction run with the page writable and, if the write
touched the watched bytes, raises the #DB trap after it with DR6.Bn set, as the CPU does. Read/write
watches catch the writes only, and execution breakpoints are not emulated (both logged).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from unicorn import UC_HOOK_MEM_WRITE_PROT, UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ
from unicorn import x86_const as X

from .cpu import Cpu
from .memory import GuestRam, PageFault, translate

log = logging.getLogger("vmm.watchpoints")
DR7_RW_WRITE, DR7_RW_IO, DR7_RW_READWRITE = 1, 2, 3
DR7_LEN_BYTES = {0: 1, 1: 2, 2: 8, 3: 4}
DR6_BITS = 0xF
PAGE = 0x1000


@dataclass(frozen=True)
class Watch:
    index: int
    linear: int
    length: int
    page_pa: int


class Watchpoints:
    """The armed write watches, the page protections behind them, and the hit test."""

    def __init__(self, cpu: Cpu, ram: GuestRam) -> None:
        self.cpu = cpu
        self.ram = ram
        self.watches: tuple[Watch, ...] = ()
        self.hit_write: tuple[int, int] | None = None    # (linear address, size) of the stopped write
        cpu.uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._on_write_protect)

    def rearm(self) -> None:
        """Recompute the watches from DR0-DR3/DR7 (after a guest write to one of them)."""
        uc = self.cpu.uc
        self._protect(False)
        dr7 = uc.reg_read(X.UC_X86_REG_DR7)
        watches = []
        for n in range(4):
            if not (dr7 >> (2 * n)) & 3:
                continue
            rw, length = (dr7 >> (16 + 4 * n)) & 3, DR7_LEN_BYTES[(dr7 >> (18 + 4 * n)) & 3]
            linear = uc.reg_read(X.UC_X86_REG_DR0 + n)
            if rw not in (DR7_RW_WRITE, DR7_RW_READWRITE):
                log.warning("DR%d: %s breakpoints are not emulated", n, "execution" if rw == 0 else "I/O")
                continue
            if rw == DR7_RW_READWRITE:
                log.warning("DR%d: read/write watch at %#x catches writes only", n, linear)
            try:
                page_pa = translate(self.ram, self.cpu.paging(), linear) & ~(PAGE - 1)
            except PageFault:
                log.warning("DR%d: watched address %#x is not mapped; not armed", n, linear)
                continue
            if page_pa + PAGE <= self.ram.size:
                watches.append(Watch(n, linear, length, page_pa))
        self.watches = tuple(watches)
        self._protect(True)

    def _protect(self, on: bool) -> None:
        for page in {w.page_pa for w in self.watches}:
            self.cpu.uc.mem_protect(page, PAGE, (UC_PROT_READ | UC_PROT_EXEC) if on else UC_PROT_ALL)

    def _on_write_protect(self, uc, access: int, address: int, size: int, value: int, _ud) -> bool:
        if not self.watches:
            return False
        self.hit_write = (address, size)
        return False                          # stop before the instruction runs

    def step_over(self, step) -> int:
        """Run the stopped writer with its page writable (`step()` runs one instruction); DR6 bits hit."""
        address, size = self.hit_write
        self.hit_write = None
        self._protect(False)
        try:
            step()
        finally:
            self._protect(True)
        hits = 0
        for w in self.watches:
            if address < w.linear + w.length and w.linear < address + size:
                hits |= 1 << w.index
        return hits

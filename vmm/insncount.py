"""Exact guest instruction counting per translated block (Capstone), for limits and measurements."""
from __future__ import annotations

from capstone import CS_ARCH_X86, CS_MODE_16, CS_MODE_32, CS_MODE_64, Cs
from unicorn import x86_const as X

from .cpu import Cpu
from .memory import GuestRam, LinearMemory, PageFault


class BlockCounter:
    """A UC_HOOK_BLOCK callback that adds each executed block's instruction count (decoded once)."""

    def __init__(self, cpu: Cpu, ram: GuestRam) -> None:
        self.cpu = cpu
        self.ram = ram
        self.count = 0
        self.limit: int | None = None          # stop the engine once the count passes this
        self._cache: dict[tuple[int, int, int], int] = {}         # (address, size, code bits) -> instructions
        self._seen: dict[tuple[int, int, int, int], int] = {}     # (address, size, CS, CR0.PE) -> instructions
        self._decoders = {bits: Cs(CS_ARCH_X86, mode) for bits, mode in
                          ((16, CS_MODE_16), (32, CS_MODE_32), (64, CS_MODE_64))}

    def _code_bits(self) -> int:
        if self.cpu.long_mode():
            sel = self.cpu.uc.reg_read(X.UC_X86_REG_CS)
            base, _limit = self.cpu.table_register(X.UC_X86_REG_GDTR)
            try:
                high = int.from_bytes(LinearMemory(self.ram, self.cpu.paging()).read(base + (sel & ~7) + 4, 4), "little")
            except PageFault:
                return 64
            return 64 if high & (1 << 21) else 32
        return 32 if self.cpu.protected_mode() else 16

    def on_block(self, uc, address: int, size: int, _ud) -> None:
        # The code mode decides the decoding, but finding it (EFER, the GDT) costs ~20 us: blocks are
        # known by CS and CR0.PE as well, and only a new one has its mode looked up and is decoded.
        fast = self.cpu._fast_read
        seen = (address, size, fast(X.UC_X86_REG_CS), fast(X.UC_X86_REG_CR0) & 1)
        n = self._seen.get(seen)
        if n is None:
            n = self._seen[seen] = self._decoded(address, size)
        self.count += n
        if self.limit is not None and self.count > self.limit:
            uc.emu_stop()

    def _decoded(self, address: int, size: int) -> int:
        bits = self._code_bits()
        key = (address, size, bits)
        n = self._cache.get(key)
        if n is None:
            try:
                code = LinearMemory(self.ram, self.cpu.paging()).read(address, size)
            except PageFault:
                code = b""
            n = sum(1 for _ in self._decoders[bits].disasm_lite(code, address)) or 1
            self._cache[key] = n
        return n

"""Guest RAM (host-backed, shared with Unicorn) and guest-virtual to guest-physical translation."""
from __future__ import annotations

import ctypes
import mmap
import struct
from dataclasses import dataclass

from .errors import OutsideRam

CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
EFER_LMA = 1 << 10
PAGE = 0x1000


@dataclass(frozen=True)
class PagingState:
    """The control-register bits that decide how a linear address becomes a physical one."""

    cr0: int
    cr3: int
    cr4: int
    efer: int


class PageFault(Exception):
    """A translation the VMM itself attempted (delivering an interrupt) hit a non-present entry."""

    def __init__(self, va: int, write: bool) -> None:
        super().__init__(f"page fault at {va:#x}")
        self.va = va
        self.write = write


class GuestRam:
    """RAM from guest-physical 0 up to `size`, in one anonymous mapping that Unicorn executes from."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._map = mmap.mmap(-1, size)
        self._ctype = (ctypes.c_char * size).from_buffer(self._map)
        self.view = memoryview(self._map)

    @property
    def host_address(self) -> int:
        return ctypes.addressof(self._ctype)

    def _check(self, pa: int, length: int) -> None:
        if pa < 0 or pa + length > self.size:
            raise OutsideRam(f"guest-physical access [{pa:#x}, {pa + length:#x}) is outside RAM (0-{self.size:#x})")

    def read(self, pa: int, length: int) -> bytes:
        self._check(pa, length)
        return bytes(self.view[pa:pa + length])

    def write(self, pa: int, data: bytes) -> None:
        self._check(pa, len(data))
        self.view[pa:pa + len(data)] = data

    def read_u32(self, pa: int) -> int:
        return struct.unpack("<I", self.read(pa, 4))[0]

    def read_u64(self, pa: int) -> int:
        return struct.unpack("<Q", self.read(pa, 8))[0]

    def close(self) -> None:
        """Unmap guest RAM; no engine may still execute from it."""
        self.view.release()
        del self._ctype                      # the ctypes view pins the mapping: drop it first
        self._map.close()


def translate(ram: GuestRam, paging: PagingState, va: int, write: bool = False) -> int:
    """Walk the guest's page tables (none, 32-bit, PAE or 4-level) for one linear address."""
    if not paging.cr0 & CR0_PG:
        return va & 0xFFFFFFFF
    if paging.efer & EFER_LMA:
        return _walk(ram, paging.cr3 & 0x000FFFFFFFFFF000, va, levels=(39, 30, 21, 12), entry=8, write=write)
    if paging.cr4 & CR4_PAE:
        pdpte = ram.read_u64((paging.cr3 & 0xFFFFFFE0) + ((va >> 30) & 3) * 8)
        if not pdpte & 1:
            raise PageFault(va, write)
        return _walk(ram, pdpte & 0x000FFFFFFFFFF000, va, levels=(21, 12), entry=8, write=write)
    pde = ram.read_u32((paging.cr3 & 0xFFFFF000) + ((va >> 22) & 0x3FF) * 4)
    if not pde & 1:
        raise PageFault(va, write)
    if pde & 0x80 and paging.cr4 & CR4_PSE:
        return (pde & 0xFFC00000) | (va & 0x3FFFFF)
    pte = ram.read_u32((pde & 0xFFFFF000) + ((va >> 12) & 0x3FF) * 4)
    if not pte & 1:
        raise PageFault(va, write)
    return (pte & 0xFFFFF000) | (va & 0xFFF)


def _walk(ram: GuestRam, table: int, va: int, levels: tuple[int, ...], entry: int, write: bool) -> int:
    mask = 0x000FFFFFFFFFF000
    for depth, shift in enumerate(levels):
        ent = ram.read_u64(table + ((va >> shift) & 0x1FF) * entry)
        if not ent & 1:
            raise PageFault(va, write)
        last = depth == len(levels) - 1
        if last or (ent & 0x80 and shift in (21, 30)):
            page_mask = (1 << shift) - 1
            return (ent & mask & ~page_mask) | (va & page_mask)
        table = ent & mask
    raise AssertionError("unreachable")


class LinearMemory:
    """Reads and writes at guest-linear addresses, page by page, through the current paging state."""

    def __init__(self, ram: GuestRam, paging: PagingState) -> None:
        self.ram = ram
        self.paging = paging

    def read(self, va: int, length: int) -> bytes:
        out = bytearray()
        while length:
            chunk = min(length, PAGE - (va & (PAGE - 1)))
            out += self.ram.read(translate(self.ram, self.paging, va), chunk)
            va, length = va + chunk, length - chunk
        return bytes(out)

    def write(self, va: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            chunk = min(len(data) - pos, PAGE - (va & (PAGE - 1)))
            self.ram.write(translate(self.ram, self.paging, va, write=True), data[pos:pos + chunk])
            va, pos = va + chunk, pos + chunk

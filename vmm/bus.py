"""Port-I/O and MMIO address decoding: which device owns an address, and at what offset."""
from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass

from .devices.base import Device

log = logging.getLogger("vmm.bus")


@dataclass(frozen=True)
class Mapping:
    base: int
    size: int
    device: Device
    name: str


class Bus:
    """Non-overlapping [base, base+size) ranges, each owned by one device."""

    def __init__(self, kind: str, unassigned_value: int) -> None:
        self.kind = kind
        self.unassigned_value = unassigned_value
        self._bases: list[int] = []
        self._maps: list[Mapping] = []
        self.unassigned: dict[int, int] = {}
        # address -> (device, base) for small ranges (all the ports): one dict lookup on the hot path
        self.table: dict[int, tuple[Device, int]] = {}

    def attach(self, base: int, size: int, device: Device, name: str) -> None:
        i = bisect.bisect_right(self._bases, base)
        if (i and self._maps[i - 1].base + self._maps[i - 1].size > base) or \
                (i < len(self._maps) and base + size > self._maps[i].base):
            raise ValueError(f"{self.kind} range {base:#x}+{size:#x} for {name} overlaps another device")
        self._bases.insert(i, base)
        self._maps.insert(i, Mapping(base, size, device, name))
        if size <= 0x100:
            for addr in range(base, base + size):
                self.table[addr] = (device, base)

    def find(self, addr: int) -> Mapping | None:
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            m = self._maps[i]
            if addr < m.base + m.size:
                return m
        return None

    def read(self, addr: int, size: int) -> int:
        m = self.find(addr)
        if m is None:
            self._note_unassigned(addr, "read", size)
            return self.unassigned_value & ((1 << (8 * size)) - 1)
        return m.device.read(addr - m.base, size) & ((1 << (8 * size)) - 1)

    def write(self, addr: int, size: int, value: int) -> None:
        m = self.find(addr)
        if m is None:
            self._note_unassigned(addr, f"write {value:#x}", size)
            return
        m.device.write(addr - m.base, size, value & ((1 << (8 * size)) - 1))

    def _note_unassigned(self, addr: int, what: str, size: int) -> None:
        count = self.unassigned.get(addr, 0)
        self.unassigned[addr] = count + 1
        if count == 0:
            log.info("unassigned %s %s of %d byte(s) at %#x (logged once per address)", self.kind, what, size, addr)

"""QEMU's fw_cfg firmware-configuration interface on x86 I/O ports (0x510 selector/data, 0x514 DMA)."""
from __future__ import annotations

import logging
import struct
from typing import Protocol

from ..errors import VmmError
from .cmos import pc_ram_split

log = logging.getLogger("vmm.devices")

# Offsets from 0x510
SELECTOR = 0                    # 16-bit write selects an item; 8-bit reads here or at DATA read data
DATA = 1
DMA_ADDRESS_HIGH = 4            # big-endian 64-bit DMA descriptor address at 4-11 (0x514-0x51b)
DMA_ADDRESS_LOW = 8
PORT_SPAN = 12
DMA_SIGNATURE = b"QEMU CFG"

# Item keys
KEY_SIGNATURE, KEY_ID, KEY_UUID, KEY_RAM_SIZE, KEY_NOGRAPHIC, KEY_NB_CPUS = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
KEY_NUMA, KEY_BOOT_MENU, KEY_MAX_CPUS, KEY_FILE_DIR, KEY_FILE_FIRST = 0x0D, 0x0E, 0x0F, 0x19, 0x20
KEY_IRQ0_OVERRIDE = 0x8002
KEY_ARCH_LOCAL, KEY_WRITE_CHANNEL = 0x8000, 0x4000
KEY_ENTRY_MASK = 0x3FFF
MAX_ENTRY = KEY_FILE_FIRST + 0x20       # QEMU's default: 32 file slots
FILE_NAME_SIZE = 56

ID_TRADITIONAL, ID_DMA = 0x01, 0x02
DMA_CTL_ERROR, DMA_CTL_READ, DMA_CTL_SKIP, DMA_CTL_SELECT, DMA_CTL_WRITE = 0x01, 0x02, 0x04, 0x08, 0x10
DMA_DESCRIPTOR = struct.Struct(">IIQ")  # control, length, address

E820_RAM, E820_RESERVED = 1, 2
AMD_HT_START, AMD_HT_SIZE = 0xFD_0000_0000, 0x3_0000_0000
FOUR_GIB = 1 << 32


class DmaMemory(Protocol):
    """Guest-physical memory as the DMA engine sees it (GuestRam fits); errors are VmmError."""

    def read(self, pa: int, length: int) -> bytes: ...

    def write(self, pa: int, data: bytes) -> None: ...


def pc_e820_table(below_4g: int, above_4g: int, amd_ht_hole: bool = True) -> bytes:
    """The "etc/e820" file of QEMU 7.2's pc machine: the AMD HyperTransport hole (qemu64 is an AMD
    CPU with 40 physical address bits), RAM below 4 GiB, RAM above 4 GiB; 20-byte little-endian entries."""
    entries = []
    if amd_ht_hole:
        entries.append((AMD_HT_START, AMD_HT_SIZE, E820_RESERVED))
    entries.append((0, below_4g, E820_RAM))
    if above_4g:
        entries.append((FOUR_GIB, above_4g, E820_RAM))
    return b"".join(struct.pack("<QQI", *e) for e in entries)


class FwCfg:
    """fw_cfg items (signature, ID, UUID, RAM size, CPU counts, IRQ0 override, files) at offsets 0-11.

    Reading is byte-wise through the data port, or by DMA when `memory` is given (then the ID item
    advertises DMA, as QEMU does). Files are listed in the directory sorted by name, as QEMU sorts
    them; their selectors therefore depend on the set of files (guests look them up by name). Only
    "etc/e820" is present by default (QEMU also lists ACPI, SMBIOS, option ROMs and more).
    Writes to items are not supported (QEMU 7.2 has no writable item on this machine either).
    """

    def __init__(self, ram_bytes: int, cpus: int = 1, max_cpus: int | None = None,
                 memory: DmaMemory | None = None, e820: bytes | None = None) -> None:
        self._memory = memory
        self._items: dict[int, bytes] = {}
        self._files: dict[str, bytes] = {}
        self._selected: int | None = None
        self._offset = 0
        self._dma_address = 0
        max_cpus = max_cpus or cpus
        self.add_item(KEY_SIGNATURE, b"QEMU")
        self.add_item(KEY_ID, struct.pack("<I", ID_TRADITIONAL | (ID_DMA if memory is not None else 0)))
        self.add_item(KEY_UUID, bytes(16))
        self.add_item(KEY_RAM_SIZE, struct.pack("<Q", ram_bytes))
        self.add_item(KEY_NOGRAPHIC, struct.pack("<H", 0))
        self.add_item(KEY_NB_CPUS, struct.pack("<H", cpus))
        self.add_item(KEY_NUMA, bytes(8 * (1 + max_cpus)))      # no NUMA nodes
        self.add_item(KEY_BOOT_MENU, struct.pack("<H", 0))
        self.add_item(KEY_MAX_CPUS, struct.pack("<H", max_cpus))
        self.add_item(KEY_IRQ0_OVERRIDE, struct.pack("<I", 1))
        self.add_file("etc/e820", pc_e820_table(*pc_ram_split(ram_bytes)) if e820 is None else e820)

    # -- contents --------------------------------------------------------------------------------
    def add_item(self, key: int, data: bytes) -> None:
        self._items[key] = bytes(data)

    def add_file(self, name: str, data: bytes) -> None:
        encoded = name.encode()
        if len(encoded) >= FILE_NAME_SIZE:
            raise ValueError(f"fw_cfg file name {name!r} is longer than {FILE_NAME_SIZE - 1} bytes")
        if len(self._files) >= MAX_ENTRY - KEY_FILE_FIRST:
            raise ValueError("fw_cfg has no free file slot (QEMU's default is 32)")
        self._files[name] = bytes(data)

    def file_key(self, name: str) -> int:
        return KEY_FILE_FIRST + sorted(self._files).index(name)

    def _item(self, key: int) -> bytes | None:
        """Contents of the item a selector value names (the write-channel bit is ignored)."""
        index = key & KEY_ENTRY_MASK
        if index == KEY_FILE_DIR and not key & KEY_ARCH_LOCAL:
            return self._directory()
        if KEY_FILE_FIRST <= index < MAX_ENTRY and not key & KEY_ARCH_LOCAL:
            names = sorted(self._files)
            return self._files[names[index - KEY_FILE_FIRST]] if index - KEY_FILE_FIRST < len(names) else None
        return self._items.get(index | (key & KEY_ARCH_LOCAL))

    def _directory(self) -> bytes:
        names = sorted(self._files)
        out = [struct.pack(">I", len(names))]
        for i, name in enumerate(names):
            out.append(struct.pack(">IHH56s", len(self._files[name]), KEY_FILE_FIRST + i, 0, name.encode()))
        return b"".join(out)

    # -- ports -----------------------------------------------------------------------------------
    def select(self, key: int) -> None:
        self._offset = 0
        self._selected = key if (key & KEY_ENTRY_MASK) < MAX_ENTRY else None

    def _next_byte(self) -> int:
        data = self._item(self._selected) if self._selected is not None else None
        if data is None or self._offset >= len(data):
            return 0
        self._offset += 1
        return data[self._offset - 1]

    def read(self, offset: int, size: int) -> int:
        if offset in (SELECTOR, DATA):
            return self._next_byte() if size == 1 else 0    # only byte reads are valid in QEMU
        if DMA_ADDRESS_HIGH <= offset < PORT_SPAN:
            chunk = DMA_SIGNATURE[offset - DMA_ADDRESS_HIGH:offset - DMA_ADDRESS_HIGH + size]
            return int.from_bytes(chunk.ljust(size, b"\xff"), "little")
        return (1 << (8 * size)) - 1                        # 0x512-0x513: nothing there

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == SELECTOR and size == 2:
            self.select(value)
        elif offset in (SELECTOR, DATA) and size == 1:
            log.debug("fw_cfg: data-port write %#x ignored (no writable items)", value)
        elif offset == DMA_ADDRESS_HIGH and size == 4:
            self._dma_address = _swap32(value) << 32
        elif offset == DMA_ADDRESS_LOW and size == 4:
            self._dma_address |= _swap32(value)
            self._dma_transfer()
        elif offset == DMA_ADDRESS_HIGH and size == 8:
            self._dma_address = int.from_bytes(value.to_bytes(8, "little"), "big")
            self._dma_transfer()
        else:
            log.debug("fw_cfg: %d-byte write %#x at offset %d ignored", size, value, offset)

    # -- DMA -------------------------------------------------------------------------------------
    def _dma_transfer(self) -> None:
        descriptor_pa, self._dma_address = self._dma_address, 0
        if self._memory is None:
            log.info("fw_cfg: DMA request at %#x but no DMA memory is wired; ignored", descriptor_pa)
            return
        try:
            control, length, address = DMA_DESCRIPTOR.unpack(self._memory.read(descriptor_pa, DMA_DESCRIPTOR.size))
        except VmmError:
            self._dma_status(descriptor_pa, DMA_CTL_ERROR)
            return
        if control & DMA_CTL_SELECT:
            self.select(control >> 16)
        if not control & (DMA_CTL_READ | DMA_CTL_WRITE | DMA_CTL_SKIP):
            length = 0
        data = self._item(self._selected) if self._selected is not None else None
        data = data or b""
        status = 0
        try:
            while length > 0 and not status:
                available = max(len(data) - self._offset, 0)
                n = min(length, available) if available else length
                if control & DMA_CTL_READ:
                    chunk = data[self._offset:self._offset + n] if available else bytes(n)
                    self._memory.write(address, chunk)
                elif control & DMA_CTL_WRITE:
                    status |= DMA_CTL_ERROR         # no item is writable
                if available:
                    self._offset += n
                address += n
                length -= n
        except VmmError:
            status |= DMA_CTL_ERROR
        self._dma_status(descriptor_pa, status)

    def _dma_status(self, descriptor_pa: int, control: int) -> None:
        try:
            self._memory.write(descriptor_pa, struct.pack(">I", control))
        except VmmError:
            log.info("fw_cfg: DMA descriptor at %#x is outside RAM", descriptor_pa)


def _swap32(value: int) -> int:
    return int.from_bytes(value.to_bytes(4, "little"), "big")

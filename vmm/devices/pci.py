"""PCI configuration mechanism #1 (0xCF8 address, 0xCFC data) and bus 0 of QEMU 7.2's pc machine after SeaBIOS."""
from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger("vmm.devices")

CONFIG_SPACE_SIZE = 256
HEADER_SIZE = 64                  # the standard type-0 header; everything above is device specific
PORT_SPAN = 4                     # each of the two Devices covers four ports

# Config-address register (0xCF8) fields
ADDR_ENABLE = 1 << 31
ADDR_BUS_SHIFT, ADDR_DEVFN_SHIFT = 16, 8
ADDR_REGISTER_MASK = 0xFF         # QEMU ORs the data-port offset into these bits, including bits 0-1
INITIAL_CONFIG_ADDRESS = 0x8000005C   # what SeaBIOS leaves latched at kernel entry (its last PAM access)

# 0xCF9 overlaps the address port: the PIIX3 reset control register (QEMU's piix3 "rcr")
RCR_OFFSET = 1
RCR_SYS_RST = 0x02                # the only bit kept
RCR_RST_CPU = 0x04                # writing it requests a system reset instead of being stored

# Type-0 header offsets
REG_COMMAND = 0x04
REG_CACHE_LINE_SIZE = 0x0C
REG_BAR4 = 0x20
REG_INTERRUPT_LINE = 0x3C

# Guest-writable bits, as QEMU's pci_init_wmask(): IO, MEMORY, MASTER, SERR and INTX_DISABLE of the
# command register, the cache line size and the interrupt line; every byte above the header is writable.
COMMAND_WMASK = 0x0507
IDE_BMIBA_WMASK = 0xFFFFFFF0      # BAR4: 16 ports of bus-master IDE registers; bit 0 (I/O space) reads as 1

# Config spaces of the four functions on bus 0, as QEMU 7.2 -nodefaults reports them after SeaBIOS
# (probe guest, dword offset -> value; absent offsets are zero). SeaBIOS enabled I/O (and memory where
# applicable), put the IDE bus-master BAR at 0xC000, routed PIRQs, and set up the PIIX4 PM (0x600) and
# SMBus (0x700) bases.
I440FX_CONFIG = {
    0x00: 0x12378086, 0x04: 0x00000103, 0x08: 0x06000002, 0x2C: 0x11001AF4,
    0x54: 0x10000000, 0x58: 0x11111000, 0x5C: 0x33111111,     # PAM registers
    0x70: 0x000A0000,                                         # SMRAM control (0x72)
}
PIIX3_ISA_CONFIG = {
    0x00: 0x70008086, 0x04: 0x02000103, 0x08: 0x06010000, 0x0C: 0x00800000,    # header type 0x80: multi-function
    0x2C: 0x11001AF4, 0x4C: 0x0003004D, 0x60: 0x0B0B0A0A, 0x68: 0x00000200, 0x70: 0x00000080,
    0x74: 0x0C0C0000, 0x78: 0x00000002, 0xA0: 0x00000008, 0xA8: 0x0000000F,
}
PIIX3_IDE_CONFIG = {
    0x00: 0x70108086, 0x04: 0x02800103, 0x08: 0x01018000, 0x20: 0x0000C001, 0x2C: 0x11001AF4,
    0x40: 0x80008000,                                         # IDE timing: both channels' decode enabled
}
PIIX4_ACPI_CONFIG = {
    0x00: 0x71138086, 0x04: 0x02800103, 0x08: 0x06800003, 0x2C: 0x11001AF4, 0x3C: 0x00000109,
    0x40: 0x00000601, 0x58: 0x02000000, 0x5C: 0x10000000, 0x60: 0x60000000, 0x64: 0x08000000,
    0x80: 0x00000001, 0x90: 0x00000701, 0xD0: 0x00090000,
}

HOST_BRIDGE, ISA_BRIDGE, IDE, ACPI = (0, 0), (1, 0), (1, 1), (1, 3)     # (device, function) on bus 0


def config_bytes(dwords: dict[int, int]) -> bytes:
    """A 256-byte config space from {dword offset: value}; offsets not listed are zero."""
    space = bytearray(CONFIG_SPACE_SIZE)
    for offset, value in dwords.items():
        space[offset:offset + 4] = value.to_bytes(4, "little")
    return bytes(space)


def default_wmask(bar_masks: dict[int, int] | None = None) -> bytes:
    """QEMU's write mask for a type-0 function: command, cache line, interrupt line, given BARs, all of 0x40-0xFF."""
    mask = bytearray(CONFIG_SPACE_SIZE)
    mask[REG_COMMAND:REG_COMMAND + 2] = COMMAND_WMASK.to_bytes(2, "little")
    mask[REG_CACHE_LINE_SIZE] = 0xFF
    mask[REG_INTERRUPT_LINE] = 0xFF
    for offset, bar_mask in (bar_masks or {}).items():
        mask[offset:offset + 4] = bar_mask.to_bytes(4, "little")
    mask[HEADER_SIZE:] = b"\xff" * (CONFIG_SPACE_SIZE - HEADER_SIZE)
    return bytes(mask)


class PciFunction:
    """One function's 256-byte configuration space: bytes plus a per-bit write mask (QEMU's pci_default_*_config).

    A BAR is probed the usual way (write all ones, read back the size mask) because its low bits are not
    writable. Writes have no side effects here: BARs, PAM, PIRQ routing and the PM/SMBus bases are stored
    and read back but do not move or enable anything.
    """

    def __init__(self, config: bytes, wmask: bytes) -> None:
        if len(config) != CONFIG_SPACE_SIZE or len(wmask) != CONFIG_SPACE_SIZE:
            raise ValueError("a PCI config space and its write mask are 256 bytes each")
        self.config = bytearray(config)
        self.wmask = bytes(wmask)

    def read(self, offset: int, size: int) -> int:
        """`size` bytes from `offset`; bytes past the end of config space read as zero (QEMU clips the length)."""
        return int.from_bytes(self.config[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        """Store the writable bits of `size` bytes at `offset`; bytes past the end are dropped."""
        for i in range(min(size, CONFIG_SPACE_SIZE - offset)):
            mask = self.wmask[offset + i]
            byte = (value >> (8 * i)) & 0xFF
            self.config[offset + i] = (self.config[offset + i] & ~mask) | (byte & mask)


def pc_functions() -> dict[tuple[int, int], PciFunction]:
    """Bus 0 of QEMU 7.2's pc with -nodefaults: i440FX, PIIX3 ISA and IDE, PIIX4 ACPI; keyed by (device, function)."""
    return {
        HOST_BRIDGE: PciFunction(config_bytes(I440FX_CONFIG), default_wmask()),
        ISA_BRIDGE: PciFunction(config_bytes(PIIX3_ISA_CONFIG), default_wmask()),
        IDE: PciFunction(config_bytes(PIIX3_IDE_CONFIG), default_wmask({REG_BAR4: IDE_BMIBA_WMASK})),
        ACPI: PciFunction(config_bytes(PIIX4_ACPI_CONFIG), default_wmask()),
    }


def _all_ones(size: int) -> int:
    return (1 << (8 * size)) - 1


def _valid_access(offset: int, size: int) -> bool:
    """QEMU's memory core rejects accesses not aligned to their size (reads give 0, writes are dropped)."""
    return size in (1, 2, 4) and offset % size == 0


class PciHost:
    """The i440FX's configuration mechanism #1 over the functions of bus 0.

    Put `address_port` on 0xCF8-0xCFB and `data_port` on 0xCFC-0xCFF. `functions` defaults to
    `pc_functions()`; `on_reset` is called when the guest writes RST_CPU to 0xCF9 (QEMU requests a
    system reset, which ends the run under -no-reboot).
    """

    def __init__(self, functions: dict[tuple[int, int], PciFunction] | None = None,
                 on_reset: Callable[[], None] | None = None) -> None:
        self.functions = pc_functions() if functions is None else functions
        self._on_reset = on_reset
        self.config_address = INITIAL_CONFIG_ADDRESS
        self.rcr = 0
        self.address_port = PciConfigAddress(self)
        self.data_port = PciConfigData(self)

    def function_at(self, address: int) -> PciFunction | None:
        """The function a config address selects, or None if no function is there (only bus 0 exists)."""
        if (address >> ADDR_BUS_SHIFT) & 0xFF:
            return None
        devfn = (address >> ADDR_DEVFN_SHIFT) & 0xFF
        return self.functions.get((devfn >> 3, devfn & 7))

    def write_rcr(self, value: int) -> None:
        if value & RCR_RST_CPU:
            if self._on_reset is None:
                log.warning("pci: reset requested through 0xCF9 (%#x), no reset handler", value)
            else:
                self._on_reset()
            return
        self.rcr = value & RCR_SYS_RST


class PciConfigAddress:
    """Ports 0xCF8-0xCFB: the 32-bit config address, with the PIIX3 reset control register over 0xCF9.

    Only a dword write at 0xCF8 latches the address (all 32 bits, as written). Aligned reads at 0xCF8,
    0xCFA and 0xCFB all return the low bytes of the latched address (QEMU ignores the offset); 0xCF9
    reads the reset control byte in every byte lane. Other accesses read 0 and writes are dropped.
    """

    def __init__(self, host: PciHost) -> None:
        self._host = host

    def read(self, offset: int, size: int) -> int:
        if offset == RCR_OFFSET:                # byte-wide register: wider accesses repeat it per byte
            return int.from_bytes(bytes((self._host.rcr,)) * size, "little")
        if offset >= PORT_SPAN or not _valid_access(offset, size):
            log.debug("pci: unaligned %d-byte read at config-address offset %d", size, offset)
            return 0
        return self._host.config_address & _all_ones(size)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == RCR_OFFSET:
            for i in range(size):               # split into byte writes, lowest first
                self._host.write_rcr((value >> (8 * i)) & 0xFF)
        elif offset == 0 and size == 4:
            self._host.config_address = value
        else:
            log.debug("pci: %d-byte write %#x at config-address offset %d ignored", size, value, offset)


class PciConfigData:
    """Ports 0xCFC-0xCFF: the selected function's config space at the latched register OR the port offset.

    As in QEMU, the register is the address's low byte (bits 0-1 included) ORed with the offset, and
    `size` bytes are transferred from there, clipped at the end of config space. With the enable bit
    clear or no function at the address, reads return all ones and writes are dropped; unaligned
    accesses read 0 and are dropped.
    """

    def __init__(self, host: PciHost) -> None:
        self._host = host

    def read(self, offset: int, size: int) -> int:
        target = self._target(offset, size)
        if target is None:
            return 0 if not _valid_access(offset, size) or offset >= PORT_SPAN else _all_ones(size)
        function, register = target
        return function.read(register, size)

    def write(self, offset: int, size: int, value: int) -> None:
        target = self._target(offset, size)
        if target is not None:
            function, register = target
            function.write(register, size, value)

    def _target(self, offset: int, size: int) -> tuple[PciFunction, int] | None:
        if offset >= PORT_SPAN or not _valid_access(offset, size):
            log.debug("pci: unaligned %d-byte access at config-data offset %d", size, offset)
            return None
        address = self._host.config_address
        if not address & ADDR_ENABLE:
            return None
        function = self._host.function_at(address)
        if function is None:
            return None
        return function, (address | offset) & ADDR_REGISTER_MASK

"""Every fixed address and port of the machine the guests see (a QEMU `pc` subset), in one place."""
from __future__ import annotations

MiB = 1 << 20
KiB = 1 << 10

DEFAULT_RAM_BYTES = 128 * MiB          # QEMU's default
MAX_RAM_BYTES = 3 * 1024 * MiB         # below the PCI hole; no RAM is placed above 4 GiB
LOW_RAM_TOP = 0x9FC00                  # conventional memory ends here (EBDA above), as QEMU's e820
HIGH_RAM_START = 1 * MiB
FIRMWARE_RESERVED_BYTES = 128 * KiB    # SeaBIOS keeps the top of RAM (e820 reserved)
BIOS_ROM_BASE = 0xFFFC0000
AMD_HT_HOLE_BASE = 0xFD_0000_0000
AMD_HT_HOLE_BYTES = 0x3_0000_0000

# Boot data written by the loaders, in low memory that the e820 map reports as usable (as QEMU
# does with its own boot data): a GDT for the initial segments, the boot info and its tables.
BOOT_GDT_PA = 0x6000
BOOT_INFO_PA = 0x7000                  # hvm_start_info / multiboot_info
BOOT_MMAP_PA = 0x7400                  # memory map entries
BOOT_CMDLINE_PA = 0x7800               # command line, NUL-terminated (up to 2 KiB)
BOOT_MODLIST_PA = 0x8000               # module list (multiboot) / modlist (PVH), then module arguments (PVH)
MODLIST_BYTES = 0x400
BOOT_DATA_START = BOOT_GDT_PA
BOOT_DATA_END = 0x9000

# Initial flat segments in the boot GDT (the same selectors QEMU's multiboot/PVH option ROMs use).
BOOT_CS = 0x10
BOOT_DS = 0x18

# Port I/O
COM1_PORT = 0x3F8
COM1_IRQ = 4
DEBUG_EXIT_PORT = 0xF4
PIT_PORT = 0x40
SPEAKER_PORT = 0x61
PIC_MASTER_PORT = 0x20
PIC_SLAVE_PORT = 0xA0
ELCR_PORT = 0x4D0
CMOS_PORT = 0x70
FW_CFG_PORT = 0x510
ATA_PRIMARY_PORT = 0x1F0
ATA_PRIMARY_CTRL_PORT = 0x3F6
ATA_PRIMARY_IRQ = 14
PCI_CONFIG_ADDRESS_PORT = 0xCF8
PCI_CONFIG_DATA_PORT = 0xCFC
PIT_IRQ = 0
RTC_IRQ = 8

# MMIO: the device window just below 4 GiB; its unclaimed pages read as all ones (logged)
DEVICE_WINDOW_START = 0xFE000000
DEVICE_WINDOW_END = 1 << 32
IOAPIC_BASE = 0xFEC00000
LAPIC_BASE = 0xFEE00000
MMIO_PAGE = 0x1000

# Guest time: what one port or MMIO access costs, in nanoseconds of guest time.
IO_ACCESS_NS = 1_000

"""What QEMU's firmware (SeaBIOS and its boot option ROMs) leaves in the devices before the kernel runs.

A guest under QEMU never sees the devices' reset state: SeaBIOS programs them first, and a guest that
relies on that (enables interrupts without reprogramming the PIC, say) must behave the same here.
The state is replayed through the devices' own registers, the way the firmware wrote it; the
`boot_state` sample prints it under both machines.
"""
from __future__ import annotations

from .devices.base import Device

# (device name, offset, size, value) in the order the firmware writes them.
SEABIOS_WRITES: tuple[tuple[str, int, int, int], ...] = (
    # 8259 pair: ICW1-4, vector bases 0x08 and 0x70, cascade on IRQ2, then the masks SeaBIOS leaves.
    ("pic_master", 0, 1, 0x11), ("pic_master", 1, 1, 0x08), ("pic_master", 1, 1, 0x04), ("pic_master", 1, 1, 0x01),
    ("pic_slave", 0, 1, 0x11), ("pic_slave", 1, 1, 0x70), ("pic_slave", 1, 1, 0x02), ("pic_slave", 1, 1, 0x01),
    ("pic_master", 1, 1, 0xB8), ("pic_slave", 1, 1, 0x8E),
    # PIT counter 0: mode 2, lobyte/hibyte, count 0 (65536: the 18.2 Hz BIOS tick).
    ("pit", 3, 1, 0x34), ("pit", 0, 1, 0x00), ("pit", 0, 1, 0x00),
    # COM1 detection: IER written with THRE enabled, then cleared; the edge stays latched in the PIC.
    ("com1", 1, 1, 0x02), ("com1", 1, 1, 0x00),
    # Local APIC: software-enabled with spurious vector 0xff, LINT0 ExtINT and LINT1 NMI, level.
    ("lapic", 0xF0, 4, 0x1FF), ("lapic", 0x350, 4, 0x8700), ("lapic", 0x360, 4, 0x8400),
)


def apply_seabios_state(devices: dict[str, Device]) -> None:
    for name, offset, size, value in SEABIOS_WRITES:
        devices[name].write(offset, size, value)

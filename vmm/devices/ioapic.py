"""The I/O APIC (82093AA, QEMU version 0x20, 24 pins): redirection table and delivery to the local APIC."""
from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger("vmm.devices")

IOREGSEL = 0x00
IOWIN = 0x10
EOI = 0x40                      # version 0x20's directed-EOI register
NUM_PINS = 24
IOAPIC_VERSION = 0x20           # QEMU 7.2's default (pc machines); 0x11 is the old 82093AA
REG_ID, REG_VERSION, REG_ARB, REG_REDTBL = 0x00, 0x01, 0x02, 0x10
ID_SHIFT, ID_MASK = 24, 0x0F

ENTRY_MASKED = 1 << 16
ENTRY_LEVEL = 1 << 15
ENTRY_REMOTE_IRR = 1 << 14
ENTRY_DELIVERY_STATUS = 1 << 12
ENTRY_RO_BITS = ENTRY_REMOTE_IRR | ENTRY_DELIVERY_STATUS
DM_FIXED, DM_LOWEST = 0, 1


class _Pin:
    """The wire into one I/O APIC input."""

    def __init__(self, ioapic: IoApic, pin: int) -> None:
        self._ioapic = ioapic
        self._pin = pin

    def set_level(self, high: bool) -> None:
        self._ioapic.set_irq(self._pin, high)


class IoApic:
    """IOREGSEL (offset 0), IOWIN (offset 0x10) and EOI (0x40); ID, version, 24 redirection entries.

    Fixed and lowest-priority entries call `deliver(vector, level_triggered)` (wire it to
    `Lapic.accept_irq`); the single CPU receives every interrupt whatever the destination field.
    Level-triggered entries keep Remote IRR until `eoi(vector)` (set `Lapic.on_eoi_broadcast` to it).
    """

    def __init__(self, deliver: Callable[[int, bool], None], num_pins: int = NUM_PINS) -> None:
        self._deliver = deliver
        self.num_pins = num_pins
        self.id = 0
        self.ioregsel = 0
        self.irr = 0                        # pins with a pending request
        self.redirection = [ENTRY_MASKED] * num_pins
        self._pins = tuple(_Pin(self, n) for n in range(num_pins))

    def irq_line(self, pin: int) -> _Pin:
        return self._pins[pin]

    # -- registers -------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == IOREGSEL:
            return self.ioregsel
        if offset == IOWIN and size == 4:
            return self._read_register(self.ioregsel)
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == IOREGSEL:
            self.ioregsel = value & 0xFF
        elif offset == IOWIN and size == 4:
            self._write_register(self.ioregsel, value & 0xFFFFFFFF)
        elif offset == EOI:
            self.eoi(value & 0xFF)
        else:
            log.debug("ioapic: write %#x of %d bytes at offset %#x ignored", value, size, offset)

    def _read_register(self, reg: int) -> int:
        if reg in (REG_ID, REG_ARB):
            return self.id << ID_SHIFT
        if reg == REG_VERSION:
            return IOAPIC_VERSION | ((self.num_pins - 1) << 16)
        pin = (reg - REG_REDTBL) >> 1
        if 0 <= pin < self.num_pins:
            entry = self.redirection[pin]
            return entry >> 32 if reg & 1 else entry & 0xFFFFFFFF
        log.debug("ioapic: read of register %#x", reg)
        return 0

    def _write_register(self, reg: int, value: int) -> None:
        if reg == REG_ID:
            self.id = (value >> ID_SHIFT) & ID_MASK
            return
        pin = (reg - REG_REDTBL) >> 1
        if not 0 <= pin < self.num_pins:
            if reg not in (REG_VERSION, REG_ARB):
                log.debug("ioapic: write %#x to register %#x ignored", value, reg)
            return
        entry = self.redirection[pin]
        entry = (entry & 0xFFFFFFFF) | (value << 32) if reg & 1 else (entry & ~0xFFFFFFFF) | value
        entry = (entry & ~ENTRY_RO_BITS) | (self.redirection[pin] & ENTRY_RO_BITS)
        if not entry & ENTRY_LEVEL:
            entry &= ~ENTRY_REMOTE_IRR
        self.redirection[pin] = entry
        self._service()

    # -- inputs ----------------------------------------------------------------------------------
    def set_irq(self, pin: int, high: bool) -> None:
        mask = 1 << pin
        entry = self.redirection[pin]
        if entry & ENTRY_LEVEL:
            if high:
                self.irr |= mask
                if not entry & ENTRY_REMOTE_IRR:
                    self._service()
            else:
                self.irr &= ~mask
        elif high and not entry & ENTRY_MASKED:     # edges on a masked pin are lost (82093AA)
            self.irr |= mask
            self._service()

    def eoi(self, vector: int) -> None:
        """The local APIC's EOI broadcast for a level-triggered vector: clear Remote IRR, redeliver if still asserted."""
        for pin, entry in enumerate(self.redirection):
            if entry & 0xFF != vector or not entry & ENTRY_LEVEL or not entry & ENTRY_REMOTE_IRR:
                continue
            self.redirection[pin] = entry & ~ENTRY_REMOTE_IRR
            if not entry & ENTRY_MASKED and self.irr & (1 << pin):
                self._service()

    def _service(self) -> None:
        for pin in range(self.num_pins):
            mask = 1 << pin
            entry = self.redirection[pin]
            if not self.irr & mask or entry & ENTRY_MASKED:
                continue
            level = bool(entry & ENTRY_LEVEL)
            if level:
                if entry & ENTRY_REMOTE_IRR:
                    continue                # the CPU is still handling the previous one
                self.redirection[pin] = entry | ENTRY_REMOTE_IRR
            else:
                self.irr &= ~mask
            mode = (entry >> 8) & 7
            if mode in (DM_FIXED, DM_LOWEST):
                self._deliver(entry & 0xFF, level)
            else:
                log.info("ioapic: pin %d delivery mode %d not modelled; interrupt dropped", pin, mode)
